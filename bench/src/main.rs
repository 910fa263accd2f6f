//! `seqd-bench`: drives seqd through the client crate and prints figures.
//!
//! Each client is its own connection on its own thread, issuing requests
//! back to back for the given time. The last line of output is one JSON
//! object: `op`, `clients`, `seconds`, `ops` (completed; for `gap-batch`,
//! events), `ops_per_sec`, `p50_us`, `p99_us` (per request; a batch is one
//! request), `errors`.
//!
//! `daily-next` spreads clients over [`DAILY_USERS`] users on one fixed day,
//! so that the Redis counters `user:bench-u*:sequence:20260106` add up to
//! `ops` exactly when every answer came from Redis.

use clap::{Parser, ValueEnum};
use seqd_client::{gap_event, Client};
use std::time::{Duration, Instant};

/// Users `daily-next` spreads over.
const DAILY_USERS: usize = 16;
/// 2026-01-06T12:00:00Z: one fixed day for `daily-next`.
const DAILY_AT_MS: i64 = 1_767_700_800_000;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    DailyNext,
    ConvNext,
    GapCheck,
    GapBatch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::DailyNext => "daily-next",
            Op::ConvNext => "conv-next",
            Op::GapCheck => "gap-check",
            Op::GapBatch => "gap-batch",
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
}

struct ClientRun {
    ops: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

fn run_client(args: &Args, id: usize, deadline: Instant) -> Result<ClientRun, String> {
    let mut c = Client::connect_with_timeout(&args.socket, Duration::from_secs(10))
        .map_err(|e| format!("client {id}: cannot connect to {}: {e}", args.socket))?;
    let mut run = ClientRun {
        ops: 0,
        errors: 0,
        latencies_us: Vec::with_capacity(1 << 16),
    };
    let user = format!("bench-u{}", id % DAILY_USERS);
    let group = format!("{}-g{id}", args.tag);
    let exchange = format!("{}-x{id}", args.tag);
    // Each client walks its own streams forward, so results are a mix of
    // mostly normal events with the odd gap, as in a real feed.
    let mut seq: u64 = 0;
    let mut streams = [0u64; 8];
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let (ok, n) = match args.op {
            Op::DailyNext => (
                c.daily_next(&user, Some("UTC"), Some(DAILY_AT_MS)).is_ok(),
                1,
            ),
            Op::ConvNext => (c.group_next(&group).is_ok(), 1),
            Op::GapCheck => {
                seq += 1;
                (c.gap_check(&exchange, "S", seq).is_ok(), 1)
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
                match c.gap_batch(events) {
                    Ok(r) => (r.len() == args.batch, args.batch as u64),
                    Err(_) => (false, args.batch as u64),
                }
            }
        };
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if ok {
            run.ops += n;
            run.latencies_us.push(us);
        } else {
            run.errors += 1;
        }
    }
    Ok(run)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let runs: Vec<Result<ClientRun, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|id| {
                let args = &args;
                s.spawn(move || run_client(args, id, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
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
         \"ops_per_sec\":{rate:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"errors\":{errors}}}"
    );
    std::process::ExitCode::SUCCESS
}
