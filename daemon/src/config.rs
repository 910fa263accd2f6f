//! Configuration: flags, each with an environment variable (the flag wins).

use crate::redis::target::{parse_nodes, parse_url, Endpoint, TlsFiles, TlsSettings, Topology};
use crate::redis::{BreakerConfig, RedisTarget};
use crate::sequences::{Fallback, FallbackPolicy};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// `--version`: seqd's version and the protocol versions it speaks.
fn version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| seqd_protocol::version_text(env!("CARGO_PKG_VERSION")));
    &TEXT
}

/// seqd: a per-host sidecar that hands out sequence numbers that never repeat.
///
/// With no Redis configured (neither --redis-url/REDIS_URL nor REDIS_HOST)
/// seqd runs in local mode from its SQLite store.
#[derive(Debug, Clone, Parser)]
#[command(name = "seqd", version = version(), about, long_about = None)]
pub struct Config {
    /// The Unix socket to listen on.
    #[arg(long, env = "SEQD_SOCKET", default_value = "/run/seqd/seqd.sock")]
    pub socket: PathBuf,

    /// Directory of the SQLite store `seqd.db` (created if missing).
    #[arg(long, env = "SEQD_DATA_DIR", default_value = "/var/lib/seqd")]
    pub data_dir: PathBuf,

    /// Redis URL, e.g. redis://:pw@host:6379/0. Wins over REDIS_HOST & co.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis host, used when no URL is given.
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,

    /// Redis port, used with REDIS_HOST.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Redis password, used with REDIS_HOST.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Redis database number, used with REDIS_HOST and with Sentinel.
    #[arg(long, env = "REDIS_DB", default_value_t = 0)]
    pub redis_db: i64,

    /// ACL user of the Redis data nodes (with --redis-password), for
    /// --redis-host, Sentinel and Cluster. A URL carries its own.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Sentinels watching the master (HOST:PORT, comma-separated): seqd
    /// asks them where the master is and follows failovers. Excludes
    /// --redis-url, --redis-host and --redis-cluster.
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// The master's name in Sentinel (`sentinel monitor <name> …`).
    #[arg(long, env = "REDIS_MASTER_NAME", default_value = "mymaster")]
    pub redis_master_name: String,

    /// The sentinels' own password (their `requirepass`), if any; the data
    /// nodes' is --redis-password.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,

    /// Seed nodes of a Redis Cluster (HOST:PORT, comma-separated); the
    /// rest of the cluster is discovered from them. Excludes the other
    /// topologies.
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster: Option<String>,

    /// Speak TLS to Redis (and to the sentinels) for --redis-host,
    /// --redis-sentinels and --redis-cluster; a rediss:// URL implies it.
    #[arg(long, env = "REDIS_TLS")]
    pub redis_tls: bool,

