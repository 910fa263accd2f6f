//! The store's tests: durability across restarts and reboots, the fsync
//! policy, and the never-twice rule against Redis answers in flight.

use super::*;
use std::collections::{BTreeSet, HashMap};

/// Every number answered so far, per key (the property test's model).
type Answered = HashMap<String, BTreeSet<u64>>;

/// One Redis request that began now and was answered `n`.
async fn claim(store: &Store, key: &str, n: u64) -> Result<(), Claim> {
    let flight = store.begin(key, None, None, None);
    store.claim(&flight, n, None, None).await
}

#[tokio::test]
async fn issued_numbers_survive_reopen_and_only_rise() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 1);
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 2);
    claim(&store, "k", 10).await.unwrap();
    assert!(claim(&store, "k", 5).await.is_err(), "below the floor");
    assert_eq!(store.mark("k").await.unwrap(), 10);
    written(&store).await;
    let on_disk = Store::read_mark_from_disk(dir.path(), "k").unwrap();
    assert_eq!(on_disk, Some((10, true)));
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.pending(), 1, "dirty survives a restart");
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 11);
    assert!(store.is_dirty("k"), "known dirty once used");
    assert_eq!(store.mark("k").await.unwrap(), 11);
}

/// A key's value and ceiling on disk.
fn disk(dir: &Path, key: &str) -> (u64, u64) {
    let conn = Connection::open(dir.join("seqd.db")).unwrap();
    conn.query_row(
        "SELECT max(value), max(ceiling) FROM
             (SELECT value, ceiling FROM marks WHERE key = ?1
              UNION ALL SELECT value, ceiling FROM mark_log WHERE key = ?1)",
        [key],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .unwrap()
}

/// Makes the store look as if the machine rebooted since it was last
/// opened (another kernel boot id on record).
fn pretend_reboot(dir: &Path) {
    let conn = Connection::open(dir.join("seqd.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE meta SET value = 'an-earlier-boot' WHERE name = 'boot_id'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// Waits until the writer has committed everything queued so far (a
/// journaled number is answered before its commit), without an fsync.
async fn written(store: &Store) {
    let (done, wait) = oneshot::channel();
    store
        .send(
            Op::Read {
                key: Arc::from(""),
                done,
            },
            wait,
        )
        .await
        .unwrap();
}

/// Commits and fsyncs so far.
fn stats(store: &Store) -> (u64, u64) {
    let c = store.counters();
    (c.commits.get(), c.fsyncs.get())
}

async fn issue_n(store: &Store, key: &str, n: u64) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        last = store.issue(key, None, None, None).await.unwrap();
    }
    last
}

#[tokio::test]
async fn ceilings_are_reserved_in_blocks_and_only_crossing_one_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(issue_n(&store, "k", 11).await, 11);
    // Eleven sequential issues: only the first (1 > ceiling 0, which
    // reserved up to 11) fsynced; the ten others were journaled.
    assert_eq!(stats(&store).1, 1);
    written(&store).await;
    assert_eq!(stats(&store).1, 1);
    assert_eq!(disk(dir.path(), "k"), (11, 11));
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 12);
    assert_eq!(stats(&store).1, 2);
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (12, 22));
    // A Redis answer far above the ceiling reserves above it.
    claim(&store, "k", 500).await.unwrap();
    assert_eq!(stats(&store).1, 3);
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (500, 510));
}

#[tokio::test]
async fn a_reserve_of_zero_fsyncs_every_new_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 0).unwrap();
    assert_eq!(issue_n(&store, "k", 5).await, 5);
    assert_eq!(stats(&store), (5, 5));
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (5, 5));
}

#[tokio::test]
async fn a_crash_on_the_same_boot_keeps_exact_marks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 10).unwrap();
    issue_n(&store, "k", 3).await;
    drop(store); // no close: a crash, as far as the next start knows
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 4);
}

#[tokio::test]
async fn after_a_reboot_without_a_clean_stop_keys_go_on_above_their_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 10).unwrap();
    issue_n(&store, "k", 3).await;
    claim(&store, "r", 7).await.unwrap();
    drop(store);
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 10).unwrap();
    // Numbers up to the ceiling may have been issued before the power
    // went: skip them. Nothing is rewritten at start (the rows are read
    // above their ceiling), and a row written again is exact.
    assert_eq!(
        (
            store.mark("k").await.unwrap(),
            store.mark("r").await.unwrap()
        ),
        (11, 17)
    );
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (3, 11), "the row as it was");
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 12);
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (12, 22));
    drop(store);
    // A crash now (same boot) keeps the rule: "r" was never written again.
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(
        store.mark("r").await.unwrap(),
        17,
        "still above its ceiling"
    );
    assert_eq!(store.mark("k").await.unwrap(), 12, "exact since written");
    store.close().await.unwrap();
    drop(store);
    // And across a clean restart, until another unclean reboot makes
    // every row (and "k"'s new one) suspect again.
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(store.mark("r").await.unwrap(), 17);
    assert_eq!(store.mark("k").await.unwrap(), 12);
    drop(store);
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(store.mark("k").await.unwrap(), 22);
    assert_eq!(store.issue("r", None, None, None).await.unwrap(), 18);
}

#[tokio::test]
async fn a_clean_close_keeps_exact_marks_across_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 10).unwrap();
    issue_n(&store, "k", 3).await;
    store.close().await.unwrap();
    assert!(
        matches!(
            store.issue("k", None, None, None).await,
            Err(StoreError::Stopped)
        ),
        "nothing is written after a close"
    );
    drop(store);
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 4);
    // This run did not close: a reboot now means the ceiling.
    drop(store);
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(
        store.mark("k").await.unwrap(),
        11,
        "4 was within the ceiling reserved for 1"
    );
}

#[tokio::test]
async fn concurrent_issues_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.issue("hot", None, None, None).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=200).collect::<Vec<u64>>());
    written(&store).await;
    let on_disk = Store::read_mark_from_disk(dir.path(), "hot").unwrap();
    assert_eq!(on_disk, Some((200, true)));
}

