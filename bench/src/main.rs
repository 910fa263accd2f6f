//! `seqd-bench`: drives seqd through the client crate and prints figures.
//!
//! Each client is its own connection (the async client of the client
//! crate), issuing requests back to back for the given time: one request in
//! flight per connection, like `redis-benchmark -P 1`. The connections are
//! driven by `--threads` runtime threads (default 1, as `redis-benchmark`
//! drives all of its connections from one thread), so the load generator
//! does not spend the machine's cores on context switches between 50
//! blocking threads. The last line of output is one JSON
//! object: `op`, `clients`, `seconds`, `ops` (completed; for `gap-batch`,
//! events), `ops_per_sec`, `p50_us`, `p99_us` (per request; a batch is one
//! request), `errors`, `cpu_us` (the CPU time the load generator itself
//! used during the run, user + system: what it took from the cores it
//! shares with seqd and Redis).
//!
//! `daily-next` spreads its requests over `--keys` users (default 16,
//! `bench-u{i}`) on today's date (UTC), so that the Redis counters
//! `user:bench-u*:sequence:*` add up to `ops` exactly when every answer
//! came from Redis. With `--cold`, every request is for a user never seen
//! before (`{tag}-c{client}-{n}`): the production shape of a per-user daily
//! counter, where most numbers of a day are the first of their key; each
//! such counter ends at 1, so there are `ops` of them.
//!
//! `gap-check` walks each client's own stream forward, one number after
//! another; with `--holes N` the stream first gets N open gaps of one
//! number each (untimed), so the run measures in-order checks on a stream
//! that holds N missing ranges, the shape of a lossy feed.
//!
//! `cache-get` reads [`CACHE_KEYS`] keys that it writes before the run
//! (`bench:{tag}:cache:{i}`, 64-byte values): every read is a hit.

use clap::{Parser, ValueEnum};
use seqd_client::seqd_protocol::{Conversation, DailyQuery, Request};
use seqd_client::{gap_event, AsyncClient};
use std::time::{Duration, Instant};

/// Keys `cache-get` reads.
const CACHE_KEYS: usize = 16;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    DailyNext,
    ConvNext,
    GapCheck,
    GapBatch,
    CacheGet,
    /// No seqd: the machine's own cost of a round trip between two threads
    /// that sleep in between (a byte each way over a Unix socket pair), the
    /// floor under every hop a request through seqd takes.
    Wakeup,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::DailyNext => "daily-next",
            Op::ConvNext => "conv-next",
            Op::GapCheck => "gap-check",
            Op::GapBatch => "gap-batch",
            Op::CacheGet => "cache-get",
            Op::Wakeup => "wakeup",
        }
    }
}

#[derive(Parser)]
#[command(name = "seqd-bench", about = "Load generator for seqd")]
struct Args {
    #[arg(long, env = "SEQD_SOCKET", default_value = seqd_client::DEFAULT_SOCKET)]
    socket: String,
    #[arg(long, value_enum)]
    op: Op,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Events per batch for `gap-batch`.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// A tag that keeps the keys of this run apart from earlier runs
    /// (conversation groups and gap streams).
    #[arg(long, default_value = "bench")]
    tag: String,
    /// Threads driving the connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Users `daily-next` spreads its requests over (round robin).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// `daily-next`: every request for a user never seen before.
    #[arg(long)]
    cold: bool,
    /// `daily-next`: requests each client sends in one write before it
    /// waits for their answers (like `redis-benchmark -P`); with `--keys
    /// 1`, the shape of many threads of one process drawing one user's
    /// numbers over one multiplexed connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pipeline: u64,
    /// `gap-check`: open gaps each client's stream holds before the run.
    #[arg(long, default_value_t = 0)]
    holes: u64,
}

