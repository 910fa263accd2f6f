//! Bounded under abuse (issue 13): what one careless or hostile client
//! can make seqd hold. Memory figures are printed; the assertions are
//! bounds on RSS growth with generous margins, not timings.

use seqd_client::seqd_protocol::{codec, ClientMessage, ErrorCode, Request, ServerMessage};
use seqd_tests::*;
use std::io::Write;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A counter of seqd's metrics (0 when absent).
fn counter(seqd: &Seqd, line_start: &str) -> u64 {
    let text = seqd.client().metrics().unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}

/// A binary connection that said hello, by hand.
fn raw_binary(seqd: &Seqd) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(seqd.socket()).unwrap();
    let hello = ClientMessage::Hello {
        version: 1,
        client: "abuser".into(),
    };
    codec::write_frame(&mut s, &hello, 1 << 20).unwrap();
    let answer: ServerMessage = codec::read_frame(&mut s, 1 << 20).unwrap();
    assert!(matches!(answer, ServerMessage::Hello { .. }), "{answer:?}");
    s
}

/// Waits up to `limit` for `cond`; true when it held. For effects that
/// happen at once without a bound and never with one.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_client_that_never_reads_holds_at_most_the_output_limit() {
    let (redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut c = seqd.client();
    // 64 keys of 1 MiB each, written straight into Redis.
    let value = "v".repeat(MIB as usize);
    for k in 0..64 {
        redis.cmd(&["SET", &format!("big{k}"), &value]);
    }
    assert_eq!(
        c.cache_get("big0").unwrap().map(|v| v.len()),
        Some(value.len())
    );
    let ok = r#"seqd_requests_total{op="cache_get",outcome="ok"} "#;
    let answered = counter(&seqd, ok);
    let gets = "seqd_cache_redis_gets_total ";
    let gets_before = counter(&seqd, gets);
    let before = rss(seqd.pid());
    // 256 requests of those values (7 KB sent), and never a read. Redis
    // is held still while the reads start, so that none of them is turned
    // away by the read-side limit alone (without a bound on running
    // reads, one per key starts at once).
    redis.hang();
    let mut s = raw_binary(&seqd);
    let mut burst = Vec::new();
    for id in 0..256u64 {
        let request = Request::CacheGet {
            key: format!("big{}", id % 64),
        };
        burst
            .extend(codec::encode_frame(&ClientMessage::Request { id, request }, 1 << 20).unwrap());
    }
    s.write_all(&burst).unwrap();
    wait_until("reads in flight", Duration::from_secs(10), || {
        counter(&seqd, gets) >= gets_before + 4
    });
    redis.resume();
    // Without a bound all 256 replies are made within a moment.
    let all = within(Duration::from_secs(5), || {
        counter(&seqd, ok) >= answered + 256
    });
    let after = rss(seqd.pid());
    let grew = after.saturating_sub(before);
    println!(
        "256 unread 1 MiB replies: RSS {} MiB -> {} MiB (+{} MiB); all answered: {all}",
        before / MIB,
        after / MIB,
        grew / MIB
    );
    assert!(grew < 64 * MIB, "grew {} MiB", grew / MIB);
    assert!(
        !all,
        "requests kept running for a client that does not read"
    );
    // Everyone else is served meanwhile.
    assert_eq!(
        c.cache_get("big1").unwrap().map(|v| v.len()),
        Some(value.len())
    );
    drop(s);
}

#[test]
fn a_fan_out_request_is_refused_before_it_costs_memory() {
    let (_redis, seqd) = redis_seqd(&["--redis-timeout-ms", "5000"]);
    let mut c = seqd.client();
    c.cache_set("big", &vec![b'v'; MIB as usize], None).unwrap();
    c.cache_set("small", b"s", None).unwrap();
    let before = rss(seqd.pid());
    // One 1 MiB key named 200 times: a 12 KB request for a 200 MiB reply.
    let err = c.cache_get_many(&["big"; 200]).unwrap_err();
    let after = rss(seqd.pid());
    println!(
        "get-many of one 1 MiB key x200: RSS {} MiB -> {} MiB; answer: {err}",
        before / MIB,
        after / MIB
    );
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("above the reply limit"), "{err}");
    assert!(after.saturating_sub(before) < 64 * MIB);
    // Too many keys at all.
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let err = c.cache_get_many(&names).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("--max-keys"), "{err}");
    // A key asked twice among others is answered twice, in order.
    let got = c.cache_get_many(&["small", "nope", "small"]).unwrap();
    assert_eq!(got, vec![Some(b"s".to_vec()), None, Some(b"s".to_vec())]);
}
