//! The listening socket and the accept loop.
//!
//! Owns: binding the socket (with the stale-socket check), the cap on
//! connections (a permit is taken *before* `accept`, so a full daemon stops
//! accepting instead of failing connections), and the drain on shutdown.

use crate::context::Context;
use crate::transport;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening socket. A socket file seqd created is removed on drop; a
/// socket handed over by systemd (socket activation) is left alone: it
/// belongs to the service manager, which keeps it across restarts.
pub struct BoundSocket {
    pub listener: UnixListener,
    /// `Some` when seqd created the file.
    path: Option<PathBuf>,
}

impl BoundSocket {
    /// True when systemd passed the socket in.
    pub fn activated(&self) -> bool {
        self.path.is_none()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The listening socket systemd passed through `LISTEN_FDS`/`LISTEN_PID`,
/// if it passed one to this process.
pub fn activated() -> io::Result<Option<BoundSocket>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !for_us || fds == 0 {
        return Ok(None);
    }
    if fds > 1 {
        tracing::warn!(fds, "systemd passed several sockets; serving the first");
    }
    use std::os::fd::FromRawFd;
    // SAFETY: systemd's protocol hands fd 3 to this process (LISTEN_PID is
    // ours) as an open listening socket that nothing else in seqd owns.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) };
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    Ok(Some(BoundSocket {
        listener,
        path: None,
    }))
}

/// Binds the socket at `path`. If something is there, only a socket nobody
/// answers on is removed (stale); a socket a live process answers on, and
/// anything that is not a socket (a regular file — perhaps seqd's own
/// store —, a symlink, a directory) are refused with an error. The socket
/// gets mode 0660.
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<BoundSocket> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // A directory seqd creates is not writable by others: nobody
            // else may plant or replace the socket.
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        } else {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                tracing::warn!(dir = %dir.display(), "the socket's directory is world-writable without the sticky bit: anyone may replace the socket");
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if !kind.is_socket() {
            let what = if kind.is_symlink() {
                "a symlink"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_file() {
                "a regular file"
            } else {
                "not a socket"
            };
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is {what}; seqd only ever replaces a stale socket (choose another --socket)",
                    path.display()
                ),
            ));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by a running process", path.display()),
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(group) = group {
        let gid = resolve_group(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(BoundSocket {
        listener,
        path: Some(path.to_path_buf()),
    })
}

/// A group name or number to a gid.
fn resolve_group(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    // SAFETY: getgrnam with a valid C string, called once at start before
    // any other thread reads the group database; the result is copied out
    // at once.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named '{group}'"),
        ));
    }
    // SAFETY: non-null pointer returned by getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}

/// Accepts and serves connections until `shutdown` completes, then stops
/// accepting, lets every connection answer what it has in flight (at most
/// [`DRAIN_TIMEOUT`]), and returns.
pub async fn run(listener: &UnixListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let stop = CancellationToken::new();
    let connections = Arc::new(Semaphore::new(ctx.config().max_connections as usize));
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            ctx.metrics.connections_open.inc();
            transport::serve_connection(ctx.clone(), stream, stop).await;
            ctx.metrics.connections_open.dec();
            drop(permit);
        });
    }
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still busy after the drain timeout");
    }
}
