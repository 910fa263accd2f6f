//! `seqctl top`: a live view of one seqd from two reads of its metrics a
//! moment apart — requests per second and p99 latency per operation, the
//! share of numbers answered from the local store — with HEALTH on top.
//! Plain text and ANSI only; `--once` prints a single frame for scripts.

use seqd_client::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One metric sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text exposition (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((name.to_string(), labels, value))
        })
        .collect()
}

/// Sums `name` per value of `label` (the other labels summed over).
fn by(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (n, labels, v) in samples {
        if n == name {
            if let Some(l) = labels.get(label) {
                *out.entry(l.clone()).or_default() += v;
            }
        }
    }
    out
}

/// Cumulative latency buckets per operation: `le` (seconds) to count.
fn buckets(samples: &[Sample]) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for (n, labels, v) in samples {
        if n != "seqd_request_duration_seconds_bucket" {
            continue;
        }
        let (Some(op), Some(le)) = (labels.get("op"), labels.get("le")) else {
            continue;
        };
        // Nanoseconds as the key keeps the buckets ordered; +Inf last.
        let le = le.parse::<f64>().map_or(u64::MAX, |s| (s * 1e9) as u64);
        *out.entry(op.clone()).or_default().entry(le).or_default() += v;
    }
    out
}

/// The upper bound (ms) of the bucket holding the 99th percentile of the
/// requests counted between two reads.
fn p99_ms(before: Option<&BTreeMap<u64, f64>>, after: &BTreeMap<u64, f64>) -> Option<f64> {
    let delta: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.and_then(|b| b.get(le)).unwrap_or(&0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let (le, _) = delta.iter().find(|(_, n)| *n >= 0.99 * total)?;
    Some(if *le == u64::MAX {
        f64::INFINITY
    } else {
        *le as f64 / 1e6
    })
}

/// One frame from two metric reads `elapsed` apart and the HEALTH fields.
pub fn frame(health: &[(String, String)], before: &str, after: &str, elapsed: Duration) -> String {
    let (b, a) = (parse(before), parse(after));
    let secs = elapsed.as_secs_f64().max(1e-9);
    let field = |k: &str| {
        health
            .iter()
            .find(|(n, _)| n == k)
            .map_or("-", |(_, v)| v.as_str())
    };
    let mut out = format!(
        "seqd {}  mode={} redis={} breaker={} host={}  outbox={} pending_reconciliation={}\n",
        field("version"),
        field("mode"),
        field("redis"),
        field("breaker"),
        field("host"),
        field("outbox"),
        field("pending_reconciliation"),
    );
    let issued_b = by(&b, "seqd_sequence_numbers_issued_total", "source");
    let issued_a = by(&a, "seqd_sequence_numbers_issued_total", "source");
    let issued =
        |s: &str| issued_a.get(s).copied().unwrap_or(0.0) - issued_b.get(s).copied().unwrap_or(0.0);
    let (local, redis) = (issued("local"), issued("redis"));
    let share = if local + redis > 0.0 {
        format!("{:.1}%", 100.0 * local / (local + redis))
    } else {
        "-".into()
    };
    out.push_str(&format!(
        "numbers issued/s {:.1}  answered locally {share}\n\n",
        (local + redis) / secs
    ));
    out.push_str(&format!("{:<16} {:>10} {:>10}\n", "op", "req/s", "p99 ms"));
    let (req_b, req_a) = (
        by(&b, "seqd_requests_total", "op"),
        by(&a, "seqd_requests_total", "op"),
    );
    let (lat_b, lat_a) = (buckets(&b), buckets(&a));
    for (op, n) in &req_a {
        let rate = (n - req_b.get(op).copied().unwrap_or(0.0)) / secs;
        let p99 = lat_a
            .get(op)
            .and_then(|after| p99_ms(lat_b.get(op), after))
            .map_or("-".to_string(), |ms| format!("{ms:.2}"));
        out.push_str(&format!("{op:<16} {rate:>10.1} {p99:>10}\n"));
    }
    let open = a
        .iter()
        .find(|(n, _, _)| n == "seqd_connections_open")
        .map_or(0.0, |s| s.2);
    out.push_str(&format!("\nconnections open {open}\n"));
    out
}

/// Reads HEALTH and METRICS, waits `interval`, reads METRICS again and
/// prints a frame; forever (clearing the screen) unless `once`.
pub fn run(client: &mut Client, interval: Duration, once: bool) -> Result<(), String> {
    let mut before = client.metrics().map_err(|e| e.to_string())?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(interval);
        let health = client.health().map_err(|e| e.to_string())?;
        let after = client.metrics().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let text = frame(&health, &before, &after, now - at);
        if once {
            print!("{text}");
            return Ok(());
        }
        print!("\x1b[2J\x1b[H{text}");
        (before, at) = (after, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_p99_come_from_the_difference_of_two_reads() {
        let before = "seqd_requests_total{op=\"conv_next\",outcome=\"ok\"} 10\n\
            seqd_request_duration_seconds_bucket{le=\"0.001\",op=\"conv_next\",source=\"redis\"} 10\n\
            seqd_request_duration_seconds_bucket{le=\"0.01\",op=\"conv_next\",source=\"redis\"} 10\n\
            seqd_request_duration_seconds_bucket{le=\"+Inf\",op=\"conv_next\",source=\"redis\"} 10\n";
        let after = "seqd_requests_total{op=\"conv_next\",outcome=\"ok\"} 210\n\
            seqd_request_duration_seconds_bucket{le=\"0.001\",op=\"conv_next\",source=\"redis\"} 150\n\
            seqd_request_duration_seconds_bucket{le=\"0.01\",op=\"conv_next\",source=\"redis\"} 210\n\
            seqd_request_duration_seconds_bucket{le=\"+Inf\",op=\"conv_next\",source=\"redis\"} 210\n\
            seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"local\"} 50\n\
            seqd_sequence_numbers_issued_total{kind=\"conv\",source=\"redis\"} 150\n";
        let f = frame(&[], before, after, Duration::from_secs(2));
        assert!(f.contains("conv_next             100.0      10.00"), "{f}");
        assert!(f.contains("answered locally 25.0%"), "{f}");
    }
}
