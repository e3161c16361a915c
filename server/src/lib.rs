//! deadbolt-server: the `deadbolt` binary's library half: configuration,
//! the HTTP API and the command line. Work in progress (see ARCHITECTURE.md):
//! today it holds the validated `serve` configuration.

pub mod config;
