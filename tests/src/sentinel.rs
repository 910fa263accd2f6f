//! A Sentinel deployment of our own: a master, a replica, and three
//! sentinels (`redis-server --sentinel`) on free loopback ports, with quick
//! failure detection (1 s) so that failovers finish within seconds.

use crate::process::{free_port, kill_child, wait_until, STARTUP_DEADLINE};
use crate::redis_server::RedisServer;
use crate::resp::{resp, Reply};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The master's name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// How long a failover may take, detection included.
pub const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// One sentinel process.
pub struct SentinelProc {
    pub port: u16,
    /// The TLS port, when its extra configuration asked for one
    /// (`{tls_port}`).
    pub tls_port: Option<u16>,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SentinelProc {
    fn start(master_port: u16) -> SentinelProc {
        SentinelProc::start_with(master_port, 2, "")
    }

    /// A sentinel monitoring the master on `master_port` with `quorum`, and
    /// `extra` configuration lines, where `{tls_port}` becomes a free port.
    pub fn start_with(master_port: u16, quorum: u32, extra: &str) -> SentinelProc {
        // A free port can be taken between the probe and the bind; retry.
        for _ in 0..5 {
            if let Some(s) = SentinelProc::try_start(master_port, quorum, extra) {
                return s;
            }
        }
        panic!("could not start a sentinel");
    }

    fn try_start(master_port: u16, quorum: u32, extra: &str) -> Option<SentinelProc> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let tls_port = extra.contains("{tls_port}").then(free_port);
        let extra = extra.replace("{tls_port}", &tls_port.unwrap_or(0).to_string());
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n{extra}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 6000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let mut s = SentinelProc {
            port,
            tls_port,
            _dir: dir,
            child: Some(child),
        };
        let up = std::time::Instant::now();
        while up.elapsed() < STARTUP_DEADLINE {
            if s.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                s.child = None;
                return None;
            }
            if matches!(s.try_cmd(&["PING"]), Ok(Reply::Status(p)) if p == "PONG") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("sentinel on port {port} did not answer PING");
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        resp(&mut s, args)
    }

    /// The master's port as this sentinel sees it.
    pub fn master_port(&self) -> Option<u16> {
        match self.try_cmd(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) {
            Ok(Reply::Array(items)) if items.len() == 2 => match &items[1] {
                Reply::Bulk(p) => std::str::from_utf8(p).ok()?.parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    fn count(&self, what: &str) -> usize {
        match self.try_cmd(&["SENTINEL", what, MASTER_NAME]) {
            Ok(Reply::Array(items)) => items.len(),
            _ => 0,
        }
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A master, a replica and three sentinels.
pub struct SentinelGroup {
    /// The two data nodes; which one is the master changes with failovers.
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<SentinelProc>,
}

impl SentinelGroup {
    /// Starts everything and waits until the replica is in sync and every
    /// sentinel knows the replica and the other two sentinels (a failover
    /// needs both).
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(&[]);
        replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
        wait_until("the replica to sync", STARTUP_DEADLINE, || {
            info_field(&replica, "replication", "master_link_status").as_deref() == Some("up")
        });
        let sentinels: Vec<_> = (0..3).map(|_| SentinelProc::start(master.port)).collect();
        let group = SentinelGroup {
            nodes: vec![master, replica],
            sentinels,
        };
        wait_until(
            "the sentinels to know the replica and each other",
            FAILOVER_DEADLINE,
            || {
                group
                    .sentinels
                    .iter()
                    .all(|s| s.count("replicas") == 1 && s.count("sentinels") == 2)
            },
        );
        group
    }

    /// `--redis-sentinels` for seqd.
    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port, as the first sentinel that answers sees it.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(SentinelProc::master_port)
            .expect("a sentinel that names the master")
    }

    /// The data node serving as master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("the master is one of the nodes")
    }

    /// The data node index of the master now.
    pub fn master_index(&self) -> usize {
        let port = self.master_port();
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("the master is one of the nodes")
    }

    /// Waits until every sentinel names a master other than `old` and that
    /// node says it is a master; returns its port.
    pub fn wait_for_new_master(&self, old: u16) -> u16 {
        wait_until("a new master", FAILOVER_DEADLINE, || {
            self.sentinels
                .iter()
                .all(|s| s.master_port().is_some_and(|p| p != old))
        });
        let port = self.master_port();
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .expect("the new master is a node");
        wait_until("the new master to take writes", FAILOVER_DEADLINE, || {
            info_field(node, "replication", "role").as_deref() == Some("master")
        });
        port
    }

    /// `SENTINEL FAILOVER` (retried while the sentinel is not ready for
    /// it); returns the old master's port.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        wait_until(
            "SENTINEL FAILOVER to be accepted",
            FAILOVER_DEADLINE,
            || {
                matches!(
                    self.sentinels[0].try_cmd(&["SENTINEL", "FAILOVER", MASTER_NAME]),
                    Ok(Reply::Status(s)) if s == "OK"
                )
            },
        );
        old
    }
}

/// One field of `INFO <section>` (None when Redis does not answer).
pub fn info_field(r: &RedisServer, section: &str, field: &str) -> Option<String> {
    match r.try_cmd(&["INFO", section]) {
        Ok(Reply::Bulk(b)) => String::from_utf8_lossy(&b).lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        }),
        _ => None,
    }
}
