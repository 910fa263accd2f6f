//! Local mode: stream states in memory, bounded, committed to SQLite
//! before each reply. In Redis mode the same tracker mirrors what Redis
//! answered and takes over while Redis cannot answer.

use super::classify::{self, decode_missing, encode_missing, Outcome, StreamState};
use super::gap_log::GapLog;
use super::{count_events, now_ms, observe, result, stats_of, Checked, Tracker};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{Store, StreamRow};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use seqd_protocol::{GapKind, GapResult, Source, StreamStats};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One stream in memory.
struct Entry {
    state: StreamState,
    /// Changed while Redis could not be reached: to be written to Redis.
    dirty: bool,
    /// `state.missing` encoded, kept in step with it: most events leave
    /// the missing ranges as they are, so neither the store's row nor
    /// Redis's answer costs an encoding or a parse per event.
    encoded: Arc<str>,
}

impl Entry {
    fn new(state: StreamState, dirty: bool) -> Entry {
        let encoded = encode_missing(&state.missing).into();
        Entry {
            state,
            dirty,
            encoded,
        }
    }
}

/// Stream states in memory, bounded, optionally persisted.
pub(super) struct Streams {
    /// A `std::sync::Mutex`: nothing awaits under it.
    map: Mutex<HashMap<String, Entry>>,
    max_streams: usize,
}

/// Whether an outcome changed the stream's missing ranges.
fn changes_missing(o: &Outcome) -> bool {
    matches!(o.kind, GapKind::Gap | GapKind::Reset) || o.filled == Some(true)
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Classifies `events` against memory; returns outcomes and the final
    /// state of every stream touched. Refuses the whole batch, changing
    /// nothing, if it would add streams beyond the limit.
    fn apply(
        &self,
        events: &[Checked],
        dirty: bool,
    ) -> Result<(Vec<Outcome>, Vec<StreamRow>), Error> {
        let now = now_ms();
        let mut map = self.lock();
        let new_streams = {
            let mut seen: Vec<&str> = events
                .iter()
                .map(|e| e.key.as_str())
                .filter(|k| !map.contains_key(*k))
                .collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        if map.len() + new_streams > self.max_streams {
            return Err(Error::Unavailable(format!(
                "the local gap tracker holds its limit of {} streams",
                self.max_streams
            )));
        }
        let mut outcomes = Vec::with_capacity(events.len());
        let mut touched: Vec<&str> = Vec::new();
        for e in events {
            // In place for a known stream: no key copy per event.
            let outcome = match map.get_mut(&e.key) {
                Some(entry) => {
                    let mut s = Some(std::mem::take(&mut entry.state));
                    let o = classify::check(&mut s, e.seq, now);
                    entry.state = s.expect("check always leaves a state");
                    entry.dirty |= dirty;
                    if changes_missing(&o) {
                        entry.encoded = encode_missing(&entry.state.missing).into();
                    }
                    o
                }
                None => {
                    let mut s = None;
                    let o = classify::check(&mut s, e.seq, now);
                    let state = s.expect("check always leaves a state");
                    map.insert(e.key.clone(), Entry::new(state, dirty));
                    o
                }
            };
            outcomes.push(outcome);
            touched.push(&e.key);
        }
        touched.sort_unstable();
        touched.dedup();
        let rows = touched.into_iter().map(|k| row_of(k, &map[k])).collect();
        Ok((outcomes, rows))
    }

    /// Takes Redis's word for streams (Redis mode mirror), if there is
    /// room: each with its state but the missing ranges, and those as
    /// Redis encodes them (parsed only when they differ from the mirror's).
    pub(super) fn mirror(&self, rows: Vec<(String, StreamState, &str)>) {
        let mut map = self.lock();
        for (k, mut st, encoded) in rows {
            if let Some(entry) = map.get_mut(&k) {
                if &*entry.encoded == encoded {
                    st.missing = std::mem::take(&mut entry.state.missing);
                } else {
                    st.missing = decode_missing(encoded);
                    entry.encoded = encoded.into();
                }
                entry.state = st;
                entry.dirty = false;
            } else if map.len() < self.max_streams {
                st.missing = decode_missing(encoded);
                map.insert(
                    k,
                    Entry {
                        state: st,
                        dirty: false,
                        encoded: encoded.into(),
                    },
                );
            }
        }
    }

    fn get(&self, key: &str) -> Option<StreamState> {
        self.lock().get(key).map(|e| e.state.clone())
    }

    fn remove(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    fn clear(&self) -> usize {
        let mut map = self.lock();
        let n = map.len();
        map.clear();
        n
    }

    pub(super) fn dirty(&self) -> Vec<(String, StreamState)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(k, e)| (k.clone(), e.state.clone()))
            .collect()
    }

    pub(super) fn dirty_count(&self) -> usize {
        self.lock().values().filter(|e| e.dirty).count()
    }

    /// Clears `dirty` for streams whose state is still the one synced.
    pub(super) fn synced(&self, done: &[(String, i64)]) {
        let mut map = self.lock();
        for (k, ts) in done {
            if let Some(e) = map.get_mut(k) {
                if e.state.last_ts_ms == *ts {
                    e.dirty = false;
                }
            }
        }
    }
}

