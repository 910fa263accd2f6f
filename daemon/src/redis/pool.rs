//! The Redis connection pool: where Redis is, and a fixed set of
//! auto-pipelined connections to it for each thread that calls it (on a
//! Cluster, cluster connections, and a pipe to each master the thread
//! increments on).
//!
//! # What it guarantees
//!
//! Every operation ends within the configured timeout, connecting
//! included; a connection that failed or timed out is dropped and rebuilt
//! on next use, because the redis crate never abandons a hung connection
//! by itself. The breaker's probe runs on a fresh connection of its own.
//!
//! Whether Redis takes writes is asked with a write that changes nothing
//! ([`RedisPool::write_check`]): a `PING` is answered by a Redis that is
//! out of memory, read-only, short of replicas or denies seqd its scripts.

use super::conn::{Conn, Direct, NodeAddr};
use super::error::RedisFailure;
use super::pipe::{self, Fence, Login, Pipe};
use super::target::{Endpoint, RedisTarget, TlsSettings, Topology};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A script (so that `EVALSHA` is allowed, as every counter script
/// needs) calling a write command (so that Redis refuses it as it would
/// refuse an increment: `OOM`, `READONLY`, `NOREPLICAS`, `NOPERM`) that
/// changes nothing: `SET ... XX` of a key that does not exist.
const WRITE_CHECK_SCRIPT: &str = "return redis.call('SET', KEYS[1], '1', 'XX')";

/// The master seqd writes to: where it is and which process it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub endpoint: Endpoint,
    /// `run_id` from `INFO server`: a restarted or different Redis at the
    /// same address has another one.
    pub run_id: String,
}

/// A master that is not the one the pool wrote to before.
#[derive(Debug, Clone)]
pub struct MasterChange {
    pub from: Master,
    pub to: Master,
}

impl std::fmt::Display for MasterChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Redis master changed from {} (run id {}) to {} (run id {})",
            self.from.endpoint, self.from.run_id, self.to.endpoint, self.to.run_id
        )
    }
}

/// Finds the master to connect to.
enum Resolver {
    Fixed(Endpoint),
    /// The redis crate's Sentinel client: it asks the sentinels for the
    /// master and checks with `ROLE` that the node it names is one. It is
    /// asked again for every new connection, so a failover is followed as
    /// soon as the old connections are dropped (redis-rs #1438: the crate
    /// itself never re-resolves an existing connection).
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// The redis crate's cluster client: a connection is a cluster
    /// connection that routes by slot and follows the cluster's own
    /// failovers and reshardings.
    Cluster(redis::cluster::ClusterClient),
}

