#!/usr/bin/env bash
# deadbolt beside etcd on this machine, in one run: a 3-member etcd cluster
# and a 3-node deadbolt cluster (both durable, both on loopback), the same
# lock/unlock cycle workloads, levels interleaved so that machine noise hits
# both alike. Prints one line per (workload, level, client) and the ratios
# to etcd. Every process started is stopped, however it exits.
#
#   scripts/compare-etcd.sh
#
# Needs `etcd` on PATH (Debian: apt-get install etcd-server).
# Environment: BENCH_DURATION (seconds per level, default 10), BENCH_WARMUP
# (default 2), BENCH_UNCONTENDED (default 1,64), BENCH_CONTENDED (default
# 4,32), BENCH_BASE_PORT (default 18070; etcd uses BASE+1000..),
# DEADBOLT_BIN / ETCD_BENCH_BIN (default: built here in release).
#
# Clients: `etcd` is server/examples/etcd_bench.rs through etcd's JSON
# gateway; `generic` is `deadbolt bench --client generic` (the contract
# only: no leader hint, no key acknowledgements, a fresh key per mutation,
# worker i on endpoint i mod 3); `own` is the Rust client as shipped.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
command -v etcd >/dev/null || { echo "etcd not found (apt-get install etcd-server)" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${DEADBOLT_BIN:-}" || -z "${ETCD_BENCH_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --bin deadbolt --example etcd_bench)
fi
DEADBOLT_BIN=${DEADBOLT_BIN:-$target/release/deadbolt}
ETCD_BENCH_BIN=${ETCD_BENCH_BIN:-$target/release/examples/etcd_bench}
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
base=${BENCH_BASE_PORT:-18070}

data=$(mktemp -d -t deadbolt-vs-etcd.XXXXXX)
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$data"' EXIT INT TERM

initial=""
endpoints=""
etcd_initial=""
etcd_endpoints=""
for id in 1 2 3; do
    initial+="${initial:+,}$id=127.0.0.1:$((base + 10 * id + 1))"
    endpoints+="${endpoints:+,}http://127.0.0.1:$((base + 10 * id))"
    etcd_initial+="${etcd_initial:+,}e$id=http://127.0.0.1:$((base + 1000 + 10 * id + 1))"
    etcd_endpoints+="${etcd_endpoints:+,}http://127.0.0.1:$((base + 1000 + 10 * id))"
done

start_clusters() {
    for id in 1 2 3; do
        "$DEADBOLT_BIN" serve --node-id "$id" --data-dir "$data/deadbolt-$id" \
            --listen-api "127.0.0.1:$((base + 10 * id))" \
            --listen-peer "127.0.0.1:$((base + 10 * id + 1))" \
            --initial-cluster "$initial" >"$data/deadbolt-$id.log" 2>&1 &
        pids+=($!)
        local client="http://127.0.0.1:$((base + 1000 + 10 * id))"
        local peer="http://127.0.0.1:$((base + 1000 + 10 * id + 1))"
        etcd --name "e$id" --data-dir "$data/etcd-$id" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$etcd_initial" --initial-cluster-state new \
            --initial-cluster-token "bench-$$" >"$data/etcd-$id.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 1 200); do
        if "$DEADBOLT_BIN" --endpoints "$endpoints" --json cluster status 2>/dev/null |
            grep -q '"leader_id":[0-9]' &&
            ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "the clusters did not come up; logs in $data" >&2
    tail -n 5 "$data"/*.log >&2
    return 1
}

echo "# 3 deadbolt nodes and 3 etcd $(etcd --version | head -1 | cut -d' ' -f3) members, durable, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
start_clusters
results=$data/results.jsonl
for workload in uncontended contended; do
    if [[ $workload == uncontended ]]; then levels=${BENCH_UNCONTENDED:-1,64}; else levels=${BENCH_CONTENDED:-4,32}; fi
    for c in ${levels//,/ }; do
        "$ETCD_BENCH_BIN" --endpoints "$etcd_endpoints" --workload "$workload" -c "$c" \
            --duration "$duration" --warmup "$warmup" >>"$results"
        for client in generic own; do
            "$DEADBOLT_BIN" --endpoints "$endpoints" --json bench --client "$client" \
                --workload "$workload" -c "$c" --duration "$duration" --warmup "$warmup" >>"$results"
        done
    done
done
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
etcd = {(r["workload"], r["concurrency"]): r for r in rows if r["client"] == "etcd"}
print(f'{"workload":<12} {"c":>4} {"client":<8} {"cycles/s":>10} {"p50 ms":>8} {"p99 ms":>8} {"x etcd":>7}  errors')
for r in rows:
    peer = etcd[(r["workload"], r["concurrency"])]
    ratio = r["cycles_per_second"] / peer["cycles_per_second"] if peer["cycles_per_second"] else float("nan")
    errors = r["errors"] if isinstance(r["errors"], int) else sum(r["errors"].values())
    print(f'{r["workload"]:<12} {r["concurrency"]:>4} {r["client"]:<8} {r["cycles_per_second"]:>10.1f} '
          f'{r["p50_ms"]:>8.2f} {r["p99_ms"]:>8.2f} {ratio:>7.2f}  {errors}')
EOF
