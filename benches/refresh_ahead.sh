#!/usr/bin/env bash
# Refresh-ahead end to end: `paynet-auth load` (64 calls in flight) against `paynet-auth simulate` on loopback,
# logins taking 200 ms, tokens living 2 s, 20 s of load per run, in four runs per round:
#
#   no-expiry   tokens never expire (the baseline for p999)
#   off         tokens expire, refresh_ahead: 0s (the callers that meet the expiry wait for the login)
#   on          tokens expire, refresh_ahead: 500ms (the refresh runs behind the calls)
#   on-single   as `on`, against a single-session gateway (a login kills the older tokens): the calls in flight
#               with the old token are rejected once and replayed
#
# Prints one JSON line per run: the figures of `load` plus the gateway's own counters (`gw_logins`,
# `gw_rejections`, `gw_requests`) and, for the runs with expiries, `max_ms` against the login latency and p999
# against the no-expiry run of the same round.
#
#   bash benches/refresh_ahead.sh
#   PAYNET_RA_ROUNDS=3 PAYNET_RA_DURATION=20s bash benches/refresh_ahead.sh
set -euo pipefail

rounds=${PAYNET_RA_ROUNDS:-2}
duration=${PAYNET_RA_DURATION:-20s}
concurrency=${PAYNET_RA_CONCURRENCY:-64}
port=${PAYNET_RA_PORT:-18180}
login_latency_ms=200

cd "$(dirname "$0")/.."
cargo build --release --quiet -p paynet-auth-cli
bin=target/release/paynet-auth
dir=$(mktemp -d)
simulator=
trap '[ -n "$simulator" ] && kill $simulator 2>/dev/null; rm -rf "$dir"' EXIT

# Starts the simulator with the given flags and waits until it listens.
start_simulator() {
    RUST_LOG=warn "$bin" simulate --listen "127.0.0.1:$port" --login-latency "${login_latency_ms}ms" "$@" \
        >"$dir/simulator.out" 2>"$dir/simulator.log" &
    simulator=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        sleep 0.1
    done
    echo "the simulator did not start" >&2
    cat "$dir/simulator.log" >&2
    exit 1
}

# Interrupts the simulator and prints the counters it prints on the way out.
stop_simulator() {
    kill -INT "$simulator"
    wait "$simulator"
    simulator=
    tail -n 1 "$dir/simulator.out"
}

# One run: a fresh SQLite store, the simulator, 20 s of load; prints the merged figures.
run() {
    local name=$1 yaml_extra=$2
    shift 2
    rm -f "$dir"/tokens.db*
    cat >"$dir/paynet.yaml" <<YAML
paynet:
  base_url: "http://127.0.0.1:$port/gw"
  username: "username_17627_56530"
  password: "password_17627_56530"
  terminal_id: 4027096
$yaml_extra
  store:
    url: "sqlite://$dir/tokens.db"
YAML
    start_simulator "$@"
    # A token in the store first, so that the first calls adopt it instead of waiting for a login: the figures
    # are of the token's turnover, not of a cold start (which waits for a login whatever the settings).
    if ! "$bin" --config "$dir/paynet.yaml" token refresh >"$dir/refresh.log" 2>&1; then
        echo "token refresh failed ($name):" >&2
        cat "$dir/refresh.log" "$dir/simulator.log" >&2
        exit 1
    fi
    local figures
    if ! figures=$("$bin" --config "$dir/paynet.yaml" load /v2/service getCategoriesList \
        --duration "$duration" --concurrency "$concurrency" 2>"$dir/load.log"); then
        echo "load failed ($name): $figures" >&2
        cat "$dir/load.log" >&2
        exit 1
    fi
    local counters
    counters=$(stop_simulator)
    if [ -z "$counters" ]; then
        echo "the simulator printed no counters ($name):" >&2
        cat "$dir/simulator.out" "$dir/simulator.log" >&2
        exit 1
    fi
    python3 -c '
import json, sys
name, figures, counters = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {"run": name}
out.update({k: figures[k] for k in ("requests", "ok", "errors", "logins", "rps", "p50_ms", "p99_ms", "p999_ms", "max_ms")})
out.update({"gw_" + k: counters[k] for k in ("requests", "logins", "rejections")})
print(json.dumps(out))' "$name" "$figures" "$counters"
}

# The client stops using a token 300 ms before the gateway would: it counts the lifetime from the login's answer,
# the gateway from its arrival, up to the 200 ms of the login's latency earlier.
expiring="  token_ttl: 2s
  expiry_skew: 300ms"

for round in $(seq "$rounds"); do
    base=$(run no-expiry "")
    echo "$base"
    for mode in off on on-single; do
        line=
        case $mode in
            off) line=$(run off "$expiring
  refresh_ahead: 0s" --token-ttl 2s) ;;
            on) line=$(run on "$expiring
  refresh_ahead: 500ms" --token-ttl 2s) ;;
            on-single) line=$(run on-single "$expiring
  refresh_ahead: 500ms" --token-ttl 2s --single-session) ;;
        esac
        if [ -z "$line" ]; then
            echo "run $mode of round $round failed" >&2
            exit 1
        fi
        python3 -c '
import json, sys
base, run, login = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
run["max_below_login"] = run["max_ms"] < login
run["p999_vs_no_expiry"] = round(run["p999_ms"] / base["p999_ms"], 3)
print(json.dumps(run))' "$base" "$line" "$login_latency_ms"
    done
done
