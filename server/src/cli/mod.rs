//! The command line: `deadbolt serve` and the client commands of API.md
//! ("Command line"), over deadbolt-client. Global flags (`--endpoints`,
//! `--json`, `--log-format`) go before or after the subcommand.
//!
//! Exit codes: 0 ok, 1 error, 2 usage (clap's own), 3 lock held / not
//! acquired in time / token not valid, 4 lease lost; `lock` exits with its
//! command's status, 126/127 when the command cannot be run.

mod backup_cmd;
mod bench;
mod cluster_status;
mod lock_child;
mod lock_cmd;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use deadbolt_client::api::{
    AcquireRequest, AcquireResponse, AddMemberRequest, ListLocksQuery, LockMode, SessionId,
    UpdateMemberRequest, EPHEMERAL_SESSION_TTL_MS_DEFAULT,
};
use deadbolt_client::{Client, ClientBuilder};

use crate::config::ServeArgs;
use crate::logging::LogFormat;
use crate::restore::RestoreArgs;

pub use backup_cmd::SnapshotCommand;
pub use bench::{BenchArgs, BenchClient, Workload};
pub use lock_child::LockChildArgs;
pub use lock_cmd::LockArgs;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any error not listed below.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad usage (clap exits with it on its own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the lock is held / was not acquired in time.
pub const EXIT_LOCK_HELD: u8 = 3;
/// Exit status: the session's lease was lost.
pub const EXIT_LEASE_LOST: u8 = 4;
/// Exit status of `lock`: its command could not be executed (as shells).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status of `lock`: its command was not found (as shells).
pub const EXIT_NOT_FOUND: u8 = 127;

/// Default API endpoint of the client commands.
pub const ENDPOINTS_DEFAULT: &str = "http://127.0.0.1:7070";

#[derive(Debug, Parser)]
#[command(name = "deadbolt", version, about = "A distributed lock service")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// API URLs of cluster nodes, comma-separated; the client rotates through them.
    #[arg(
        long,
        global = true,
        env = "DEADBOLT_ENDPOINTS",
        value_delimiter = ',',
        default_value = ENDPOINTS_DEFAULT
    )]
    pub endpoints: Vec<String>,
    /// Print results as JSON (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log line format (logs go to stderr; filter with RUST_LOG). [default:
    /// human; `serve` also reads `log-format` from its --config file]
    #[arg(long, global = true, env = "DEADBOLT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (no flags: node 1 of a one-node cluster).
    Serve(ServeArgs),
    /// Run a command while holding a lock; exits with the command's status.
    Lock(LockArgs),
    /// Acquire a lock and print the grant. Nothing keeps the lock alive after
    /// this command exits: without --session-id it is held until released or
    /// for --ttl-ms (default 30 s), whichever comes first. To hold a lock
    /// while a command runs, use `deadbolt lock`, which keeps it alive.
    Acquire(AcquireArgs),
    /// Release a grant.
    Release(ReleaseArgs),
    /// Show a lock's state.
    Status(NameArg),
    /// List held or waited-for locks.
    List(ListArgs),
    /// Ask whether a fencing token still holds a lock: exits 0 if it does,
    /// 3 if it does not.
    Validate(ValidateArgs),
    /// Inspect or change the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Back up a running cluster (`snapshot save FILE`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Found a new cluster (new id) from a backup: run on every founder with
    /// the same FILE and --initial-cluster, then `deadbolt serve` each.
    Restore(RestoreArgs),
    /// Measure acquire/release cycles against a running cluster.
    Bench(BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell),
    /// e.g. `deadbolt completions bash > /etc/bash_completion.d/deadbolt`.
    Completions(CompletionsArgs),
    /// Internal: the supervisor `lock` runs its command under.
    #[command(hide = true)]
    LockChild(LockChildArgs),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Lock name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Lock name.
    pub name: String,
    /// Shared instead of exclusive mode.
    #[arg(long)]
    pub shared: bool,
    /// An existing session to hold the lock (kept alive by whoever opened
    /// it); without it the server opens a session that owns just this lock
    /// and that nothing keeps alive.
    #[arg(long)]
    pub session_id: Option<String>,
    /// How long the lock is held unless released first, when no --session-id
    /// is given: the TTL of the session the server opens, which nothing
    /// renews. Longer than `lock`'s 10 s default on purpose: `lock` keeps its
    /// session alive, `acquire` cannot. [default: 30000]
    #[arg(long)]
    pub ttl_ms: Option<u64>,
    /// How long to wait for the lock (0: fail at once if held).
    #[arg(long, default_value_t = 0)]
    pub wait_ms: u64,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Lock name.
    pub name: String,
    /// The session holding the grant (as `acquire` printed it).
    #[arg(long, required_unless_present = "grant")]
    pub session_id: Option<String>,
    /// The grant to release; without it, whatever the session holds.
    #[arg(long, conflicts_with = "grant")]
    pub fencing_token: Option<u64>,
    /// The grant as `acquire --json` printed it, instead of --session-id and
    /// --fencing-token: `grant=$(deadbolt acquire L --json)`, then
    /// `deadbolt release L --grant "$grant"`.
    #[arg(long, conflicts_with = "session_id")]
    pub grant: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only locks whose names start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Page size (1..=1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this name (a previous page's `next`).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Lock name.
    pub name: String,
    /// The token to check (a grant's `fencing_token`).
    #[arg(long)]
    pub fencing_token: u64,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The leader's view of the cluster: each member's role, whether it is
    /// reachable, when it last answered and how far behind it is, and
    /// whether a quorum is up (without a leader: the answering node's own
    /// view, saying so).
    Status,
    /// Add a node (joins as a learner, promoted once it has acknowledged the
    /// log up to the leader's commit index).
    Add {
        /// The new node's id (unused in the cluster so far).
        #[arg(long)]
        id: u64,
        /// HOST:PORT the new node listens on for peers (its --listen-peer).
        #[arg(long)]
        peer_addr: String,
        /// HOST:PORT of the new node's API (its --listen-api).
        #[arg(long)]
        api_addr: String,
    },
    /// Remove a member (refused while it would leave fewer reachable voters
    /// than a quorum, or no voter at all).
    Remove {
        /// The member's node id.
        id: u64,
    },
    /// Make a learner a voter (refused until it has acknowledged the log up
    /// to the leader's commit index).
    Promote {
        /// The learner's node id.
        id: u64,
    },
    /// Change a member's addresses, e.g. after it restarted with other
    /// listen flags.
    Update {
        /// The member's node id.
        id: u64,
        /// Its new peer address, HOST:PORT.
        #[arg(long, required_unless_present = "api_addr")]
        peer_addr: Option<String>,
        /// Its new API address, HOST:PORT.
        #[arg(long)]
        api_addr: Option<String>,
    },
    /// Transfer leadership to a member.
    Transfer {
        /// The voter to hand leadership to.
        id: u64,
    },
}

/// A usage error about a value that came from a `DEADBOLT_*` variable,
/// rewritten to name the variable (clap names the flag, which was never
/// typed); None for every other error.
pub fn name_env_source(error: &clap::Error) -> Option<String> {
    let argv: Vec<String> = std::env::args().collect();
    name_env_source_in(error, &argv, |name| std::env::var_os(name).is_some())
}

fn name_env_source_in(
    error: &clap::Error,
    argv: &[String],
    env_is_set: impl Fn(&str) -> bool,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory as _;
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // "--node-id <NODE_ID>"
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let flag = format!("--{long}");
    if argv
        .iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    {
        return None;
    }
    let command = Cli::command();
    let env = env_of(&command, long)?;
    if !env_is_set(&env) {
        return None;
    }
    let text = error.render().to_string();
    Some(text.replacen(
        &format!("'{arg}'"),
        &format!("{env} (from the environment)"),
        1,
    ))
}

/// The environment variable of the flag `--long`, in any subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

/// Maps an error to the documented exit status.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<deadbolt_client::Error>() {
        Some(deadbolt_client::Error::LockHeld { .. }) => EXIT_LOCK_HELD,
        Some(deadbolt_client::Error::LeaseLost | deadbolt_client::Error::SessionExpired { .. }) => {
            EXIT_LEASE_LOST
        }
        _ => EXIT_ERROR,
    }
}

fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    ClientBuilder::new(global.endpoints.iter().map(|e| e.trim().to_owned()))
        .build()
        .context("configuring the client")
}

fn parse_session_id(text: &str) -> anyhow::Result<SessionId> {
    text.parse()
        .with_context(|| format!("--session-id {text:?}"))
}

/// Runs a client command (everything but `serve`) to its exit status.
pub async fn run_client_command(global: GlobalArgs, command: Command) -> ExitCode {
    let json = global.json;
    let result = async {
        match command {
            Command::Serve(_) => unreachable!("serve is dispatched by main"),
            Command::Lock(args) => lock_cmd::run(client(&global)?, args, json).await,
            Command::LockChild(args) => lock_child::run(args, json).await,
            Command::Bench(args) => {
                let endpoints = global.endpoints.iter().map(|e| e.trim().to_owned());
                bench::run(endpoints.collect(), args, json).await
            }
            Command::Snapshot(SnapshotCommand::Save { file }) => {
                backup_cmd::save(&client(&global)?, &file, json)
                    .await
                    .map(|()| EXIT_OK)
            }
            Command::Restore(args) => backup_cmd::restore(&args, json).map(|()| EXIT_OK),
            Command::Cluster(ClusterCommand::Status) => {
                cluster_status::run(&client(&global)?, &global.endpoints, json)
                    .await
                    .map(|()| EXIT_OK)
            }
            Command::Completions(args) => {
                completions(args.shell);
                Ok(EXIT_OK)
            }
            other => run_simple(client(&global)?, other, json).await,
        }
    }
    .await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let code = exit_code_of(&error);
            output::print_error(&error, json);
            ExitCode::from(code)
        }
    }
}