#[tokio::test]
async fn a_redis_number_the_store_issued_meanwhile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    claim(&store, "k", 5).await.unwrap();
    // Two Redis requests begin (floor 5); meanwhile the store hands out 6.
    let a = store.begin("k", None, None, None);
    let b = store.begin("k", None, None, None);
    assert_eq!((a.floor, b.floor), (5, 5));
    assert_eq!(store.issue("k", None, None, None).await.unwrap(), 6);
    let refused = store.claim(&a, 6, None, None).await;
    assert!(matches!(refused, Err(Claim::Taken { mark: 6 })));
    store.claim(&b, 7, None, None).await.unwrap();
    assert_eq!(store.mark("k").await.unwrap(), 7);
}

#[tokio::test]
async fn concurrent_redis_answers_may_arrive_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    let a = store.begin("k", None, None, None);
    let b = store.begin("k", None, None, None);
    store.claim(&b, 2, None, None).await.unwrap();
    store.claim(&a, 1, None, None).await.unwrap();
    assert_eq!(store.mark("k").await.unwrap(), 2);
}

#[tokio::test]
async fn redis_going_back_in_time_cannot_repeat_a_number_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    // Requests a and b began with floor 0; Redis answers a with 100,
    // then loses data and answers b with 100 again.
    let a = store.begin("k", None, None, None);
    let b = store.begin("k", None, None, None);
    store.claim(&a, 100, None, None).await.unwrap();
    let refused = store.claim(&b, 100, None, None).await;
    assert!(matches!(refused, Err(Claim::Taken { mark: 100 })));
    // A request that began after 100 was issued carries floor 100.
    let c = store.begin("k", None, None, None);
    assert_eq!(c.floor, 100);
    assert!(store.claim(&c, 100, None, None).await.is_err());
}

#[tokio::test]
async fn a_mark_learned_from_disk_refuses_answers_to_requests_already_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    claim(&store, "k", 106).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    // After a restart memory does not know "k": two Redis requests begin
    // with floor 0 (Redis, restarted empty, answers 1 and 2). The first
    // answer is refused against the disk, which teaches memory the mark;
    // the second request still carries floor 0 and must be refused too.
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    let a = store.begin("k", None, None, None);
    let b = store.begin("k", None, None, None);
    assert_eq!((a.floor, b.floor), (0, 0));
    assert!(matches!(
        store.claim(&a, 1, None, None).await,
        Err(Claim::Taken { mark: 106 })
    ));
    assert!(matches!(
        store.claim(&b, 2, None, None).await,
        Err(Claim::Taken { mark: 106 })
    ));
    // The same through a read of the mark while a request is in flight.
    drop((a, b));
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    let c = store.begin("k", None, None, None);
    assert_eq!(store.mark("k").await.unwrap(), 106);
    assert!(matches!(
        store.claim(&c, 3, None, None).await,
        Err(Claim::Taken { mark: 106 })
    ));
    let d = store.begin("k", None, None, None);
    assert_eq!(d.floor, 106);
    store.claim(&d, 107, None, None).await.unwrap();
}

#[tokio::test]
async fn answers_to_requests_in_flight_for_a_new_key_are_all_accepted_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    // Four requests begin for a key memory has not verified, and Redis
    // answers 1, 3 and 4 to three of them. Their numbers go to the writer
    // unchecked and are committed one at a time (as when 128 clients ask
    // at once); 2 arrives last. What the disk held before those numbers
    // (nothing) is all memory may learn from the commits: learning 3
    // would refuse 2, which Redis will not answer again (a skip).
    let flights: Vec<Flight> = (0..4).map(|_| store.begin("k", None, None, None)).collect();
    let drawn: Vec<_> = flights[..3]
        .iter()
        .zip([1, 3, 4])
        .map(|(f, n)| (store.lock().claim(f, n, None, None).unwrap(), n))
        .collect();
    for (drawn, n) in drawn {
        assert!(drawn.unchecked.is_some(), "memory had not verified the key");
        store.commit_claim(drawn, n, None, None).await.unwrap();
    }
    store.claim(&flights[3], 2, None, None).await.unwrap();
    assert_eq!(store.mark("k").await.unwrap(), 4);
}

#[tokio::test]
async fn finished_requests_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    for n in 1..=100 {
        let a = store.begin("k", None, None, None);
        let b = store.begin("k", None, None, None);
        store.claim(&a, 2 * n - 1, None, None).await.unwrap();
        store.claim(&b, 2 * n, None, None).await.unwrap();
    }
    let marks = store.lock();
    let m = &marks.by_key["k"];
    assert!(m.recent.is_empty() && m.flights.is_empty());
}

#[tokio::test]
async fn reconciliation_clears_dirty_unless_issued_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    store.issue("a", None, Some(172_800), None).await.unwrap();
    store.issue("b", None, None, None).await.unwrap();
    claim(&store, "c", 3).await.unwrap();
    assert_eq!(store.pending(), 2);
    let mut batch = store.pending_batch(10, &|_| true).await.unwrap();
    batch.sort_by(|x, y| x.key.cmp(&y.key));
    let want = vec![
        PendingKey {
            key: "a".into(),
            value: 1,
            ttl: Some(172_800),
            dirty_from: Some(0),
        },
        PendingKey {
            key: "b".into(),
            value: 1,
            ttl: None,
            dirty_from: Some(0),
        },
    ];
    assert_eq!(batch, want);
    store.reconciled("a", 1).await.unwrap();
    // "b" was issued again before its reconciliation was recorded.
    store.issue("b", None, None, None).await.unwrap();
    store.reconciled("b", 1).await.unwrap();
    assert!(!store.is_dirty("a"));
    assert!(store.is_dirty("b"));
    written(&store).await;
    let disk = |k| Store::read_mark_from_disk(dir.path(), k).unwrap();
    assert_eq!(disk("a"), Some((1, false)));
    assert_eq!(disk("b"), Some((2, true)));
    assert_eq!(disk("c"), Some((3, false)));
}

