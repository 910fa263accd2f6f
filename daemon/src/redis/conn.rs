//! The connection an operation runs on, whatever the topology.
//!
//! # What it owns
//!
//! [`Conn`] hides the topology from the capabilities: on one server (single
//! or Sentinel) it is seqd's own auto-pipelined [`Pipe`]; on a Cluster it is
//! the redis crate's cluster connection, which routes each command by its
//! key's slot, follows `MOVED`/`ASK`, splits multi-key `MGET`/`UNLINK` by
//! slot, and loads scripts on every master (no home-made router). The
//! increments alone — what almost every number costs — go to the key's
//! master (by the slot map the breakers keep) through a [`Pipe`] of the
//! calling thread, so that concurrent increments share writes as on one
//! server; one that master answers with `MOVED`, `ASK` or `TRYAGAIN` did
//! not run, and goes through the crate's connection, which follows it (and
//! the slot map is read again). What a capability still has to know about
//! a cluster is said here:
//!
//! - [`Conn::masters`] + [`Conn::on`]: commands that see only one node's
//!   keys (`SCAN`) run on every master in turn.
//! - [`slot_groups`]: a script's keys must share one slot, so a multi-key
//!   script call is split by slot (order kept within each group).
//! - [`Conn::fenced`]: `WAIT` after the write, on the same node connection.
//! - [`Conn::ping`]: health is "the cluster serves" (`CLUSTER INFO`), not
//!   "every node answers".

use super::error::server_error;
use super::pipe::{not_acknowledged, Fence, Pipe};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisFuture, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A connection to run operations on.
#[derive(Clone)]
pub enum Conn {
    /// One server: the master (single, or found through Sentinel).
    Pipe(Pipe),
    /// A Redis Cluster, routed by the redis crate; `fence` is set on a
    /// handle whose writes must be acknowledged by replicas. `direct`,
    /// when the pool has one, is seqd's own pipe to the master of the
    /// operation's key (by the slot map): the increments, which almost
    /// every number is, go there, and to the crate's connection when that
    /// master answers that the slot is elsewhere.
    Cluster {
        conn: ClusterConnection,
        fence: Option<Fence>,
        fenced: bool,
        direct: Option<Direct>,
    },
    /// One node of a cluster (for `SCAN`).
    Node {
        conn: ClusterConnection,
        host: String,
        port: u16,
    },
}

/// seqd's own pipe to one cluster master, and the flag it raises when
/// that master says a key's slot is elsewhere (the slot map is due).
#[derive(Clone)]
pub struct Direct {
    pub pipe: Pipe,
    pub moved: Arc<AtomicBool>,
}

/// A node of the deployment that holds keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddr {
    /// The one server (single, Sentinel).
    Only,
    /// A cluster master.
    At { host: String, port: u16 },
}

impl Conn {
    /// A handle whose writes are answered only once `WAIT` confirmed them
    /// (with `--redis-wait-replicas`; otherwise the same connection).
    pub fn fenced(&self) -> Conn {
        match self {
            Conn::Pipe(p) => Conn::Pipe(p.fenced()),
            Conn::Cluster {
                conn,
                fence,
                direct,
                ..
            } => Conn::Cluster {
                conn: conn.clone(),
                fence: *fence,
                fenced: fence.is_some(),
                direct: direct.as_ref().map(|d| Direct {
                    pipe: d.pipe.fenced(),
                    moved: d.moved.clone(),
                }),
            },
            other => other.clone(),
        }
    }

    /// The nodes that together hold every key: one server, or every
    /// cluster master (from `CLUSTER SHARDS`).
    pub async fn masters(&mut self) -> redis::RedisResult<Vec<NodeAddr>> {
        if let Conn::Pipe(_) = self {
            return Ok(vec![NodeAddr::Only]);
        }
        Ok(masters_of(self.slot_map().await?))
    }