struct ClientRun {
    ops: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

impl ClientRun {
    fn new() -> ClientRun {
        ClientRun {
            ops: 0,
            errors: 0,
            latencies_us: Vec::with_capacity(1 << 16),
        }
    }
}

/// Microseconds since `started`, as a latency sample.
fn micros_since(started: Instant) -> u32 {
    started.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// The user of a client's `sent`-th `daily-next`.
fn daily_user(args: &Args, id: usize, sent: u64) -> String {
    if args.cold {
        format!("{}-c{id}-{sent}", args.tag)
    } else {
        format!(
            "bench-u{}",
            (id as u64 + sent * args.clients as u64) % args.keys
        )
    }
}

fn cache_key(tag: &str, i: usize) -> String {
    format!("bench:{tag}:cache:{}", i % CACHE_KEYS)
}

async fn connect(args: &Args, id: usize) -> Result<AsyncClient, String> {
    AsyncClient::connect(&args.socket)
        .await
        .map_err(|e| format!("client {id}: cannot connect to {}: {e}", args.socket))
}

async fn run_client(args: &Args, id: usize, deadline: Instant) -> Result<ClientRun, String> {
    let mut c = connect(args, id).await?;
    let mut run = ClientRun::new();
    let group = Conversation::Group {
        id: format!("{}-g{id}", args.tag),
    };
    let exchange = format!("{}-x{id}", args.tag);
    let key = cache_key(&args.tag, id);
    // Each client walks its own streams forward, so results are a mix of
    // mostly normal events with the odd gap, as in a real feed.
    // After `prepare`'s holes, the stream's last number.
    let mut seq: u64 = if args.holes > 0 {
        2 * args.holes + 1
    } else {
        0
    };
    let mut streams = [0u64; 8];
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let (ok, n) = match args.op {
            Op::DailyNext if args.pipeline > 1 => {
                let requests: Vec<Request> = (0..args.pipeline)
                    .map(|_| {
                        sent += 1;
                        Request::DailyNext(DailyQuery {
                            user: daily_user(args, id, sent - 1),
                            tz: Some("UTC".into()),
                            at_ms: None,
                        })
                    })
                    .collect();
                match c.pipeline(&requests).await {
                    Ok(answers) => (answers.iter().all(Result::is_ok), args.pipeline),
                    Err(_) => (false, args.pipeline),
                }
            }
            Op::DailyNext => {
                let user = daily_user(args, id, sent);
                sent += 1;
                (c.daily_next(&user, Some("UTC"), None).await.is_ok(), 1)
            }
            Op::ConvNext => (c.conv_next(group.clone()).await.is_ok(), 1),
            Op::GapCheck => {
                seq += 1;
                (c.gap_check(&exchange, "S", seq).await.is_ok(), 1)
            }
            Op::GapBatch => {
                let events = (0..args.batch)
                    .map(|i| {
                        sent += 1;
                        let s = i % streams.len();
                        // One number in 97 goes missing: a gap.
                        streams[s] += 1 + u64::from(sent % 97 == 0);
                        gap_event(&exchange, &format!("S{s}"), streams[s])
                    })
                    .collect();
                match c.gap_batch(events).await {
                    Ok(r) => (r.len() == args.batch, args.batch as u64),
                    Err(_) => (false, args.batch as u64),
                }
            }
            Op::CacheGet => (matches!(c.cache_get(&key).await, Ok(Some(_))), 1),
            Op::Wakeup => return Err("wakeup runs without seqd".into()),
        };
        let us = micros_since(started);
        if ok {
            run.ops += n;
            run.latencies_us.push(us);
        } else {
            run.errors += 1;
        }
    }
    Ok(run)
}

/// Writes the keys `cache-get` reads.
async fn prepare(args: &Args) -> Result<(), String> {
    if matches!(args.op, Op::GapCheck) && args.holes > 0 {
        // 1, 3, 5, ..., 2N+1 on each client's stream: N one-number gaps.
        let mut c = connect(args, 0).await?;
        for id in 0..args.clients {
            let exchange = format!("{}-x{id}", args.tag);
            for i in 0..=args.holes {
                c.gap_check(&exchange, "S", 2 * i + 1)
                    .await
                    .map_err(|e| format!("cannot prepare the holes: {e}"))?;
            }
        }
        return Ok(());
    }
    if !matches!(args.op, Op::CacheGet) {
        return Ok(());
    }
    let mut c = connect(args, 0).await?;
    for i in 0..CACHE_KEYS {
        c.cache_set(&cache_key(&args.tag, i), &[b'v'; 64], None)
            .await
            .map_err(|e| format!("cannot prepare the cache keys: {e}"))?;
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time this process has used (user + system), in microseconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s, Linux's fixed `USER_HZ`);
/// 0 where that file is missing.
fn cpu_time_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks * 10_000
}

/// `--op wakeup`: one byte to a thread blocked reading it, and back, for
/// the run's time; both sides sleep between bytes, as seqd's threads and
/// its clients do between requests. (`--clients` is ignored: one pair.)
fn wakeup(args: &Args) -> Result<ClientRun, String> {
    use std::io::{Read, Write};
    let (mut a, mut b) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while b.read_exact(&mut byte).is_ok() && b.write_all(&byte).is_ok() {}
    });
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut run = ClientRun::new();
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        let started = Instant::now();
        a.write_all(&byte)
            .and_then(|()| a.read_exact(&mut byte))
            .map_err(|e| format!("wakeup round trip: {e}"))?;
        run.ops += 1;
        run.latencies_us.push(micros_since(started));
    }
    drop(a);
    let _ = echo.join();
    Ok(run)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Op::Wakeup = args.op {
        let cpu_before = cpu_time_us();
        let started = Instant::now();
        let run = wakeup(&args);
        return report(&args, started, cpu_before, vec![run]);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let args = std::sync::Arc::new(args);
    if let Err(e) = runtime.block_on(prepare(&args)) {
        eprintln!("{e}");
        return std::process::ExitCode::from(2);
    }
    let cpu_before = cpu_time_us();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let runs: Vec<Result<ClientRun, String>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.clients)
            .map(|id| {
                let args = args.clone();
                tokio::spawn(async move { run_client(&args, id, deadline).await })
            })
            .collect();
        let mut runs = Vec::with_capacity(tasks.len());
        for t in tasks {
            runs.push(t.await.unwrap_or_else(|e| Err(format!("client task: {e}"))));
        }
        runs
    });
    report(&args, started, cpu_before, runs)
}

/// Prints the figures of a run (the human line, then the JSON object).
fn report(
    args: &Args,
    started: Instant,
    cpu_before: u64,
    runs: Vec<Result<ClientRun, String>>,
) -> std::process::ExitCode {
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_us = cpu_time_us().saturating_sub(cpu_before);
    let mut ops = 0u64;
    let mut errors = 0u64;
    let mut latencies = Vec::new();
    for r in runs {
        match r {
            Ok(r) => {
                ops += r.ops;
                errors += r.errors;
                latencies.extend(r.latencies_us);
            }
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let rate = ops as f64 / elapsed;
    let (op, clients) = (args.op.name(), args.clients);
    println!(
        "{op} with {clients} clients for {elapsed:.1} s: {ops} ops, {rate:.0} ops/s, \
         p50 {p50} us, p99 {p99} us, {errors} errors"
    );
    println!(
        "{{\"op\":\"{op}\",\"clients\":{clients},\"seconds\":{elapsed:.3},\"ops\":{ops},\
         \"ops_per_sec\":{rate:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"errors\":{errors},\
         \"cpu_us\":{cpu_us}}}"
    );
    std::process::ExitCode::SUCCESS
}
