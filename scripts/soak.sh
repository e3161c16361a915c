#!/usr/bin/env bash
# A keyed soak as issue 15 asks for it: a fresh local 3-node release cluster,
# the generic client (a fresh Idempotency-Key on every mutation, no key
# acknowledgements, no leader following) at 64 workers for SECONDS, with a
# progress line per interval: cycles/s, errors (refusals), each node's RSS
# and effective idempotency window. Every process started is stopped.
#
#   scripts/soak.sh [SECONDS] [extra bench flags...]   (default 1800)
#
# Environment: DEADBOLT_BIN (default target/release/deadbolt, built first when
# unset), SOAK_WORKERS (default 64), SOAK_REPORT_EVERY (default 60),
# SOAK_BASE_PORT (default 19070).
set -euo pipefail

seconds=${1:-1800}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${DEADBOLT_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --bin deadbolt)
    target=${CARGO_TARGET_DIR:-$root/target}
    DEADBOLT_BIN=$target/release/deadbolt
fi
base=${SOAK_BASE_PORT:-19070}
data=$(mktemp -d -t deadbolt-soak.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$data"
}
trap cleanup EXIT INT TERM

initial=""
endpoints=""
for id in 1 2 3; do
    initial+="${initial:+,}$id=127.0.0.1:$((base + 10 * id + 1))"
    endpoints+="${endpoints:+,}http://127.0.0.1:$((base + 10 * id))"
done
for id in 1 2 3; do
    "$DEADBOLT_BIN" serve --node-id "$id" --data-dir "$data/node-$id" \
        --listen-api "127.0.0.1:$((base + 10 * id))" \
        --listen-peer "127.0.0.1:$((base + 10 * id + 1))" \
        --initial-cluster "$initial" >"$data/node-$id.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 100); do
    if "$DEADBOLT_BIN" --endpoints "$endpoints" --json cluster status 2>/dev/null |
        grep -q '"leader_id":[0-9]'; then
        break
    fi
    sleep 0.1
done
echo "# keyed soak: 3 nodes, durable, generic client, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$DEADBOLT_BIN" --endpoints "$endpoints" bench --client generic --workload uncontended \
    -c "${SOAK_WORKERS:-64}" --duration "$seconds" --warmup 1 \
    --report-every "${SOAK_REPORT_EVERY:-60}" "$@"
