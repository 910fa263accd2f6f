//! A Redis Cluster of our own: three masters on free loopback ports,
//! joined with `redis-cli --cluster create`; slots can be migrated between
//! them under load (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`,
//! `SETSLOT … NODE`), as `redis-cli --cluster reshard` does.

use crate::process::{output_within_deadline, wait_until, STARTUP_DEADLINE};
use crate::redis_server::RedisServer;
use crate::resp::Reply;
use std::process::Command;

/// Three masters forming one cluster (and their replicas, if asked for:
/// nodes 3.. then).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each.
    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "{dir}/nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = output_within_deadline(&mut create);
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        if replicas > 0 {
            wait_until("every replica to sync", STARTUP_DEADLINE, || {
                cluster.nodes.iter().all(|n| {
                    matches!(n.try_cmd(&["INFO", "replication"]), Ok(Reply::Bulk(b)) if {
                        let t = String::from_utf8_lossy(&b).into_owned();
                        t.contains("role:master") || t.contains("master_link_status:up")
                    })
                })
            });
        }
        wait_until(
            "the cluster to be ok on every node",
            STARTUP_DEADLINE,
            || {
                cluster.nodes.iter().all(|n| {
                    matches!(n.try_cmd(&["CLUSTER", "INFO"]),
                    Ok(Reply::Bulk(b)) if String::from_utf8_lossy(&b).contains("cluster_state:ok"))
                })
            },
        );
        cluster
    }

    /// `--redis-cluster` for seqd: one seed node is enough; give two.
    pub fn seeds(&self) -> String {
        format!(
            "127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]).as_int() as u16
    }

    /// A node's cluster id.
    pub fn id(&self, node: usize) -> String {
        match self.nodes[node].cmd(&["CLUSTER", "MYID"]) {
            Reply::Bulk(b) => String::from_utf8(b).unwrap(),
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }

    /// The node that serves `slot` now.
    pub fn owner(&self, slot: u16) -> usize {
        let Reply::Array(ranges) = self.nodes[0].cmd(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS")
        };
        for r in ranges {
            let Reply::Array(r) = r else { continue };
            let (lo, hi) = (r[0].as_int() as u16, r[1].as_int() as u16);
            if (lo..=hi).contains(&slot) {
                let Reply::Array(master) = &r[2] else {
                    continue;
                };
                let port = master[1].as_int() as u16;
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("a node of ours");
            }
        }
        panic!("slot {slot} has no owner")
    }

    /// `GET key` on whichever master holds it.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let owner = self.owner(self.slot_of(key));
        self.nodes[owner].get_u64(key)
    }

    /// Every key on every master matching `pattern` (`KEYS` is fine in a
    /// test's small cluster).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for n in &self.nodes {
            if let Reply::Array(items) = n.cmd(&["KEYS", pattern]) {
                for i in items {
                    if let Reply::Bulk(b) = i {
                        all.push(String::from_utf8(b).unwrap());
                    }
                }
            }
        }
        all.sort();
        all
    }

    /// Moves `slot` to node `to`, key by key with `MIGRATE`, while clients
    /// keep using it (they get `ASK` and `MOVED` meanwhile). `pause` runs
    /// between the steps so that requests land in each phase.
    pub fn migrate(&self, slot: u16, to: usize, mut pause: impl FnMut()) {
        let from = self.owner(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (from_id, to_id) = (self.id(from), self.id(to));
        let s = slot.to_string();
        let ok = |r: Reply, what: &str| {
            assert!(matches!(&r, Reply::Status(x) if x == "OK"), "{what}: {r:?}")
        };
        ok(
            self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
            "IMPORTING",
        );
        ok(
            self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]),
            "MIGRATING",
        );
        pause();
        let to_port = self.nodes[to].port.to_string();
        loop {
            let Reply::Array(keys) = self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "100"])
            else {
                panic!("GETKEYSINSLOT")
            };
            if keys.is_empty() {
                break;
            }
            for k in keys {
                let Reply::Bulk(k) = k else { continue };
                let k = String::from_utf8(k).unwrap();
                let r = self.nodes[from].cmd(&["MIGRATE", "127.0.0.1", &to_port, &k, "0", "5000"]);
                assert!(
                    matches!(&r, Reply::Status(x) if x == "OK" || x == "NOKEY"),
                    "MIGRATE {k}: {r:?}"
                );
                pause();
            }
        }
        // The new owner first, then the old one, then the third master.
        for n in [to, from] {
            ok(
                self.nodes[n].cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]),
                "SETSLOT NODE",
            );
        }
        for n in 0..self.nodes.len() {
            if n != to && n != from {
                ok(
                    self.nodes[n].cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]),
                    "SETSLOT NODE",
                );
            }
        }
        wait_until("the slot's new owner to be known", STARTUP_DEADLINE, || {
            self.owner(slot) == to
        });
    }
}
