//! systemd integration without a library: readiness and status
//! notifications over `$NOTIFY_SOCKET`, and watchdog keep-alives.
//!
//! Everything here is best effort and silent when seqd does not run under
//! systemd (`NOTIFY_SOCKET` unset): a failed notification never stops
//! seqd.

use crate::context::Context;
use crate::shards::Shards;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where notifications go, if anywhere.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = match p.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&p).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier { socket }
    }

    /// True when seqd runs under a service manager that listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification (`READY=1`, `STATUS=...`, `WATCHDOG=1`,
    /// `STOPPING=1`); lines may be joined with `\n`.
    pub fn notify(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }
}

/// The keep-alive interval systemd asks for: half of `$WATCHDOG_USEC`,
/// when `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The `STATUS=` text: mode, Redis and breaker.
pub async fn status_line(ctx: &Context) -> String {
    let health = ctx.sequences.health().await;
    let get = |k: &str| {
        health
            .iter()
            .find(|(n, _)| n == k)
            .map_or("-", |(_, v)| v.as_str())
            .to_string()
    };
    format!(
        "serving, mode {}, redis {}, breaker {}",
        ctx.sequences.mode(),
        get("redis"),
        get("breaker")
    )
}

/// Watchdog keep-alives at half systemd's interval, only while every
/// shard runs tasks (a stuck shard stops them), and `STATUS=` updates when
/// Redis or the breaker change; until `stop`.
pub async fn keep_alive(
    ctx: Arc<Context>,
    notifier: Arc<Notifier>,
    shards: Arc<Shards>,
    stop: CancellationToken,
) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = watchdog_interval();
    let every = watchdog
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let status = status_line(&ctx).await;
        let mut msg = String::new();
        if watchdog.is_some() && shards.all_answer(every).await {
            msg.push_str("WATCHDOG=1");
        }
        if status != last {
            if !msg.is_empty() {
                msg.push('\n');
            }
            msg.push_str("STATUS=");
            msg.push_str(&status);
            last = status;
        }
        if !msg.is_empty() {
            notifier.notify(&msg);
        }
    }
}
