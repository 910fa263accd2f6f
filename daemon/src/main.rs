//! The `seqd` binary: configuration, logging, runtime, signals. Everything
//! else is in the library (`seqd::run`).

use clap::Parser;
use seqd::config::Config;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let log_reload = init_logging(&config.log);
    raise_fd_limit();

    // The accept loop and the background tasks; connections are served by
    // the shards' threads (`seqd::shards`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("seqd-main")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    // The handlers are installed inside the runtime, before anything else.
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        seqd::run(config, shutdown, Some(log_reload)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to journald when seqd runs under it (its stderr is the stream
/// `$JOURNAL_STREAM` names), otherwise to stderr. The level comes from
/// `RUST_LOG`, else `--log`/`SEQD_LOG`.
fn init_logging(level: &str) -> seqd::LogReload {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_new(std::env::var("RUST_LOG").unwrap_or_default())
        .ok()
        .filter(|_| std::env::var_os("RUST_LOG").is_some())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let journald = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_syslog_identifier("seqd".into())),
            Err(e) => {
                eprintln!("seqd: journald not reachable ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    // The filter sits behind a reload layer so SIGHUP can change it.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .init(),
    }
    Box::new(move |f: &str| {
        let next = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(next).map_err(|e| e.to_string())
    })
}

/// True when stderr is the journal stream systemd set up (`$JOURNAL_STREAM`
/// holds its `device:inode`), not merely inherited from a parent that had
/// one.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// Raises the soft open-files limit to the hard one: every client
/// connection is a descriptor, and --max-connections should be the limit
/// that bites, not a low default soft limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let soft = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(
                    from = soft,
                    to = lim.rlim_max,
                    "raised the open-files limit"
                );
            }
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now — before the socket is
/// bound, so a stop right after start drains instead of killing — and
/// returns a future that completes on either. (SIGHUP reloads;
/// `seqd::run` handles it.)
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop seqd with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    }
}