impl Resolver {
    fn new(target: &RedisTarget, timeout: Duration) -> Result<Resolver, String> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        match &target.topology {
            Topology::Single(e) => Ok(Resolver::Fixed(e.clone())),
            Topology::Sentinel {
                sentinels,
                master_name,
                password,
            } => {
                let addrs = sentinels.iter().map(|(h, p)| match &target.tls {
                    None => redis::ConnectionAddr::Tcp(h.clone(), *p),
                    Some(_) => redis::ConnectionAddr::TcpTls {
                        host: h.clone(),
                        port: *p,
                        insecure: false,
                        tls_params: None,
                    },
                });
                let mut b =
                    SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)
                        .map_err(|e| format!("invalid Sentinel configuration: {e}"))?
                        .set_client_to_redis_db(target.db);
                if let Some(pw) = password {
                    b = b.set_client_to_sentinel_password(pw);
                }
                if let Some(user) = &target.username {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(pw) = &target.password {
                    b = b.set_client_to_redis_password(pw);
                }
                if let Some(tls) = &target.tls {
                    b = b
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_redis_certificates(tls.certificates.clone())
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_certificates(tls.certificates.clone());
                }
                let client = b
                    .build()
                    .map_err(|e| format!("invalid Sentinel configuration: {e}"))?;
                Ok(Resolver::Sentinel(tokio::sync::Mutex::new(client)))
            }
            Topology::Cluster { nodes } => {
                let scheme = if target.tls.is_some() {
                    "rediss"
                } else {
                    "redis"
                };
                let urls: Vec<String> = nodes
                    .iter()
                    .map(|(h, p)| format!("{scheme}://{h}:{p}"))
                    .collect();
                let mut b = redis::cluster::ClusterClientBuilder::new(urls)
                    // seqd's own deadline bounds every operation; the
                    // crate retries MOVED/ASK (each redirect is a retry)
                    // and lost connections within it. A retried increment may skip a number, never
                    // repeat one (each INCR answers a new value).
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(16)
                    .min_retry_wait(2)
                    .max_retry_wait(50);
                if let Some(user) = &target.username {
                    b = b.username(user);
                }
                if let Some(pw) = &target.password {
                    b = b.password(pw);
                }
                if let Some(tls) = &target.tls {
                    b = b
                        .tls(redis::TlsMode::Secure)
                        .certs(tls.certificates.clone());
                }
                let client = b
                    .build()
                    .map_err(|e| format!("invalid cluster configuration: {e}"))?;
                Ok(Resolver::Cluster(client))
            }
        }
    }

    async fn resolve(&self) -> Result<Endpoint, RedisFailure> {
        match self {
            Resolver::Fixed(e) => Ok(e.clone()),
            Resolver::Cluster(_) => Err(RedisFailure::Transport(
                "a cluster has no single master".into(),
            )),
            Resolver::Sentinel(client) => {
                let master = client
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| RedisFailure::Transport(format!("Sentinel: {e}")))?;
                match master.get_connection_info().addr() {
                    redis::ConnectionAddr::Tcp(host, port)
                    | redis::ConnectionAddr::TcpTls { host, port, .. } => Ok(Endpoint::Tcp {
                        host: host.clone(),
                        port: *port,
                    }),
                    other => Err(RedisFailure::Transport(format!(
                        "Sentinel named an unusable master address {other}"
                    ))),
                }
            }
        }
    }
}

/// What an operation asks of the pool's choice of connection.
#[derive(Debug, Default, Clone)]
pub struct Aim {
    /// The slot of its key: it picks the connection of the calling
    /// thread's lane, so that one key's operations leave on one
    /// connection, in the order made.
    pub slot: Option<u16>,
    /// On a cluster, the master of its key's slot (`host:port`), as the
    /// slot map knows it: the direct pipe it may use (see `Conn::Cluster`).
    pub master: Option<Arc<str>>,
}

/// A connection checked out for one operation, and where it came from
/// (to drop it when it breaks).
struct Checkout {
    /// The lane, the slot in it, and the connection's generation.
    slot: (Arc<Lane>, usize, u64),
    /// A cluster master's direct pipe used too: its slot and generation.
    direct: Option<(Arc<Slot>, u64)>,
    conn: Conn,
}

/// Direct pipes to cluster masters kept per lane at most.
const MAX_DIRECT: usize = 64;

/// One pool slot: a connection (or none yet) and a generation, so that a
/// task reporting a failure on an old connection cannot drop a newer one.
struct Slot {
    conn: tokio::sync::Mutex<Option<(u64, Conn)>>,
}

/// The connections of one thread, picked by key slot (or round robin for
/// operations without a key). A connection's writer
/// and reader tasks are spawned by the call that connects it, so on the
/// thread of its lane: a shard's requests reach Redis and come back
/// without waking another thread.
struct Lane {
    thread: std::thread::ThreadId,
    slots: Vec<Slot>,
    next: AtomicUsize,
    /// On a cluster: a pipe to each master this thread wrote to, by
    /// `host:port`.
    direct: std::sync::Mutex<Vec<(Arc<str>, Arc<Slot>)>>,
}

/// Threads with connections of their own; others share the last lane.
/// (seqd calls Redis from its shards and its main thread.)
const MAX_LANES: usize = 64;

