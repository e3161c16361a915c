//! A node's data dir: `identity.json` (whose node it is, of which cluster,
//! its incarnation, whether it was added, removed, restored or forced)
//! beside the Raft storage in `raft/`, the checks made on it at start, and
//! the cluster id tags founders derive without talking.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use deadbolt_core::codec::Fnv1a64;
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::transport::INCARNATION_NONE;
use serde::{Deserialize, Serialize};

use crate::config::ServeConfig;

/// Incarnations stay below 2^53 (exact in every JSON reader).
pub(crate) const INCARNATION_MASK: u64 = (1 << 53) - 1;
/// Name of the identity file inside the data dir.
pub(crate) const IDENTITY_FILE: &str = "identity.json";
/// Sub-directory of the data dir that holds the Raft log and snapshots.
pub(crate) const RAFT_DIR: &str = "raft";

/// What the data dir says about the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredIdentity {
    pub(crate) cluster_id: String,
    pub(crate) node_id: NodeId,
    /// False for a joining node until the cluster accepted it: a restart
    /// before that asks again.
    pub(crate) joined: bool,
    /// The data dir's random id (below 2^53, so JSON readers keep it
    /// exact). Absent (0) in files written before incarnations existed: one
    /// is drawn on the next start.
    #[serde(default)]
    pub(crate) incarnation: u64,
    /// The node learned it was removed from the cluster: the data dir is
    /// never served again (its promises belong to a membership that no
    /// longer counts it). Absent (false) in older files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) removed: bool,
    /// Written by `deadbolt restore`: the digest of the backup this founder
    /// started from, part of its cluster id's tag (so a restored cluster
    /// never shares a tag with the one the backup came from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restored_from: Option<String>,
    /// `--force-new-cluster` made this node the only voter of its cluster.
    /// Forcing again would remove every member that joined since, so a
    /// second forced start is refused while this is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) forced_new_cluster: bool,
}

/// The cluster id's tag founders agree on without talking: a digest of the
/// sorted `id=peer_addr` founder list. A one-node cluster is a list of one.
/// The founding nonce (recorded by the first leader) completes the id, so
/// two foundings with the same list still differ.
pub fn founder_cluster_id(voters: &BTreeMap<NodeId, String>) -> String {
    format!("dbc-{:016x}", founder_list_hash(voters, None))
}

/// The tag of a cluster founded by `deadbolt restore` from the backup with
/// this digest: founders restoring the same file with the same list agree
/// on it, and it never equals the tag of the cluster the backup came from,
/// so no node of that cluster can talk Raft with the restored one, even
/// before the restored cluster's founding nonce is committed.
pub fn restored_cluster_id(voters: &BTreeMap<NodeId, String>, backup_digest: &str) -> String {
    format!(
        "dbr-{:016x}",
        founder_list_hash(voters, Some(backup_digest))
    )
}

fn founder_list_hash(voters: &BTreeMap<NodeId, String>, backup_digest: Option<&str>) -> u64 {
    // FNV-1a 64: stable across Rust versions and platforms, unlike
    // `DefaultHasher`, which is all this needs (not an adversarial input).
    let mut hash = Fnv1a64::new();
    for (id, addr) in voters {
        hash.write(format!("{id}={addr}\n").as_bytes());
    }
    if let Some(digest) = backup_digest {
        hash.write(format!("restored from {digest}\n").as_bytes());
    }
    hash.finish()
}

/// Creates the data dir if needed and reads its identity, refusing a dir
/// that belongs to another node id.
pub(crate) fn open_data_dir(config: &ServeConfig) -> anyhow::Result<Option<StoredIdentity>> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "--data-dir {}: cannot create the data directory",
            data_dir.display()
        )
    })?;
    let stored = read_identity(data_dir)?;
    if let Some(stored) = &stored {
        if stored.removed {
            bail!(
                "--data-dir {}: node {} was removed from cluster {}; refusing to start on this \
                 data dir again. To bring the node back: empty the data dir and start it with \
                 --join <API URL of a running member>",
                data_dir.display(),
                stored.node_id,
                stored.cluster_id
            );
        }
        // The Raft state is gone but the identity says the node had some:
        // starting would promise nothing it promised before.
        if stored.joined && !data_dir.join(RAFT_DIR).exists() {
            bail!(
                "--data-dir {}: holds {IDENTITY_FILE} of node {} but no {RAFT_DIR}/ (its Raft \
                 state was deleted); refusing to start as if it had promised nothing. Remove \
                 node {} from the cluster, empty the data dir and start it with --join",
                data_dir.display(),
                stored.node_id,
                stored.node_id
            );
        }
        if stored.node_id != config.node_id {
            bail!(
                "--data-dir {}: holds node {} of cluster {}, but --node-id is {}; \
                 use that node's id or another data dir",
                data_dir.display(),
                stored.node_id,
                stored.cluster_id,
                config.node_id
            );
        }
    }
    Ok(stored)
}

/// `--force-new-cluster` needs a member's data dir that was not forced before.
pub(crate) fn check_forceable(
    config: &ServeConfig,
    stored: Option<&StoredIdentity>,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.display();
    let Some(stored) = stored else {
        bail!(
            "--force-new-cluster: --data-dir {data_dir} holds no node; the flag turns a surviving \
             member's data dir into a one-voter cluster"
        );
    };
    if !stored.joined {
        bail!(
            "--force-new-cluster: --data-dir {data_dir} belongs to node {} that never finished \
             joining its cluster; it holds nothing to continue the cluster with",
            stored.node_id
        );
    }
    if stored.forced_new_cluster {
        bail!(
            "--force-new-cluster: --data-dir {data_dir} was already forced into a one-voter \
             cluster; remove the flag (forcing again would remove every member that joined \
             since). If that cluster lost its quorum again, delete the \"forced_new_cluster\" \
             line from {} and start with the flag once more",
            identity_path(&config.data_dir).display()
        );
    }
    Ok(())
}

