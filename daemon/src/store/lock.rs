//! The data directory: created private, and held by one seqd at a time.
//!
//! # What it guarantees
//!
//! - The directory is created `0700` whatever the umask, and an existing
//!   one that others may read is tightened to `0700`: the store holds user
//!   ids and who chats with whom. (The store files are `0600`, see
//!   `schema.rs`.)
//! - Only one seqd uses a data directory: an exclusive `flock` on
//!   `seqd.lock` is taken before anything in it is read, and held until
//!   the process ends. A second seqd on the same directory stops with an
//!   error naming the holder's pid — two stores issuing from one set of
//!   marks would hand out every number twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "seqd.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    /// Kept open: the `flock` lives as long as this descriptor.
    _file: File,
    pub path: PathBuf,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data directory {dir} is in use by another seqd (pid {pid}; lock {lock})")]
    Held {
        dir: String,
        pid: String,
        lock: String,
    },
    #[error("data directory {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// Creates `dir` (private) if needed, tightens a directory others may
/// read, and takes the exclusive lock.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.display().to_string(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        tracing::info!(dir = %dir.display(), from = format!("{:o}", mode & 0o777), "data directory made private (0700)");
    }
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(LockError::Held {
                dir: dir.display().to_string(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                lock: path.display().to_string(),
            });
        }
        return Err(io(err));
    }
    // The holder's pid, for the error a second seqd prints.
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_frees_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = lock_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // flock locks belong to the open file description: a second open
        // in the same process conflicts like another process would.
        let e = lock_data_dir(&data).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(held);
        lock_data_dir(&data).unwrap();
    }
}