/// Auto-pipelined connections, a fixed number per thread that calls
/// Redis.
pub struct RedisPool {
    resolver: Resolver,
    tls: Option<Arc<TlsSettings>>,
    login: Login,
    fence: Option<Fence>,
    /// The master the pool's connections were made to; a new connection
    /// to another one is a [`MasterChange`].
    master: std::sync::Mutex<Option<Master>>,
    /// Connections per lane.
    size: usize,
    lanes: std::sync::RwLock<Vec<Arc<Lane>>>,
    generation: AtomicU64,
    /// The operation timeout in milliseconds; a reload may change it.
    timeout_ms: AtomicU64,
    /// [`WRITE_CHECK_SCRIPT`], hashed once.
    write_check: redis::Script,
    /// Raised when a cluster master answered a direct pipe that a key's
    /// slot is elsewhere.
    moved: Arc<AtomicBool>,
}

impl RedisPool {
    pub fn new(target: &RedisTarget, size: usize, timeout: Duration) -> Result<RedisPool, String> {
        let fence = (target.wait_replicas > 0).then(|| Fence {
            replicas: target.wait_replicas,
            // Redis gives up waiting before the operation's own deadline,
            // so a missing replica is a NOREPLICAS answer, not a timeout
            // that would drop the connection.
            timeout_ms: (timeout.as_millis() as u64 / 2).max(1),
        });
        Ok(RedisPool {
            resolver: Resolver::new(target, timeout)?,
            tls: target.tls.clone(),
            login: Login {
                username: target.username.clone(),
                password: target.password.clone(),
                db: target.db,
            },
            fence,
            master: std::sync::Mutex::new(None),
            size: size.max(1),
            lanes: Default::default(),
            generation: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            write_check: redis::Script::new(WRITE_CHECK_SCRIPT),
            moved: Arc::default(),
        })
    }

