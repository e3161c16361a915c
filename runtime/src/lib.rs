//! deadbolt-runtime: the IO edges that drive the sans-IO core, as tokio
//! actors. Under `--cfg madsim` the very same code runs in the simulator
//! (`tokio` is `madsim-tokio`).
//!
//! Code map:
//! - [`storage`]: the `Storage` trait, fjall (production) and `SimStorage`
//!   (simulated disk with crashes), and the group-commit storage actor.
//! - [`transport`]: checksummed frames, peer actors (outbound, with
//!   reconnect and drop-on-overflow) and the inbound listener.
//! - [`clock`]: the `Clock` trait, tokio-backed and skewed clocks.
//! - [`rng`]: the seeded generator used for every random choice.
//! - [`shutdown`]: the shutdown signal every actor takes.
//! - [`latest`]: a deterministic latest-value channel (`watch` is not
//!   deterministic under madsim with several waiters).
//!
//! Still to come here: the Raft actor that owns the core and wires these
//! edges together (waiting for the core's `Message` and `ready()` API).

#![warn(unreachable_pub)]

pub mod clock;
pub mod latest;
pub mod metrics;
pub mod node;
pub mod rng;
pub mod shutdown;
pub mod storage;
pub mod transport;

pub use clock::{Clock, ManualClock, SkewHandle, SkewedClock, TokioClock};
pub use rng::SplitMix64;
pub use shutdown::{shutdown_channel, wait_for_shutdown, Shutdown, ShutdownTrigger};
