#!/usr/bin/env bash
# Runs each fleet variant (tests/fleet.rs: 64 instances × 8 callers in process; and
# crates/paynet-auth-cli/tests/fleet_processes.rs for the fleets of CLI processes) RUNS times (default 30), then
# prints a table per variant: runs that broke the promise (logins != expiries + 1, or a caller error), logins per
# expiries, caller errors, store operations per instance per expiry (mean, and the most one instance made in one
# expiry; and those of the instances that did not save), the time from the winner's save to when the last waiting
# instance asked for the new token and to its adoption (p99 over a run's expiries: the median and worst run), whether
# the runs met the wake-up targets (3 operations, 10 ms), and the longest caller wait of the refresh-ahead variants.
#
#   scripts/fleet-repeat.sh [RUNS] [VARIANT...]
#
# VARIANT is a test name of either file (default: every fleet variant and the killed holder). A variant whose test
# is not in this tree is skipped with a note.
# The full size: 64 instances (PAYNET_FLEET_INSTANCES; the test suite alone runs 16).
# The runs are of a release build, as every benchmark of the project (PAYNET_FLEET_PROFILE=debug for the test
# suite's build); PAYNET_FLEET_SECS sets the expiries per run (default 20, one a second), PAYNET_FLEET_CALLERS the
# callers per instance (default 8; 1 leaves the adoptions no replays to queue behind); PAYNET_TEST_POSTGRES_URL,
# PAYNET_TEST_MYSQL_URL (and PAYNET_TEST_REDIS_URL for Redis) choose the servers, as for the test suite. Figures
# go to target/fleet-repeat/*.jsonl, one line per run; the logs of failed runs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PAYNET_FLEET_INSTANCES="${PAYNET_FLEET_INSTANCES:-64}"

runs=${1:-30}
shift || true
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(
    postgres_read_committed_fleet_logs_in_once_per_expiry
    postgres_read_committed_fleet_polling_logs_in_once_per_expiry
    postgres_serializable_fleet_logs_in_once_per_expiry
    postgres_fleet_refreshing_ahead_keeps_every_caller_from_waiting_for_a_login
    mariadb_fleet_logs_in_once_per_expiry
    mariadb_serializable_fleet_logs_in_once_per_expiry
    memory_fleet_with_wakeups_logs_in_once_per_expiry
    redis_fleet_logs_in_once_per_expiry
    redis_fleet_polling_logs_in_once_per_expiry
    redis_fleet_refreshing_ahead_keeps_every_caller_from_waiting_for_a_login
    sqlite_file_shared_by_processes_logs_in_once_per_expiry
    postgres_shared_by_processes_logs_in_once_per_expiry
    redis_shared_by_processes_logs_in_once_per_expiry
    lease_holder_killed_mid_login_is_taken_over_after_the_lease_ttl
  )
fi

out=target/fleet-repeat
mkdir -p "$out"
profile=()
if [ "${PAYNET_FLEET_PROFILE:-release}" = release ]; then profile=(--release); fi
cargo test "${profile[@]}" --all-features --no-run --quiet -p paynet-auth --test fleet
cargo test "${profile[@]}" --all-features --no-run --quiet -p paynet-auth-cli --test fleet_processes

# The package and test binary that hold a variant.
target_of() {
  case $1 in
    *_by_processes_*|lease_holder_killed*) echo "-p paynet-auth-cli --test fleet_processes" ;;
    *) echo "-p paynet-auth --test fleet" ;;
  esac
}

# Only the variants whose test exists in this tree.
listed=$( { cargo test "${profile[@]}" --all-features --quiet -p paynet-auth --test fleet -- --list;
            cargo test "${profile[@]}" --all-features --quiet -p paynet-auth-cli --test fleet_processes -- --list; } 2>/dev/null |
          sed -n 's/: test$//p')
present=()
for variant in "${variants[@]}"; do
  if grep -qx "$variant" <<<"$listed"; then
    present+=("$variant")
  else
    echo "-- $variant: no such test in this tree, skipped"
  fi