/// Local mode: stream states in memory, committed to SQLite before each
/// reply.
pub struct LocalTracker {
    pub(super) streams: Streams,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) gap_log: GapLog,
}

impl LocalTracker {
    /// `loaded` is what the store held at start.
    pub fn new(
        store: Store,
        loaded: Vec<StreamRow>,
        max_streams: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let map = loaded
            .into_iter()
            .map(|r| {
                let entry = Entry {
                    state: state_of(&r),
                    dirty: r.dirty,
                    encoded: r.missing.as_str().into(),
                };
                (r.key, entry)
            })
            .collect();
        LocalTracker {
            streams: Streams {
                map: Mutex::new(map),
                max_streams,
            },
            store,
            metrics,
            gap_log: GapLog::default(),
        }
    }

    /// Classifies from memory and queues the new states for the store
    /// (not waiting for the commit: see `Store::save_streams_soon`);
    /// `dirty` marks the streams for writing to Redis later (Redis mode
    /// fallback).
    pub(super) async fn check_local(
        &self,
        events: &[Checked],
        dirty: bool,
    ) -> Result<Vec<GapResult>, Error> {
        let (outcomes, rows) = self.streams.apply(events, dirty)?;
        self.store.save_streams_soon(rows).await?;
        let results: Vec<GapResult> = events
            .iter()
            .zip(outcomes)
            .map(|(e, o)| {
                observe(&self.gap_log, e, &o);
                result(o, e.seq, Source::Local)
            })
            .collect();
        count_events(&self.metrics, events, &results);
        Ok(results)
    }

    pub(super) fn stats_local(&self, key: &str) -> Option<StreamStats> {
        self.streams.get(key).map(|s| stats_of(&s, Source::Local))
    }

    pub(super) async fn clear_local(&self, key: &str) -> Result<bool, Error> {
        let existed = self.streams.remove(key);
        self.store
            .delete_streams(Some(vec![key.to_string()]))
            .await?;
        Ok(existed)
    }

    pub(super) async fn clear_all_local(&self) -> Result<u64, Error> {
        let n = self.streams.clear();
        self.store.delete_streams(None).await?;
        Ok(n as u64)
    }
}

impl Tracker for LocalTracker {
    fn check<'a>(&'a self, events: &'a [Checked]) -> BoxFuture<'a, Result<Vec<GapResult>, Error>> {
        self.check_local(events, false).boxed()
    }

    fn stats<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StreamStats>, Error>> {
        let s = self.stats_local(key);
        async move { Ok(s) }.boxed()
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        async move { self.clear_local(key).await.map(|_| ()) }.boxed()
    }

    fn clear_all(&self) -> BoxFuture<'_, Result<u64, Error>> {
        self.clear_all_local().boxed()
    }
}

/// A stream as the store keeps it: plain columns.
fn row_of(key: &str, e: &Entry) -> StreamRow {
    StreamRow {
        key: key.to_string(),
        last_seq: e.state.last_seq,
        last_ts_ms: e.state.last_ts_ms,
        gap_count: e.state.gap_count,
        reset_count: e.state.reset_count,
        missing: e.encoded.to_string(),
        dirty: e.dirty,
    }
}

/// A stream's state from its row.
fn state_of(r: &StreamRow) -> StreamState {
    StreamState {
        last_seq: r.last_seq,
        last_ts_ms: r.last_ts_ms,
        gap_count: r.gap_count,
        reset_count: r.reset_count,
        missing: decode_missing(&r.missing),
    }
}
