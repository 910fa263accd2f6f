//! Walking the keyspace with `SCAN` (never `KEYS`), on every node that
//! holds keys: the one server, or each cluster master in turn (a `SCAN`
//! sees only the node it runs on); and `UNLINK` of what it found.

use super::breakers::Route;
use super::conn::NodeAddr;
use super::error::LinkError;
use super::link::RedisLink;

/// A walk over the keys matching a pattern, page by page.
pub struct Scan {
    pattern: Option<String>,
    count: usize,
    /// Run while the breaker is half-open (recovery), or only while closed.
    recovering: bool,
    nodes: Option<Vec<NodeAddr>>,
    node: usize,
    cursor: u64,
}

impl Scan {
    /// A walk over the keys matching `pattern` (all keys when `None`),
    /// about `count` keys per step.
    pub fn new(pattern: Option<&str>, count: usize, recovering: bool) -> Scan {
        Scan {
            pattern: pattern.map(str::to_string),
            count,
            recovering,
            nodes: None,
            node: 0,
            cursor: 0,
        }
    }

    /// The next non-empty page of keys; `None` once every node was walked.
    /// Each step is one operation under the link's deadline.
    pub async fn next(&mut self, link: &RedisLink) -> Result<Option<Vec<String>>, LinkError> {
        if self.nodes.is_none() {
            let nodes = link
                .call_as(Route::Any, self.recovering, false, |mut c| async move {
                    c.masters().await
                })
                .await?;
            self.nodes = Some(nodes);
        }
        loop {
            let Some(node) = self.nodes.as_ref().and_then(|n| n.get(self.node)).cloned() else {
                return Ok(None);
            };
            let (cursor, count, pattern) = (self.cursor, self.count, self.pattern.as_deref());
            let node = &node;
            let (next, keys): (u64, Vec<String>) = link
                .call_as(Route::Node(node), self.recovering, false, |c| async move {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor);
                    if let Some(p) = pattern {
                        cmd.arg("MATCH").arg(p);
                    }
                    cmd.arg("COUNT").arg(count);
                    cmd.query_async(&mut c.on(node)).await
                })
                .await?;
            if next == 0 {
                self.node += 1;
                self.cursor = 0;
            } else {
                self.cursor = next;
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
    }
}

/// `UNLINK keys`, once per master that holds some of them (on a cluster
/// the redis crate splits each by slot), each through its master's
/// breaker; returns how many existed. The first failure ends it.
pub async fn unlink<K: AsRef<str> + Sync>(
    link: &RedisLink,
    recovering: bool,
    keys: &[K],
) -> Result<u64, LinkError> {
    let names: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    let mut removed = 0;
    for group in link.by_master(&names) {
        let members: Vec<&str> = group.iter().map(|&i| names[i]).collect();
        let members = &members;
        removed += link
            .call_as(
                Route::Key(members[0]),
                recovering,
                true,
                |mut c| async move {
                    redis::cmd("UNLINK")
                        .arg(members)
                        .query_async::<u64>(&mut c)
                        .await
                },
            )
            .await?;
    }
    Ok(removed)
}
