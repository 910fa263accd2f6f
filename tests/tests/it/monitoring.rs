//! The monitoring that ships next to seqd cannot rot: every metric the
//! Grafana dashboard (`monitoring/seqd-dashboard.json`) queries is one a
//! live seqd exposes.

use seqd_tests::*;
use std::collections::BTreeSet;

/// The metric names a live exposition offers: each `# TYPE` family with
/// the sample names its type gives it.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

/// Every `seqd_…` name in `text`.
fn used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("seqd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A live seqd's exposition after a little of everything, an outage
/// included: labelled families appear once they have a child (fallbacks,
/// breaker transitions, gap events, cache reads).
fn exercised_exposition() -> String {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "100"]);
    let mut t = seqd.text();
    t.cmd("CONV NEXT group g");
    t.cmd("GAP CHECK x S 1");
    t.cmd("CACHE GET k");
    redis.hang();
    for _ in 0..4 {
        t.cmd("CONV NEXT group g");
    }
    redis.resume();
    seqd.client().metrics().unwrap()
}

#[test]
fn every_metric_the_dashboard_queries_is_exposed_by_a_live_seqd() {
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/seqd-dashboard.json"),
    )
    .expect("monitoring/seqd-dashboard.json");
    let exposition = exercised_exposition();
    let offered = exposed(&exposition);
    let queried = used(&dashboard);
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<&String> = queried.difference(&offered).collect();
    assert!(missing.is_empty(), "not exposed by seqd: {missing:?}");
    // Every panel has a query, and the file is the dashboard it says.
    let panels = dashboard.matches("\"type\": \"timeseries\"").count();
    assert!(dashboard.matches("\"expr\":").count() >= panels);
    assert!(panels >= 12 && dashboard.contains("\"uid\": \"seqd\""));
}

fn monitoring_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../monitoring")
        .join(name)
}

/// Runs promtool (installed by scripts/test.sh with Debian's `prometheus`).
fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(monitoring_file(""))
        .output()
        .expect("promtool must be installed (scripts/test.sh installs the prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_each_fires_and_stays_silent_in_its_unit_tests() {
    let checked = promtool(&["check", "rules", "seqd.rules.yml"]);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "seqd.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert has a firing and a silent case.
    let tests = std::fs::read_to_string(monitoring_file("seqd.rules.test.yml")).unwrap();
    let rules = std::fs::read_to_string(monitoring_file("seqd.rules.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        for case in ["fires", "silent"] {
            assert!(
                tests.contains(&format!("# {alert} {case}")),
                "{alert} {case}"
            );
        }
    }
}

#[test]
fn every_metric_the_alert_rules_use_is_exposed_by_a_live_seqd() {
    let rules = std::fs::read_to_string(monitoring_file("seqd.rules.yml")).unwrap();
    let offered = exposed(&exercised_exposition());
    let missing: Vec<String> = used(&rules).difference(&offered).cloned().collect();
    assert!(missing.is_empty(), "not exposed by seqd: {missing:?}");
}