#[tokio::test]
async fn prune_drops_only_expired_marks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    let f = store.begin("old", Some(100), None, None);
    store.claim(&f, 3, Some(100), None).await.unwrap();
    drop(f);
    store.issue("new", Some(300), None, None).await.unwrap();
    claim(&store, "forever", 5).await.unwrap();
    store
        .issue("old-dirty", Some(100), None, None)
        .await
        .unwrap();
    assert_eq!(store.prune(200).await.unwrap(), 2);
    assert_eq!(store.mark("old").await.unwrap(), 0);
    assert_eq!(store.mark("new").await.unwrap(), 1);
    assert_eq!(store.mark("forever").await.unwrap(), 5);
    assert_eq!(store.pending(), 1, "pruned keys are no longer pending");
    written(&store).await;
    assert_eq!(Store::read_mark_from_disk(dir.path(), "old").unwrap(), None);
    // Marks that expired while seqd was stopped are read (nothing is
    // loaded at start) until the first prune, which seqd runs at start.
    drop(store);
    let store = Store::open(dir.path(), 400, 1000).unwrap();
    assert_eq!(store.mark("new").await.unwrap(), 1);
    assert_eq!(store.prune(400).await.unwrap(), 1);
    assert_eq!(store.mark("new").await.unwrap(), 0);
    assert_eq!(store.mark("forever").await.unwrap(), 5);
}

#[tokio::test]
async fn a_dirty_key_remembers_where_its_local_numbers_began_until_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    claim(&store, "k", 5).await.unwrap();
    assert_eq!(
        store.dirty_from("k"),
        None,
        "numbers from Redis are not dirty"
    );
    store.issue("k", None, None, None).await.unwrap();
    store.issue("k", None, None, None).await.unwrap();
    assert_eq!(store.dirty_from("k"), Some(5));
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.pending(), 1);
    assert_eq!(
        store.pending_batch(1, &|_| true).await.unwrap()[0].dirty_from,
        Some(5)
    );
    assert_eq!(store.dirty_from("k"), Some(5), "kept across a restart");
    store.reconciled("k", 7).await.unwrap();
    assert_eq!(store.dirty_from("k"), None);
    // A later outage starts a new local range.
    store.issue("k", None, None, None).await.unwrap();
    assert_eq!(store.dirty_from("k"), Some(7));
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(
        store.pending_batch(1, &|_| true).await.unwrap()[0].dirty_from,
        Some(7)
    );
    assert_eq!(store.dirty_from("k"), Some(7));
}

#[tokio::test]
async fn a_cold_daily_key_costs_no_fsync_and_a_lost_one_starts_above_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_000_000;
    let (expires, ttl, opened) = (Some(now + 172_800), Some(172_800), Some(now - 86_400));
    let store = Store::open(dir.path(), now, 10).unwrap();
    let before = stats(&store).1;
    // 100 new daily keys, one number each: plain WAL writes.
    for i in 0..100 {
        let key = format!("user:u{i}:sequence:20260106");
        assert_eq!(store.issue(&key, expires, ttl, opened).await.unwrap(), 1);
    }
    assert_eq!(
        stats(&store).1,
        before,
        "no fsync for the first numbers of daily keys"
    );
    written(&store).await;
    assert_eq!(
        disk(dir.path(), "user:u0:sequence:20260106"),
        (1, 10),
        "implied ceiling"
    );
    // Up to the reserve, still none; past it, one.
    let hot = "user:hot:sequence:20260106";
    for _ in 0..10 {
        store.issue(hot, expires, ttl, opened).await.unwrap();
    }
    assert_eq!(stats(&store).1, before);
    assert_eq!(store.issue(hot, expires, ttl, opened).await.unwrap(), 11);
    assert_eq!(stats(&store).1, before + 1);
    // A conversation key fsyncs its first number, as before.
    assert_eq!(
        store.issue("seq:group:g", None, None, None).await.unwrap(),
        1
    );
    assert_eq!(stats(&store).1, before + 2);
    drop(store);

    // A power loss took the row of one daily key whole (it was never
    // fsynced) and the machine rebooted.
    Connection::open(dir.path().join("seqd.db"))
        .unwrap()
        .execute_batch(
            "DELETE FROM marks WHERE key = 'user:u0:sequence:20260106';
             DELETE FROM mark_log WHERE key = 'user:u0:sequence:20260106';",
        )
        .unwrap();
    pretend_reboot(dir.path());
    let later = now + 60;
    let store = Store::open(dir.path(), later, 10).unwrap();
    // The lost key's window was open before the stop: it may have issued
    // up to the reserve, so it goes on above it.
    let lost = "user:u0:sequence:20260106";
    assert_eq!(store.issue(lost, expires, ttl, opened).await.unwrap(), 11);
    // A key that survived goes on above its (implied) ceiling.
    let kept = "user:u1:sequence:20260106";
    assert_eq!(store.issue(kept, expires, ttl, opened).await.unwrap(), 11);
    // A daily key whose window opened after the stop starts at 1.
    let fresh = "user:u0:sequence:20260110";
    let opened_later = Some(later + 3 * 86_400);
    assert_eq!(
        store
            .issue(fresh, expires, ttl, opened_later)
            .await
            .unwrap(),
        1
    );
    // A new conversation starts at 1 (conversation keys were fsynced).
    assert_eq!(
        store
            .issue("seq:group:new", None, None, None)
            .await
            .unwrap(),
        1
    );
    drop(store);
    // The stop stays on record across a clean restart.
    let store = Store::open(dir.path(), later + 120, 10).unwrap();
    let other = "user:u9999:sequence:20260106";
    assert_eq!(store.issue(other, expires, ttl, opened).await.unwrap(), 11);
}

