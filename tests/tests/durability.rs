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
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let mut c = seqd.client();
    for want in 1..=10 {
        assert_eq!(c.group_next("lossy").unwrap().seq, want);
    }
    // Redis restarts without persistence: the counter is gone.
    redis.restart();
    assert_eq!(redis.get_u64("seq:group:lossy"), None);
    let mut c = seqd.client();
    // Connections to the old Redis are broken; the first requests may fail
    // as unavailable while seqd reconnects, but none may repeat a number.
    let mut got = Vec::new();
    wait_until(
        "seqd to reach the restarted Redis",
        Duration::from_secs(10),
        || {
            if let Ok(s) = c.group_next("lossy") {
                got.push(s.seq);
            }
            !got.is_empty()
        },
    );
    assert_eq!(
        got[0], 11,
        "continues after the mark instead of restarting at 1"
    );
    assert_eq!(c.group_next("lossy").unwrap().seq, 12);
    assert_eq!(redis.get_u64("seq:group:lossy"), Some(12));
    assert!(seqd.log_text().contains("Redis lost data"));
}