    /// This connection, aimed at `node`.
    pub fn on(&self, node: &NodeAddr) -> Conn {
        match (self, node) {
            (Conn::Cluster { conn, .. } | Conn::Node { conn, .. }, NodeAddr::At { host, port }) => {
                Conn::Node {
                    conn: conn.clone(),
                    host: host.clone(),
                    port: *port,
                }
            }
            _ => self.clone(),
        }
    }

    /// The slot map of a cluster, from `CLUSTER SLOTS`: `(first slot, last
    /// slot, master)` per range, asked of the node this connection is
    /// aimed at ([`Conn::on`]), or of any node. Empty on one server.
    pub async fn slot_map(&mut self) -> redis::RedisResult<Vec<(u16, u16, NodeAddr)>> {
        let (conn, routing) = match self {
            Conn::Pipe(_) => return Ok(Vec::new()),
            Conn::Cluster { conn, .. } => (conn, SingleNodeRoutingInfo::Random),
            Conn::Node { conn, host, port } => (
                conn,
                SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                },
            ),
        };
        let slots = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(routing),
            )
            .await?;
        Ok(ranges_of(&slots))
    }

    /// `INCR key`: the new value. On one server the command is written
    /// straight into the bytes the pipe sends (one allocation, no boxed
    /// future): it is what almost every number costs.
    pub async fn incr(&mut self, key: &str) -> redis::RedisResult<u64> {
        match self {
            Conn::Pipe(p) => p.incr(key).await,
            Conn::Cluster {
                direct: Some(d), ..
            } => match d.pipe.incr(key).await {
                Err(e) if elsewhere(&e) => {
                    d.moved.store(true, Ordering::Relaxed);
                    redis::cmd("INCR")
                        .arg(key)
                        .query_async(&mut self.crate_only())
                        .await
                }
                other => other,
            },
            other => redis::cmd("INCR").arg(key).query_async(other).await,
        }
    }

    /// This cluster connection without its direct pipe: every command
    /// through the crate's routing.
    fn crate_only(&self) -> Conn {
        match self {
            Conn::Cluster {
                conn,
                fence,
                fenced,
                ..
            } => Conn::Cluster {
                conn: conn.clone(),
                fence: *fence,
                fenced: *fenced,
                direct: None,
            },
            other => other.clone(),
        }
    }

    /// `MULTI` / `INCR key` / `EXPIRE key ttl NX` / `EXEC`: the four
    /// replies, or the redis crate's error for them (one per failed
    /// command, as a pipeline of the crate reports them). On one server the
    /// commands are written straight into the bytes the pipe sends, as for
    /// [`Conn::incr`]; a reply that is an error is handed to the crate,
    /// which builds the very error its own pipeline would have.
    pub async fn incr_expire(&mut self, key: &str, ttl: u64) -> redis::RedisResult<Vec<Value>> {
        let transaction = || {
            let mut p = redis::pipe();
            p.cmd("MULTI")
                .cmd("INCR")
                .arg(key)
                .cmd("EXPIRE")
                .arg(key)
                .arg(ttl)
                .arg("NX")
                .cmd("EXEC");
            p
        };
        let (p, moved) = match self {
            Conn::Pipe(p) => (&*p, None),
            Conn::Cluster {
                direct: Some(d), ..
            } => (&d.pipe, Some(d.moved.clone())),
            other => return transaction().query_async(other).await,
        };
        let replies = p.incr_expire(key, ttl).await?;
        if !replies.iter().any(|v| matches!(v, Value::ServerError(_))) {
            return Ok(replies);
        }
        match transaction().query_async(&mut Answered(replies)).await {
            // A transaction on a slot this master no longer serves is
            // refused whole (nothing ran): the crate's routing runs it
            // where the slot is now.
            Err(e) if moved.is_some() && elsewhere(&e) => {
                if let Some(m) = moved {
                    m.store(true, Ordering::Relaxed);
                }
                transaction().query_async(&mut self.crate_only()).await
            }
            other => other,
        }
    }

    /// A health check: `PING` on one server or one node; on a whole
    /// cluster, that it reports `cluster_state:ok` (a `PING` would go to
    /// every node and fail while one failed replica is still listed).
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Conn::Pipe(p) => redis::cmd("PING")
                .query_async::<String>(p)
                .await
                .map(|_| ()),
            Conn::Node { conn, host, port } => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                conn.route_command(redis::cmd("PING").clone(), routing)
                    .await
                    .map(|_| ())
            }
            Conn::Cluster { conn, .. } => {
                let info = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                let text = match info {
                    Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    Value::VerbatimString { text, .. } => text,
                    other => format!("{other:?}"),
                };
                if text.contains("cluster_state:ok") {
                    Ok(())
                } else {
                    Err(server_error(
                        "CLUSTERDOWN the cluster reports cluster_state:fail",
                    ))
                }
            }
        }
    }
}