#[tokio::test]
async fn the_mark_log_folds_into_marks_keeping_the_highest_and_the_first_dirty_start() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), 0, 10).unwrap());
    let conn = Connection::open(dir.path().join("seqd.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO marks (key, value, expires_at, dirty, ttl, ceiling, dirty_from)
             VALUES ('a', 5, 100, 0, 60, 15, NULL);
         INSERT INTO mark_log (key, value, expires_at, dirty, ttl, ceiling, dirty_from) VALUES
             ('a', 7, 200, 1, 70, NULL, 5),
             ('a', 6, 150, 1, NULL, 30, 6),
             ('b', 1, NULL, 0, NULL, 11, NULL),
             ('b', 2, NULL, 0, NULL, NULL, NULL);",
    )
    .unwrap();
    assert_eq!(schema::compact(&conn).unwrap(), 4);
    let row = |k: &str| {
        conn.query_row(
            "SELECT value, expires_at, dirty, ttl, ceiling, dirty_from FROM marks WHERE key = ?1",
            [k],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .unwrap()
    };
    assert_eq!(row("a"), (7, Some(200), 1, Some(70), Some(30), Some(5)));
    assert_eq!(row("b"), (2, None, 0, None, Some(11), None));
    let left: i64 = conn
        .query_row("SELECT count(*) FROM mark_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // A store reopened with rows still in the log folds them first.
    conn.execute(
        "INSERT INTO mark_log (key, value, expires_at, dirty, ttl, ceiling, dirty_from)
         VALUES ('b', 9, NULL, 0, NULL, 19, NULL)",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(dir.path(), 0, 10).unwrap();
    assert_eq!(store.mark("b").await.unwrap(), 9);
}

#[tokio::test]
async fn a_prune_in_the_same_batch_keeps_the_ceiling_just_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    // The first number and a prune in one batch: the prune reloads the
    // ceilings while the number's row is still in the mark log.
    let (a, b) = tokio::join!(store.issue("k", None, None, None), store.prune(0));
    assert_eq!(a.unwrap(), 1);
    b.unwrap();
    let fsyncs = stats(&store).1;
    assert_eq!(issue_n(&store, "k", 20).await, 21);
    assert_eq!(
        stats(&store).1,
        fsyncs,
        "the reserved ceiling (101) was kept"
    );
    written(&store).await;
    assert_eq!(disk(dir.path(), "k"), (21, 101));
}

#[tokio::test]
async fn a_start_loads_only_pending_keys_and_reads_the_others_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(issue_n(&store, "local", 5).await, 5);
    claim(&store, "redis", 7).await.unwrap();
    store.reconciled("local", 5).await.unwrap();
    issue_n(&store, "dirty", 2).await;
    store.close().await.unwrap();
    drop(store);

    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.len(), 0, "nothing loaded");
    assert_eq!(
        store.pending(),
        1,
        "one key pending reconciliation, on disk"
    );
    assert!(!store.is_dirty("dirty"), "not in memory yet");
    // Its first draw after the restart is refused against the disk, which
    // also says it is pending and where its local numbers began.
    assert_eq!(store.issue("dirty", None, None, None).await.unwrap(), 3);
    assert!(store.is_dirty("dirty"));
    assert_eq!(store.dirty_from("dirty"), Some(0));
    assert_eq!(store.pending(), 1);
    // Memory does not know "local": its first draw (1) is refused by the
    // writer against the disk's 5, and the number answered is 6.
    let (commits, _) = stats(&store);
    assert_eq!(store.issue("local", None, None, None).await.unwrap(), 6);
    assert_eq!(stats(&store).0, commits + 2, "one refused draw, one commit");
    assert_eq!(store.issue("local", None, None, None).await.unwrap(), 7);
    // A Redis answer at or below the disk's mark is refused with that mark.
    match claim(&store, "redis", 4).await {
        Err(Claim::Taken { mark }) => assert_eq!(mark, 7),
        other => panic!("expected Taken, got {other:?}"),
    }
    claim(&store, "redis", 8).await.unwrap();
    // A read of a key memory does not hold goes to the disk.
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.mark("redis").await.unwrap(), 8);
    assert_eq!(store.mark("local").await.unwrap(), 7);
    assert_eq!(store.mark("never").await.unwrap(), 0);
}

#[tokio::test]
async fn evicted_marks_come_back_from_disk_and_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    store.limit_marks_in_memory(16);
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for round in 1..=3u64 {
        // Every key, many times at once: none is answered twice.
        let draws = keys
            .iter()
            .flat_map(|k| (0..4).map(move |_| k.clone()))
            .map(|k| {
                let store = store.clone();
                async move {
                    let n = store.issue(&k, None, None, None).await.unwrap();
                    (k, n)
                }
            });
        let mut got = futures_util::future::join_all(draws).await;
        got.sort();
        got.dedup();
        assert_eq!(got.len(), keys.len() * 4, "a number answered twice");
        for k in &keys {
            assert_eq!(store.mark(k).await.unwrap(), round * 4, "{k}");
        }
        // Reconciled, the marks may go; a flood of new keys evicts them.
        for k in &keys {
            store.reconciled(k, round * 4).await.unwrap();
        }
        for i in 0..100 {
            claim(&store, &format!("flood{round}-{i}"), 1)
                .await
                .unwrap();
        }
        assert!(
            store.len() <= 16,
            "memory keeps the cap, has {}",
            store.len()
        );
        assert!(keys.iter().filter(|k| store.is_dirty(k)).count() == 0);
    }
}

#[tokio::test]
async fn keys_pending_on_disk_only_are_paged_in_for_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    store.limit_marks_in_memory(16);
    // A day in local mode: every key dirty, most evicted.
    for i in 0..100 {
        store
            .issue(&format!("k{i:03}"), None, None, None)
            .await
            .unwrap();
    }
    assert!(store.len() <= 16, "dirty marks are evicted too");
    assert_eq!(store.pending(), 100);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        if store.pending() == 0 {
            break;
        }
        for p in store.pending_batch(10, &|_| true).await.unwrap() {
            assert_eq!((p.value, p.dirty_from), (1, Some(0)), "{}", p.key);
            seen.insert(p.key.to_string());
            store.reconciled(&p.key, p.value).await.unwrap();
        }
    }
    assert_eq!(store.pending(), 0);
    assert_eq!(seen.len(), 100, "every pending key was reconciled");
    let conn = Connection::open(dir.path().join("seqd.db")).unwrap();
    schema::compact(&conn).unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM marks WHERE dirty = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0, "clean on disk");
    drop(conn);
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    assert_eq!(store.pending(), 0);
}

