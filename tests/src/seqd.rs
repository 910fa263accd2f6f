//! A `seqd` process of our own on a socket in a temp dir; it can be killed
//! with SIGKILL and restarted on the same store.

use crate::process::{kill_child, signal, workspace_bin, STARTUP_DEADLINE};
use crate::redis_server::RedisServer;
use crate::text::TextConn;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `seqd` command in local mode on `socket` and `data_dir` (the test's
/// own `REDIS_*` variables removed), for tests that run it by hand.
pub fn seqd_command(socket: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new(workspace_bin("seqd"));
    cmd.arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST");
    cmd
}

/// The host id every test seqd gets unless its options say otherwise.
pub const TEST_HOST_ID: u16 = 7;

/// How a seqd is started.
#[derive(Debug, Clone, Default)]
pub struct SeqdOptions {
    /// `REDIS_URL`; `None` = local mode.
    pub redis_url: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra flags.
    pub args: Vec<String>,
    /// The data directory; `None` = `data` in the test's temp dir.
    pub data_dir: Option<PathBuf>,
}

impl SeqdOptions {
    pub fn local() -> Self {
        SeqdOptions::default()
    }

    pub fn redis(r: &RedisServer) -> Self {
        SeqdOptions {
            redis_url: Some(r.url()),
            ..SeqdOptions::default()
        }
    }

    /// These options with the data directory in `dir` (`data` below it).
    pub fn on_disk(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.join("data"));
        self
    }

    /// These options with more flags.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }
}

/// A `seqd` process of our own.
pub struct Seqd {
    pub dir: tempfile::TempDir,
    pub options: SeqdOptions,
    child: Option<Child>,
    log: PathBuf,
}

impl Seqd {
    pub fn start(options: SeqdOptions) -> Seqd {
        Seqd::launch(options, true)
    }

    /// Starts seqd and waits only for its socket to accept connections
    /// (for configurations that refuse the test's own requests).
    pub fn start_unchecked(options: SeqdOptions) -> Seqd {
        Seqd::launch(options, false)
    }

    fn launch(options: SeqdOptions, ping: bool) -> Seqd {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("seqd.log");
        let mut seqd = Seqd {
            dir,
            options,
            child: None,
            log,
        };
        seqd.spawn_with(ping);
        seqd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("seqd.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.options
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    fn spawn(&mut self) {
        self.spawn_with(true)
    }

    /// Starts the process; `ping` waits for `OK pong`, else for a connect.
    fn spawn_with(&mut self, ping: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // The test's own environment must not pick the mode.
        let mut cmd = seqd_command(&self.socket(), &self.data_dir());
        cmd.args(&self.options.args)
            .env("SEQD_LOG", "info")
            // A known host id, so replies can be compared whole.
            .env("SEQD_HOST_ID", TEST_HOST_ID.to_string())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(url) = &self.options.redis_url {
            cmd.env("REDIS_URL", url);
        }
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning seqd");
        self.child = Some(child);
        let socket = self.socket();
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "seqd exited at start with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(mut s) = UnixStream::connect(&socket) {
                if !ping {
                    return;
                }
                if s.write_all(b"PING\n").is_ok() {
                    let mut line = String::new();
                    if BufReader::new(&s).read_line(&mut line).is_ok() && line == "OK pong\n" {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < STARTUP_DEADLINE,
                "seqd did not come up; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("seqd running").id()
    }

    /// How the process ended, when it has (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL: no drain, no flush, no socket cleanup.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts again with the same socket path, data dir and options.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again after [`Seqd::kill9`], with the same socket path, data
    /// dir and options.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("seqd running");
        signal(c.id(), libc::SIGTERM);
        c.wait().expect("waiting for seqd")
    }

    /// Waits for the process to end by itself; its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("seqd running");
        c.wait().expect("waiting for seqd")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A binary connection that said hello with protocol `version`, by
    /// hand (for tests that write frames themselves).
    pub fn raw_binary(&self, version: u32, client: &str) -> UnixStream {
        use seqd_client::seqd_protocol::{codec, ClientMessage, ServerMessage};
        let mut s = UnixStream::connect(self.socket()).unwrap();
        let hello = ClientMessage::Hello {
            version,
            client: client.into(),
        };
        codec::write_frame(&mut s, &hello, 1 << 20).unwrap();
        let answer: ServerMessage = codec::read_frame(&mut s, 1 << 20).unwrap();
        assert!(matches!(answer, ServerMessage::Hello { .. }), "{answer:?}");
        s
    }

    /// A binary-protocol client.
    pub fn client(&self) -> seqd_client::Client {
        seqd_client::Client::connect(self.socket()).expect("connecting to seqd")
    }

    /// A text-protocol connection.
    /// The value of the metric whose line starts with `line_start` (0 when
    /// absent), from `METRICS`.
    pub fn metric(&self, line_start: &str) -> u64 {
        let text = self.client().metrics().expect("METRICS");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().expect("a number") as u64)
    }

    pub fn text(&self) -> TextConn {
        TextConn::connect(&self.socket())
    }
}

impl Drop for Seqd {
    fn drop(&mut self) {
        self.kill9();
        // A failed test shows what seqd said last.
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- the last lines of seqd's log:\n{}", tail.join("\n"));
        }
    }
}

/// A redis-server and a seqd in Redis mode on it, with `extra` flags.
pub fn redis_seqd(extra: &[&str]) -> (RedisServer, Seqd) {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions {
        args: extra.iter().map(|s| s.to_string()).collect(),
        ..SeqdOptions::redis(&redis)
    });
    (redis, seqd)
}