done
variants=("${present[@]}")

for variant in "${variants[@]}"; do
  : > "$out/$variant.jsonl"
done
# Runs outside, variants inside: an interrupted repetition leaves every variant with about as many runs.
for run in $(seq 1 "$runs"); do
  for variant in "${variants[@]}"; do
    log="$out/$variant.$run.log"
    # shellcheck disable=SC2046 # the package and test flags are meant to split
    if cargo test "${profile[@]}" --all-features --quiet $(target_of "$variant") -- --exact "$variant" --nocapture --test-threads 1 >"$log" 2>&1; then
      status=ok
    else
      status=FAILED
    fi
    # With --nocapture the figures may share a line with the test harness's own output.
    line=$(grep -hoE '(fleet|holder killed): \{.*\}' "$log" | head -n1 || true)
    if [ "$status" = ok ]; then rm -f "$log"; fi
    json=${line#*: }
    echo "{\"run\":$run,\"status\":\"$status\",\"figures\":${json:-null}}" >> "$out/$variant.jsonl"
    echo "$variant run $run/$runs: $status ${line}"
  done
done

# One row per variant. Figures a variant does not print (the CLI fleets count no operations) show as "-".
table() {
  jq -rs --arg variant "$1" '
    def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
    def fmt: if . == null then "-" elif type == "number" then (. * 100 | round / 100 | tostring) else tostring end;
    [.[] | .figures | select(. != null)] as $f
    | ($f | map(select(.ops_per_instance_per_expiry != null))) as $ops
    | ($f | map(.save_to_last_adoption_ms.p99 // empty)) as $adoption
    | ($f | map(.save_to_last_read_asked_ms.p99 // empty)) as $asked
    | ($f | map(.wakeup_targets_met // empty)) as $targets
    | [ $variant,
        "\(map(select(.status == "FAILED")) | length) / \(length)",
        ($f | map("\(.logins)/\(.expiries)") | group_by(.) | map("\(.[0]) ×\(length)") | join(", ")),
        ($f | map(.errors // 0) | add // 0 | tostring) + " (" + ($f | map(.errors_across_two_expiries // 0) | add // 0 | tostring) + " across two expiries)",
        (if ($ops | length) == 0 then "-" else ($ops | map(.ops_per_instance_per_expiry.mean) | median | fmt) + " (max " + ($ops | map(.ops_per_instance_per_expiry.max) | max | fmt) + ")" end),
        (if ($ops | length) == 0 then "-" else ($ops | map(.ops_per_waiter_per_expiry // empty) | median | fmt) + " (worst run " + ($ops | map(.ops_per_waiter_per_expiry // empty) | max | fmt) + ")" end),
        (if ($asked | length) == 0 then "-" else ($asked | median | fmt) + " ms (worst " + ($asked | max | fmt) + " ms)" end),
        (if ($adoption | length) == 0 then "-" else ($adoption | median | fmt) + " ms (worst " + ($adoption | max | fmt) + " ms)" end),
        (if ($targets | length) == 0 then "-" else "ops \($targets | map(select(.ops)) | length)/\($targets | length), adoption \($targets | map(select(.adoption)) | length)/\($targets | length)" end),
        (if ($f | map(select(.refresh_ahead == true)) | length) == 0 then "-" else ($f | map(.max_wait_ms) | median | fmt) + " ms (worst " + ($f | map(.max_wait_ms) | max | fmt) + " ms)" end)
      ]
    | "| " + join(" | ") + " |"
  ' "$out/$1.jsonl"
}

echo
echo "| variant | failed runs | logins/expiries | caller errors | ops per instance per expiry (median run, max) | ops per waiting instance per expiry (median run, worst) | save → last waiter's read asked, p99 (median run, worst) | save → last adoption, p99 (median run, worst) | wake-up targets met | max caller wait, refresh-ahead (median run, worst) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for variant in "${variants[@]}"; do
  table "$variant"
done
echo
echo "Figures in $out/<variant>.jsonl, logs of failed runs beside them."
