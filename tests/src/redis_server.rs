//! A `redis-server` of our own on a free loopback port (never 6379), in a
//! temp dir; it can be killed, hung (SIGSTOP), resumed and restarted.

use crate::process::{free_port, kill_child, signal, STARTUP_DEADLINE};
use crate::resp::{resp, Reply};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments (replication, TLS, cluster).
    extra: Vec<String>,
    /// The port `PING` is checked on when it is not `port` (TLS-only).
    plain_port: Option<u16>,
}

impl RedisServer {
    /// Starts a Redis without persistence: a restart loses everything.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a Redis with extra arguments; `{port}` and `{dir}` in them
    /// are replaced by its port and directory.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            plain_port: None,
        };
        // A cluster node also binds its bus on port + 10000.
        let cluster = extra.contains(&"--cluster-enabled");
        // A free port can be taken between the probe and the bind; retry.
        for _ in 0..5 {
            server.port = free_port();
            while cluster && server.port >= 55000 {
                server.port = free_port();
            }
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    /// A Redis serving TLS on `port` (with the given certificate files)
    /// and plain TCP on a second port, which the harness's own commands
    /// use.
    pub fn start_tls(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            extra: vec![
                "--tls-ca-cert-file".into(),
                ca.display().to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "optional".into(),
            ],
            plain_port: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            server.plain_port = Some(free_port());
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server with TLS");
    }

    /// The directory Redis runs in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The port the harness's plain commands go to.
    fn command_port(&self) -> u16 {
        self.plain_port.unwrap_or(self.port)
    }

    fn spawn(&mut self) -> bool {
        let dir = self.dir.path().display().to_string();
        let mut cmd = Command::new("redis-server");
        match self.plain_port {
            Some(plain) => cmd
                .args(["--port", &plain.to_string()])
                .args(["--tls-port", &self.port.to_string()]),
            None => cmd.args(["--port", &self.port.to_string()]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(self.extra.iter().map(|a| {
                a.replace("{port}", &self.port.to_string())
                    .replace("{dir}", &dir)
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test script installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < STARTUP_DEADLINE {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status;
                self.child = None;
                return false;
            }
            if matches!(self.try_cmd(&["PING"]), Ok(Reply::Status(s)) if s == "PONG") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server running").id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts again on the same port (with no data: nothing was persisted).
    pub fn restart(&mut self) {
        self.kill9();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// SIGSTOP: Redis keeps its connections open but answers nothing.
    pub fn hang(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`RedisServer::hang`].
    pub fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.command_port()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        resp(&mut s, args)
    }

    /// Runs one command; panics if Redis cannot be reached.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        self.try_cmd(args).expect("redis command")
    }

    /// `GET key` as bytes (None when the key is missing).
    pub fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        match self.cmd(&["GET", key]) {
            Reply::Nil => None,
            Reply::Bulk(b) => Some(b),
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// `GET key` as a number (None when the key is missing).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.cmd(&["GET", key]) {
            Reply::Nil => None,
            Reply::Bulk(b) => Some(String::from_utf8(b).unwrap().parse().unwrap()),
            other => panic!("GET {key}: {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (hung) process too.
        self.kill9();
    }
}
