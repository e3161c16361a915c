//! deadbolt-server: the `deadbolt` binary's library half.
//!
//! - [`config`]: validated `serve` settings (flags, `DEADBOLT_*`, TOML).
//! - [`http`]: the HTTP/JSON API of `shared/API.md` ([`http::app`]), its
//!   OpenAPI document, request metrics, and the serve loop
//!   ([`http::serve_http`]) that runs unchanged under madsim.
//! - [`server`]: one running node: storage, the Raft node and the API
//!   wired from a [`config::ServeConfig`] (`run(listeners, config, shutdown)`).
//! - [`data_dir`]: a node's data dir (`identity.json` beside `raft/`), the
//!   checks made on it at start, and the cluster id tags.
//! - [`dir_lock`]: one process per data dir (`deadbolt.pid`, flock).
//! - [`restore`]: `deadbolt restore`, a new founder's data dir from a backup.
//! - [`logging`]: tracing-subscriber set-up (human or JSON).
//! - [`cli`]: the command line (not built under madsim: it runs real
//!   processes and a real runtime).

#![warn(unreachable_pub)]

#[cfg(not(madsim))]
pub mod cli;
pub mod config;
#[cfg(not(madsim))]
pub mod data_dir;
#[cfg(not(madsim))]
pub mod dir_lock;
pub mod http;
pub mod logging;
#[cfg(not(madsim))]
pub mod restore;
#[cfg(not(madsim))]
pub mod server;