    /// The master the pool writes to now, for `HEALTH` (`None` before the
    /// first connection).
    pub fn master(&self) -> Option<Master> {
        self.master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// A new operation timeout (reload); it applies to the next operations.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// The calling thread's lane, made at its first call.
    fn lane(&self) -> Arc<Lane> {
        let me = std::thread::current().id();
        let read = |lanes: &[Arc<Lane>]| {
            lanes
                .iter()
                .find(|l| l.thread == me)
                .or_else(|| lanes.get(MAX_LANES - 1))
                .cloned()
        };
        if let Some(lane) = read(&self.lanes.read().unwrap_or_else(|p| p.into_inner())) {
            return lane;
        }
        let mut lanes = self.lanes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = read(&lanes) {
            return lane;
        }
        let lane = Arc::new(Lane {
            thread: me,
            slots: (0..self.size)
                .map(|_| Slot {
                    conn: tokio::sync::Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            direct: Default::default(),
        });
        lanes.push(lane.clone());
        lane
    }

    /// A connection from the calling thread's lane, connecting if its slot
    /// is empty: the one `aim.slot` picks (a key's slot: one key's
    /// operations leave in the order made), else the next one round robin.
    async fn checkout(&self, aim: &Aim) -> Result<Checkout, RedisFailure> {
        let lane = self.lane();
        let pick = match aim.slot {
            Some(a) => usize::from(a),
            None => lane.next.fetch_add(1, Ordering::Relaxed),
        };
        let i = pick % lane.slots.len();
        let slot = &lane.slots[i];
        let (generation, mut conn) = self.slot_conn(slot, || self.connect()).await?;
        let mut direct = None;
        if let (Conn::Cluster { direct: d, .. }, Some(master)) = (&mut conn, &aim.master) {
            if let Some((slot, generation, pipe)) = self.direct(&lane, master).await {
                *d = Some(Direct {
                    pipe,
                    moved: self.moved.clone(),
                });
                direct = Some((slot, generation));
            }
        }
        Ok(Checkout {
            slot: (lane.clone(), i, generation),
            direct,
            conn,
        })
    }

    /// The connection in `slot`, made by `connect` if there is none.
    async fn slot_conn<F, Fut>(&self, slot: &Slot, connect: F) -> Result<(u64, Conn), RedisFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Conn, Option<MasterChange>), RedisFailure>>,
    {
        let mut held = slot.conn.lock().await;
        if let Some((generation, conn)) = held.as_ref() {
            return Ok((*generation, conn.clone()));
        }
        let (conn, change) = connect().await?;
        if let Some(change) = change {
            // Never write through a new master before recovery ran
            // against it: the link opens the breaker on this.
            return Err(RedisFailure::MasterChanged(change.to_string()));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *held = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// The calling thread's own pipe to cluster master `master`
    /// (`host:port`), connected on first use; `None` when it cannot be
    /// had (the crate's connection then takes the operation).
    async fn direct(&self, lane: &Lane, master: &Arc<str>) -> Option<(Arc<Slot>, u64, Pipe)> {
        let slot = {
            let mut direct = lane.direct.lock().unwrap_or_else(|p| p.into_inner());
            match direct.iter().find(|(m, _)| m == master) {
                Some((_, slot)) => slot.clone(),
                None => {
                    // Masters come and go with failovers: the list is
                    // bounded, and starts over when full.
                    if direct.len() >= MAX_DIRECT {
                        direct.clear();
                    }
                    let slot = Arc::new(Slot {
                        conn: tokio::sync::Mutex::new(None),
                    });
                    direct.push((master.clone(), slot.clone()));
                    slot
                }
            }
        };
        // Where to connect is worked out only when there is no pipe yet.
        let connect = || async {
            let endpoint = master
                .rsplit_once(':')
                .and_then(|(host, port)| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Some(Endpoint::Tcp {
                        host: host.to_string(),
                        port: port.parse().ok()?,
                    })
                })
                .ok_or_else(|| RedisFailure::Logic(format!("no address in {master}")))?;
            let pipe = pipe::connect(&endpoint, self.tls.as_deref(), &self.login, self.fence)
                .await
                .map_err(|e| RedisFailure::classify(&e))?;
            Ok((Conn::Pipe(pipe), None))
        };
        match self.slot_conn(&slot, connect).await {
            Ok((generation, Conn::Pipe(pipe))) => Some((slot, generation, pipe)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(master = %master, error = %e, "no direct pipe to a cluster master");
                None
            }
        }
    }

    /// Whether a cluster master answered a direct pipe that a key's slot
    /// is elsewhere since the last call (the slot map is due).
    pub fn take_moved(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }

    /// Resolves the master, connects, logs in, and checks that the node
    /// is a master. Returns the change when it is not the master the pool
    /// knew (it becomes the known one).
    async fn connect(&self) -> Result<(Conn, Option<MasterChange>), RedisFailure> {
        let fail = |e: redis::RedisError| RedisFailure::classify(&e);
        if let Resolver::Cluster(client) = &self.resolver {
            let conn = client.get_async_connection().await.map_err(fail)?;
            return Ok((
                Conn::Cluster {
                    conn,
                    fence: self.fence,
                    fenced: false,
                    direct: None,
                },
                None,
            ));
        }
        let endpoint = self.resolver.resolve().await?;
        let mut conn = pipe::connect(&endpoint, self.tls.as_deref(), &self.login, self.fence)
            .await
            .map_err(fail)?;
        // The name lets an operator (and the tests) tell seqd's
        // connections apart in `CLIENT LIST`. An ACL user may be denied
        // any of the three (`CLIENT`, `ROLE` and `INFO` are @admin or
        // @dangerous): each answer is used when given, and a refusal only
        // means less to check, never a connection refused.
        let replies: Vec<redis::RedisResult<redis::Value>> = redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg("seqd")
            .cmd("ROLE")
            .cmd("INFO")
            .arg("server")
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        let mut replies = replies.into_iter().skip(1);
        if let Some(Ok(redis::Value::Array(items))) = replies.next() {
            if let Some(redis::Value::BulkString(r)) = items.first() {
                if r.as_slice() != b"master" {
                    return Err(RedisFailure::WrongNode(format!(
                        "{endpoint} is a {}, not a master",
                        String::from_utf8_lossy(r)
                    )));
                }
            }
        }
        let info = match replies.next() {
            Some(Ok(redis::Value::BulkString(info))) => String::from_utf8_lossy(&info).into_owned(),
            Some(Ok(redis::Value::VerbatimString { text, .. })) => text,
            _ => String::new(),
        };
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or("")
            .trim()
            .to_string();
        let now = Master { endpoint, run_id };
        let mut known = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let change = match known.as_ref() {
            Some(before) if *before != now => Some(MasterChange {
                from: before.clone(),
                to: now.clone(),
            }),
            _ => None,
        };
        if known.is_none() {
            tracing::info!(master = %now.endpoint, run_id = %now.run_id, "connected to the Redis master");
        }
        *known = Some(now);
        Ok((Conn::Pipe(conn), change))
    }

    /// Asks the resolver where the master is now; `Some` when that is not
    /// where the pool writes (Sentinel promoted another node). Never
    /// connects the pool itself.
    pub async fn master_moved(&self) -> Result<Option<String>, RedisFailure> {
        if !matches!(self.resolver, Resolver::Sentinel(_)) {
            return Ok(None);
        }
        let now = self.resolver.resolve().await?;
        let known = self.master();
        Ok(match known {
            Some(m) if m.endpoint != now => Some(format!(
                "Sentinel names {now} as the master (seqd writes to {})",
                m.endpoint
            )),
            _ => None,
        })
    }

    /// True on a Redis Cluster.
    fn is_cluster(&self) -> bool {
        matches!(self.resolver, Resolver::Cluster(_))
    }

    /// Drops every connection; the next operations connect afresh. Called
    /// when the breaker opens, so a hung connection is never reused.
    pub fn reset(&self) {
        let lanes = self.lanes.read().unwrap_or_else(|p| p.into_inner());
        for lane in lanes.iter() {
            let direct = lane.direct.lock().unwrap_or_else(|p| p.into_inner());
            for slot in lane.slots.iter().chain(direct.iter().map(|(_, s)| &**s)) {
                if let Ok(mut conn) = slot.conn.try_lock() {
                    *conn = None;
                }
            }
        }
    }

    /// Asks Redis, on `conn`, whether it takes writes now, with a script
    /// whose write changes nothing: refused exactly when an increment
    /// would be (out of memory, read-only, too few replicas for
    /// `min-replicas-to-write`, scripts or writes denied by an ACL).
    ///
    /// `key` is in the conversation family's `seq:` namespace (see
    /// [`WRITE_CHECK_KEY`](super::breakers::WRITE_CHECK_KEY)), so an ACL
    /// that lets seqd write its counters lets it write this too, and no
    /// cache client can set it (that family is refused). It never exists:
    /// the check's `SET ... XX` writes nothing. On a Cluster it is one of
    /// the checked master's own slots.
    pub async fn write_check(&self, mut conn: Conn, key: &str) -> redis::RedisResult<()> {
        self.write_check
            .key(key)
            .invoke_async::<redis::Value>(&mut conn)
            .await
            .map(|_| ())
    }

    /// `PING` and the [write check](RedisPool::write_check) on a fresh
    /// connection of its own (not from the pool), under the timeout: the
    /// breaker's probe. With fencing, the master must also have the
    /// replicas it asks for (`WAIT` on a connection that wrote nothing
    /// answers at once with the replicas connected). Returns the master
    /// change it found, if any.
    pub async fn probe(&self, check_key: &str) -> Result<Option<MasterChange>, RedisFailure> {
        let timeout_ms = self.timeout().as_millis() as u64;
        let attempt = async {
            let (mut conn, change) = self.connect().await?;
            let fail = |e: redis::RedisError| RedisFailure::classify(&e);
            conn.ping().await.map_err(fail)?;
            self.write_check(conn.clone(), check_key)
                .await
                .map_err(fail)?;
            // On a cluster the redis crate sends WAIT to every master and
            // answers the smallest count: every master must have them.
            if let Some(f) = self.fence {
                let replicas: i64 = redis::cmd("WAIT")
                    .arg(f.replicas)
                    .arg(f.timeout_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(fail)?;
                if replicas < i64::from(f.replicas) {
                    return Err(RedisFailure::Unacknowledged(format!(
                        "the master has {replicas} of the {} replicas --redis-wait-replicas asks for",
                        f.replicas
                    )));
                }
            }
            Ok(change)
        };
        match tokio::time::timeout(self.timeout(), attempt).await {
            Ok(Ok(change)) => Ok(change),
            Ok(Err(RedisFailure::Timeout(_))) | Err(_) => Err(RedisFailure::Timeout(timeout_ms)),
            Ok(Err(e)) => Err(e),
        }
    }

    /// The probe of one Cluster master, on the pool's cluster connection
    /// aimed at it (the redis crate reconnects to the node as needed):
    /// `PING`, the write check on a key of its own slots, and with fencing
    /// `WAIT` for its replicas, under the timeout.
    pub async fn probe_node(&self, node: &NodeAddr, check_key: &str) -> Result<(), RedisFailure> {
        let fence = self.fence;
        self.run(|c| async move {
            let mut c = c.on(node);
            c.ping().await?;
            self.write_check(c.clone(), check_key).await?;
            if let Some(f) = fence {
                let replicas: i64 = redis::cmd("WAIT")
                    .arg(f.replicas)
                    .arg(f.timeout_ms)
                    .query_async(&mut c)
                    .await?;
                if replicas < i64::from(f.replicas) {
                    return Err(super::pipe::not_acknowledged(replicas, f));
                }
            }
            Ok(())
        })
        .await
    }

    /// Drops the connection of slot `i` of `lane` if it is still
    /// generation `gen`.
    async fn discard(slot: &Slot, generation: u64) {
        let mut slot = slot.conn.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    /// Runs one operation under the timeout (connecting included). A
    /// transport failure or timeout discards the connection it used.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_until(Instant::now() + self.timeout(), &Aim::default(), op)
            .await
    }

    /// Like [`RedisPool::run`], ending at `deadline` (at most the timeout
    /// from now): a request that retries keeps within one timeout in all.
    /// `aim` picks the connection (see [`RedisPool::checkout`]).
    pub async fn run_until<T, F, Fut>(
        &self,
        deadline: Instant,
        aim: &Aim,
        op: F,
    ) -> Result<T, RedisFailure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = deadline.min(Instant::now() + self.timeout());
        let timeout_ms = self.timeout().as_millis() as u64;
        // Connecting is bounded here; a connection that is there already
        // is ready at once, and no timer is armed for it.
        let Checkout {
            slot: (lane, i, generation),
            direct,
            conn,
        } = match tokio::time::timeout_at(deadline, self.checkout(aim)).await {
            Ok(Ok(checked_out)) => checked_out,
            Ok(Err(RedisFailure::Timeout(_))) | Err(_) => {
                return Err(RedisFailure::Timeout(timeout_ms))
            }
            Ok(Err(e)) => return Err(e),
        };
        let result = match conn {
            // The pipe enforces the deadline itself, with one timer per
            // connection rather than one per operation (see `pipe.rs`).
            Conn::Pipe(p) => op(Conn::Pipe(p.until(deadline))).await,
            other => match tokio::time::timeout_at(deadline, op(other)).await {
                Ok(r) => r,
                Err(_) => {
                    // A Cluster: the node that hung is the aimed master's.
                    // Only the pipe to it goes; the crate's connection,
                    // shared by every master, drops and remakes a node's
                    // connection by itself (remaking it whole would wait
                    // on every node, the hung one too).
                    if let Some((slot, generation)) = direct {
                        Self::discard(&slot, generation).await;
                    }
                    return Err(RedisFailure::Timeout(timeout_ms));
                }
            },
        };
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let failure = RedisFailure::classify(&e);
                if failure.breaks_connection() {
                    match direct {
                        // The aimed master's pipe broke: it alone goes.
                        Some((slot, generation)) => Self::discard(&slot, generation).await,
                        // The crate's connection of a Cluster is kept for
                        // a timeout (one node's, see above).
                        None if self.is_cluster()
                            && matches!(failure, RedisFailure::Timeout(_)) => {}
                        None => Self::discard(&lane.slots[i], generation).await,
                    }
                }
                match failure {
                    RedisFailure::Timeout(_) => Err(RedisFailure::Timeout(timeout_ms)),
                    other => Err(other),
                }
            }
        }
    }
}
