#!/usr/bin/env bash
# Runs the `deadbolt bench` matrix against local clusters of the release
# `deadbolt` binary (data in a temporary directory) and stops every process it
# started, however it exits.
#
#   scripts/bench.sh [NODES] [extra bench flags...]     (NODES: 1 or 3, default 3)
#
# Each level runs twice, with the Rust client as shipped (`own`) and with a
# client that uses the contract alone (`generic`: no leader hint, no key
# acknowledgements), each on a fresh cluster so that runs do not disturb
# each other. scripts/compare-etcd.sh sets the same workloads beside etcd.
#
# Environment: DEADBOLT_BIN (default target/release/deadbolt, built first when
# unset), BENCH_DURATION (seconds, default 5), BENCH_WARMUP (default 1),
# BENCH_BASE_PORT (default 17070), BENCH_JSON=1 for JSON lines,
# BENCH_UNCONTENDED (default 1,16,64,256), BENCH_CONTENDED (default 4,32).
set -euo pipefail

nodes=${1:-3}
shift || true
case "$nodes" in 1 | 3) ;; *) echo "NODES must be 1 or 3" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${DEADBOLT_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --bin deadbolt)
    target=${CARGO_TARGET_DIR:-$root/target}
    DEADBOLT_BIN=$target/release/deadbolt
fi
duration=${BENCH_DURATION:-5}
warmup=${BENCH_WARMUP:-1}
base=${BENCH_BASE_PORT:-17070}
json=()
[[ "${BENCH_JSON:-0}" == 1 ]] && json=(--json)
logs="${TMPDIR:-/tmp}/deadbolt-bench-logs"

data=$(mktemp -d -t deadbolt-bench.XXXXXX)
pids=()
stop_cluster() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
    # Keep the node logs of the last cluster for a look after the fact.
    mkdir -p "$logs"
    cp "$data"/node-*.log "$logs/" 2>/dev/null || true
    rm -rf "${data:?}"/node-*
}
trap 'stop_cluster; rm -rf "$data"' EXIT INT TERM

initial=""
endpoints=""
for id in $(seq 1 "$nodes"); do
    initial+="${initial:+,}$id=127.0.0.1:$((base + 10 * id + 1))"
    endpoints+="${endpoints:+,}http://127.0.0.1:$((base + 10 * id))"
done

start_cluster() {
    for id in $(seq 1 "$nodes"); do
        "$DEADBOLT_BIN" serve --node-id "$id" --data-dir "$data/node-$id" \
            --listen-api "127.0.0.1:$((base + 10 * id))" \
            --listen-peer "127.0.0.1:$((base + 10 * id + 1))" \
            --initial-cluster "$initial" >"$data/node-$id.log" 2>&1 &
        pids+=($!)
    done
    # Ready once the cluster status names a leader.
    for _ in $(seq 1 100); do
        if "$DEADBOLT_BIN" --endpoints "$endpoints" --json cluster status 2>/dev/null |
            grep -q '"leader_id":[0-9]'; then
            return 0
        fi
        sleep 0.1
    done
    echo "cluster did not elect a leader; logs in $logs" >&2
    return 1
}

echo "# $nodes node(s), durable (fjall, fsync), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
run_levels() {
    local workload=$1 levels=$2 first=1
    shift 2
    for c in ${levels//,/ }; do
        for client in own generic; do
            start_cluster
            "$DEADBOLT_BIN" --endpoints "$endpoints" "${json[@]}" bench --client "$client" \
                --workload "$workload" -c "$c" --duration "$duration" --warmup "$warmup" "$@" |
                if [[ $first == 1 || ${#json[@]} -gt 0 ]]; then cat; else tail -n +2; fi
            first=0
            stop_cluster
        done
    done
}
run_levels uncontended "${BENCH_UNCONTENDED:-1,16,64,256}" "$@"
run_levels contended "${BENCH_CONTENDED:-4,32}" "$@"
