#!/usr/bin/env bash
# Runs each fleet variant (tests/fleet.rs, and crates/paynet-auth-cli/tests/fleet_processes.rs for the fleets of CLI
# processes) RUNS times (default 30) and reports, per variant, how many runs broke
# the promise (logins != expiries + 1, or a caller error) and the figures of every run.
#
#   scripts/fleet-repeat.sh [RUNS] [VARIANT...]
#
# VARIANT is a test name of either file or a part of one (default: every fleet variant and the killed holder).
# PAYNET_FLEET_SECS sets the expiries per run (default 20, one a second); PAYNET_TEST_POSTGRES_URL and
# PAYNET_TEST_MYSQL_URL choose the databases, as for the test suite. Figures go to target/fleet-repeat/*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-30}
shift || true
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(
    postgres_read_committed_fleet_logs_in_once_per_expiry
    postgres_serializable_fleet_logs_in_once_per_expiry
    mariadb_fleet_logs_in_once_per_expiry
    mariadb_serializable_fleet_logs_in_once_per_expiry
    sqlite_file_shared_by_processes_logs_in_once_per_expiry
    lease_holder_killed_mid_login_is_taken_over_after_the_lease_ttl
  )
fi

out=target/fleet-repeat
mkdir -p "$out"
cargo test --all-features --no-run --quiet -p paynet-auth --test fleet
cargo test --all-features --no-run --quiet -p paynet-auth-cli --test fleet_processes

# The package and test binary that hold a variant.
target_of() {
  case $1 in
    sqlite_file_shared*|lease_holder_killed*) echo "-p paynet-auth-cli --test fleet_processes" ;;
    *) echo "-p paynet-auth --test fleet" ;;
  esac
}

for variant in "${variants[@]}"; do
  : > "$out/$variant.jsonl"
done
# Runs outside, variants inside: an interrupted repetition leaves every variant with about as many runs.
for run in $(seq 1 "$runs"); do
  for variant in "${variants[@]}"; do
    log="$out/$variant.$run.log"
    # shellcheck disable=SC2046 # the package and test flags are meant to split
    if cargo test --all-features --quiet $(target_of "$variant") "$variant" -- --nocapture --test-threads 1 >"$log" 2>&1; then
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

for variant in "${variants[@]}"; do
  done_runs=$(grep -c . "$out/$variant.jsonl" || true)
  failed=$(grep -c '"status":"FAILED"' "$out/$variant.jsonl" || true)
  echo "== $variant: $failed of $done_runs runs failed (figures in $out/$variant.jsonl, logs of failed runs beside it)"
done
