//! Numbers are durable before their reply leaves: a `kill -9` of seqd, or
//! Redis losing its data, never makes seqd hand out a number twice.

use seqd_tests::*;
use std::time::Duration;

/// Kills seqd with SIGKILL under load from 8 clients, restarts it on the
/// same store, loads it again: nothing answered before reappears after.
fn kill_mid_load_and_restart(options: SeqdOptions) {
    let mut seqd = Seqd::start(options);
    let load = Load::start(&seqd, 8, true);
    load.wait_for(400, "400 answers under load");
    seqd.kill9();
    let before = load.finish();

    seqd.restart();
    let load = Load::start(&seqd, 8, false);
    load.wait_for(200, "200 answers after the restart");
    let after = load.finish();
    assert_continues(&before, &after);
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

/// Adds what a round killed by `kill -9` answered to `all`: for each key,
/// every number is above every number of the rounds before, and none
/// repeats. (A round killed early may have answered some keys only.)
fn add_round(all: &mut LoadResult, got: LoadResult, round: usize) {
    for (key, numbers) in got.issued {
        let before = all.max(key);
        let first = numbers.iter().copied().min().unwrap_or(u64::MAX);
        assert!(
            first > before,
            "round {round}, {key}: {first} after {before}"
        );
        all.issued.entry(key).or_default().extend(numbers);
        assert_unique(key, &all.issued[key]);
    }
}

/// `kill -9` again and again, each time after a different number of
/// answers (none at all, too: right after a start that replayed the
/// journal), on the same store: every number answered after a restart
/// is above every number answered for its key before, and none repeats.
fn killed_at_random_moments(options: SeqdOptions) {
    let mut seqd = Seqd::start(options);
    // A different sequence of kill moments on every run, printed for a
    // failure to be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("kill moments seed {seed}");
    let mut moment = seed;
    let rounds = (0..8).map(|_| {
        moment = moment
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (moment >> 33) as usize % 400
    });
    kill_after_each(&mut seqd, rounds);
}

/// For each count of answers: loads seqd from 8 clients until it has
/// given that many more, kills it with SIGKILL and restarts it on the
/// same store; then checks that the numbers go on after the last restart.
/// Across all of it no number repeats, and every number is above those
/// answered for its key before the kill that preceded it.
fn kill_after_each(seqd: &mut Seqd, rounds: impl Iterator<Item = usize>) {
    let mut all = LoadResult::default();
    for (round, answers) in rounds.enumerate() {
        let load = Load::start(seqd, 8, true);
        load.wait_for(answers, &format!("{answers} answers in round {round}"));
        seqd.kill9();
        add_round(&mut all, load.finish(), round);
        seqd.restart();
    }
    let load = Load::start(seqd, 8, false);
    load.wait_for(100, "100 answers after the last restart");
    assert_continues(&all, &load.finish());
}

/// The mark journal is two 4 MiB files that take turns, one reused once
/// the store holds all of its numbers. These keys' records are 56 to 72
/// bytes: a file holds under 75,000 of them, so 80,000 and 160,000
/// answers each go through a change of file or two before the kill.
#[test]
fn kill_9_while_the_journal_changes_files_never_repeats_a_number() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    kill_after_each(&mut seqd, [80_000, 160_000].into_iter());
}

#[test]
fn local_mode_killed_at_random_moments_never_repeats_a_number() {
    killed_at_random_moments(with_reserve(64));
}

