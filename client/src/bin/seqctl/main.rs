//! `seqctl`: seqd from the shell. Subcommands mirror the text protocol, and
//! output is the text protocol's reply line, so scripts can parse either.
//! Exit status: 0 on `OK`, 1 when seqd answered `ERR`, 2 when it could not
//! be reached.

use clap::{Parser, Subcommand};
use seqd_client::seqd_protocol::text::{format_reply, parse_rfc3339_ms};
use seqd_client::seqd_protocol::{CacheItem, Conversation, DailyQuery, Request, Response};
use seqd_client::{gap_event, stream, Client, ClientError, DEFAULT_SOCKET};
use std::process::ExitCode;
use std::time::Duration;

mod top;

/// `--version`: seqctl's version and the protocol versions it speaks.
fn version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        seqd_client::seqd_protocol::version_text(env!("CARGO_PKG_VERSION"))
    });
    &TEXT
}

#[derive(Parser)]
#[command(name = "seqctl", version = version(), about = "Talk to seqd")]
struct Cli {
    /// seqd's socket.
    #[arg(long, env = "SEQD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: String,
    /// Time limit for each reply, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks that seqd answers.
    Ping,
    /// Redis and breaker state.
    Health,
    /// Prometheus metrics.
    Metrics,
    /// What the daemon is and accepts: version, protocols, mode, host id,
    /// limits, the requests it knows.
    Info,
    /// A live view: requests/s and p99 per operation, the share answered
    /// locally, breaker and outbox, refreshed every interval.
    Top {
        /// Print one frame (after one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Time between frames, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Per-user daily sequences.
    Daily {
        #[command(subcommand)]
        verb: DailyVerb,
    },
    /// Chat conversation sequences.
    Conv {
        #[command(subcommand)]
        verb: ConvVerb,
    },
    /// Market-data sequence gap tracking.
    Gap {
        #[command(subcommand)]
        verb: GapVerb,
    },
    /// The settings cache.
    Cache {
        #[command(subcommand)]
        verb: CacheVerb,
    },
}

#[derive(Subcommand)]
enum CacheVerb {
    /// Reads a value: `OK hit <value>` or `OK miss`.
    Get { key: String },
    /// Stores a value.
    Set {
        key: String,
        value: String,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Reads several values: one reply line per key.
    GetMany {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Stores several `key=value` pairs.
    SetMany {
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Time to live in seconds, for every pair.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Invalidates keys.
    Del {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Invalidates every key starting with a prefix.
    DelPrefix { prefix: String },
}

#[derive(Subcommand)]
enum GapVerb {
    /// Classifies one sequence number.
    Check {
        exchange: String,
        symbol: String,
        seq: u64,
    },
    /// Classifies several numbers of one stream in order, atomically.
    Batch {
        exchange: String,
        symbol: String,
        #[arg(required = true)]
        seqs: Vec<u64>,
    },
    /// Shows a stream's state and missing ranges.
    Stats { exchange: String, symbol: String },
    /// Forgets a stream.
    Clear { exchange: String, symbol: String },
    /// Forgets every stream.
    ClearAll,
}

#[derive(clap::Args)]
struct DailyArgs {
    user: String,
    /// IANA time zone (default: the daemon's).
    #[arg(long)]
    tz: Option<String>,
    /// RFC 3339 instant whose local date picks the day (default: now).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Subcommand)]
enum DailyVerb {
    /// Issues the next number.
    Next(DailyArgs),
    /// Shows the current number without issuing one.
    Get(DailyArgs),
}

#[derive(Subcommand)]
enum ConvTarget {
    /// A private chat of two users (in either order).
    Private { a: String, b: String },
    /// A group chat.
    Group { group: String },
}

#[derive(Subcommand)]
enum ConvVerb {
    /// Issues the next number.
    Next {
        #[command(subcommand)]
        target: ConvTarget,
    },
    /// Shows the current number without issuing one.
    Get {
        #[command(subcommand)]
        target: ConvTarget,
    },
}

fn daily_query(args: DailyArgs) -> Result<DailyQuery, String> {
    let at_ms = match args.at {
        Some(at) => Some(parse_rfc3339_ms(&at).map_err(|e| e.message)?),
        None => None,
    };
    Ok(DailyQuery {
        user: args.user,
        tz: args.tz,
        at_ms,
    })
}

fn conversation(t: ConvTarget) -> Conversation {
    match t {
        ConvTarget::Private { a, b } => Conversation::Private { a, b },
        ConvTarget::Group { group } => Conversation::Group { id: group },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match cli.command {
        Command::Top { once, interval_ms } => {
            let timeout = Duration::from_millis(cli.timeout_ms);
            let result = Client::connect_with_timeout(&cli.socket, timeout)
                .map_err(|e| e.to_string())
                .and_then(|mut c| top::run(&mut c, Duration::from_millis(interval_ms), once));
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seqctl: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Ping => Request::Ping,
        Command::Health => Request::Health,
        Command::Metrics => Request::Metrics,
        Command::Info => Request::Info,
        Command::Daily { verb } => {
            let (next, args) = match verb {
                DailyVerb::Next(a) => (true, a),
                DailyVerb::Get(a) => (false, a),
            };
            match daily_query(args) {
                Ok(q) if next => Request::DailyNext(q),
                Ok(q) => Request::DailyGet(q),
                Err(e) => {
                    eprintln!("ERR invalid_argument {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Command::Gap { verb } => match verb {
            GapVerb::Check {
                exchange,
                symbol,
                seq,
            } => Request::GapCheck(gap_event(&exchange, &symbol, seq)),
            GapVerb::Batch {
                exchange,
                symbol,
                seqs,
            } => Request::GapBatch(
                seqs.into_iter()
                    .map(|s| gap_event(&exchange, &symbol, s))
                    .collect(),
            ),
            GapVerb::Stats { exchange, symbol } => Request::GapStats(stream(&exchange, &symbol)),
            GapVerb::Clear { exchange, symbol } => Request::GapClear(stream(&exchange, &symbol)),
            GapVerb::ClearAll => Request::GapClearAll,
        },
        Command::Cache { verb } => match verb {
            CacheVerb::Get { key } => Request::CacheGet { key },
            CacheVerb::Set { key, value, ttl } => Request::CacheSet(CacheItem {
                key,
                value: value.into_bytes(),
                ttl_ms: ttl.map(|s| s.saturating_mul(1000)),
            }),
            CacheVerb::GetMany { keys } => Request::CacheGetMany { keys },
            CacheVerb::SetMany { pairs, ttl } => {
                let mut items = Vec::with_capacity(pairs.len());
                for p in pairs {
                    let Some((key, value)) = p.split_once('=') else {
                        eprintln!("ERR bad_request expected key=value, got '{p}'");
                        return ExitCode::from(1);
                    };
                    items.push(CacheItem {
                        key: key.to_string(),
                        value: value.as_bytes().to_vec(),
                        ttl_ms: ttl.map(|s| s.saturating_mul(1000)),
                    });
                }
                Request::CacheSetMany(items)
            }
            CacheVerb::Del { keys } => Request::CacheDel { keys },
            CacheVerb::DelPrefix { prefix } => Request::CacheDelPrefix { prefix },
        },
        Command::Conv { verb } => match verb {
            ConvVerb::Next { target } => Request::ConvNext(conversation(target)),
            ConvVerb::Get { target } => Request::ConvGet(conversation(target)),
        },
    };
    let mut client =
        match Client::connect_with_timeout(&cli.socket, Duration::from_millis(cli.timeout_ms)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("seqctl: cannot reach seqd at {}: {e}", cli.socket);
                return ExitCode::from(2);
            }
        };
    let result = match client.request(request) {
        Ok(r) => Ok(r),
        Err(ClientError::Server(e)) => Err(e),
        Err(e) => {
            eprintln!("seqctl: {e}");
            return ExitCode::from(2);
        }
    };
    // Metrics go out as plain exposition text (no closing "." line), ready
    // for a file or a pipe.
    if let Ok(Response::Metrics { text }) = &result {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    // Several values print one reply line each, without the closing ".".
    if let Ok(Response::CacheValues(values)) = &result {
        for v in values {
            println!("{}", format_reply(&Ok(Response::CacheValue(v.clone()))));
        }
        return ExitCode::SUCCESS;
    }
    // A batch prints one reply line per event, without the closing ".".
    if let Ok(Response::GapBatch(results)) = &result {
        for r in results {
            println!("{}", format_reply(&Ok(Response::Gap(r.clone()))));
        }
        return ExitCode::SUCCESS;
    }
    let line = format_reply(&result);
    match result {
        Ok(_) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("{line}");
            ExitCode::from(1)
        }
    }
}