/// True for a cluster's answer that a key's slot is served elsewhere or
/// is moving (`MOVED`, `ASK`, `TRYAGAIN`; in a transaction, for one of
/// its commands): the command did not run, and the crate's routing, which
/// follows redirections, takes it.
fn elsewhere(e: &redis::RedisError) -> bool {
    let moved = |code: Option<&str>| matches!(code, Some("MOVED" | "ASK" | "TRYAGAIN"));
    if moved(e.code()) {
        return true;
    }
    e.clone()
        .into_server_errors()
        .is_some_and(|items| items.iter().any(|(_, item)| moved(Some(item.code()))))
}

/// The masters of slot ranges, each once, in first-seen order.
fn masters_of(ranges: Vec<(u16, u16, NodeAddr)>) -> Vec<NodeAddr> {
    let mut out: Vec<NodeAddr> = Vec::new();
    for (_, _, node) in ranges {
        if !out.contains(&node) {
            out.push(node);
        }
    }
    out
}

/// The slot ranges of a `CLUSTER SLOTS` reply with their masters.
fn ranges_of(slots: &Value) -> Vec<(u16, u16, NodeAddr)> {
    let mut out = Vec::new();
    let Value::Array(ranges) = slots else {
        return out;
    };
    for range in ranges {
        let Value::Array(r) = range else { continue };
        let (Some(Value::Int(lo)), Some(Value::Int(hi))) = (r.first(), r.get(1)) else {
            continue;
        };
        let Some(Value::Array(master)) = r.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let node = NodeAddr::At {
            host,
            port: *port as u16,
        };
        out.push((*lo as u16, *hi as u16, node));
    }
    out
}

/// Indexes of `keys` grouped by cluster slot, in first-seen order, each
/// group in the keys' order. On one server, one group of all of them.
pub fn slot_groups<'a>(cluster: bool, keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let keys: Vec<&str> = keys.collect();
    if !cluster {
        return vec![(0..keys.len()).collect()];
    }
    let mut order: Vec<redis::cluster_routing::Slot> = Vec::new();
    let mut groups: std::collections::HashMap<redis::cluster_routing::Slot, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let slot = redis::cluster_routing::Slot::for_key(k.as_bytes());
        groups
            .entry(slot)
            .or_insert_with(|| {
                order.push(slot);
                Vec::new()
            })
            .push(i);
    }
    order
        .into_iter()
        .filter_map(|s| groups.remove(&s))
        .collect()
}

/// Every command of a fenced handle is fenced (the increment, the raise
/// script) except `SCRIPT LOAD`, which has no key to route by (the crate
/// sends it to every master).
fn needs_fence(cmd: &Cmd) -> bool {
    !matches!(cmd.args_iter().next(),
        Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"SCRIPT"))
}

