//! The `seqd` binary: configuration, logging, runtime, signals. Everything
//! else is in the library (`seqd::run`).

use clap::Parser;
use seqd::config::Config;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(&config.log);
    raise_fd_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("seqd-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(seqd::run(config, shutdown_signal())) {
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
fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .or_else(|| EnvFilter::try_new(level).ok())
            .unwrap_or_else(|| EnvFilter::new("info"))
    };
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
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter())
            .with(layer)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init(),
    }
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

/// Completes on SIGTERM or SIGINT. SIGHUP (systemd's `ExecReload=`) must
/// never end seqd; until run-time reload exists it is logged and ignored.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::warn!("SIGHUP: run-time reload is not implemented yet; nothing changed");
            }
        });
    }
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop seqd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
