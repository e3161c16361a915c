//! `deadbolt serve` settings: one place that merges flags, `DEADBOLT_*`
//! environment variables (both through clap) and a TOML `--config` file, and
//! validates the result once, at start-up, with errors that name the setting
//! and the value.
//!
//! Precedence: flag > environment > config file > built-in default.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};

use deadbolt_api::limits::{IDEMPOTENCY_KEYS_DEFAULT, IDEMPOTENCY_KEYS_MAX, IDEMPOTENCY_KEYS_MIN};
use deadbolt_api::BODY_BYTES_MAX_DEFAULT;
use deadbolt_core::raft::NodeId;
use serde::Deserialize;

use crate::logging::LogFormat;

/// Where `serve` keeps its data without `--data-dir`.
pub const DATA_DIR_DEFAULT: &str = "deadbolt-data";
/// The API address without `--listen-api`.
pub const LISTEN_API_DEFAULT: &str = "127.0.0.1:7070";
/// The peer address without `--listen-peer`.
pub const LISTEN_PEER_DEFAULT: &str = "127.0.0.1:7071";

/// The largest cluster deadbolt supports.
pub const CLUSTER_VOTERS_MAX: usize = 7;

/// The flags of `deadbolt serve`, as clap parsed them (flag or environment).
/// Every field is optional so that the config file can fill what is missing.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// This node's id within its cluster. [default: 1]
    #[arg(long, env = "DEADBOLT_NODE_ID")]
    pub node_id: Option<u64>,
    /// Where the node keeps its log, snapshots and identity. [default:
    /// deadbolt-data]
    #[arg(long, env = "DEADBOLT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API, IP:PORT or HOST:PORT (a host name is
    /// resolved once, at start). [default: 127.0.0.1:7070]
    #[arg(long, env = "DEADBOLT_LISTEN_API")]
    pub listen_api: Option<String>,
    /// Address peers connect to for Raft traffic, IP:PORT or HOST:PORT.
    /// [default: 127.0.0.1:7071]
    #[arg(long, env = "DEADBOLT_LISTEN_PEER")]
    pub listen_peer: Option<String>,
    /// Peer addresses of the founding voters: `1=ADDR,2=ADDR,3=ADDR`, the
    /// same on every founder. [default: this node alone]
    #[arg(long, env = "DEADBOLT_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// API URL of a running cluster that this new node asks to join.
    #[arg(long, env = "DEADBOLT_JOIN")]
    pub join: Option<String>,
    /// Address other nodes and clients should use for this node's API, when
    /// it differs from `--listen-api` (e.g. listening on 0.0.0.0). [default:
    /// the listen address]
    #[arg(long, env = "DEADBOLT_ADVERTISE_API")]
    pub advertise_api: Option<String>,
    /// Address peers should dial, when it differs from `--listen-peer`.
    /// [default: the listen address]
    #[arg(long, env = "DEADBOLT_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Request bodies above this many bytes are refused with 413. [default:
    /// 1048576]
    #[arg(long, env = "DEADBOLT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most idempotency outcomes the cluster keeps; past it the oldest is
    /// evicted (memory stays bounded, no keyed request is ever refused). The
    /// leader proposes its value: give every node the same. [default:
    /// 1000000, range 100..=100000000]
    #[arg(long, env = "DEADBOLT_IDEMPOTENCY_KEYS_MAX")]
    pub idempotency_keys_max: Option<u64>,
    /// Disaster recovery: make this surviving node the only voter of its
    /// cluster, keeping its data, when the cluster lost its quorum for good
    /// (then join new nodes to it). Never restart the other old members on
    /// their data dirs afterwards. Refused on a data dir already forced.
    #[arg(long, env = "DEADBOLT_FORCE_NEW_CLUSTER")]
    pub force_new_cluster: bool,
    /// TOML file with the same settings (names as the flags, `-` or `_`),
    /// `log-format` too.
    #[arg(long, env = "DEADBOLT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Client flags mean nothing to a node: taken here so that `serve`'s help
    /// does not list them (clap leaves a global flag out of a subcommand
    /// that has its own of that name), and still accepted, as before.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// (Hidden, as `endpoints`.)
    #[arg(long, hide = true)]
    pub json: bool,
}