    /// CA certificates (PEM) that sign Redis's certificates. Without it,
    /// the system's trust store.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for Redis's `tls-auth-clients`; with
    /// --redis-key-file.
    #[arg(long, env = "REDIS_CERT_FILE")]
    pub redis_cert_file: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, env = "REDIS_KEY_FILE")]
    pub redis_key_file: Option<PathBuf>,

    /// Replicas that must acknowledge each increment (`WAIT`, once per
    /// pipelined write batch) before a NEXT is answered from Redis; when
    /// they do not in time, the request falls back (or is refused) per
    /// --fallback-*. 0 = off: a failover may then hand out again, to
    /// another host, numbers this host already issued (see
    /// docs/deployments.md, "What a failover can repeat").
    #[arg(long, env = "SEQD_REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub redis_wait_replicas: u32,

    /// Threads that serve connections. Each shard owns the connections
    /// handed to it at accept and its own Redis connections, so a request
    /// is read, sent to Redis and answered on one thread. 0 = one per core
    /// seqd may run on.
    #[arg(long, env = "SEQD_SHARDS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    pub shards: u32,

    /// Redis connections per shard. Each one pipelines the requests of
    /// the shard's clients into shared writes, so one is enough (larger
    /// writes, fewer reads: less Redis CPU per number).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub redis_pool_size: u32,

    /// Numbers reserved on disk above each key's mark. A number up to the
    /// reserved ceiling is answered after a plain WAL write (safe against
    /// `kill -9`); crossing it costs one fsync, which covers power loss.
    /// After a power loss or reboot without a clean stop, each key goes on
    /// above its ceiling, skipping at most this many numbers. 0 = an fsync
    /// for every new number.
    #[arg(long, env = "SEQD_MARK_RESERVE", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub mark_reserve: u64,

    /// Most high-water marks kept in memory (about 250 bytes each). Every
    /// mark is on disk; one not in memory is read from there when its key
    /// is next used, inside the commit its number waits for anyway. Keys
    /// pending reconciliation and keys in use are never evicted.
    #[arg(long, env = "SEQD_MARKS_IN_MEMORY", default_value_t = crate::store::DEFAULT_MARKS_IN_MEMORY as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub marks_in_memory: u64,

    /// Days around today, in the request's zone, whose daily counter
    /// accepts DAILY NEXT (1: yesterday, today and tomorrow). A counter
    /// lives until its day's window has closed, so a day is never counted
    /// from 1 twice; NEXT for a day outside it is invalid_argument.
    #[arg(long, env = "SEQD_DAILY_WINDOW_DAYS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=366))]
    pub daily_window_days: u32,

    /// This host's id (0-65535), carried by every number issued from the
    /// local store in Redis mode (`source=local host=<id>`), so that
    /// `(host, number)` never repeats across a fleet. Default: derived
    /// from /etc/machine-id (logged at start); set it explicitly to be
    /// sure two hosts differ.
    #[arg(long, env = "SEQD_HOST_ID")]
    pub host_id: Option<u16>,

    /// What DAILY NEXT does when Redis cannot answer: `local` answers from
    /// this host's store (host-tagged; unique per host, not per fleet),
    /// `refuse` answers `unavailable` and issues nothing (unique per
    /// fleet, not always answering).
    #[arg(long, env = "SEQD_FALLBACK_DAILY", default_value_t = Fallback::Local)]
    pub fallback_daily: Fallback,

    /// The same choice for CONV NEXT.
    #[arg(long, env = "SEQD_FALLBACK_CONV", default_value_t = Fallback::Local)]
    pub fallback_conv: Fallback,

    /// Time limit of one Redis operation, in milliseconds (connecting
    /// included). An operation over it fails as a timeout.
    #[arg(long, env = "SEQD_REDIS_TIMEOUT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// Consecutive Redis transport failures or timeouts that open the
    /// circuit breaker (requests are then answered from the local store).
    #[arg(long, env = "SEQD_BREAKER_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_threshold: u32,

    /// Real writes Redis must serve while the breaker is half-open before
    /// it closes (and the most sent at once); every other request is
    /// answered without Redis meanwhile. With no request to try, seqd's
    /// own write check stands in for one.
    #[arg(long, env = "SEQD_BREAKER_TRIALS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub breaker_trials: u32,

    /// First wait before probing Redis after the breaker opened, in
    /// milliseconds; it doubles after each failed probe (with jitter).
    #[arg(long, env = "SEQD_PROBE_BASE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub probe_base_ms: u64,

    /// Longest wait between probes, in milliseconds.
    #[arg(long, env = "SEQD_PROBE_MAX_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub probe_max_ms: u64,

    /// Interval of the health check (PING and a write that changes
    /// nothing) while the breaker is closed, in
    /// milliseconds (it also retries pending reconciliation).
    #[arg(long, env = "SEQD_HEALTH_INTERVAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub health_interval_ms: u64,

    /// Most gap-tracker streams held in memory (local mode and fallback;
    /// in Redis mode Redis holds any number). Streams idle for 7 days are
    /// forgotten.
    #[arg(long, env = "SEQD_MAX_STREAMS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_streams: u64,

    /// Largest cache value, in bytes (SET of more is too_large). A binary
    /// frame also carries the key and about 50 bytes of framing, so values
    /// near --max-frame need a larger --max-frame.
    #[arg(long, env = "SEQD_MAX_VALUE", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=268_435_456))]
    pub max_value: u64,

    /// Memory for the local-mode cache, in bytes; least recently used
    /// entries are evicted past it.
    #[arg(long, env = "SEQD_LOCAL_CACHE_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub local_cache_bytes: u64,

    /// Most cache invalidations waiting for Redis. Past it they collapse
    /// into one invalidation of every cache key of the Redis database
    /// (the counter families excepted): correct, only coarser.
    #[arg(long, env = "SEQD_MAX_OUTBOX", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_outbox: u64,

    /// Most events in one gap batch.
    #[arg(long, env = "SEQD_MAX_BATCH", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_batch: u32,

    /// Most keys in one cache request (get-many, set-many, del): a small
    /// request must not fan out into a huge reply or a long Redis call.
    /// A get-many whose values would not fit one frame is too_large too.
    #[arg(long, env = "SEQD_MAX_KEYS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_keys: u32,

    /// IANA zone for daily sequences when a request names none.
    #[arg(long, env = "SEQD_DEFAULT_TZ", default_value = "UTC")]
    pub default_tz: String,

    /// Largest binary frame payload accepted, in bytes (at most 256 MiB).
    #[arg(long, env = "SEQD_MAX_FRAME", default_value_t = seqd_protocol::DEFAULT_MAX_FRAME,
          value_parser = parse_max_frame)]
    pub max_frame: usize,

    /// Longest text-protocol line accepted, in bytes.
    #[arg(long, env = "SEQD_MAX_LINE", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(64..=268_435_456))]
    pub max_line: u32,

    /// Most client connections served at once; more wait to be accepted.
    #[arg(long, env = "SEQD_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Connections one uid may hold at once (peer credentials): one
    /// runaway process cannot take every slot. Past it, a connection gets
    /// `unavailable` and is closed.
    #[arg(long, env = "SEQD_MAX_CONNECTIONS_PER_UID", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_uid: u32,

    /// Connections one process may hold at once (its pid, from the peer
    /// credentials): a runaway process cannot starve the other processes
    /// of its own uid, the usual case on a host where every application
    /// runs as one user. Past it, a connection gets `unavailable` and is
    /// closed.
    #[arg(long, env = "SEQD_MAX_CONNECTIONS_PER_PID", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_pid: u32,

    /// Bytes of client frames all connections together may hold while
    /// they arrive and while their requests run. A connection whose next
    /// frame does not fit stops reading until others give bytes back; a
    /// frame larger than all of it is too_large. With --max-frame 8 MiB,
    /// 256 MiB lets 32 maximal frames be in flight at once.
    #[arg(long, env = "SEQD_MAX_BUFFERED_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_buffered_bytes: u64,

    /// Most requests in flight on one binary connection; further requests
    /// wait until one completes (backpressure on that client only).
    #[arg(long, env = "SEQD_MAX_INFLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inflight: u32,

    /// Time a new connection has to send its first byte (text) or complete
    /// its hello (binary), in milliseconds.
    #[arg(long, env = "SEQD_HANDSHAKE_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_ms: u64,

    /// Close a connection that sent nothing (and has nothing in flight)
    /// for this long, in milliseconds; 0 = never. The client crate
    /// reconnects by itself.
    #[arg(long, env = "SEQD_IDLE_TIMEOUT_MS", default_value_t = 3_600_000)]
    pub idle_timeout_ms: u64,

    /// Group of the socket seqd binds (a name or a number); the socket is
    /// mode 0660, so members of this group may connect. Unset: seqd's own
    /// group. (With socket activation, seqd.socket's SocketGroup= decides.)
    #[arg(long, env = "SEQD_SOCKET_GROUP")]
    pub socket_group: Option<String>,

    /// Also serve `GET /metrics` over HTTP on this loopback address (e.g.
    /// 127.0.0.1:9187) for Prometheus. Off when unset.
    #[arg(long, env = "SEQD_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Peer user ids allowed to connect (comma-separated). With neither
    /// this nor --allow-gids, every peer that can open the socket may use
    /// seqd. The list is exact: add 0 to allow root.
    #[arg(long, env = "SEQD_ALLOW_UIDS", value_delimiter = ',')]
    pub allow_uids: Vec<u32>,

    /// Peer group ids allowed to connect (comma-separated); a peer passes
    /// when its uid or its primary gid is listed.
    #[arg(long, env = "SEQD_ALLOW_GIDS", value_delimiter = ',')]
    pub allow_gids: Vec<u32>,

    /// The environment file seqd re-reads on SIGHUP (the one systemd's
    /// EnvironmentFile= loads at start). Without it, SIGHUP changes nothing.
    #[arg(long, env = "SEQD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log filter (tracing's env-filter syntax); RUST_LOG wins when set.
    #[arg(long, env = "SEQD_LOG", default_value = "info")]
    pub log: String,
}

