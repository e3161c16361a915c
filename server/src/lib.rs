//! deadbolt-server: the `deadbolt` binary's library half.
//!
//! - [`config`]: validated `serve` settings (flags, `DEADBOLT_*`, TOML).
//! - [`http`]: the HTTP/JSON API of `shared/API.md` ([`http::app`]), its
//!   OpenAPI document, request metrics, and the serve loop
//!   ([`http::serve_http`]) that runs unchanged under madsim.
//! - [`server`]: one running node: storage, the Raft node and the API
//!   wired from a [`config::ServeConfig`] (`run(listeners, config, shutdown)`).
//! - [`logging`]: tracing-subscriber set-up (human or JSON).
//! - [`cli`]: the command line (not built under madsim: it runs real
//!   processes and a real runtime).

#![warn(unreachable_pub)]

#[cfg(not(madsim))]
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
#[cfg(not(madsim))]
pub mod server;