/// The TOML file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    #[serde(alias = "node_id")]
    node_id: Option<u64>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    #[serde(alias = "listen_api")]
    listen_api: Option<String>,
    #[serde(alias = "listen_peer")]
    listen_peer: Option<String>,
    #[serde(alias = "initial_cluster")]
    initial_cluster: Option<String>,
    join: Option<String>,
    #[serde(alias = "advertise_api")]
    advertise_api: Option<String>,
    #[serde(alias = "advertise_peer")]
    advertise_peer: Option<String>,
    #[serde(alias = "max_body_bytes")]
    max_body_bytes: Option<usize>,
    #[serde(alias = "idempotency_keys_max")]
    idempotency_keys_max: Option<u64>,
    #[serde(alias = "force_new_cluster")]
    force_new_cluster: Option<bool>,
    /// The global `--log-format`, for the node's own logs.
    #[serde(alias = "log_format")]
    log_format: Option<LogFormat>,
}

/// How a node comes into being.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A founder of a new cluster of these voters (peer addresses); a
    /// one-node cluster is a founder list of one.
    Founder { voters: BTreeMap<NodeId, String> },
    /// A new node that asks the cluster behind this API URL to add it.
    Join { url: String },
}

/// Validated settings of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen_api: SocketAddr,
    pub listen_peer: SocketAddr,
    /// `host:port` announced to the cluster for the API.
    pub advertise_api: String,
    /// `host:port` announced to the cluster for Raft traffic.
    pub advertise_peer: String,
    pub bootstrap: Bootstrap,
    pub max_body_bytes: usize,
    /// Bound on kept idempotency outcomes this node proposes while it leads.
    pub idempotency_keys_max: u64,
    /// `--force-new-cluster`: become the only voter of the stored cluster.
    pub force_new_cluster: bool,
    /// `log-format` from the config file (the flag, read before, wins).
    pub log_format: Option<LogFormat>,
}

/// A setting that cannot be used, named with the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("config file {path} is not valid: {reason}")]
    FileInvalid { path: PathBuf, reason: String },
    #[error("--{setting} {value:?}: {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// The message, naming `DEADBOLT_<SETTING>` instead of `--setting` when
    /// the value came from the environment (no such flag on the command line).
    pub fn naming_the_source(&self) -> String {
        let argv: Vec<String> = std::env::args().collect();
        self.naming_source_in(&argv, |name| std::env::var(name).ok())
    }

    fn naming_source_in(&self, argv: &[String], env: impl Fn(&str) -> Option<String>) -> String {
        let ConfigError::Invalid {
            setting,
            value,
            reason,
        } = self
        else {
            return self.to_string();
        };
        let flag = format!("--{setting}");
        let on_argv = argv
            .iter()
            .any(|arg| *arg == flag || arg.starts_with(&format!("{flag}=")));
        let variable = format!("DEADBOLT_{}", setting.replace('-', "_").to_uppercase());
        match env(&variable) {
            Some(text) if !on_argv => format!("{variable}={text:?}: {reason}"),
            _ => format!("{flag} {value:?}: {reason}"),
        }
    }
}

fn invalid(setting: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl ServeArgs {
    /// Merges the config file (if any) under the flags and validates.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let node_id = self.node_id.or(file.node_id).unwrap_or(1);
        if node_id == 0 {
            return Err(invalid("node-id", node_id, "node ids start at 1"));
        }
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data-dir", "", "must not be empty"));
        }
        let listen_api_text = pick(&self.listen_api, file.listen_api, LISTEN_API_DEFAULT);
        let listen_api = parse_addr("listen-api", &listen_api_text)?;
        let listen_peer_text = pick(&self.listen_peer, file.listen_peer, LISTEN_PEER_DEFAULT);
        let listen_peer = parse_addr("listen-peer", &listen_peer_text)?;
        if listen_api == listen_peer {
            return Err(invalid(
                "listen-peer",
                listen_peer,
                "must differ from --listen-api",
            ));
        }
        let advertise_api = self
            .advertise_api
            .clone()
            .or(file.advertise_api)
            .unwrap_or_else(|| listen_api.to_string());
        check_host_port("advertise-api", &advertise_api)?;
        let advertise_peer = self
            .advertise_peer
            .clone()
            .or(file.advertise_peer)
            .unwrap_or_else(|| listen_peer.to_string());
        check_host_port("advertise-peer", &advertise_peer)?;

        let initial_cluster = self.initial_cluster.clone().or(file.initial_cluster);
        let join = self.join.clone().or(file.join);
        let bootstrap = choose_bootstrap(initial_cluster, join, node_id, &advertise_peer)?;
        let max_body_bytes = self
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(BODY_BYTES_MAX_DEFAULT);
        if max_body_bytes < 1024 {
            return Err(invalid(
                "max-body-bytes",
                max_body_bytes,
                "must be at least 1024",
            ));
        }
        let idempotency_keys_max = self
            .idempotency_keys_max
            .or(file.idempotency_keys_max)
            .unwrap_or(IDEMPOTENCY_KEYS_DEFAULT);
        if !(IDEMPOTENCY_KEYS_MIN..=IDEMPOTENCY_KEYS_MAX).contains(&idempotency_keys_max) {
            return Err(invalid(
                "idempotency-keys-max",
                idempotency_keys_max,
                format!("must be {IDEMPOTENCY_KEYS_MIN}..={IDEMPOTENCY_KEYS_MAX}"),
            ));
        }
        Ok(ServeConfig {
            node_id,
            data_dir,
            listen_api,
            listen_peer,
            advertise_api,
            advertise_peer,
            bootstrap,
            max_body_bytes,
            idempotency_keys_max,
            force_new_cluster: self.force_new_cluster || file.force_new_cluster.unwrap_or(false),
            log_format: file.log_format,
        })
    }
}

