//! The listening socket and the accept loop.
//!
//! Owns: binding the socket (with the stale-socket check), who gets a
//! connection slot, handing each connection to a shard
//! ([`crate::shards`]), and the drain on shutdown.
//!
//! # Slots
//!
//! A peer's credentials are checked right after `accept`, before a slot is
//! taken or a byte is read: a peer outside `--allow-uids`/`--allow-gids`,
//! or a uid that holds `--max-connections-per-uid` already, never holds a
//! slot (its refusal is written by a small task of its own, at most
//! [`MAX_REFUSING`] at once, each bounded by [`REFUSE_TIMEOUT`]). An
//! accepted peer then waits for one of `--max-connections` slots; while it
//! waits, the loop accepts nothing else.

use crate::context::Context;
use crate::failures::{Class, Level};
use crate::shards::Shards;
use crate::transport;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refusals being written at once; past it a refused peer is just closed.
pub const MAX_REFUSING: usize = 64;
/// How long a refused peer may take to send its first byte (which tells
/// the protocol its refusal is written in).
pub const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

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
pub async fn run(
    listener: &UnixListener,
    ctx: Arc<Context>,
    shards: &Shards,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let limit = connection_limit(ctx.config().max_connections as usize);
    ctx.metrics.connections_limit.set(limit as i64);
    let connections = Arc::new(Semaphore::new(limit));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let per_uid = Arc::new(PerPeer::default());
    let per_pid = Arc::new(PerPeer::default());
    let tracker = TaskTracker::new();
    let mut accept_failures = 0u32;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    accept_failures = 0;
                    stream
                }
                Err(e) => {
                    // EMFILE and friends: back off (up to a second) instead
                    // of spinning, and say so once per streak, not per try.
                    accept_failures += 1;
                    if accept_failures == 1 {
                        tracing::warn!(error = %e, "accept failed; backing off until it works again");
                    }
                    let wait = Duration::from_millis(50u64 << accept_failures.min(5));
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let config = ctx.config();
        let (uid, gid, pid) = match stream.peer_cred() {
            Ok(cred) => (Some(cred.uid()), Some(cred.gid()), cred.pid()),
            Err(_) => (None, None, None),
        };
        let allowed = match (uid, gid) {
            (Some(uid), Some(gid)) => {
                tracing::debug!(uid, gid, ?pid, "connection accepted");
                config.peer_allowed(uid, gid)
            }
            // Without credentials an allow-list cannot be honoured.
            _ => config.allow_uids.is_empty() && config.allow_gids.is_empty(),
        };
        if !allowed {
            let class = Class {
                what: "connection",
                why: "not_allowed",
            };
            let why = format!("peer uid {uid:?} is not in the allow-list");
            ctx.failures.failed(class, Level::Info, &why);
            refuse(&tracker, &refusing, stream, transport::Refusal::NotAllowed);
            continue;
        }
        let slots = match take_peer_slots(&per_pid, &per_uid, pid, uid, &config) {
            Ok(slots) => slots,
            Err((why, who, limit)) => {
                let class = Class {
                    what: "connection",
                    why: "peer_limit",
                };
                let because = format!(
                    "the {who} (pid {pid:?}, uid {uid:?}) holds its limit of {limit} connections"
                );
                ctx.failures.failed(class, Level::Info, &because);
                refuse(&tracker, &refusing, stream, why);
                continue;
            }
        };
        drop(config);
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        // Handed to a shard for good: the socket leaves this thread's
        // reactor and joins the shard's.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a shard");
                continue;
            }
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        shards.spawn(tracker.track_future(async move {
            let stream = match UnixStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "a shard cannot take a connection");
                    return;
                }
            };
            ctx.metrics.connections_open.inc();
            transport::serve_connection(ctx.clone(), stream, stop).await;
            ctx.metrics.connections_open.dec();
            drop(permit);
            drop(slots);
        }));
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

/// Descriptors kept for everything but client connections: the store,
/// Redis connections, the listener, refusals being written, logs.
const RESERVED_FDS: usize = 32 + MAX_REFUSING;

/// The connections seqd can really hold: `--max-connections`, or fewer
/// when the open-files limit (already raised to its hard limit at start)
/// would run out first — then `accept` would fail with `EMFILE` instead.
/// Logged once at start.
fn connection_limit(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    let nofile = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => lim.rlim_cur as usize,
        _ => usize::MAX,
    };
    let effective = configured.min(nofile.saturating_sub(RESERVED_FDS)).max(1);
    if effective < configured {
        tracing::warn!(
            effective,
            max_connections = configured,
            open_files_limit = nofile,
            "the open-files limit allows fewer connections than --max-connections; \
             serving at most {effective} (raise LimitNOFILE= to serve more)"
        );
    } else {
        tracing::info!(
            max_connections = effective,
            open_files_limit = nofile,
            "connection limit"
        );
    }
    effective
}

/// Writes a refusal without taking a connection slot, if fewer than
/// [`MAX_REFUSING`] are being written; otherwise just closes.
fn refuse(
    tracker: &TaskTracker,
    refusing: &Arc<Semaphore>,
    stream: tokio::net::UnixStream,
    why: transport::Refusal,
) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tracker.spawn(async move {
        transport::refuse(stream, why, REFUSE_TIMEOUT).await;
        drop(permit);
    });
}

/// A connection's places under the per-process and the per-uid caps, or
/// the refusal, whose cap it is and its limit. The process is asked
/// first: a process over its share is told so even when its uid is over
/// its own limit too.
fn take_peer_slots(
    per_pid: &Arc<PerPeer>,
    per_uid: &Arc<PerPeer>,
    pid: Option<i32>,
    uid: Option<u32>,
    config: &crate::config::Config,
) -> Result<[Option<PeerSlot>; 2], (transport::Refusal, &'static str, u32)> {
    let pid_limit = config.max_connections_per_pid;
    let Some(pid_slot) = per_pid.take(pid.map(|p| p as u32), pid_limit as usize) else {
        return Err((
            transport::Refusal::TooManyForPid(pid_limit),
            "process",
            pid_limit,
        ));
    };
    let uid_limit = config.max_connections_per_uid;
    let Some(uid_slot) = per_uid.take(uid, uid_limit as usize) else {
        return Err((
            transport::Refusal::TooManyForUid(uid_limit),
            "uid",
            uid_limit,
        ));
    };
    Ok([pid_slot, uid_slot])
}

/// Connections held per peer uid, or per peer pid.
#[derive(Default)]
struct PerPeer {
    /// A `std::sync::Mutex`: held for a count update, never across an await.
    counts: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
}

/// One connection of a uid or pid; gives the count back when dropped.
struct PeerSlot {
    per_peer: Arc<PerPeer>,
    id: u32,
}

impl PerPeer {
    /// A slot for `id` if it holds fewer than `limit` (peers without
    /// credentials are not counted).
    fn take(self: &Arc<Self>, id: Option<u32>, limit: usize) -> Option<Option<PeerSlot>> {
        let Some(id) = id else {
            return Some(None);
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(id).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(PeerSlot {
            per_peer: self.clone(),
            id,
        }))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .per_peer
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.id);
            }
        }
    }
}
