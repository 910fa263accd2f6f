//! Test harness: real `redis-server` and real `seqd` processes.
//!
//! - [`RedisServer`] runs `redis-server` on a free loopback port in a temp
//!   dir (never 6379), and can kill, hang (SIGSTOP), resume and restart it.
//! - [`Seqd`] runs the `seqd` binary on a socket in a temp dir, and can kill
//!   it with SIGKILL and restart it on the same store.
//! - [`resp`] is a minimal RESP client, so tests inspect Redis directly.
//!
//! Every wait polls a condition with a deadline; nothing sleeps in place of
//! a condition. Processes are killed when their handle drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any wait for a process to come up may take.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Path of a binary built by this workspace (`seqd`, `seqctl`), next to the
/// test executable's `deps` directory; `SEQD_BIN_DIR` overrides.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SEQD_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile>")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --workspace --all-features --bins`",
        path.display()
    );
    path
}

/// SIGKILL and reap a child we spawned, if it is running.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

// ---------------------------------------------------------------- Redis ---

/// A `redis-server` of our own on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a Redis without persistence: a restart loses everything.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        // A free port can be taken between the probe and the bind; retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
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

    fn pid(&self) -> u32 {
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
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
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

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn as_int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }
}

/// Sends one command as a RESP array and reads one reply.
pub fn resp(s: &mut TcpStream, args: &[&str]) -> std::io::Result<Reply> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out)?;
    read_reply(&mut BufReader::new(s))
}

fn read_reply<R: BufRead>(r: &mut R) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let body = line.trim_end_matches("\r\n");
    let (kind, rest) = body.split_at(1);
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(rest.parse().unwrap()),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Reply::Nil
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(buf)
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                Reply::Nil
            } else {
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(items)
            }
        }
        _ => panic!("unexpected RESP line {line:?}"),
    })
}

// ----------------------------------------------------------------- seqd ---

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

/// How a seqd is started.
#[derive(Debug, Clone, Default)]
pub struct SeqdOptions {
    /// `REDIS_URL`; `None` = local mode.
    pub redis_url: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra flags.
    pub args: Vec<String>,
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
        self.dir.path().join("data")
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

    /// SIGKILL: no drain, no flush, no socket cleanup.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts again with the same socket path, data dir and options.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("seqd running");
        signal(c.id(), libc::SIGTERM);
        c.wait().expect("waiting for seqd")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A binary-protocol client.
    pub fn client(&self) -> seqd_client::Client {
        seqd_client::Client::connect(self.socket()).expect("connecting to seqd")
    }

    /// A text-protocol connection.
    pub fn text(&self) -> TextConn {
        TextConn::connect(&self.socket())
    }
}

impl Drop for Seqd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A text-protocol connection: write lines, read reply lines.
pub struct TextConn {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl TextConn {
    pub fn connect(path: &Path) -> TextConn {
        let s = UnixStream::connect(path).expect("connecting to seqd");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TextConn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("writing to seqd");
    }

    /// Reads one reply line, without its `\n`.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading from seqd");
        assert!(line.ends_with('\n'), "connection closed; got {line:?}");
        line.pop();
        line
    }

    /// Sends one command line and reads its one-line reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        self.read_line()
    }
}

/// The value of `name` in an `OK k=v ...` reply.
pub fn field<'a>(reply: &'a str, name: &str) -> &'a str {
    seqd_protocol::text::parse_ok_fields(reply)
        .unwrap_or_else(|| panic!("not an OK reply: {reply}"))
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no {name}= in {reply}"))
        .1
}

/// `seq=` of an `OK` reply as a number.
pub fn seq_of(reply: &str) -> u64 {
    field(reply, "seq").parse().expect("seq is a number")
}

/// Asserts that `numbers` hold no duplicate; returns them sorted.
pub fn assert_unique(what: &str, numbers: &[u64]) -> Vec<u64> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert_ne!(w[0], w[1], "{what}: {} was issued twice", w[0]);
    }
    sorted
}

/// Asserts that a sequence is strictly increasing.
pub fn assert_strictly_increasing(what: &str, numbers: &[u64]) {
    for w in numbers.windows(2) {
        assert!(w[0] < w[1], "{what}: {} came after {}", w[1], w[0]);
    }
}

/// Today's date (YYYYMMDD) in `tz`, for replies without `at=`.
pub fn today_in(tz: &str) -> u32 {
    let tz: chrono_tz::Tz = tz.parse().unwrap();
    chrono::Utc::now()
        .with_timezone(&tz)
        .format("%Y%m%d")
        .to_string()
        .parse()
        .unwrap()
}

// ----------------------------------------------------------------- load ---

/// The keys a [`Load`] spreads over: daily and conversation counters.
pub const LOAD_KEYS: [&str; 4] = ["daily:alice", "daily:bob", "group:g1", "private:x:y"];

