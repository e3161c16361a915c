# Thin wrappers over cargo; every recipe has a plain-cargo equivalent in
# .cargo/config.toml or in the recipe body itself.

# The whole test suite: every crate's tests, then the simulation sweep.
test:
    cargo test --workspace
    cargo sim
    cargo sim-node

# The madsim simulation sweep (own target dir, release mode).
sim:
    cargo sim
    cargo sim-node

# Run a one-node server with data in ./deadbolt-data.
serve:
    cargo run --release --bin deadbolt -- serve

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

# The `deadbolt bench` matrix against a local 3-node release cluster
# (`just bench 1` for one node); every process started is stopped.
bench nodes="3":
    scripts/bench.sh {{nodes}}

# deadbolt (generic and own client) beside a 3-member etcd in one run, as
# ratios (needs `etcd`: apt-get install etcd-server).
compare-etcd:
    scripts/compare-etcd.sh

# A keyed soak (issue 15): generic client, 64 workers, SECONDS (default
# 1800) on a fresh local 3-node release cluster; a line per minute with
# cycles/s, errors, each node's RSS and effective idempotency window.
soak seconds="1800":
    scripts/soak.sh {{seconds}}

# Replay one simulation seed alone, with tracing and a text timeline in
# target/sim-timeline-SEED.txt.
sim-replay SEED:
    DEADBOLT_SIM_SEED={{SEED}} cargo sim --test sim replay -- --nocapture

# Sweep simulation seeds for MINUTES, printing progress.
sim-soak MINUTES:
    DEADBOLT_SIM_SOAK_MINUTES={{MINUTES}} cargo sim --test sim sweep -- --nocapture
