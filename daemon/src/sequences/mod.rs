//! Sequences: daily per-user order numbers and conversation
//! message numbers.
//!
//! # What it owns
//!
//! - [`keys`]: which counter a request means (key schema, zones, days);
//!   [`ids`]: the id rule that keeps callers out of each other's keys.
//! - [`Sequences`]: the one interface the requests use, with two
//!   implementations: [`local::LocalSequences`] (local mode: the SQLite
//!   store alone) and [`redis::RedisSequences`] (Redis mode: the shared
//!   Redis counter, every number also recorded in the store as a
//!   high-water mark, and the store answering while Redis cannot).
//! - [`daily`] and [`conv`]: a request, answered.
//!
//! # What it guarantees (docs: docs/guarantees.md)
//!
//! Per key and per seqd, a number returned by [`Sequences::next`] is
//! durable in the local store before it is returned, and greater than
//! every number this seqd returned before for that key: never twice,
//! strictly increasing, across Redis outages, Redis data loss and a
//! `kill -9` of seqd.

pub mod ids;
pub mod keys;
pub mod local;
pub mod redis;

use crate::error::Error;
use crate::metrics::{IssuedLabels, Metrics};
use chrono::Utc;
use futures_util::future::BoxFuture;
use keys::{DailyRules, SeqKey, DAILY_WIDTH_MAX};
use seqd_protocol::{Conversation, DailyQuery, Response, Source};

/// A number and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub seq: u64,
    pub source: Source,
    /// This host's id when the number was issued from its local store in
    /// Redis mode: other hosts may hand out the same bare number, never
    /// the same `(host, seq)`.
    pub host: Option<u16>,
}

/// What `NEXT` does for a family when Redis cannot answer: answer from
/// this host's store (unique per host) or refuse (unique per fleet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Answer from the local store, tagged with the host: always answers;
    /// unique per host, not per fleet.
    Local,
    /// Answer `unavailable` and issue nothing: unique per fleet, not
    /// always answering.
    Refuse,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Refuse => "refuse",
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Fallback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Fallback::Local),
            "refuse" => Ok(Fallback::Refuse),
            other => Err(format!("'{other}': expected local or refuse")),
        }
    }
}

/// The fallback of each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackPolicy {
    pub daily: Fallback,
    pub conv: Fallback,
}

impl FallbackPolicy {
    pub fn of(&self, family: keys::Family) -> Fallback {
        match family {
            keys::Family::Daily => self.daily,
            keys::Family::Conv => self.conv,
        }
    }
}

/// Issues and reads sequence numbers.
///
/// Implementations guarantee, per key and per seqd: a number returned by
/// [`Sequences::next`] is durable in the local store before it is returned,
/// and is greater than every number this seqd returned before for that key.
pub trait Sequences: Send + Sync {
    /// Issues the next number of `key`.
    fn next<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>>;

    /// Reads the latest number of `key` without issuing one (0 when none).
    fn current<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>>;

    /// `name=value` pairs for `HEALTH`, starting with `redis=` and `breaker=`.
    fn health(&self) -> BoxFuture<'_, Vec<(String, String)>>;

    /// "local" or "redis", for logs and `HEALTH`.
    fn mode(&self) -> &'static str;
}

/// `DAILY NEXT` (`next`) or `DAILY GET`: the user's number of the local
/// day of `q.at` (default now) in `q.tz` (default the daemon's). `NEXT`
/// only issues for the days within the window around today (see
/// [`keys::daily_key`]); `GET` reads any day.
pub async fn daily(
    seqs: &dyn Sequences,
    metrics: &Metrics,
    rules: DailyRules,
    q: &DailyQuery,
    next: bool,
) -> Result<Response, Error> {
    let k = keys::daily_key(q, rules, Utc::now())?;
    if next && !k.in_window {
        return Err(Error::invalid(format!(
            "day {} is more than {} day(s) from today ({}) in that zone; \
             DAILY NEXT only issues numbers for days within --daily-window-days of today",
            k.day, rules.window_days, k.today
        )));
    }
    let Issued { seq, source, host } = if next {
        let issued = seqs.next(&k.key).await?;
        count_issued(metrics, "daily", issued);
        if issued.seq == DAILY_WIDTH_MAX + 1 {
            // Exactly one request per key sees 100000, so this logs once
            // per key across all hosts sharing the counter.
            tracing::warn!(key = %k.key.key, "daily sequence passed 99999; numbers now have 6 digits (no wrap)");
        }
        issued
    } else {
        seqs.current(&k.key).await?
    };
    Ok(Response::DailyNumber {
        seq,
        day: k.day,
        source,
        host,
    })
}

/// `CONV NEXT` (`next`) or `CONV GET` of a private or group chat.
pub async fn conv(
    seqs: &dyn Sequences,
    metrics: &Metrics,
    c: &Conversation,
    next: bool,
) -> Result<Response, Error> {
    let key = keys::conv_key(c)?;
    let Issued { seq, source, host } = if next {
        let issued = seqs.next(&key).await?;
        count_issued(metrics, "conv", issued);
        issued
    } else {
        seqs.current(&key).await?
    };
    Ok(Response::ConvNumber { seq, source, host })
}

fn count_issued(metrics: &Metrics, kind: &'static str, issued: Issued) {
    metrics
        .issued
        .get_or_create(&IssuedLabels {
            kind,
            source: issued.source.as_str(),
        })
        .inc();
}
