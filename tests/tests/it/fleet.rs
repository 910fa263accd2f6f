//! Two seqds on one Redis: when one host's path to Redis
//! fails while Redis stays up for the other, the cut-off host either
//! answers from its store with its host id (unique per host: `(host,
//! number)` never repeats across the fleet) and reports the possible
//! overlap when it reconciles, or, with `refuse`, issues nothing.

use seqd_client::seqd_protocol::{
    codec, ClientMessage, Conversation, Request, Response, ServerMessage, Source,
};
use seqd_tests::*;
use std::collections::HashSet;
use std::time::Duration;

fn host_seqd(url: String, host: u16, extra: &[&str]) -> Seqd {
    let mut args: Vec<String> = ["--redis-timeout-ms", "200", "--probe-base-ms", "50"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Seqd::start(SeqdOptions {
        redis_url: Some(url),
        env: vec![("SEQD_HOST_ID".into(), host.to_string())],
        args,
        data_dir: None,
    })
}

fn health(seqd: &Seqd, name: &str) -> String {
    field(&seqd.text().cmd("HEALTH"), name).to_string()
}

fn overlap_count(seqd: &Seqd) -> u64 {
    let text = seqd.client().metrics().unwrap();
    text.lines()
        .find(|l| l.starts_with("seqd_fallback_possible_overlap_total "))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

fn wait_recovered(seqd: &Seqd) {
    wait_until(
        "breaker closed and reconciled",
        Duration::from_secs(10),
        || health(seqd, "breaker") == "closed" && health(seqd, "pending_reconciliation") == "0",
    );
}

#[test]
fn a_cut_off_host_answers_with_its_host_id_and_reports_the_overlap() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port);
    let a = host_seqd(proxy.url(), 1, &[]);
    let b = host_seqd(redis.url(), 2, &[]);
    assert_eq!(
        (health(&a, "host"), health(&b, "host")),
        ("1".into(), "2".into())
    );
    let (mut ta, mut tb) = (a.text(), b.text());
    // (key, host, number) as a fleet-wide id: host 0 stands for "from
    // Redis".
    let mut ids = HashSet::new();
    let mut take = |key: &str, reply: String| {
        let host: u16 = reply
            .split(' ')
            .find_map(|w| w.strip_prefix("host="))
            .map_or(0, |h| h.parse().unwrap());
        assert!(
            ids.insert((key.to_string(), host, seq_of(&reply))),
            "{key}: {reply} twice"
        );
        reply
    };
    for n in 1..=3 {
        assert_eq!(
            take("g", ta.cmd("CONV NEXT group g")),
            format!("OK seq={n} source=redis")
        );
    }
    assert_eq!(
        take("solo", ta.cmd("CONV NEXT group solo")),
        "OK seq=1 source=redis"
    );
    for n in 4..=6 {
        assert_eq!(
            take("g", tb.cmd("CONV NEXT group g")),
            format!("OK seq={n} source=redis")
        );
    }
    proxy.freeze();
    // A goes on after its own mark: the bare numbers B already handed
    // out, told apart by host=1.
    for n in 4..=6 {
        assert_eq!(
            take("g", ta.cmd("CONV NEXT group g")),
            format!("OK seq={n} source=local host=1")
        );
    }
    for n in 2..=3 {
        assert_eq!(
            take("solo", ta.cmd("CONV NEXT group solo")),
            format!("OK seq={n} source=local host=1")
        );
    }
    let mut c = a.client();
    let d = c.daily_next("trader", Some("UTC"), None).unwrap();
    assert_eq!((d.source, d.host), (Source::Local, Some(1)));
    assert!(
        seqd_client::format_order_id(&d).contains(&format!("-L1-{:05}", d.seq)),
        "{}",
        seqd_client::format_order_id(&d)
    );
    assert_eq!(
        take("g", tb.cmd("CONV NEXT group g")),
        "OK seq=7 source=redis"
    );
    proxy.thaw();
    wait_recovered(&a);
    // Only group g: Redis had moved past where A's local numbers began
    // (3 -> 7); for solo it had not (1), nor for the daily key.
    assert_eq!(overlap_count(&a), 1);
    wait_until("the overlap warning", Duration::from_secs(5), || {
        a.log_text()
            .contains("may repeat numbers other hosts drew from Redis")
    });
    let line = a
        .log_text()
        .lines()
        .find(|l| l.contains("may repeat numbers"))
        .unwrap()
        .to_string();
    for part in ["key=seq:group:g", "local_first=4", "local_last=6"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    // At least B's 7; more when A's commands held by the frozen path
    // reached Redis after the thaw (numbers nobody received: skipped).
    let redis_at: u64 = line
        .split(' ')
        .find_map(|w| w.strip_prefix("redis="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(redis_at >= 7, "{line}");
    // Back on Redis, above everything either host issued.
    let reply = take("g", ta.cmd("CONV NEXT group g"));
    assert_eq!(field(&reply, "source"), "redis");
    assert!(seq_of(&reply) > redis_at, "{reply}");
    let reply = take("solo", tb.cmd("CONV NEXT group solo"));
    assert_eq!(field(&reply, "source"), "redis");
    assert!(seq_of(&reply) > 3, "{reply}");
}

#[test]
fn with_refuse_a_cut_off_host_issues_nothing_for_that_family() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port);
    let a = host_seqd(proxy.url(), 1, &["--fallback-conv", "refuse"]);
    let b = host_seqd(redis.url(), 2, &[]);
    let (mut ta, mut tb) = (a.text(), b.text());
    assert_eq!(ta.cmd("CONV NEXT group r"), "OK seq=1 source=redis");
    proxy.freeze();
    for _ in 0..4 {
        let reply = ta.cmd("CONV NEXT group r");
        assert!(
            reply.starts_with("ERR unavailable ") && reply.contains("--fallback-conv=refuse"),
            "{reply}"
        );
    }
    // The daily family keeps its default, local.
    let reply = ta.cmd("DAILY NEXT u");
    assert_eq!(
        (field(&reply, "source"), field(&reply, "host")),
        ("local", "1")
    );
    assert_eq!(tb.cmd("CONV NEXT group r"), "OK seq=2 source=redis");
    proxy.thaw();
    wait_recovered(&a);
    // Above B's 2 (A's refused attempts may have reached Redis after the
    // thaw and used numbers nobody received).
    let reply = ta.cmd("CONV NEXT group r");
    assert_eq!(field(&reply, "source"), "redis");
    assert!(seq_of(&reply) > 2, "{reply}");
    assert_eq!(overlap_count(&a), 0, "nothing issued locally for conv");
}

/// Says hello with `version` and asks for one CONV NEXT.
fn conv_next_speaking(seqd: &Seqd, version: u32) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(seqd.socket()).unwrap();
    let hello = ClientMessage::Hello {
        version,
        client: "old".into(),
    };
    codec::write_frame(&mut s, &hello, 1 << 20).unwrap();
    match codec::read_frame::<_, ServerMessage>(&mut s, 1 << 20).unwrap() {
        ServerMessage::Hello { version: v, .. } => assert_eq!(v, version),
        other => panic!("{other:?}"),
    }
    let request = ClientMessage::Request {
        id: 1,
        request: Request::ConvNext(Conversation::Group { id: "v".into() }),
    };
    codec::write_frame(&mut s, &request, 1 << 20).unwrap();
    match codec::read_frame::<_, ServerMessage>(&mut s, 1 << 20).unwrap() {
        ServerMessage::Response { id: 1, result } => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_1_clients_keep_their_answers_and_version_2_gets_the_host() {
    // Redis unreachable: every number comes from the store, host-tagged.
    let seqd = Seqd::start(SeqdOptions {
        redis_url: Some(format!("redis://127.0.0.1:{}/0", free_port())),
        ..SeqdOptions::local()
    });
    assert_eq!(
        conv_next_speaking(&seqd, 1),
        Response::Conv {
            seq: 1,
            source: Source::Local
        }
    );
    assert_eq!(
        conv_next_speaking(&seqd, 2),
        Response::ConvNumber {
            seq: 2,
            source: Source::Local,
            host: Some(TEST_HOST_ID)
        }
    );
    assert_eq!(
        seqd.text().cmd("CONV NEXT group v"),
        "OK seq=3 source=local host=7"
    );
}