#[tokio::test]
async fn a_pending_key_first_read_after_a_restart_is_still_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    issue_n(&store, "k", 3).await;
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    // A Redis request puts the key in memory (unverified); a read then
    // verifies its mark without saying it is pending.
    let flight = store.begin("k", None, None, None);
    assert_eq!(store.mark("k").await.unwrap(), 3);
    drop(flight);
    assert_eq!(store.len(), 1);
    assert!(!store.is_dirty("k"));
    assert_eq!(store.pending(), 1);
    let batch = store.pending_batch(10, &|_| true).await.unwrap();
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert_eq!((&*batch[0].key, batch[0].value), ("k", 3));
    store.reconciled("k", 3).await.unwrap();
    assert_eq!(store.pending(), 0);
    // A key reconciled after its mark was evicted leaves the count high
    // until a page from the start finds nothing more.
    assert!(store.pending_batch(10, &|_| true).await.unwrap().is_empty());
    assert_eq!(store.pending(), 0);
}

/// One step of [`marks_on_demand_never_hand_out_a_number_twice`].
#[derive(Debug, Clone)]
enum Step {
    /// A local number for key `k`.
    Issue(u8),
    /// Redis answers `n` for key `k` (any value: Redis may have lost data).
    Claim(u8, u64),
    /// `count` Redis requests for key `k` begin and stay in flight (while
    /// the steps after them run: local numbers, evictions, other answers).
    Begin(u8, u8),
    /// Redis answers `n` to the `i`-th request in flight (modulo their
    /// number).
    Answer(usize, u64),
    /// Redis answers the oldest requests in flight at once, one per number
    /// (the others stay in flight): their writes meet in one batch.
    AnswerAll(Vec<u64>),
    /// As `AnswerAll`, but memory takes every answer before the first is
    /// committed, and each is committed on its own (unchecked numbers of
    /// one mark in successive commits, while other requests for the key
    /// may still be in flight).
    AnswerInTurn(Vec<u64>),
    /// The key's mark is read (`GET`): from the disk, when memory has not
    /// verified it.
    Read(u8),
    /// Redis was raised to the key's mark.
    Reconcile(u8),
    /// Several local numbers for one key at once.
    Burst(u8, u8),
    /// Local numbers for several keys at once (evictions while writes are
    /// outstanding).
    Mixed(Vec<u8>),
    /// The key's row is read on the requesting thread before its numbers
    /// are drawn (`Store::read_if_new`), as the capabilities do.
    Prepare(u8),
    /// seqd stops (cleanly or not) and starts again on the same store.
    Reopen(bool),
    /// seqd crashes and the machine reboots (rows read above their
    /// ceilings from then on).
    Reboot,
}

/// A Redis request in flight, with its key's highest answer when it began.
type Open = (Flight, u64);

/// Checks what the store made of Redis answering `n` to a request that
/// began when its key's highest answer was `top`, and records an accepted
/// answer. A *fresh* answer — above `top` and never answered before (two
/// requests in flight may be answered out of order) — is accepted unless
/// at or below the floor the request carried (the script would never have
/// answered it) or after a reboot (marks then jump past their ceilings):
/// a Redis that lost nothing skips no number. Any other is refused.
fn check_answer(
    (flight, top): &Open,
    n: u64,
    outcome: Result<(), Claim>,
    answered: &mut Answered,
    rebooted: bool,
) {
    let key = flight.key.to_string();
    let fresh = n > *top && !answered.get(&key).is_some_and(|s| s.contains(&n));
    match outcome {
        Ok(()) => {
            assert!(n > *top, "{key}: Redis's {n} accepted, not above {top}");
            assert!(
                answered.entry(key.clone()).or_default().insert(n),
                "{key}: Redis's {n} accepted, answered before"
            );
        }
        Err(Claim::Taken { mark }) => {
            assert!(
                !fresh || n <= flight.floor || rebooted,
                "{key}: Redis's {n} refused though fresh (above {top}, mark {mark}): a skip"
            );
            assert!(
                mark >= n,
                "{key}: the mark given back ({mark}) is below {n}"
            );
        }
        Err(Claim::Failed(e)) => panic!("{e}"),
    }
}

/// [`check_answer`] for requests answered together: the accepted answers
/// first, so that a refusal is judged against every answer, including
/// those of the same step.
fn check_answers(
    requests: &[Open],
    numbers: Vec<u64>,
    outcomes: Vec<Result<(), Claim>>,
    answered: &mut Answered,
    rebooted: bool,
) {
    let (accepted, refused): (Vec<_>, Vec<_>) = requests
        .iter()
        .zip(numbers)
        .zip(outcomes)
        .partition(|(_, outcome)| outcome.is_ok());
    for ((request, n), outcome) in accepted.into_iter().chain(refused) {
        check_answer(request, n, outcome, answered, rebooted);
    }
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..12).prop_map(Step::Issue),
        3 => ((0u8..12), 0u64..30).prop_map(|(k, n)| Step::Claim(k, n)),
        3 => ((0u8..4), 1u8..4).prop_map(|(k, count)| Step::Begin(k, count)),
        2 => (any::<usize>(), 0u64..30).prop_map(|(i, n)| Step::Answer(i, n)),
        1 => proptest::collection::vec(0u64..30, 1..6).prop_map(Step::AnswerAll),
        1 => proptest::collection::vec(0u64..30, 1..6).prop_map(Step::AnswerInTurn),
        1 => (0u8..12).prop_map(Step::Reconcile),
        1 => (0u8..4).prop_map(Step::Read),
        1 => ((0u8..12), 2u8..6).prop_map(|(k, n)| Step::Burst(k, n)),
        2 => proptest::collection::vec(0u8..12, 2..16).prop_map(Step::Mixed),
        1 => any::<bool>().prop_map(Step::Reopen),
        1 => Just(Step::Reboot),
        3 => (0u8..12).prop_map(Step::Prepare),
    ]
}

/// Most Redis requests the property test keeps in flight at once.
const MAX_OPEN: usize = 6;