/// Writes the completion script of `shell` for this very command line.
fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "deadbolt",
        &mut std::io::stdout(),
    );
}

/// The session and token of `release`: from `--grant` (an acquire answer)
/// or from `--session-id` and `--fencing-token`.
fn release_target(args: &ReleaseArgs) -> anyhow::Result<(SessionId, Option<u64>)> {
    if let Some(grant) = &args.grant {
        let grant: AcquireResponse = serde_json::from_str(grant)
            .context("--grant: expected the JSON that `deadbolt acquire --json` printed")?;
        anyhow::ensure!(
            grant.lock == args.name,
            "--grant is a grant of lock {:?}, not of {:?}",
            grant.lock,
            args.name
        );
        return Ok((grant.session_id, Some(grant.fencing_token)));
    }
    let session_id = args
        .session_id
        .as_deref()
        .context("--session-id or --grant is required")?;
    Ok((parse_session_id(session_id)?, args.fencing_token))
}

async fn run_simple(client: Client, command: Command, json: bool) -> anyhow::Result<u8> {
    match command {
        Command::Acquire(args) => {
            let request = AcquireRequest {
                session_id: args
                    .session_id
                    .as_deref()
                    .map(parse_session_id)
                    .transpose()?,
                mode: if args.shared {
                    LockMode::Shared
                } else {
                    LockMode::Exclusive
                },
                wait_ms: args.wait_ms,
                ttl_ms: args.ttl_ms,
            };
            let grant = client.acquire(&args.name, &request).await?;
            let ttl_ms = match request.session_id {
                Some(_) => None,
                None => Some(args.ttl_ms.unwrap_or(EPHEMERAL_SESSION_TTL_MS_DEFAULT)),
            };
            output::grant(&grant, ttl_ms, json);
        }
        Command::Release(args) => {
            let (session_id, fencing_token) = release_target(&args)?;
            client
                .release(&args.name, session_id, fencing_token)
                .await?;
            output::done(&format!("released {}", args.name), json);
        }
        Command::Status(args) => {
            let state = client.lock_state(&args.name).await?;
            output::lock_state(&state, output::now_ms(), json);
        }
        Command::List(args) => {
            let query = ListLocksQuery {
                prefix: args.prefix,
                limit: args.limit,
                after: args.after,
            };
            output::lock_list(&client.list_locks(&query).await?, output::now_ms(), json);
        }
        Command::Validate(args) => {
            let answer = client.validate(&args.name, args.fencing_token).await?;
            output::validity(&args.name, args.fencing_token, &answer, json);
            // API.md: scripts branch on it (`deadbolt validate ... && write`).
            if !answer.valid {
                return Ok(EXIT_LOCK_HELD);
            }
        }
        Command::Cluster(ClusterCommand::Add {
            id,
            peer_addr,
            api_addr,
        }) => {
            // No incarnation: an operator's add cannot tell a retry from a
            // new data dir, so an id that is already a voter is refused.
            let request = AddMemberRequest {
                id,
                peer_addr,
                api_addr,
                incarnation: None,
                cluster_id: None,
            };
            client.add_member(&request).await?;
            output::done(&format!("added node {id} as a learner"), json);
        }
        Command::Cluster(ClusterCommand::Remove { id }) => {
            client.remove_member(id).await?;
            output::done(&format!("removed node {id}"), json);
        }
        Command::Cluster(ClusterCommand::Promote { id }) => {
            client.promote_member(id).await?;
            output::done(&format!("promoted node {id} to voter"), json);
        }
        Command::Cluster(ClusterCommand::Update {
            id,
            peer_addr,
            api_addr,
        }) => {
            let request = UpdateMemberRequest {
                peer_addr,
                api_addr,
            };
            client.update_member(id, &request).await?;
            output::done(&format!("updated the addresses of node {id}"), json);
        }
        Command::Cluster(ClusterCommand::Transfer { id }) => {
            client.transfer_leader(id).await?;
            output::done(&format!("leadership transferred to node {id}"), json);
        }
        Command::Serve(_)
        | Command::Lock(_)
        | Command::Snapshot(_)
        | Command::Restore(_)
        | Command::Bench(_)
        | Command::LockChild(_)
        | Command::Completions(_)
        | Command::Cluster(ClusterCommand::Status) => {
            unreachable!("dispatched by run_client_command")
        }
    }
    Ok(EXIT_OK)
}

/// Parses a duration in whole seconds (`--duration 10`).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

#[cfg(test)]
mod tests;
