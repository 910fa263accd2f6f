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

/// A socket file seqd created, removed on drop.
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path`. If a file is there, connect first: a live
/// seqd answering means refuse to start; nothing answering means the file is
/// stale and is removed. The socket gets mode 0660.
pub fn bind(path: &Path) -> io::Result<BoundSocket> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
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
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Accepts and serves connections until `shutdown` completes, then stops
/// accepting, lets every connection answer what it has in flight (at most
/// [`DRAIN_TIMEOUT`]), and returns.
pub async fn run(listener: &UnixListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let stop = CancellationToken::new();
    let connections = Arc::new(Semaphore::new(ctx.config.max_connections as usize));
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