/// `pipeline` and a `WAIT` after it, in one pipeline: routed by the
/// writes' key, so the `WAIT` runs on the connection that wrote, to the
/// master of that slot. The replies of `pipeline` once enough replicas
/// acknowledged, `NOREPLICAS` otherwise.
async fn fenced_pipeline(
    conn: &mut ClusterConnection,
    pipeline: &redis::Pipeline,
    offset: usize,
    count: usize,
    f: Fence,
) -> redis::RedisResult<Vec<Value>> {
    let mut fenced = pipeline.clone();
    fenced.cmd("WAIT").arg(f.replicas).arg(f.timeout_ms);
    let mut values = conn.req_packed_commands(&fenced, offset, count + 1).await?;
    let acked = match values.pop() {
        Some(Value::Int(n)) => n,
        _ => -1,
    };
    if acked < i64::from(f.replicas) {
        return Err(not_acknowledged(acked, f));
    }
    Ok(values)
}

/// Replies already read, handed to the redis crate so that it sorts them
/// (and their errors) exactly as it sorts those of its own pipelines.
struct Answered(Vec<Value>);

impl ConnectionLike for Answered {
    fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
        let value = self.0.pop().unwrap_or(Value::Nil);
        Box::pin(async move { Ok(value) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _: &'a redis::Pipeline,
        _: usize,
        _: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let values = std::mem::take(&mut self.0);
        Box::pin(async move { Ok(values) })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        // Writes are fenced; the `SCRIPT LOAD` that may precede a script
        // call goes as it is.
        let cluster_fence = match self {
            Conn::Cluster {
                fence: Some(f),
                fenced: true,
                ..
            } if needs_fence(cmd) => Some(*f),
            _ => None,
        };
        match self {
            Conn::Pipe(p) => p.req_packed_command(cmd),
            Conn::Cluster { conn, .. } => match cluster_fence {
                None => conn.req_packed_command(cmd),
                Some(f) => Box::pin(async move {
                    let mut pipe = redis::pipe();
                    pipe.add_command(cmd.clone());
                    let mut values = fenced_pipeline(conn, &pipe, 0, 1, f).await?;
                    values.pop().unwrap_or(Value::Nil).extract_error()
                }),
            },
            Conn::Node { conn, host, port } => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                Box::pin(conn.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pipe(p) => p.req_packed_commands(pipeline, offset, count),
            // A fenced pipeline (the increment and its EXPIRE NX) gets its
            // WAIT as one more command to the same slot's master.
            Conn::Cluster {
                conn,
                fence: Some(f),
                fenced: true,
                ..
            } => {
                let f = *f;
                Box::pin(fenced_pipeline(conn, pipeline, offset, count, f))
            }
            Conn::Cluster { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            Conn::Node { conn, host, port } => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                Box::pin(conn.route_pipeline(pipeline.clone(), offset, count, route))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pipe(p) => p.get_db(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_grouped_by_slot_in_order() {
        // {a} hash tags share a slot; "x" and "y" are in other slots.
        let keys = ["{a}1", "x", "{a}2", "y", "{a}3", "x"];
        let groups = slot_groups(true, keys.iter().copied());
        assert_eq!(groups[0], vec![0, 2, 4]);
        let flat: Vec<usize> = groups.iter().flatten().copied().collect();
        let mut sorted = flat.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
        for g in &groups {
            assert!(g.windows(2).all(|w| w[0] < w[1]), "{g:?} keeps order");
        }
        assert!(groups.iter().any(|g| g == &vec![1, 5]));
        assert_eq!(
            slot_groups(false, keys.iter().copied()),
            vec![vec![0, 1, 2, 3, 4, 5]]
        );
    }

    #[test]
    fn masters_come_from_cluster_slots() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("h", 1),
                node("h", 4),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(9000), node("h", 2)]),
            Value::Array(vec![Value::Int(9001), Value::Int(9002), node("h", 1)]),
        ]);
        assert_eq!(
            masters_of(ranges_of(&slots)),
            vec![
                NodeAddr::At {
                    host: "h".into(),
                    port: 1
                },
                NodeAddr::At {
                    host: "h".into(),
                    port: 2
                }
            ]
        );
    }
}
