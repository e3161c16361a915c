//! The `deadbolt` binary: parses the command line and runs it. `serve`
//! validates its settings; the node itself is wired in once the runtime
//! offers a way to start one (see ARCHITECTURE.md).

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    use deadbolt_server::cli::{run_client_command, Cli, Command};
    use deadbolt_server::logging;
    use std::process::ExitCode;

    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            logging::init(cli.global.log_format, "info");
            match args.resolve() {
                Ok(config) => {
                    tracing::error!(
                        ?config,
                        "configuration valid, but the node runtime cannot be started yet"
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("deadbolt: {e}");
                    ExitCode::from(2)
                }
            }
        }
        command => {
            // Client commands: logs only when asked for (RUST_LOG), so
            // their output stays clean.
            logging::init(cli.global.log_format, "warn");
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("deadbolt: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(run_client_command(cli.global, command))
        }
    }
}

/// Under `--cfg madsim` the crate is a library for the simulation; the
/// command line needs real processes and a real runtime.
#[cfg(madsim)]
fn main() {
    eprintln!("deadbolt: the binary is not built for the simulator");
}
