//! One process per data dir: an exclusive advisory lock on
//! `<data dir>/deadbolt.pid`, taken before anything in the dir is read, and
//! held (with this process's pid in the file) until the process exits.
//!
//! Without it a second `deadbolt serve` on the same dir got as far as the
//! storage library's own lock, after reading the identity and comparing
//! founder lists, and reported neither the cause nor who holds the dir.
//! The kernel drops the lock when its holder dies, even by SIGKILL, so a
//! crashed node never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "deadbolt.pid";

/// Why the data dir could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    #[error("--data-dir {dir}: data dir in use by another deadbolt process ({holder})")]
    InUse { dir: PathBuf, holder: String },
    #[error("--data-dir {dir}: cannot lock {LOCK_FILE}: {reason}")]
    Io { dir: PathBuf, reason: String },
}

/// The claim on a data dir; released when dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: Flock<File>,
}

impl DataDirLock {
    /// Claims `data_dir` (created if missing) for this process.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, DirLockError> {
        let io = |e: std::io::Error| DirLockError::Io {
            dir: data_dir.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(DirLockError::InUse {
                    dir: data_dir.to_path_buf(),
                    holder: holder_of(&mut file),
                })
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        // Only the holder writes, so a reader sees a whole pid or nothing.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// `pid N` from the lock file, or why it is unknown (the holder may be
/// between taking the lock and writing its pid).
fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    match file.read_to_string(&mut text) {
        Ok(_) => match text.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            Err(_) => "pid not yet written".to_owned(),
        },
        Err(e) => format!("pid unreadable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_names_the_holder_and_a_released_dir_is_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let first = DataDirLock::acquire(&data_dir).expect("first claim");
        let err = DataDirLock::acquire(&data_dir)
            .expect_err("held")
            .to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!(
                "data dir in use by another deadbolt process (pid {pid})"
            )),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(&data_dir).expect("free again");
    }
}
