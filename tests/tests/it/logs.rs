//! Logs that cannot fill a disk: a failure is logged when its kind
//! starts, summarised while it lasts and logged when it ends, never once
//! per request.

use seqd_tests::*;
use std::io::Write;
use std::time::Duration;

/// Sends `count` copies of `line` on one connection (from a thread of
/// its own, so neither side waits for the other) and returns the replies.
/// `{i}` in `line` becomes the request's index.
fn pipeline(seqd: &Seqd, line: &str, count: usize) -> Vec<String> {
    let mut conn = seqd.text();
    let mut writer = conn.writer.try_clone().unwrap();
    let line = line.to_string();
    let sender = std::thread::spawn(move || {
        for chunk in 0..count / 1000 {
            let bytes: String = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| format!("{}\n", line.replace("{i}", &i.to_string())))
                .collect();
            writer.write_all(bytes.as_bytes()).unwrap();
        }
    });
    let replies = (0..count).map(|_| conn.read_line()).collect();
    sender.join().unwrap();
    replies
}

fn log_lines(seqd: &Seqd) -> usize {
    seqd.log_text().lines().count()
}

/// Drives 100,000 requests of `line` and returns the log lines they
/// added; every reply must start with `expect`.
fn lines_for_failures(seqd: &Seqd, line: &str, expect: &str) -> usize {
    lines_for(seqd, line, |r| r.starts_with(expect))
}

/// Drives 100,000 requests of `line`, each of whose replies must pass
/// `check`, and returns the log lines they added.
fn lines_for(seqd: &Seqd, line: &str, check: impl Fn(&str) -> bool) -> usize {
    let before = log_lines(seqd);
    let replies = pipeline(seqd, line, 100_000);
    for r in &replies {
        assert!(check(r), "{line}: {r}");
    }
    log_lines(seqd) - before
}

/// Redis down (breaker open), cache reads unavailable, numbers refused by
/// policy, a client's bad input: 100,000 of each add a few lines, and
/// each kind's end is logged.
#[test]
fn a_hundred_thousand_failures_of_each_kind_are_a_few_log_lines() {
    let mut redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions {
        // Every failure is written out, bad input included.
        env: vec![("SEQD_LOG".into(), "debug".into())],
        ..SeqdOptions::redis(&redis).with_args(&[
            "--fallback-daily",
            "refuse",
            "--redis-timeout-ms",
            "100",
        ])
    });
    redis.kill9();
    let mut conn = seqd.text();
    wait_until("the breaker opens", Duration::from_secs(10), || {
        field(&conn.cmd("HEALTH"), "breaker") == "open"
    });
    let kinds = [
        ("CACHE GET settings:all", "ERR unavailable "),
        ("DAILY NEXT u1", "ERR unavailable "),
        ("DAILY NEXT not:an:id", "ERR invalid_argument "),
        ("CACHE SET seq:group:g 1", "ERR forbidden "),
    ];
    for (line, expect) in kinds {
        let added = lines_for_failures(&seqd, line, expect);
        assert!(added < 24, "{line}: {added} log lines for 100,000 failures");
    }
    let log = seqd.log_text();
    wait_until(
        "every kind's end is logged",
        Duration::from_secs(10),
        || seqd.log_text().matches("none for 2 s: ").count() >= kinds.len(),
    );
    let ends = seqd.log_text();
    for what in ["cache_get", "daily_next"] {
        assert!(
            ends.contains(&format!("{what} failures (")),
            "no end line for {what}:\n{log}"
        );
    }
}

/// A full disk under a flood of numbers that need a commit.
#[test]
fn a_full_disk_under_a_flood_of_requests_is_a_few_log_lines() {
    let disk = SmallDisk::mount(12);
    let seqd = Seqd::start(SeqdOptions::local().on_disk(disk.path()));
    disk.fill();
    // A conversation's first number needs a commit (its reserved ceiling
    // is fsynced): all are refused.
    let refused = std::sync::atomic::AtomicUsize::new(0);
    // Refused at once, without a commit, right after one found no space.
    let untried = std::sync::atomic::AtomicUsize::new(0);
    let added = lines_for(&seqd, "CONV NEXT group g{i}", |r| {
        if r.contains("(a commit is tried again within 250 ms)") {
            untried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if r.starts_with("ERR ") {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r.starts_with("ERR unavailable ") && r.contains("full")
        } else {
            r.starts_with("OK seq=")
        }
    });
    assert_eq!(refused.into_inner(), 100_000);
    assert!(
        untried.into_inner() > 0,
        "every refusal waited for a failing commit"
    );
    assert!(
        added < 24,
        "{added} log lines for 100,000 requests on a full disk"
    );
    let text = seqd.log_text();
    assert!(text.contains("local store commits fail"), "{text}");
}