fn parse_max_frame(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(64..=seqd_protocol::MAX_FRAME_CEILING).contains(&n) {
        return Err(format!(
            "must be between 64 and {} bytes",
            seqd_protocol::MAX_FRAME_CEILING
        ));
    }
    Ok(n)
}

impl Config {
    /// The fallback of each sequence family.
    pub fn fallback(&self) -> FallbackPolicy {
        FallbackPolicy {
            daily: self.fallback_daily,
            conv: self.fallback_conv,
        }
    }

    /// This host's id and where it came from (`--host-id`, the machine id,
    /// or `0` when neither is there).
    pub fn host(&self) -> (u16, &'static str) {
        if let Some(id) = self.host_id {
            return (id, "--host-id");
        }
        match std::fs::read_to_string("/etc/machine-id") {
            Ok(id) if !id.trim().is_empty() => (host_from_machine_id(id.trim()), "/etc/machine-id"),
            _ => (0, "default (no --host-id, no /etc/machine-id)"),
        }
    }

    /// Where Redis is; `Ok(None)` means local mode. Exactly one topology
    /// may be configured; TLS files are read and checked here, at start.
    pub fn redis_target(&self) -> Result<Option<RedisTarget>, String> {
        let given = |o: &Option<String>| o.as_ref().filter(|v| !v.trim().is_empty()).cloned();
        let (url, host) = (given(&self.redis_url), given(&self.redis_host));
        let (sentinels, cluster) = (given(&self.redis_sentinels), given(&self.redis_cluster));
        let mut forms = Vec::new();
        if url.is_some() || host.is_some() {
            forms.push("single (--redis-url / --redis-host)");
        }
        if sentinels.is_some() {
            forms.push("Sentinel (--redis-sentinels)");
        }
        if cluster.is_some() {
            forms.push("Cluster (--redis-cluster)");
        }
        if forms.len() > 1 {
            return Err(format!(
                "configure exactly one Redis topology; got {}",
                forms.join(" and ")
            ));
        }
        let mut tls = self.redis_tls;
        let mut username = given(&self.redis_username);
        let mut password = given(&self.redis_password);
        let mut db = self.redis_db;
        let topology = if let Some(url) = url {
            let u = parse_url(&url)?;
            tls |= u.tls;
            if u.password.is_some() {
                (username, password) = (u.username, u.password);
            }
            db = u.db;
            Topology::Single(u.endpoint)
        } else if let Some(host) = host {
            Topology::Single(Endpoint::Tcp {
                host,
                port: self.redis_port,
            })
        } else if let Some(list) = sentinels {
            Topology::Sentinel {
                sentinels: parse_nodes("--redis-sentinels", &list)?,
                master_name: self.redis_master_name.clone(),
                password: given(&self.redis_sentinel_password),
            }
        } else if let Some(list) = cluster {
            if db != 0 {
                return Err(format!(
                    "--redis-db {db}: a Redis Cluster has only database 0"
                ));
            }
            Topology::Cluster {
                nodes: parse_nodes("--redis-cluster", &list)?,
            }
        } else {
            return Ok(None);
        };
        let files = TlsFiles {
            ca: self.redis_ca_file.clone(),
            cert: self.redis_cert_file.clone(),
            key: self.redis_key_file.clone(),
        };
        let tls = if tls {
            if matches!(topology, Topology::Single(Endpoint::Unix(_))) {
                return Err("TLS over a Unix socket is not supported".into());
            }
            Some(std::sync::Arc::new(TlsSettings::load(&files)?))
        } else if files.ca.is_some() || files.cert.is_some() || files.key.is_some() {
            return Err(
                "--redis-ca-file, --redis-cert-file and --redis-key-file need TLS: \
                        add --redis-tls or use a rediss:// URL"
                    .into(),
            );
        } else {
            None
        };
        Ok(Some(RedisTarget {
            topology,
            username,
            password,
            db,
            tls,
            wait_replicas: self.redis_wait_replicas,
        }))
    }

    /// True when a peer with these credentials may use seqd.
    pub fn peer_allowed(&self, uid: u32, gid: u32) -> bool {
        (self.allow_uids.is_empty() && self.allow_gids.is_empty())
            || self.allow_uids.contains(&uid)
            || self.allow_gids.contains(&gid)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            threshold: self.breaker_threshold,
            probe_base: Duration::from_millis(self.probe_base_ms),
            probe_max: Duration::from_millis(self.probe_max_ms.max(self.probe_base_ms)),
            trials: self.breaker_trials,
        }
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    /// The shards to run: `--shards`, or one per core seqd may run on.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// A 16-bit host id from a machine id: FNV-1a, folded. Two machines share
/// one with probability 1/65536 per pair, which is why `--host-id` is the
/// way to be sure.
fn host_from_machine_id(id: &str) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16
}