/// Runs `steps` against a fresh store and the model (see
/// [`marks_on_demand_never_hand_out_a_number_twice`]); panics on the first
/// disagreement.
fn run_steps(steps: Vec<Step>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let s = Store::open(dir.path(), 0, 5).unwrap();
            s.limit_marks_in_memory(3);
            s
        };
        let mut store = open();
        // After a reboot marks go on above their ceilings: numbers are
        // skipped, never repeated.
        let mut rebooted = false;
        let mut answered = Answered::default();
        // Redis requests in flight (a seqd restart ends them).
        let mut in_flight: Vec<Open> = Vec::new();
        let top = |answered: &Answered, k: &str| {
            answered.get(k).and_then(|s| s.last().copied()).unwrap_or(0)
        };
        for step in steps {
            match step {
                Step::Prepare(k) => {
                    store.read_if_new(&format!("k{k}"), None, None, None);
                }
                Step::Issue(k) => {
                    let key = format!("k{k}");
                    let n = store.issue(&key, None, None, None).await.unwrap();
                    assert!(
                        n > top(&answered, &key),
                        "{key}: {n} not above earlier answers"
                    );
                    assert!(answered.entry(key).or_default().insert(n));
                }
                Step::Burst(k, count) => {
                    let key = format!("k{k}");
                    let before = top(&answered, &key);
                    let draws = (0..count).map(|_| store.issue(&key, None, None, None));
                    let got = futures_util::future::join_all(draws).await;
                    for n in got {
                        let n = n.unwrap();
                        assert!(n > before, "{key}: {n} not above {before}");
                        assert!(
                            answered.entry(key.clone()).or_default().insert(n),
                            "{key}: {n} twice"
                        );
                    }
                }
                Step::Mixed(keys) => {
                    let draws = keys.iter().map(|k| {
                        let store = store.clone();
                        async move {
                            let key = format!("k{k}");
                            let n = store.issue(&key, None, None, None).await.unwrap();
                            (key, n)
                        }
                    });
                    let before = answered.clone();
                    for (key, n) in futures_util::future::join_all(draws).await {
                        assert!(
                            n > top(&before, &key),
                            "{key}: {n} not above earlier answers"
                        );
                        assert!(
                            answered.entry(key.clone()).or_default().insert(n),
                            "{key}: {n} twice"
                        );
                    }
                }
                Step::Claim(k, n) => {
                    let key = format!("k{k}");
                    let request = (store.begin(&key, None, None, None), top(&answered, &key));
                    let outcome = store.claim(&request.0, n, None, None).await;
                    check_answer(&request, n, outcome, &mut answered, rebooted);
                }
                Step::Begin(k, count) => {
                    let key = format!("k{k}");
                    for _ in 0..count {
                        if in_flight.len() < MAX_OPEN {
                            in_flight
                                .push((store.begin(&key, None, None, None), top(&answered, &key)));
                        }
                    }
                }
                Step::Answer(i, n) => {
                    if !in_flight.is_empty() {
                        let request = in_flight.remove(i % in_flight.len());
                        let outcome = store.claim(&request.0, n, None, None).await;
                        check_answer(&request, n, outcome, &mut answered, rebooted);
                    }
                }
                Step::AnswerAll(ns) => {
                    let requests: Vec<Open> =
                        in_flight.drain(..ns.len().min(in_flight.len())).collect();
                    let numbers = ns[..requests.len()].to_vec();
                    let claims = requests
                        .iter()
                        .zip(&numbers)
                        .map(|((flight, _), n)| store.claim(flight, *n, None, None));
                    let outcomes = futures_util::future::join_all(claims).await;
                    check_answers(&requests, numbers, outcomes, &mut answered, rebooted);
                }
                Step::AnswerInTurn(ns) => {
                    let requests: Vec<Open> =
                        in_flight.drain(..ns.len().min(in_flight.len())).collect();
                    let numbers = ns[..requests.len()].to_vec();
                    let drawn: Vec<_> = requests
                        .iter()
                        .zip(&numbers)
                        .map(|((flight, _), n)| store.lock().claim(flight, *n, None, None))
                        .collect();
                    let mut outcomes = Vec::new();
                    for (drawn, n) in drawn.into_iter().zip(&numbers) {
                        outcomes.push(match drawn {
                            Ok(drawn) => store.commit_claim(drawn, *n, None, None).await,
                            Err(refused) => Err(refused),
                        });
                    }
                    check_answers(&requests, numbers, outcomes, &mut answered, rebooted);
                }
                Step::Read(k) => {
                    let key = format!("k{k}");
                    let mark = store.mark(&key).await.unwrap();
                    let top = top(&answered, &key);
                    assert!(
                        mark == top || rebooted && mark > top,
                        "{key}: read {mark}, answered up to {top}"
                    );
                }
                Step::Reconcile(k) => {
                    let key = format!("k{k}");
                    store.reconciled(&key, top(&answered, &key)).await.unwrap();
                }
                Step::Reboot => {
                    in_flight.clear();
                    rebooted = true;
                    store.flush().await.unwrap();
                    drop(store);
                    pretend_reboot(dir.path());
                    store = open();
                }
                Step::Reopen(clean) => {
                    in_flight.clear();
                    if clean {
                        store.close().await.unwrap();
                    } else {
                        store.flush().await.unwrap();
                    }
                    drop(store);
                    store = open();
                }
            }
        }
        // Every answer is on disk, and memory agrees with the model
        // (or is above it, after a reboot).
        for (key, numbers) in &answered {
            let top = *numbers.last().unwrap();
            let mark = store.mark(key).await.unwrap();
            if rebooted {
                assert!(mark >= top, "{key}: {mark} below {top}");
            } else {
                assert_eq!(mark, top, "{key}");
            }
        }
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Against a model of everything ever answered, through evictions (a
    /// cap of 3 marks for 12 keys), restarts, and Redis requests left in
    /// flight across all of it and answered one by one or together: a
    /// number is never answered twice for a key, a local number is above
    /// every earlier answer of its key, a Redis answer is accepted only
    /// above every answer from before its request began, and one above
    /// every answer is refused only at or below its request's floor.
    #[test]
    fn marks_on_demand_never_hand_out_a_number_twice(steps in proptest::collection::vec(step(), 1..60)) {
        run_steps(steps);
    }
}

