//! A full disk under the data directory: seqd stays up, answers every
//! request `OK` or `ERR unavailable` naming the cause, says so in
//! `HEALTH`, repeats no number across the fault, a `kill -9` and a
//! restart, and serves again by itself once space is freed.

use seqd_tests::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What one key was answered, in order.
type Answers = BTreeMap<String, Vec<u64>>;

/// Draws for hot keys (four groups, four users' daily numbers) and for
/// never-seen groups and users; records every `OK`, checks that every
/// other reply is `ERR unavailable` naming a full store, and returns how
/// many were. `fresh` numbers the never-seen keys.
fn draw(conn: &mut TextConn, answers: &mut Answers, fresh: &mut u64, rounds: usize) -> usize {
    let mut refused = 0;
    for _ in 0..rounds {
        *fresh += 1;
        let commands = [
            format!("CONV NEXT group hot{}", *fresh % 4),
            format!("DAILY NEXT hot{}", *fresh % 4),
            format!("CONV NEXT group cold{fresh}"),
            format!("DAILY NEXT cold{fresh}"),
        ];
        for c in commands {
            let reply = conn.cmd(&c);
            if reply.starts_with("OK ") {
                answers.entry(c).or_default().push(seq_of(&reply));
            } else {
                assert!(
                    reply.starts_with("ERR unavailable ") && reply.contains("full"),
                    "{c}: {reply}"
                );
                refused += 1;
            }
        }
    }
    refused
}

fn health(seqd: &Seqd) -> String {
    seqd.text().cmd("HEALTH")
}

/// Every key's numbers are unique and rise in the order answered.
fn assert_never_twice(answers: &Answers) {
    for (key, numbers) in answers {
        assert_strictly_increasing(key, numbers);
    }
}

/// Fills the disk while hot and never-seen keys are drawn, frees it,
/// fills it again, kills seqd, frees it and starts seqd again.
fn fill_free_kill_restart(options: SeqdOptions) {
    let disk = SmallDisk::mount(12);
    let mut seqd = Seqd::start(options.on_disk(disk.path()));
    let h = health(&seqd);
    assert_eq!(
        (field(&h, "store"), field(&h, "journal")),
        ("ok", "on"),
        "{h}"
    );
    let mut answers = Answers::new();
    let mut fresh = 0;
    let mut conn = seqd.text();
    assert_eq!(draw(&mut conn, &mut answers, &mut fresh, 50), 0);

    disk.fill();
    // Journaled numbers go on while the journal has room; a number that
    // needs a commit is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    while refused < 20 {
        assert!(
            Instant::now() < deadline,
            "no refusal on a full disk; {}",
            health(&seqd)
        );
        refused += draw(&mut conn, &mut answers, &mut fresh, 20);
        assert!(seqd.exited().is_none(), "seqd died: {:?}", seqd.exited());
    }
    let h = health(&seqd);
    assert_eq!(field(&h, "store"), "full", "{h}");
    assert_eq!(seqd.metric("seqd_store_state "), 1);
    assert!(seqd.metric("seqd_store_commit_failures_total ") > 0);

    disk.free();
    wait_until(
        "numbers for never-seen keys again",
        Duration::from_secs(10),
        || {
            fresh += 1;
            conn.cmd(&format!("CONV NEXT group cold{fresh}"))
                .starts_with("OK ")
        },
    );
    assert_eq!(draw(&mut conn, &mut answers, &mut fresh, 50), 0);
    let h = health(&seqd);
    assert_eq!(field(&h, "store"), "ok", "{h}");

    disk.fill();
    draw(&mut conn, &mut answers, &mut fresh, 50);
    drop(conn);
    seqd.kill9();
    disk.free();
    seqd.start_again();
    let mut conn = seqd.text();
    let before = answers.clone();
    let mut after = Answers::new();
    // The hot keys and every never-seen key drawn before, once more.
    for key in before.keys() {
        let reply = conn.cmd(key);
        after.entry(key.clone()).or_default().push(seq_of(&reply));
    }
    assert_eq!(draw(&mut conn, &mut after, &mut fresh, 20), 0);
    for (key, numbers) in after {
        let all = answers.entry(key).or_default();
        all.extend(numbers);
    }
    assert_never_twice(&answers);
    assert!(seqd.exited().is_none());
}

#[test]
fn a_full_disk_in_local_mode_is_an_error_never_a_death_nor_a_repeat() {
    fill_free_kill_restart(SeqdOptions::local());
}

#[test]
fn a_full_disk_in_redis_mode_is_an_error_never_a_death_nor_a_repeat() {
    let redis = RedisServer::start();
    fill_free_kill_restart(SeqdOptions::redis(&redis));
}

/// A start with no room for the journal: seqd serves without it (every
/// number waits for its commit) and says so.
#[test]
fn a_start_without_room_for_the_journal_serves_without_it() {
    let disk = SmallDisk::mount(6);
    let seqd = Seqd::start(SeqdOptions::local().on_disk(disk.path()));
    let h = health(&seqd);
    assert_eq!(
        (field(&h, "store"), field(&h, "journal")),
        ("ok", "off"),
        "{h}"
    );
    assert_eq!(seqd.metric("seqd_store_journal "), 0);
    let mut conn = seqd.text();
    let numbers: Vec<u64> = (0..100)
        .map(|_| seq_of(&conn.cmd("CONV NEXT group g")))
        .collect();
    assert_eq!(numbers, (1..=100).collect::<Vec<_>>());
    assert!(
        disk.available() > 1 << 20,
        "the journal's blocks went back to the disk: {} bytes free",
        disk.available()
    );
}

/// A journal file removed from under a running seqd (by root, by
/// mistake): seqd stops using the journal, says so, and repeats nothing
/// across a `kill -9` and a restart.
#[test]
fn a_journal_file_removed_while_mapped_is_left_for_commits() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    let mut conn = seqd.text();
    let mut answers = Answers::new();
    let mut fresh = 0;
    draw(&mut conn, &mut answers, &mut fresh, 20);
    std::fs::remove_file(seqd.data_dir().join("journal-0")).unwrap();
    wait_until("the journal is left", Duration::from_secs(10), || {
        draw(&mut conn, &mut answers, &mut fresh, 1);
        field(&health(&seqd), "journal") == "off"
    });
    assert!(seqd
        .log_text()
        .contains("journal-0 was removed or replaced while mapped"));
    draw(&mut conn, &mut answers, &mut fresh, 20);
    drop(conn);
    seqd.kill9();
    seqd.start_again();
    let mut conn = seqd.text();
    let keys: Vec<String> = answers.keys().cloned().collect();
    for key in keys {
        let n = seq_of(&conn.cmd(&key));
        answers.get_mut(&key).unwrap().push(n);
    }
    assert_never_twice(&answers);
}
