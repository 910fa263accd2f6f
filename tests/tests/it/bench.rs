//! The benchmark's figures are honest: what `seqd-bench` reports as done is
//! exactly what happened in Redis.

use seqd_tests::*;
use std::process::Command;

/// Runs `seqd-bench` against `seqd`; returns its last line (the JSON
/// object).
fn bench(seqd: &Seqd, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("seqd-bench"))
        .arg("--socket")
        .arg(seqd.socket())
        .args(args)
        .output()
        .expect("running seqd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "seqd-bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().expect("a JSON line").to_string()
}

/// A number field of the flat JSON object `json`.
fn number(json: &str, name: &str) -> f64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    let rest = &json[at + name.len() + 3..];
    let end = rest.find([',', '}']).expect("end of the value");
    rest[..end].parse().expect("a number")
}

#[test]
fn daily_next_ops_equal_the_sum_of_the_redis_counters() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let json = bench(
        &seqd,
        &["--op", "daily-next", "--clients", "20", "--seconds", "1"],
    );
    let ops = number(&json, "ops") as u64;
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    assert_eq!(number(&json, "clients"), 20.0);
    assert!(
        ops > 100,
        "a second of 20 clients did almost nothing: {json}"
    );
    // 16 users on today's date (UTC; two dates if the run crossed
    // midnight); nothing else touched this Redis.
    let Reply::Array(keys) = redis.cmd(&["KEYS", "user:bench-u*:sequence:*"]) else {
        panic!("KEYS answers an array");
    };
    let sum: u64 = keys
        .iter()
        .map(|k| match k {
            Reply::Bulk(k) => redis.get_u64(std::str::from_utf8(k).unwrap()).unwrap_or(0),
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(sum, ops, "Redis counters vs reported ops ({json})");
    assert!(keys.len() >= 16, "every user got numbers: {keys:?}");
    assert_eq!(
        redis.cmd(&["DBSIZE"]).as_int(),
        keys.len() as i64,
        "only those keys exist"
    );
}

#[test]
fn every_op_runs_and_reports_its_figures() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    for op in ["conv-next", "gap-check", "gap-batch", "cache-get", "wakeup"] {
        let json = bench(
            &seqd,
            &[
                "--op",
                op,
                "--clients",
                "2",
                "--seconds",
                "0.3",
                "--batch",
                "50",
            ],
        );
        assert!(json.contains(&format!("\"op\":\"{op}\"")), "{json}");
        assert_eq!(number(&json, "errors"), 0.0, "{json}");
        let ops = number(&json, "ops");
        assert!(ops > 0.0, "{json}");
        if op == "gap-batch" {
            assert_eq!(ops as u64 % 50, 0, "gap-batch counts events: {json}");
        }
        assert!(number(&json, "p99_us") >= number(&json, "p50_us"), "{json}");
    }
}

#[test]
fn a_cold_run_on_a_fresh_redis_adds_up_to_the_reported_ops() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    let json = bench(
        &seqd,
        &[
            "--op",
            "daily-next",
            "--cold",
            "--clients",
            "10",
            "--seconds",
            "1",
            "--tag",
            "cold",
        ],
    );
    let ops = number(&json, "ops") as u64;
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    assert!(ops > 50, "{json}");
    // The load generator's own CPU: some, and no more than its two
    // threads (runtime and main) could use in the run (plus a tick).
    let cpu = number(&json, "cpu_us");
    assert!(cpu > 0.0, "{json}");
    assert!(cpu <= number(&json, "seconds") * 2e6 + 10_000.0, "{json}");
    // One counter per request, each at 1, each with its TTL; nothing else.
    let Reply::Array(keys) = redis.cmd(&["KEYS", "user:cold-c*:sequence:*"]) else {
        panic!("KEYS answers an array");
    };
    assert_eq!(keys.len() as u64, ops, "a new key per request ({json})");
    for k in &keys {
        let Reply::Bulk(k) = k else { panic!("{k:?}") };
        let k = std::str::from_utf8(k).unwrap();
        assert_eq!(redis.get_u64(k), Some(1), "{k}");
        assert!(redis.cmd(&["TTL", k]).as_int() > 0, "{k} has a TTL");
    }
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), ops as i64);
    // And --keys spreads over exactly that many users.
    let json = bench(
        &seqd,
        &[
            "--op",
            "daily-next",
            "--keys",
            "5",
            "--clients",
            "3",
            "--seconds",
            "0.3",
        ],
    );
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    let Reply::Array(users) = redis.cmd(&["KEYS", "user:bench-u*:sequence:*"]) else {
        panic!("KEYS answers an array");
    };
    assert_eq!(users.len(), 5, "{users:?}");
}
