//! deadbolt-runtime: drives the sans-IO core with real IO (storage, peers,
//! clock) as tokio actors. Under `--cfg madsim` the same code runs in the
//! simulator. Work in progress: see ARCHITECTURE.md for what is built.

pub mod rng;
pub mod shutdown;
pub mod storage;
pub mod transport;