/// The model's scenarios for the races CI, a loaded run and the model
/// itself found.
#[test]
fn requests_in_flight_across_commits_that_teach_memory_the_disk() {
    use Step::*;
    // After a restart, the disk's mark is learned while requests are in
    // flight (from a refused answer, or a read): their answers at or below
    // it are refused.
    run_steps(vec![
        Claim(0, 9),
        Reopen(true),
        Begin(0, 2),
        Answer(0, 1),
        Answer(0, 2),
    ]);
    run_steps(vec![
        Claim(0, 9),
        Reopen(true),
        Begin(0, 2),
        Read(0),
        Answer(0, 3),
        Answer(0, 10),
    ]);
    // A request that began before the key was verified is answered after
    // a reconciliation folded the mark log (the writer forgot the base):
    // memory's base still lets its fresh answer through.
    run_steps(vec![Begin(0, 2), Answer(0, 17), Reconcile(0), Answer(0, 1)]);
    // Memory's own numbers committed one at a time do not refuse an
    // answer still in flight below them.
    run_steps(vec![Begin(0, 4), AnswerInTurn(vec![1, 3, 4]), Answer(0, 2)]);
    // A read teaches memory the disk's mark while a request that began
    // unverified is in flight; a later request's answer is committed
    // first: the early request's fresh answer is compared with the disk
    // as the read found it, not with the later number.
    run_steps(vec![
        Begin(2, 1),
        Read(2),
        Claim(2, 9),
        AnswerInTurn(vec![1]),
    ]);
}

/// Numbers a killed seqd left in the journal only (answered, not yet
/// committed): written as a record would be after the store's last open.
fn leave_in_journal(dir: &Path, records: &[(&str, u64, Option<u64>)]) {
    let mut j = journal::Journal::open(dir).unwrap().0.map().unwrap();
    for (key, value, dirty_from) in records {
        j.append(&journal::Entry {
            key,
            value: *value,
            expires_at: None,
            ttl: None,
            dirty_from: *dirty_from,
        })
        .unwrap();
    }
    // The process is gone: no unmapping in order, the pages stay.
    std::mem::forget(j);
}

#[tokio::test]
async fn numbers_only_in_the_journal_are_replayed_at_open_unless_the_machine_rebooted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    assert_eq!(issue_n(&store, "local", 3).await, 3);
    claim(&store, "redis", 7).await.unwrap();
    written(&store).await;
    drop(store);
    leave_in_journal(
        dir.path(),
        &[
            ("local", 4, Some(0)),
            ("local", 9, Some(0)),
            ("local", 8, Some(0)),
            ("redis", 12, None),
            ("redis", 5, None),
            ("fresh", 2, None),
        ],
    );
    let store = Store::open(dir.path(), 0, 100).unwrap();
    // Replayed before anything is served: the highest of each key.
    assert_eq!(disk(dir.path(), "local").0, 9);
    assert_eq!(disk(dir.path(), "redis").0, 12);
    assert_eq!(disk(dir.path(), "fresh").0, 2);
    assert_eq!(store.issue("local", None, None, None).await.unwrap(), 10);
    assert_eq!(store.mark("redis").await.unwrap(), 12);
    assert!(store.is_dirty("local"));
    assert_eq!(store.pending(), 1, "only local numbers are pending");
    written(&store).await;
    drop(store);
    // The journal was started afresh at that open: nothing is replayed
    // twice, and a reopen finds what the disk holds.
    let store = Store::open(dir.path(), 0, 100).unwrap();
    assert_eq!(store.mark("local").await.unwrap(), 10);
    drop(store);

    // After a reboot without a clean stop the journal is not read: the
    // keys go on above their ceilings, which cover every journaled number.
    leave_in_journal(dir.path(), &[("local", 60, Some(0))]);
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 100).unwrap();
    written(&store).await;
    assert_eq!(disk(dir.path(), "local"), (10, 101), "not replayed");
    assert_eq!(store.issue("local", None, None, None).await.unwrap(), 102);
}

#[tokio::test]
async fn a_verified_number_below_its_ceiling_is_answered_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    // The first number waits for its commit (memory verifies the mark and
    // learns the ceiling from it); the next ones are journaled.
    assert_eq!(issue_n(&store, "k", 1).await, 1);
    let m = |store: &Store| {
        let marks = store.lock();
        let m = &marks.by_key["k"];
        (m.verified, m.ceiling)
    };
    assert_eq!(m(&store), (true, Some(101)));
    let d = store.lock().issue("k", None, None, None).unwrap();
    // The first number handed over since the writer last took them
    // wakes it; the next ones do not.
    assert_eq!((d.value, d.journaled), (2, Some(true)));
    assert!(d.unchecked.is_none());
    let d = store.lock().issue("k", None, None, None).unwrap();
    assert_eq!((d.value, d.journaled), (3, Some(false)));
    store.wake_writer();
    assert_eq!(issue_n(&store, "k", 98).await, 101);
    // A number above the ceiling is not journaled: it waits for the
    // commit that raises the ceiling, with an fsync.
    let d = store.lock().issue("k", None, None, None).unwrap();
    assert_eq!((d.value, d.journaled), (102, None), "above the ceiling");
}

#[tokio::test]
async fn a_new_key_read_on_its_thread_starts_verified_when_the_read_is_the_whole_truth() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    let day = Some(i64::MAX);
    // No row: a daily key starts verified at 0 with the implied ceiling,
    // so its first number is journaled; a conversation key's first number
    // still waits for the commit that fsyncs its ceiling.
    store.read_if_new("daily", day, Some(86_400), None);
    let d = store
        .lock()
        .issue("daily", day, Some(86_400), None)
        .unwrap();
    assert_eq!((d.value, d.journaled.is_some()), (1, true));
    assert!(d.unchecked.is_none());
    store.read_if_new("conv", None, None, None);
    let d = store.lock().issue("conv", None, None, None).unwrap();
    assert_eq!((d.value, d.journaled, d.unchecked), (1, None, None));
    // (That draw was never written. Redis's 2 is, with an fsynced ceiling
    // of 2 + 100; a Redis number leaves the key clean.)
    claim(&store, "conv", 2).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    // A row: memory starts at its value and ceiling.
    let store = Store::open(dir.path(), 0, 100).unwrap();
    store.read_if_new("conv", None, None, None);
    let m = |store: &Store, k: &str| {
        let marks = store.lock();
        marks
            .by_key
            .get(k)
            .map(|m| (m.value, m.verified, m.ceiling))
    };
    assert_eq!(m(&store, "conv"), Some((2, true, Some(102))));
    // A key memory holds already is not read again.
    store.lock().issue("held", None, None, None).unwrap();
    store.read_if_new("held", None, None, None);
    assert_eq!(m(&store, "held"), Some((1, false, None)));
    drop(store);

    // A row pending reconciliation stays with the writer's bookkeeping.
    let store = Store::open(dir.path(), 0, 100).unwrap();
    assert_eq!(store.issue("dirty", None, None, None).await.unwrap(), 1);
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), 0, 100).unwrap();
    store.read_if_new("dirty", None, None, None);
    assert_eq!(m(&store, "dirty"), None, "not adopted");
    drop(store);

    // After a reboot without a clean stop, a row is read above its ceiling.
    pretend_reboot(dir.path());
    let store = Store::open(dir.path(), 0, 100).unwrap();
    store.read_if_new("conv", None, None, None);
    assert_eq!(m(&store, "conv"), Some((102, true, Some(102))));
}

