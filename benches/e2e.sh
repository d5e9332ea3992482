#!/usr/bin/env bash
# End-to-end throughput: `paynet-auth load` against `paynet-auth simulate` on loopback, through the layer and
# `--bare`, in alternating pairs so that both modes see the same machine. Prints each pair and the median ratio.
#
#   bash benches/e2e.sh                       # SQLite store in a temp dir
#   PAYNET_E2E_STORE_URL=postgres://postgres@127.0.0.1:5432/test bash benches/e2e.sh
#   PAYNET_E2E_PAIRS=8 PAYNET_E2E_REQUESTS=60000 PAYNET_E2E_CONCURRENCY=64 bash benches/e2e.sh
#   PAYNET_E2E_CALLGRIND=1 bash benches/e2e.sh   # instructions per call of the client instead (needs valgrind)
#   PAYNET_E2E_TLS=1 bash benches/e2e.sh         # over HTTPS (the simulator's --tls, its CA as tls.ca_file); also
#                                                # prints the TLS handshakes per 10,000 calls
#
# Throughput on a shared two-core machine moves by several percent from run to run; the instruction counts of
# the callgrind mode do not, so they are the figure to compare across changes of the hot path.
set -euo pipefail

pairs=${PAYNET_E2E_PAIRS:-6}
requests=${PAYNET_E2E_REQUESTS:-60000}
concurrency=${PAYNET_E2E_CONCURRENCY:-64}
port=${PAYNET_E2E_PORT:-18080}

cd "$(dirname "$0")/.."
cargo build --release --quiet -p paynet-auth-cli
bin=target/release/paynet-auth
dir=$(mktemp -d)
store_url=${PAYNET_E2E_STORE_URL:-sqlite://$dir/tokens.db}

scheme=http
tls_flags=()
tls_yaml=""
if [ -n "${PAYNET_E2E_TLS:-}" ]; then
    scheme=https
    tls_flags=(--tls --tls-ca-out "$dir/ca.pem")
    tls_yaml="  tls: { ca_file: \"$dir/ca.pem\" }"
fi

# Quiet: by default the simulator logs every request it answers, which would cost it CPU the client competes for.
RUST_LOG=warn "$bin" simulate --listen "127.0.0.1:$port" "${tls_flags[@]}" >"$dir/simulator.log" 2>&1 &
simulator=$!
trap 'kill $simulator 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

cat >"$dir/paynet.yaml" <<YAML
paynet:
  base_url: "$scheme://127.0.0.1:$port/gw"
  username: "username_17627_56530"
  password: "password_17627_56530"
  terminal_id: 4027096
  store:
    url: "$store_url"
$tls_yaml
YAML

run() {
    "$bin" --config "$dir/paynet.yaml" load /v2/service getCategoriesList \
        --requests "$requests" --concurrency "$concurrency" "$@"
}

# A run's figures, with the client's own CPU time per call (user + system, from bash's `time`) added as
# `cpu_us`. It moves with throughput (a run the scheduler slows spends more on parking and waking threads), so
# the instruction counts of PAYNET_E2E_CALLGRIND stay the figure to compare across changes of the hot path.
measured() {
    local figures cpu
    if ! figures=$( { TIMEFORMAT='%3U %3S'; time run "$@" 2>"$dir/load.log"; } 2>"$dir/cpu" ); then
        echo "load failed: $figures" >&2
        cat "$dir/load.log" >&2
        exit 1
    fi
    cpu=$(python3 -c "import sys; u, s = map(float, open(sys.argv[1]).read().split()); \
print(round((u + s) * 1e6 / $requests, 2))" "$dir/cpu")
    python3 -c "import json,sys; f=json.loads(sys.argv[1]); f['cpu_us']=$cpu; print(json.dumps(f))" "$figures"
}

field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

if [ -n "${PAYNET_E2E_CALLGRIND:-}" ]; then
    # Instructions of the whole client process at two call counts; their difference cancels start-up.
    instructions() {
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin" --config "$dir/paynet.yaml" \
            load /v2/service getCategoriesList --requests "$1" --concurrency "$concurrency" "${@:2}" \
            2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
    }
    # A token in the store, so that neither mode logs in below.
    "$bin" --config "$dir/paynet.yaml" load /v2/service getCategoriesList --requests 100 >/dev/null
    for mode in --bare layer; do
        flags=()
        [ "$mode" = --bare ] && flags=(--bare)
        low=$(instructions 2000 "${flags[@]}")
        high=$(instructions 6000 "${flags[@]}")
        echo "$mode: $(( (high - low) / 4000 )) instructions per call"
    done
    exit 0
fi

echo "store: ${store_url%%://*}, $pairs pairs of $requests calls, $concurrency in flight"
ratios=()
cpu_ratios=()
for pair in $(seq "$pairs"); do
    bare=$(measured --bare)
    layer=$(measured)
    for figures in "$bare" "$layer"; do
        if [ "$(field errors <<<"$figures")" != 0 ]; then
            echo "a run had errors: $figures" >&2
            exit 1
        fi
    done
    bare_rps=$(field rps <<<"$bare")
    layer_rps=$(field rps <<<"$layer")
    ratio=$(python3 -c "print(round($layer_rps / $bare_rps, 3))")
    ratios+=("$ratio")
    bare_cpu=$(field cpu_us <<<"$bare")
    layer_cpu=$(field cpu_us <<<"$layer")
    cpu_ratios+=("$(python3 -c "print(round($layer_cpu / $bare_cpu, 3))")")
    echo "pair $pair: bare $bare_rps rps, layer $layer_rps rps, layer/bare $ratio;" \
        "client CPU per call bare $bare_cpu us, layer $layer_cpu us"
done
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; \
print(f'median layer/bare {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})')" "${ratios[@]}"
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; \
print(f'median client CPU per call, layer/bare {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})')" \
    "${cpu_ratios[@]}"
if [ -n "${PAYNET_E2E_TLS:-}" ]; then
    # Interrupted, the simulator prints its counters as its last line.
    kill -INT $simulator
    wait $simulator 2>/dev/null || true
    python3 -c "import json,sys; f=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); \
print(f\"TLS handshakes: {f['tls_handshakes']} for {f['requests']} requests, \
{f['tls_handshakes'] * 10000 / max(f['requests'], 1):.2f} per 10,000 calls\")" "$dir/simulator.log"
fi
