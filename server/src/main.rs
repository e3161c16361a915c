//! The `deadbolt` binary: parses the command line and runs it (`serve`
//! binds the listeners and runs `deadbolt_server::server`; the other
//! commands are API clients).

/// glibc's allocator spent ~11% of a loaded leader's CPU in malloc/free
/// bookkeeping; mimalloc's thread-local free lists cost a fraction of it.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    use deadbolt_server::cli::{name_env_source, run_client_command, Cli, Command};
    use deadbolt_server::logging;
    use std::process::ExitCode;

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => match name_env_source(&error) {
            // A bad DEADBOLT_* value is named as the variable, not a flag
            // that was never typed.
            Some(text) => {
                eprint!("{text}");
                return ExitCode::from(2);
            }
            None => error.exit(),
        },
    };
    match cli.command {
        Command::Serve(args) => {
            let config = match args.resolve() {
                Ok(config) => config,
                Err(e) => {
                    logging::init(cli.global.log_format.unwrap_or_default(), "info");
                    eprintln!("deadbolt: {}", e.naming_the_source());
                    return ExitCode::from(2);
                }
            };
            // The flag (or DEADBOLT_LOG_FORMAT) wins over the config file.
            let log_format = cli.global.log_format.or(config.log_format);
            logging::init(log_format.unwrap_or_default(), "info");
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
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("deadbolt: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        command => {
            // Client commands: logs only when asked for (RUST_LOG), so
            // their output stays clean.
            logging::init(cli.global.log_format.unwrap_or_default(), "warn");
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

/// `deadbolt serve`: binds both listeners (an address in use is named with
/// its flag), starts the node, prints where it listens, and stops gracefully
/// on SIGTERM or SIGINT.
#[cfg(not(madsim))]
async fn serve(config: deadbolt_server::config::ServeConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::net::TcpListener;

    let api_listener = TcpListener::bind(config.listen_api)
        .await
        .with_context(|| format!("--listen-api {}: cannot listen", config.listen_api))?;
    let peer_listener = TcpListener::bind(config.listen_peer)
        .await
        .with_context(|| format!("--listen-peer {}: cannot listen", config.listen_peer))?;
    // Signal handlers first, so a SIGTERM during start-up is not lost.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let (trigger, mut shutdown) = deadbolt_runtime::shutdown_channel();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = sigterm.recv() => tracing::info!("SIGTERM received"),
            result = tokio::signal::ctrl_c() => match result {
                Ok(()) => tracing::info!("SIGINT received"),
                Err(error) => tracing::warn!(%error, "cannot listen for SIGINT"),
            },
        }
        trigger.trigger();
        // Keep the trigger alive: dropping it also means "stop", harmless here.
    });
    // Start-up can wait long (a join retries for up to a minute): a signal
    // then ends it at once. Nothing is half-done by stopping here: a joining
    // node whose join was not confirmed asks again on its next start.
    let started = tokio::select! {
        biased;
        () = shutdown.wait() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
        started = deadbolt_server::server::start(api_listener, peer_listener, config) => started?,
    };
    let server = started;
    let info = server.info();
    println!(
        "deadbolt {} serving\n  api:        {}\n  peers:      {}\n  data dir:   {}{}\n  node id:    {}\n  cluster id: {}",
        env!("CARGO_PKG_VERSION"),
        info.api_url,
        info.peer_addr,
        info.data_dir.display(),
        if info.resumed { " (resumed)" } else { "" },
        info.node_id,
        info.cluster_id,
    );
    server.run_until(shutdown).await
}

/// Under `--cfg madsim` the crate is a library for the simulation; the
/// command line needs real processes and a real runtime.
#[cfg(madsim)]
fn main() {
    eprintln!("deadbolt: the binary is not built for the simulator");
}
