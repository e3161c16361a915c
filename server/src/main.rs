//! The `deadbolt` binary. Only configuration parsing exists so far (see
//! ARCHITECTURE.md); `serve` validates its settings and then says plainly that
//! the node itself is not built yet instead of pretending.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deadbolt_server::config::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "deadbolt", version, about = "A distributed lock service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (no flags: node 1 of a one-node cluster).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match args.resolve() {
            Ok(config) => {
                eprintln!("deadbolt: configuration valid ({config:?}), but the node runtime is not built yet");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("deadbolt: {e}");
                ExitCode::from(2)
            }
        },
    }
}