#[test]
fn redis_mode_killed_at_random_moments_never_repeats_a_number() {
    let redis = RedisServer::start();
    killed_at_random_moments(SeqdOptions {
        env: vec![("SEQD_MARK_RESERVE".into(), "64".into())],
        ..SeqdOptions::redis(&redis)
    });
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

/// Makes seqd's store look as if the machine rebooted since seqd last
/// started (another kernel boot id on record), as after a power loss.
fn pretend_reboot(seqd: &Seqd) {
    let db = rusqlite::Connection::open(seqd.data_dir().join("seqd.db")).unwrap();
    // Opening a WAL store that a killed process left runs recovery; wait
    // for its locks rather than fail on SQLITE_BUSY.
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let n = db
        .execute(
            "UPDATE meta SET value = 'an-earlier-boot' WHERE name = 'boot_id'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1, "the store records the boot it started on");
}

fn with_reserve(reserve: u64) -> SeqdOptions {
    SeqdOptions {
        env: vec![("SEQD_MARK_RESERVE".into(), reserve.to_string())],
        ..SeqdOptions::local()
    }
}

#[test]
fn after_a_crash_and_a_reboot_numbers_go_on_above_the_reserved_ceiling() {
    let mut seqd = Seqd::start(with_reserve(100));
    let mut t = seqd.text();
    for n in 1..=25 {
        assert_eq!(seq_of(&t.cmd("CONV NEXT group power")), n);
    }
    drop(t);
    // kill -9 and a reboot: the plain WAL writes of 2..=25 may be gone,
    // but 1 reserved (and fsynced) a ceiling of 101.
    seqd.kill9();
    pretend_reboot(&seqd);
    seqd.restart();
    assert_eq!(
        seqd.text().cmd("CONV NEXT group power"),
        "OK seq=102 source=local"
    );
    assert!(
        seqd.log_text().contains("reserved ceiling"),
        "the skip is logged"
    );
}

#[test]
fn a_clean_stop_keeps_exact_numbers_across_a_reboot() {
    let mut seqd = Seqd::start(with_reserve(100));
    let mut t = seqd.text();
    for n in 1..=25 {
        assert_eq!(seq_of(&t.cmd("CONV NEXT group calm")), n);
    }
    drop(t);
    assert!(seqd.terminate().success());
    pretend_reboot(&seqd);
    seqd.restart();
    assert_eq!(
        seqd.text().cmd("CONV NEXT group calm"),
        "OK seq=26 source=local"
    );
    // The same after kill -9 without a reboot: the page cache kept it all.
    seqd.kill9();
    seqd.restart();
    assert_eq!(
        seqd.text().cmd("CONV NEXT group calm"),
        "OK seq=27 source=local"
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

#[test]
fn cold_daily_keys_cost_no_fsync_and_a_reboot_puts_known_ones_above_the_reserve() {
    let mut seqd = Seqd::start(with_reserve(50));
    let mut c = seqd.client();
    let at = Some(test_instant_ms());
    let fsyncs = |s: &Seqd| s.metric("seqd_store_fsyncs_total ");
    let before = fsyncs(&seqd);
    for i in 0..200 {
        let user = format!("cold{i}");
        assert_eq!(c.daily_next(&user, Some("UTC"), at).unwrap().seq, 1);
    }
    let during = fsyncs(&seqd) - before;
    println!("200 new daily keys: {during} fsyncs");
    assert!(during <= 2, "{during} fsyncs for 200 new daily keys");
    // kill -9 loses nothing (WAL); a reboot after it sends every daily key
    // of the open window above the reserve, known or not.
    seqd.kill9();
    seqd.restart();
    let mut c = seqd.client();
    assert_eq!(c.daily_next("cold0", Some("UTC"), at).unwrap().seq, 2);
    seqd.kill9();
    pretend_reboot(&seqd);
    seqd.restart();
    let mut c = seqd.client();
    assert_eq!(c.daily_next("cold1", Some("UTC"), at).unwrap().seq, 51);
    assert_eq!(c.daily_next("never-seen", Some("UTC"), at).unwrap().seq, 51);
    // Conversations start at 1: their first number was fsynced.
    assert_eq!(c.group_next("new-after-reboot").unwrap().seq, 1);
}

/// After a `kill -9`, a restart reads no mark into memory and keeps at
/// most 4: Redis, which lost its data meanwhile, is still never allowed to
/// repeat a number — each key's mark is read from the store inside the
/// commit of its first Redis answer, which is refused and asked again
/// above it.
#[test]
fn marks_read_from_disk_on_demand_keep_a_flushed_redis_from_repeating() {
    let redis = RedisServer::start();
    let mut seqd = Seqd::start(SeqdOptions::redis(&redis).with_args(&["--marks-in-memory", "4"]));
    let mut c = seqd.client();
    let groups: Vec<String> = (0..20).map(|i| format!("ondemand{i}")).collect();
    for g in &groups {
        for want in 1..=5 {
            assert_eq!(c.group_next(g).unwrap().seq, want);
        }
    }
    drop(c);
    seqd.kill9();
    assert_eq!(redis.cmd(&["FLUSHALL"]), Reply::Status("OK".into()));
    seqd.restart();
    let mut c = seqd.client();
    for round in 0..2 {
        for g in &groups {
            let s = c.group_next(g).unwrap();
            assert_eq!(s.seq, 6 + round, "{g}: the number after the stored mark");
            assert_eq!(s.source, seqd_client::seqd_protocol::Source::Redis);
        }
    }
    let health = c.health().unwrap();
    let marks: usize = health
        .iter()
        .find(|(k, _)| k == "local_marks")
        .expect("local_marks in HEALTH")
        .1
        .parse()
        .unwrap();
    assert!(
        marks <= 4,
        "at most --marks-in-memory marks in memory: {health:?}"
    );
}
