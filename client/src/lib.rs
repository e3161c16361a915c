//! deadbolt-client: the Rust client of the deadbolt HTTP API, shared by the
//! CLI, the simulation and users. Work in progress: see ARCHITECTURE.md.