#[tokio::test]
async fn a_read_is_not_trusted_after_an_eviction_until_the_mark_log_is_folded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    store.limit_marks_in_memory(4);
    // Numbers for more keys than memory holds: marks are evicted while
    // their rows are still in the mark log, which a read does not see.
    for k in 0..8 {
        store
            .issue(&format!("k{k}"), None, None, None)
            .await
            .unwrap();
        written(&store).await;
    }
    assert!(store.lock().evicted_since_fold > 0);
    let gone = (0..8)
        .map(|k| format!("k{k}"))
        .find(|k| !store.lock().by_key.contains_key(k.as_str()))
        .expect("an evicted key");
    store.read_if_new(&gone, None, None, None);
    assert!(
        !store.lock().by_key.contains_key(gone.as_str()),
        "not adopted"
    );
    // Its next number is checked by the writer against the log: 2, not 1.
    assert_eq!(store.issue(&gone, None, None, None).await.unwrap(), 2);
    // A fold (a prune folds the log) makes reads whole again.
    store.prune(0).await.unwrap();
    assert_eq!(store.lock().evicted_since_fold, 0);
}

/// Waits until the filter of keys on disk has been built `n` times.
async fn filter_built(store: &Store, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.lock().rows.builds < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the filter of keys on disk was not built {n} times"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_key_the_filter_has_not_seen_starts_verified_without_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    claim(&store, "old", 5).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = Store::open(dir.path(), 0, 100).unwrap();
    filter_built(&store, 1).await;
    let reads = || {
        store
            .readers
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let m = |k: &str| store.lock().by_key.get(k).map(|m| (m.value, m.verified));
    store.read_if_new("new", None, None, None);
    assert_eq!(reads(), 0, "a key with no row is not read");
    assert_eq!(m("new"), Some((0, true)));
    store.read_if_new("old", None, None, None);
    assert_eq!(reads(), 1, "a key on disk is read");
    assert_eq!(m("old"), Some((5, true)));
    assert_eq!(store.issue("old", None, None, None).await.unwrap(), 6);
    assert_eq!(store.issue("new", None, None, None).await.unwrap(), 1);
}

#[tokio::test]
async fn keys_written_while_the_filter_is_rebuilt_are_never_taken_for_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 1000).unwrap();
    // Marks leave memory all the time; the filter (sized for 64 keys in
    // tests) is rebuilt again and again as keys are added.
    store.limit_marks_in_memory(16);
    let mut top: HashMap<String, u64> = HashMap::new();
    for round in 0..40u64 {
        let draws = (0..round * 16 + 16).map(|k| {
            let store = store.clone();
            let key = format!("k{k}");
            let before = top.get(&key).copied().unwrap_or(0);
            async move {
                store.read_if_new(&key, None, None, None);
                // Local numbers for some keys, Redis's (clean rows) for
                // the others.
                let n = if k % 3 == 0 {
                    store.issue(&key, None, None, None).await.unwrap()
                } else {
                    // A Redis that lost the key answers the lowest
                    // number the store may take; refused (memory had not
                    // verified the key), it is asked again above the mark.
                    let mut answer = None;
                    for _ in 0..3 {
                        let flight = store.begin(&key, None, None, None);
                        let n = flight.floor + 1;
                        match store.claim(&flight, n, None, None).await {
                            Ok(()) => answer = Some(n),
                            Err(Claim::Taken { .. }) => continue,
                            Err(e) => panic!("{key}: {e:?}"),
                        }
                        break;
                    }
                    answer.expect("taken within three answers")
                };
                assert!(n > before, "{key}: {n} after {before}");
                (key, n)
            }
        });
        for (key, n) in futures_util::future::join_all(draws).await {
            top.insert(key, n);
        }
        // Committed, then a new key: its mark's arrival sweeps the
        // others out of memory.
        written(&store).await;
        store
            .issue(&format!("pad{round}"), None, None, None)
            .await
            .unwrap();
        assert!(store.len() <= 16, "marks left memory");
    }
    filter_built(&store, 3).await;
    // Every key again, from the filter built last.
    for (key, before) in &top {
        store.read_if_new(key, None, None, None);
        let n = store.issue(key, None, None, None).await.unwrap();
        assert!(n > *before, "{key}: {n} after {before}");
    }
}

#[tokio::test]
async fn a_mark_whose_request_was_cancelled_while_it_waited_for_its_commit_can_leave_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0, 100).unwrap();
    store.limit_marks_in_memory(4);
    // A conversation key's first number waits for the commit that fsyncs
    // its ceiling; each request is dropped while it waits (its client
    // went away).
    for k in 0..32 {
        let key = format!("conv{k}");
        store.read_if_new(&key, None, None, None);
        // Polled once, then dropped.
        let draw = futures_util::FutureExt::now_or_never(store.issue(&key, None, None, None));
        assert!(draw.is_none(), "the draw of {key} waits for its commit");
    }
    written(&store).await;
    // A new key's mark arrives: the sweep finds the others settled.
    store.issue("last", None, None, None).await.unwrap();
    assert!(store.len() <= 4, "{} marks in memory, cap 4", store.len());
}
