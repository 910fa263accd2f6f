//! Numbers are durable before their reply leaves: a `kill -9` of seqd, or
//! Redis losing its data, never makes seqd hand out a number twice.

use seqd_tests::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: usize = 8;
const KEYS: [&str; 4] = ["daily:alice", "daily:bob", "group:g1", "private:x:y"];

type Issued = Arc<Mutex<HashMap<&'static str, Vec<u64>>>>;

/// One request for `key` through `c`.
fn next(c: &mut seqd_client::Client, key: &str) -> Result<u64, seqd_client::ClientError> {
    let at = Some(1_767_724_199_000);
    match key {
        "daily:alice" => c.daily_next("alice", Some("UTC"), at).map(|d| d.seq),
        "daily:bob" => c.daily_next("bob", Some("Asia/Kolkata"), at).map(|d| d.seq),
        "group:g1" => c.group_next("g1").map(|s| s.seq),
        "private:x:y" => c.private_next("y", "x").map(|s| s.seq),
        _ => unreachable!(),
    }
}

/// Runs `CLIENTS` connections in a loop over all keys until `stop` or an
/// error (the daemon died). Records every number that got a reply and
/// checks each connection's numbers per key are strictly increasing.
fn load(
    seqd: &Seqd,
    issued: &Issued,
    stop: &Arc<AtomicBool>,
    answered: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|i| {
            let mut c = seqd.client();
            let (issued, stop, answered) = (issued.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut mine: HashMap<&str, Vec<u64>> = HashMap::new();
                'outer: while !stop.load(Ordering::Relaxed) {
                    for k in 0..KEYS.len() {
                        let key = KEYS[(i + k) % KEYS.len()];
                        match next(&mut c, key) {
                            Ok(n) => {
                                mine.entry(key).or_default().push(n);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(seqd_client::ClientError::Server(e)) => panic!("error reply: {e}"),
                            Err(_) => break 'outer, // the daemon was killed
                        }
                    }
                }
                let mut all = issued.lock().unwrap();
                for (key, nums) in mine {
                    assert_strictly_increasing(&format!("{key} on connection {i}"), &nums);
                    all.entry(key).or_default().extend(nums);
                }
            })
        })
        .collect()
}

fn kill_mid_load_and_restart(options: SeqdOptions) {
    let mut seqd = Seqd::start(options);
    let before: Issued = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let threads = load(&seqd, &before, &stop, &answered);
    wait_until("400 answers under load", Duration::from_secs(30), || {
        answered.load(Ordering::Relaxed) >= 400
    });
    seqd.kill9();
    for t in threads {
        t.join().expect("load thread");
    }

    seqd.restart();
    let after: Issued = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let threads = load(&seqd, &after, &stop, &answered);
    wait_until("200 answers after restart", Duration::from_secs(30), || {
        answered.load(Ordering::Relaxed) >= 200
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }

    let before = before.lock().unwrap();
    let after = after.lock().unwrap();
    for key in KEYS {
        let b = before.get(key).cloned().unwrap_or_default();
        let a = after.get(key).cloned().unwrap_or_default();
        assert!(!a.is_empty(), "{key}: nothing issued after the restart");
        let max_before = b.iter().copied().max().unwrap_or(0);
        let min_after = a.iter().copied().min().unwrap();
        assert!(
            min_after > max_before,
            "{key}: {min_after} issued after restart, but {max_before} was issued before"
        );
        assert_unique(key, &[b, a].concat());
    }
}

#[test]
fn local_mode_survives_kill_9_mid_load_without_repeating() {
    kill_mid_load_and_restart(SeqdOptions::local());
}

#[test]
fn redis_mode_survives_seqd_kill_9_mid_load_without_repeating() {
    let redis = RedisServer::start();
    kill_mid_load_and_restart(SeqdOptions::redis(&redis));
}

#[test]
fn local_numbers_are_in_the_store_before_the_reply() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut t = seqd.text();
    let last = (0..25)
        .map(|_| seq_of(&t.cmd("CONV NEXT group durable")))
        .last()
        .unwrap();
    assert_eq!(last, 25);
    // No flush, no drain: whatever was answered is already on disk.
    seqd.kill9();
    seqd.restart();
    assert_eq!(
        seqd.text().cmd("CONV GET group durable"),
        "OK seq=25 source=local"
    );
    assert_eq!(
        seqd.text().cmd("CONV NEXT group durable"),
        "OK seq=26 source=local"
    );
}

#[test]
fn redis_that_lost_its_data_is_raised_past_the_high_water_mark() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let mut c = seqd.client();
    for want in 1..=10 {
        assert_eq!(c.group_next("lossy").unwrap().seq, want);
    }
    // The data vanishes under a live connection (a failover to a replica
    // that never got the key looks the same to seqd).
    assert_eq!(redis.cmd(&["FLUSHALL"]), Reply::Status("OK".into()));
    let s = c.group_next("lossy").unwrap();
    assert_eq!(
        (s.seq, s.source),
        (11, seqd_client::seqd_protocol::Source::Redis)
    );
    assert_eq!(redis.get_u64("seq:group:lossy"), Some(11));
    assert_eq!(c.group_next("lossy").unwrap().seq, 12);
    assert!(seqd.log_text().contains("Redis lost data"));
    let metrics = c.metrics().unwrap();
    assert!(
        metrics.contains("seqd_redis_regressions_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn redis_restarted_empty_is_reconciled_and_numbers_continue() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let mut c = seqd.client();
    for want in 1..=10 {
        assert_eq!(c.group_next("lossy").unwrap().seq, want);
    }
    redis.restart();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(
            c.group_next("lossy")
                .expect("answered, from Redis or the store")
                .seq,
        );
    }
    assert_strictly_increasing("after the Redis restart", &got);
    assert!(got[0] > 10, "continued after the mark, got {}", got[0]);
    // Once seqd is back on Redis, the counter is at least every number it
    // issued meanwhile, and new numbers come from Redis again.
    wait_until("Redis to be reconciled", Duration::from_secs(15), || {
        redis.get_u64("seq:group:lossy").unwrap_or(0) >= *got.last().unwrap()
    });
    wait_until("numbers from Redis again", Duration::from_secs(15), || {
        let s = c.group_next("lossy").unwrap();
        assert!(s.seq > *got.last().unwrap());
        got.push(s.seq);
        s.source == seqd_client::seqd_protocol::Source::Redis
    });
    assert_eq!(redis.get_u64("seq:group:lossy"), got.last().copied());
}
