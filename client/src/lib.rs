//! deadbolt-client: the Rust client of the deadbolt HTTP API, shared by the
//! CLI, the simulation and users.
//!
//! - [`Client`]: one async method per endpoint of `shared/API.md`, over
//!   HTTP/1.1 keep-alive connections (hyper's client conn over tokio's
//!   `TcpStream`, so it runs unchanged under madsim). Calls rotate through
//!   the endpoints on 503 and connection errors, back off, honour
//!   Retry-After, and stay within a deadline. Every mutation carries an
//!   `Idempotency-Key`, the same on every retry of the call.
//! - [`Session`]: a lease kept alive in the background, with a lost-lease
//!   signal; [`Lock`]: a grant with its fencing token.
//!
//! Time comes only from `tokio::time` and randomness only from the seed given
//! to [`ClientBuilder::seed`] (or a default source), so a simulated run is
//! a pure function of its seed.

mod client;
mod error;
mod grants;
mod ids;
mod io;
mod path;
mod pool;
mod session;
mod waiting;

pub use client::{
    Client, ClientBuilder, ATTEMPTS_MAX_DEFAULT, BACKOFF_INITIAL_DEFAULT, BACKOFF_MAX_DEFAULT,
    CALL_TIMEOUT_DEFAULT, RETRY_AFTER_MAX_DEFAULT,
};
pub use deadbolt_api as api;
pub use error::Error;
pub use io::HyperIo;
pub use path::encode_component;
pub use session::{
    lease_deadline, LeaseClosed, LeaseState, LeaseWatch, Lock, LostReason, Session, SessionOptions,
    DRIFT_ALLOWANCE_DEFAULT,
};

#[cfg(test)]
mod tests;