pub(crate) fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

pub(crate) fn read_identity(data_dir: &Path) -> anyhow::Result<Option<StoredIdentity>> {
    let path = identity_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // An empty `raft/` is a start cut short before its identity.
            let raft_state = std::fs::read_dir(data_dir.join(RAFT_DIR))
                .is_ok_and(|mut entries| entries.next().is_some());
            if raft_state {
                bail!(
                    "--data-dir {}: holds Raft state but no {IDENTITY_FILE}; refusing to guess \
                     which cluster it belongs to",
                    data_dir.display()
                );
            }
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("--data-dir: reading {}", path.display()))
        }
    };
    let identity = serde_json::from_str(&text)
        .with_context(|| format!("--data-dir: {} is not a deadbolt identity", path.display()))?;
    Ok(Some(identity))
}

/// Writes the identity durably: temp file, fsync, rename.
pub(crate) fn write_identity(data_dir: &Path, identity: &StoredIdentity) -> anyhow::Result<()> {
    let path = identity_path(data_dir);
    let temp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let context = || {
        format!(
            "--data-dir {}: cannot write {IDENTITY_FILE} (is the directory writable?)",
            data_dir.display()
        )
    };
    let text = serde_json::to_string_pretty(identity).expect("identity serializes");
    let mut file = std::fs::File::create(&temp).with_context(context)?;
    file.write_all(text.as_bytes()).with_context(context)?;
    file.sync_all().with_context(context)?;
    std::fs::rename(&temp, &path).with_context(context)?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        // Makes the rename durable; not every platform can fsync a directory.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Records in the identity that `--force-new-cluster` was carried out.
pub(crate) fn mark_forced(data_dir: &Path) -> anyhow::Result<()> {
    let identity = read_identity(data_dir)?.context("--data-dir: identity vanished")?;
    write_identity(
        data_dir,
        &StoredIdentity {
            forced_new_cluster: true,
            ..identity
        },
    )
}

/// Records in the identity that this data dir's node was removed.
pub(crate) fn mark_removed(data_dir: &Path) -> anyhow::Result<()> {
    let identity = read_identity(data_dir)?.context("--data-dir: identity vanished")?;
    write_identity(
        data_dir,
        &StoredIdentity {
            removed: true,
            ..identity
        },
    )
}

/// A seed from the OS (time and pid): production nodes need distinct
/// election jitter, not replayability (the simulation passes its own).
pub(crate) fn os_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A new data dir's incarnation: random (not replayable, like `os_seed`),
/// non-zero and below 2^53 so that JSON readers keep it exact.
pub(crate) fn draw_incarnation() -> u64 {
    let mut hash = Fnv1a64::new();
    hash.write(&os_seed().to_le_bytes());
    // Two processes started in the same nanosecond still differ by stack
    // address (ASLR).
    let here = &hash as *const Fnv1a64 as usize;
    hash.write(&here.to_le_bytes());
    let mut rng = deadbolt_runtime::SplitMix64::new(hash.finish());
    loop {
        let incarnation = rng.next_u64() & INCARNATION_MASK;
        if incarnation != INCARNATION_NONE {
            return incarnation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founders_agree_on_the_cluster_id() {
        let a = BTreeMap::from([(2, "b:2".to_string()), (1, "a:1".to_string())]);
        let b = BTreeMap::from([(1, "a:1".to_string()), (2, "b:2".to_string())]);
        assert_eq!(founder_cluster_id(&a), founder_cluster_id(&b));
        let other = BTreeMap::from([(1, "a:1".to_string())]);
        assert_ne!(founder_cluster_id(&a), founder_cluster_id(&other));
        assert!(founder_cluster_id(&a).len() <= 64);
    }

    #[test]
    fn a_restored_cluster_never_shares_a_tag_with_a_founding() {
        let voters = BTreeMap::from([(1, "a:1".to_string())]);
        let restored = restored_cluster_id(&voters, "00000000000000ab");
        assert_ne!(restored, founder_cluster_id(&voters));
        assert_eq!(restored, restored_cluster_id(&voters, "00000000000000ab"));
        assert_ne!(restored, restored_cluster_id(&voters, "00000000000000ac"));
        assert!(restored.len() <= 64);
    }

    #[test]
    fn incarnations_are_non_zero_json_exact_and_differ() {
        let a = draw_incarnation();
        let b = draw_incarnation();
        for x in [a, b] {
            assert!(x != INCARNATION_NONE && x <= INCARNATION_MASK, "{x:#x}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn identity_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_identity(dir.path()).expect("empty dir"), None);
        let identity = StoredIdentity {
            cluster_id: "dbc-1".into(),
            node_id: 3,
            joined: false,
            incarnation: 42,
            removed: false,
            restored_from: Some("00000000000000ab".into()),
            forced_new_cluster: true,
        };
        write_identity(dir.path(), &identity).expect("write");
        assert_eq!(
            read_identity(dir.path()).expect("read"),
            Some(identity.clone())
        );
        // Written before incarnations existed: read as none (one is drawn).
        let legacy = r#"{"cluster_id": "dbc-1", "node_id": 3, "joined": true}"#;
        std::fs::write(identity_path(dir.path()), legacy).expect("write");
        let read = read_identity(dir.path()).expect("read").expect("some");
        assert_eq!(read.incarnation, INCARNATION_NONE);
        std::fs::write(identity_path(dir.path()), "nope").expect("write");
        let error = format!("{:#}", read_identity(dir.path()).expect_err("garbage"));
        assert!(error.contains("--data-dir"), "{error}");
    }
}