/// How the node enters its cluster: `--initial-cluster` (a founder), `--join`
/// (a joining node), or neither (the one founder of a one-node cluster).
fn choose_bootstrap(
    initial_cluster: Option<String>,
    join: Option<String>,
    node_id: NodeId,
    advertise_peer: &str,
) -> Result<Bootstrap, ConfigError> {
    let bootstrap = match (initial_cluster, join) {
        (Some(list), Some(_)) => {
            return Err(invalid(
                "join",
                list,
                "--join and --initial-cluster exclude each other: founders list the cluster, a joining node asks it",
            ))
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("join", url, "expected an API URL like http://host:7070"));
            }
            Bootstrap::Join { url }
        }
        (Some(list), None) => {
            let voters = parse_initial_cluster(&list)?;
            if !voters.contains_key(&node_id) {
                return Err(invalid(
                    "initial-cluster",
                    list,
                    format!("does not list this node (--node-id {node_id})"),
                ));
            }
            Bootstrap::Founder { voters }
        }
        (None, None) => Bootstrap::Founder {
            voters: BTreeMap::from([(node_id, advertise_peer.to_owned())]),
        },
    };
    Ok(bootstrap)
}

fn pick(flag: &Option<String>, file: Option<String>, default: &str) -> String {
    flag.clone().or(file).unwrap_or_else(|| default.to_string())
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::FileInvalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `IP:PORT`, or `HOST:PORT` resolved now (the first address the resolver
/// gives), so a name that does not resolve stops the start with its setting.
fn parse_addr(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    check_host_port(setting, text).map_err(|_| {
        invalid(
            setting,
            text,
            "expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:7070",
        )
    })?;
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| invalid(setting, text, format!("cannot resolve the host name: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(setting, text, "the host name resolves to no address"))
}

fn check_host_port(setting: &'static str, text: &str) -> Result<(), ConfigError> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid(setting, text, "expected HOST:PORT")),
    }
}

/// Parses `1=ADDR,2=ADDR,3=ADDR`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut voters = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            invalid(
                "initial-cluster",
                text,
                format!("{part:?} is not ID=HOST:PORT"),
            )
        })?;
        let id: NodeId = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            invalid(
                "initial-cluster",
                text,
                format!("{id:?} is not a node id (1, 2, ...)"),
            )
        })?;
        check_host_port("initial-cluster", addr.trim())?;
        if voters.insert(id, addr.trim().to_string()).is_some() {
            return Err(invalid(
                "initial-cluster",
                text,
                format!("node {id} is listed twice"),
            ));
        }
    }
    if voters.is_empty() {
        return Err(invalid("initial-cluster", text, "lists no nodes"));
    }
    if voters.len() > CLUSTER_VOTERS_MAX {
        return Err(invalid(
            "initial-cluster",
            text,
            format!("at most {CLUSTER_VOTERS_MAX} voters are supported"),
        ));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_is_a_one_node_cluster_on_the_documented_addresses() {
        let config = ServeArgs::default().resolve().expect("defaults are valid");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.data_dir, PathBuf::from("deadbolt-data"));
        assert_eq!(config.listen_api.to_string(), "127.0.0.1:7070");
        assert_eq!(config.listen_peer.to_string(), "127.0.0.1:7071");
        assert_eq!(
            config.bootstrap,
            Bootstrap::Founder {
                voters: BTreeMap::from([(1, "127.0.0.1:7071".to_string())])
            }
        );
    }

    #[test]
    fn node_missing_from_initial_cluster_is_named() {
        let args = ServeArgs {
            node_id: Some(4),
            initial_cluster: Some("1=127.0.0.1:7071,2=127.0.0.1:7081".into()),
            ..Default::default()
        };
        let err = args
            .resolve()
            .expect_err("node 4 is not a founder")
            .to_string();
        assert!(
            err.contains("--initial-cluster") && err.contains("node-id 4"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                ServeArgs {
                    listen_api: Some("nowhere".into()),
                    ..Default::default()
                },
                "--listen-api",
            ),
            (
                ServeArgs {
                    node_id: Some(0),
                    ..Default::default()
                },
                "--node-id",
            ),
            (
                ServeArgs {
                    initial_cluster: Some("1=a:1,1=b:2".into()),
                    ..Default::default()
                },
                "listed twice",
            ),
            (
                ServeArgs {
                    initial_cluster: Some("x=a:1".into()),
                    ..Default::default()
                },
                "not a node id",
            ),
            (
                ServeArgs {
                    join: Some("localhost:7070".into()),
                    ..Default::default()
                },
                "--join",
            ),
        ];
        for (args, expected) in cases {
            let err = args.resolve().expect_err("invalid").to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn config_file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deadbolt.toml");
        std::fs::write(
            &path,
            "node-id = 2\nlisten_api = \"127.0.0.1:8080\"\ninitial-cluster = \"1=127.0.0.1:7071,2=127.0.0.1:8081\"\n",
        )
        .expect("write config");
        let args = ServeArgs {
            listen_api: Some("127.0.0.1:9090".into()),
            listen_peer: Some("127.0.0.1:8081".into()),
            config: Some(path),
            ..Default::default()
        };
        let config = args.resolve().expect("valid");
        assert_eq!(config.node_id, 2);
        assert_eq!(
            config.listen_api.to_string(),
            "127.0.0.1:9090",
            "the flag wins"
        );
        assert!(matches!(config.bootstrap, Bootstrap::Founder { ref voters } if voters.len() == 2));
    }

    #[test]
    fn a_value_from_the_environment_is_named_as_its_variable() {
        let error = invalid("node-id", 0, "node ids start at 1");
        let env = |name: &str| (name == "DEADBOLT_NODE_ID").then(|| "0".to_owned());
        let from_env = error.naming_source_in(&["deadbolt".into(), "serve".into()], env);
        assert_eq!(from_env, "DEADBOLT_NODE_ID=\"0\": node ids start at 1");
        let argv = [
            "deadbolt".into(),
            "serve".into(),
            "--node-id".into(),
            "0".into(),
        ];
        let from_flag = error.naming_source_in(&argv, env);
        assert_eq!(from_flag, "--node-id \"0\": node ids start at 1");
    }

    #[test]
    fn host_names_are_resolved_at_start() {
        let args = ServeArgs {
            listen_api: Some("localhost:7070".into()),
            listen_peer: Some("localhost:7071".into()),
            ..Default::default()
        };
        let config = args.resolve().expect("localhost resolves");
        assert!(config.listen_api.ip().is_loopback(), "{config:?}");
        assert_eq!(config.listen_api.port(), 7070);
        let args = ServeArgs {
            listen_api: Some("no-such-host.invalid:7070".into()),
            ..Default::default()
        };
        let err = args.resolve().expect_err("does not resolve").to_string();
        assert!(
            err.contains("--listen-api") && err.contains("cannot resolve"),
            "{err}"
        );
    }

    #[test]
    fn log_format_is_read_from_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deadbolt.toml");
        std::fs::write(&path, "log-format = \"json\"\n").expect("write config");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let config = args.resolve().expect("valid");
        assert_eq!(config.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "node-idd = 2\n").expect("write config");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = args.resolve().expect_err("typo").to_string();
        assert!(err.contains("node-idd"), "{err}");
    }
}
