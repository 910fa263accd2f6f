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
    // 16 users on 2026-01-06 (UTC); nothing else touched this Redis.
    let sum: u64 = (0..16)
        .map(|u| {
            let key = format!("user:bench-u{u}:sequence:20260106");
            redis.get_u64(&key).unwrap_or(0)
        })
        .sum();
    assert_eq!(sum, ops, "Redis counters vs reported ops ({json})");
    let keys = redis.cmd(&["DBSIZE"]).as_int();
    assert_eq!(
        keys, 16,
        "every user got numbers, and only those keys exist"
    );
}

#[test]
fn every_op_runs_and_reports_its_figures() {
    let redis = RedisServer::start();
    let seqd = Seqd::start(SeqdOptions::redis(&redis));
    for op in ["conv-next", "gap-check", "gap-batch", "cache-get"] {
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