/// One `NEXT` for a [`LOAD_KEYS`] key.
pub fn next_for(
    c: &mut seqd_client::Client,
    key: &str,
) -> Result<seqd_client::ConvSeq, seqd_client::ClientError> {
    // A fixed instant keeps daily keys on one day for the whole test.
    let at = Some(1_767_724_199_000);
    let daily = |d: seqd_client::DailySeq| seqd_client::ConvSeq {
        seq: d.seq,
        source: d.source,
    };
    match key {
        "daily:alice" => c.daily_next("alice", Some("UTC"), at).map(daily),
        "daily:bob" => c.daily_next("bob", Some("Asia/Kolkata"), at).map(daily),
        "group:g1" => c.group_next("g1"),
        "private:x:y" => c.private_next("y", "x"),
        other => panic!("unknown load key {other}"),
    }
}

/// The Redis key behind a [`LOAD_KEYS`] key.
pub fn redis_key_of(key: &str) -> &'static str {
    match key {
        "daily:alice" => "user:alice:sequence:20260106",
        "daily:bob" => "user:bob:sequence:20260106",
        "group:g1" => "seq:group:g1",
        "private:x:y" => "seq:private:x:y",
        other => panic!("unknown load key {other}"),
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Every number that got a reply, per key.
    pub issued: std::collections::HashMap<&'static str, Vec<u64>>,
    /// Replies per source (`redis`, `local`).
    pub by_source: std::collections::HashMap<&'static str, usize>,
    /// The slowest reply.
    pub slowest: Duration,
}

impl LoadResult {
    pub fn max(&self, key: &str) -> u64 {
        self.issued
            .get(key)
            .and_then(|v| v.iter().copied().max())
            .unwrap_or(0)
    }

    pub fn min(&self, key: &str) -> u64 {
        self.issued
            .get(key)
            .and_then(|v| v.iter().copied().min())
            .unwrap_or(0)
    }
}

/// `clients` connections issuing `NEXT` back to back over [`LOAD_KEYS`].
/// Any error reply fails the test. A broken connection ends that client
/// only when `until_disconnect` (the test kills seqd); otherwise it fails
/// the test too. Each connection's numbers per key must be strictly
/// increasing.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<LoadResult>>,
}

impl Load {
    pub fn start(seqd: &Seqd, clients: usize, until_disconnect: bool) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let mut c = seqd.client();
                let (stop, answered) = (stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut r = LoadResult::default();
                    'outer: while !stop.load(Ordering::Relaxed) {
                        for k in 0..LOAD_KEYS.len() {
                            let key = LOAD_KEYS[(i + k) % LOAD_KEYS.len()];
                            let started = Instant::now();
                            match next_for(&mut c, key) {
                                Ok(s) => {
                                    r.slowest = r.slowest.max(started.elapsed());
                                    r.issued.entry(key).or_default().push(s.seq);
                                    *r.by_source.entry(s.source.as_str()).or_default() += 1;
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(seqd_client::ClientError::Server(e)) => {
                                    panic!("client {i}: error reply {e}")
                                }
                                Err(e) if until_disconnect => {
                                    let _ = e;
                                    break 'outer;
                                }
                                Err(e) => panic!("client {i}: {e}"),
                            }
                        }
                    }
                    for (key, nums) in &r.issued {
                        assert_strictly_increasing(&format!("{key} on connection {i}"), nums);
                    }
                    r
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    pub fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` further replies arrived (from now).
    pub fn wait_for(&self, more: usize, what: &str) {
        let target = self.answered() + more;
        wait_until(what, Duration::from_secs(60), || self.answered() >= target);
    }

    /// Stops the clients and merges what they saw; asserts that no number
    /// was issued twice for any key.
    pub fn finish(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadResult::default();
        for t in self.threads {
            let r = t.join().expect("load client");
            for (k, v) in r.issued {
                all.issued.entry(k).or_default().extend(v);
            }
            for (s, n) in r.by_source {
                *all.by_source.entry(s).or_default() += n;
            }
            all.slowest = all.slowest.max(r.slowest);
        }
        for (key, nums) in &all.issued {
            assert_unique(key, nums);
        }
        all
    }
}

/// Asserts no number of `before` reappears in `after`, per key, and that
/// every number after is above every number before.
pub fn assert_continues(before: &LoadResult, after: &LoadResult) {
    for key in LOAD_KEYS {
        let (b, a) = (before.max(key), after.min(key));
        assert!(
            after.issued.contains_key(key),
            "{key}: nothing issued in the second phase"
        );
        assert!(a > b, "{key}: {a} issued after {b}");
        let mut all = before.issued.get(key).cloned().unwrap_or_default();
        all.extend(after.issued.get(key).cloned().unwrap_or_default());
        assert_unique(key, &all);
    }
}
