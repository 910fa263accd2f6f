//! Redis mode: stream states in the hash `k2:seq:{exchange}:{symbol}`,
//! classified by the Lua twin of [`classify::check`] over a whole batch in
//! one atomic script; the local tracker (kept as a mirror of what Redis
//! answered) takes over while Redis cannot answer, and what changed
//! meanwhile is written back on recovery, never moving a stream backwards.

use super::classify::{
    self, decode_missing, Outcome, StreamState, MAX_MISSING_RANGES, STREAM_TTL_SECS,
};
use super::local::LocalTracker;
use super::{count_events, now_ms, observe, result, Checked, Tracker};
use crate::error::Error;
use crate::redis::{
    slot_groups, unlink, LinkError, Recovery, RedisFailure, RedisLink, Route, Scan,
};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use seqd_protocol::{GapKind, GapResult, Source, StreamStats};
use std::collections::HashMap;
use std::sync::Arc;

/// Classifies a batch in Redis, in order, atomically. The Lua twin of
/// [`classify::check`].
///
/// KEYS = the distinct stream keys of the batch. ARGV[1] = TTL seconds,
/// ARGV[2] = now (ms), ARGV[3] = missing ranges kept, then for each event
/// its key's index in KEYS and its number. Returns `{results, states}`:
/// four integers per event (kind 0..4 = normal, gap, duplicate,
/// out_of_order, reset; expected or -1; gap; filled 1/0 or -1) and, per
/// key, `last_seq, gap_count, reset_count, missing, last_ts` as strings.
/// Numbers are written with `%d`: Lua's default formatting would turn
/// large ones into `1e+15`.
const CHECK_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[1])
local now = ARGV[2]
local maxr = tonumber(ARGV[3])
local states = {}
-- A stream's missing ranges stay the string Redis holds ('a-b,c-d') until
-- an event must read them: an in-order event neither parses nor rewrites
-- them, a gap appends to the string, only an out-of-order number (a fill)
-- parses them.
local function load(i)
  local st = states[i]
  if st then return st end
  local h = redis.call('HMGET', KEYS[i], 'last_seq', 'gap_count', 'reset_count', 'missing', 'last_ts')
  st = {exists = false, raw = '', dirty = false, changed = false}
  if h[1] then
    st.exists = true
    st.last = tonumber(h[1])
    st.gaps = tonumber(h[2] or '0') or 0
    st.resets = tonumber(h[3] or '0') or 0
    st.ts = h[5] or now
    st.raw = h[4] or ''
  end
  states[i] = st
  return st
end
local function parsed(st)
  if not st.missing then
    st.missing = {}
    for a, b in string.gmatch(st.raw, '(%d+)-(%d+)') do
      st.missing[#st.missing + 1] = {tonumber(a), tonumber(b)}
    end
  end
  return st.missing
end
local function append(st, a, b)
  st.changed = true
  if st.missing then
    st.missing[#st.missing + 1] = {a, b}
    if #st.missing > maxr then table.remove(st.missing, 1) end
    return
  end
  if not st.count then
    st.count = 0
    if st.raw ~= '' then st.count = select(2, string.gsub(st.raw, ',', ',')) + 1 end
  end
  local piece = string.format('%d-%d', a, b)
  if st.raw == '' then st.raw = piece else st.raw = st.raw .. ',' .. piece end
  st.count = st.count + 1
  if st.count > maxr then
    st.raw = string.sub(st.raw, string.find(st.raw, ',', 1, true) + 1)
    st.count = st.count - 1
  end
end
local out = {}
for j = 4, #ARGV, 2 do
  local st = load(tonumber(ARGV[j]))
  local seq = tonumber(ARGV[j + 1])
  local kind, expected, gap, filled = 0, -1, 0, -1
  if not st.exists then
    st.exists = true; st.last = seq; st.gaps = 0; st.resets = 0; st.ts = now; st.dirty = true
  else
    local last = st.last
    expected = last + 1
    if seq == expected then
      st.last = seq; st.ts = now; st.dirty = true
    elseif seq > expected then
      kind = 1; gap = seq - expected
      st.last = seq; st.ts = now; st.gaps = st.gaps + 1; st.dirty = true
      append(st, expected, seq - 1)
    elseif seq == last then
      kind = 2
    elseif 2 * seq < last then
      kind = 4
      st.last = seq; st.ts = now; st.gaps = 0; st.resets = st.resets + 1; st.dirty = true
      st.missing = {}; st.changed = true
    else
      kind = 3; filled = 0
      local missing = parsed(st)
      for r = 1, #missing do
        local a, b = missing[r][1], missing[r][2]
        if a <= seq and seq <= b then
          filled = 1; st.ts = now; st.dirty = true; st.changed = true
          if a == b then
            table.remove(missing, r)
          elseif seq == a then
            missing[r][1] = seq + 1
          elseif seq == b then
            missing[r][2] = seq - 1
          else
            missing[r][2] = seq - 1
            table.insert(missing, r + 1, {seq + 1, b})
            if #missing > maxr then table.remove(missing, 1) end
          end
          break
        end
      end
    end
  end
  out[#out + 1] = kind; out[#out + 1] = expected; out[#out + 1] = gap; out[#out + 1] = filled
end
local finals = {}
for i = 1, #KEYS do
  local st = states[i]
  local enc = st.raw
  if st.missing and st.changed then
    local parts = {}
    for r = 1, #st.missing do
      parts[#parts + 1] = string.format('%d-%d', st.missing[r][1], st.missing[r][2])
    end
    enc = table.concat(parts, ',')
  end
  local last = string.format('%d', st.last)
  if st.dirty then
    if st.changed then
      redis.call('HSET', KEYS[i], 'last_seq', last, 'last_ts', st.ts,
        'gap_count', string.format('%d', st.gaps), 'reset_count', string.format('%d', st.resets), 'missing', enc)
    else
      redis.call('HSET', KEYS[i], 'last_seq', last, 'last_ts', st.ts,
        'gap_count', string.format('%d', st.gaps), 'reset_count', string.format('%d', st.resets))
    end
    redis.call('EXPIRE', KEYS[i], ttl)
  end
  finals[#finals + 1] = last
  finals[#finals + 1] = string.format('%d', st.gaps)
  finals[#finals + 1] = string.format('%d', st.resets)
  finals[#finals + 1] = enc
  finals[#finals + 1] = tostring(st.ts)
end
return {out, finals}
"#;

/// Writes a stream state unless Redis's stream is further along.
///
/// KEYS[1] = stream; ARGV = last_seq, last_ts, gap_count, reset_count,
/// missing, TTL. Returns 1 when written.
const SYNC_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'last_seq')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'last_seq', ARGV[1], 'last_ts', ARGV[2], 'gap_count', ARGV[3],
  'reset_count', ARGV[4], 'missing', ARGV[5])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
"#;

/// Events per script call: a batch larger than this runs in several calls
/// on the bulk connection (about a millisecond of Redis time each).
const BATCH_CHUNK: usize = 256;

/// Streams scanned per `SCAN` step of a clear-all.
const SCAN_COUNT: usize = 1000;

/// Redis mode: stream states in Redis; the local tracker (kept as a mirror
/// of what Redis answered) takes over while Redis cannot answer.
pub struct RedisTracker {
    link: Arc<RedisLink>,
    check_script: redis::Script,
    sync_script: redis::Script,
    local: LocalTracker,
}

impl RedisTracker {
    pub fn new(link: Arc<RedisLink>, local: LocalTracker) -> Self {
        RedisTracker {
            link,
            check_script: redis::Script::new(CHECK_SCRIPT),
            sync_script: redis::Script::new(SYNC_SCRIPT),
            local,
        }
    }

    /// Classifies a chunk in Redis: one script call, or on a cluster one per
    /// slot of the chunk's streams (a script's keys must share a slot), each
    /// group in the chunk's order. Returns each event's result where Redis
    /// gave one, and the failure that stopped it, if any.
    async fn check_chunk(
        &self,
        chunk: &[Checked],
        bulk: bool,
    ) -> (Vec<Option<GapResult>>, Option<LinkError>) {
        let groups = slot_groups(self.link.is_cluster(), chunk.iter().map(|e| e.key.as_str()));
        if groups.len() == 1 {
            return match self.check_redis(chunk, bulk).await {
                Ok(r) => (r.into_iter().map(Some).collect(), None),
                Err(e) => (vec![None; chunk.len()], Some(e)),
            };
        }
        // Groups share no stream: they run at once (the cluster connection
        // pipelines them per node).
        let calls = groups.iter().map(|group| async move {
            let events: Vec<Checked> = group.iter().map(|&i| chunk[i].clone()).collect();
            self.check_redis(&events, bulk).await
        });
        let outcomes = futures_util::future::join_all(calls).await;
        let mut placed = vec![None; chunk.len()];
        let mut failed = None;
        for (group, outcome) in groups.into_iter().zip(outcomes) {
            match outcome {
                Ok(r) => {
                    for (i, r) in group.into_iter().zip(r) {
                        placed[i] = Some(r);
                    }
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        (placed, failed)
    }

    /// Classifies `events` (streams of one slot) in Redis in one script
    /// call; `bulk` runs it on the bulk connection.
    async fn check_redis(
        &self,
        events: &[Checked],
        bulk: bool,
    ) -> Result<Vec<GapResult>, LinkError> {
        let mut keys: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut invocation = self.check_script.prepare_invoke();
        invocation
            .arg(STREAM_TTL_SECS)
            .arg(now_ms())
            .arg(MAX_MISSING_RANGES);
        for e in events {
            let i = *index.entry(e.key.as_str()).or_insert_with(|| {
                keys.push(e.key.as_str());
                keys.len()
            });
            invocation.arg(i).arg(e.seq);
        }
        for k in &keys {
            invocation.key(*k);
        }
        let invocation = &invocation;
        let op = |mut c: crate::redis::Conn| async move { invocation.invoke_async(&mut c).await };
        // The events share one slot, so the first key's master is theirs.
        let route = Route::Key(keys[0]);
        let (flat, finals): (Vec<i64>, Vec<String>) = if bulk {
            self.link.call_bulk(route, op).await?
        } else {
            self.link.call_write(route, op).await?
        };
        if flat.len() != events.len() * 4 || finals.len() != keys.len() * 5 {
            return Err(LinkError::Failed(RedisFailure::Logic(
                "gap script returned an unexpected shape".into(),
            )));
        }
        let states = keys
            .iter()
            .zip(finals.chunks(5))
            .map(|(k, f)| {
                let st = StreamState {
                    last_seq: f[0].parse().unwrap_or(0),
                    gap_count: f[1].parse().unwrap_or(0),
                    reset_count: f[2].parse().unwrap_or(0),
                    missing: Vec::new(),
                    last_ts_ms: f[4].parse().unwrap_or(0),
                };
                (k.to_string(), st, f[3].as_str())
            })
            .collect();
        self.local.streams.mirror(states);
        let kinds = [
            GapKind::Normal,
            GapKind::Gap,
            GapKind::Duplicate,
            GapKind::OutOfOrder,
            GapKind::Reset,
        ];
        let results: Vec<GapResult> = events
            .iter()
            .zip(flat.chunks(4))
            .map(|(e, r)| {
                let o = Outcome {
                    kind: kinds[r[0].clamp(0, 4) as usize],
                    expected: (r[1] >= 0).then_some(r[1] as u64),
                    gap: r[2].max(0) as u64,
                    filled: (r[3] >= 0).then_some(r[3] == 1),
                };
                observe(&self.local.gap_log, e, &o);
                result(o, e.seq, Source::Redis)
            })
            .collect();
        count_events(&self.local.metrics, events, &results);
        Ok(results)
    }

    async fn stats_redis(&self, key: &str) -> Result<Option<StreamStats>, LinkError> {
        let h: HashMap<String, String> = self
            .link
            .call(Route::Key(key), |mut c| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await?;
        let Some(last) = h.get("last_seq") else {
            return Ok(None);
        };
        let num = |f: &str| h.get(f).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        Ok(Some(StreamStats {
            last_seq: last.parse().unwrap_or(0),
            last_ts_ms: h.get("last_ts").and_then(|v| v.parse().ok()).unwrap_or(0),
            gap_count: num("gap_count"),
            reset_count: num("reset_count"),
            missing: h
                .get("missing")
                .map(|m| decode_missing(m))
                .unwrap_or_default(),
            source: Source::Redis,
        }))
    }

    /// `SCAN` + `UNLINK` over `k2:seq:*` on every master, never `KEYS`.
    async fn clear_all_redis(&self) -> Result<u64, LinkError> {
        let mut scan = Scan::new(Some("k2:seq:*"), SCAN_COUNT, false);
        let mut removed = 0u64;
        while let Some(keys) = scan.next(&self.link).await? {
            removed += unlink(&self.link, false, &keys).await?;
        }
        Ok(removed)
    }

    /// Writes streams changed during an outage to Redis (never moving a
    /// stream backwards). A stream whose master is still open, or fails
    /// (recorded in its breaker), stays dirty for the next pass.
    async fn sync(&self, link: &RedisLink) -> Result<(), RedisFailure> {
        let dirty = self.local.streams.dirty();
        let mut done = Vec::with_capacity(dirty.len());
        for (key, st) in &dirty {
            if !link.admits_recovery(Route::Key(key)) {
                continue;
            }
            let script = &self.sync_script;
            let written: Result<u64, RedisFailure> = link
                .call_recovering(Route::Key(key), |mut c| async move {
                    script
                        .key(key)
                        .arg(st.last_seq)
                        .arg(st.last_ts_ms)
                        .arg(st.gap_count)
                        .arg(st.reset_count)
                        .arg(classify::encode_missing(&st.missing))
                        .arg(STREAM_TTL_SECS)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            let written = match written {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(stream = %key, error = %e, "stream not synced; it stays dirty");
                    continue;
                }
            };
            if written == 0 {
                tracing::info!(stream = %key, "Redis moved past the local state during the outage; kept Redis's");
            }
            done.push((key.clone(), st.last_ts_ms));
        }
        if !done.is_empty() {
            self.local.streams.synced(&done);
            if let Err(e) = self.local.store.streams_synced(done).await {
                tracing::warn!(error = %e, "cannot record synced streams");
            }
        }
        Ok(())
    }
}

/// Logic errors fail the request; unavailability falls back.
fn unavailable(e: LinkError) -> Result<(), Error> {
    if e.is_unavailable() {
        Ok(())
    } else {
        Err(e.into())
    }
}

impl Tracker for RedisTracker {
    fn check<'a>(&'a self, events: &'a [Checked]) -> BoxFuture<'a, Result<Vec<GapResult>, Error>> {
        async move {
            // A large batch runs as short script calls on the bulk
            // connection, in order: each sees the states the ones before it
            // wrote, so the results are those of checking one by one, and
            // no call holds Redis (or the small requests' connections) for
            // long.
            let bulk = events.len() > BATCH_CHUNK;
            let mut results = Vec::with_capacity(events.len());
            for chunk in events.chunks(BATCH_CHUNK) {
                let start = results.len();
                let (placed, failed) = self.check_chunk(chunk, bulk).await;
                let Some(e) = failed else {
                    results.extend(placed.into_iter().flatten());
                    continue;
                };
                unavailable(e)?;
                // What Redis classified stays; the rest (this chunk's
                // unclassified events, then every later one, in order) is
                // checked here. Streams of different slots share nothing,
                // so each stream still sees its events in order.
                let pending: Vec<usize> = (0..chunk.len())
                    .filter(|&i| placed[i].is_none())
                    .map(|i| start + i)
                    .chain(start + chunk.len()..events.len())
                    .collect();
                let rest: Vec<Checked> = pending.iter().map(|&i| events[i].clone()).collect();
                let local = self.local.check_local(&rest, true).await?;
                let mut all: Vec<Option<GapResult>> = results.into_iter().map(Some).collect();
                all.extend(placed);
                all.resize(events.len(), None);
                for (i, r) in pending.into_iter().zip(local) {
                    all[i] = Some(r);
                }
                results = all.into_iter().flatten().collect();
                self.local.metrics.count_fallback("tracker");
                self.link.wake();
                break;
            }
            Ok(results)
        }
        .boxed()
    }

    fn stats<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<StreamStats>, Error>> {
        async move {
            match self.stats_redis(key).await {
                Ok(s) => return Ok(s),
                Err(e) => unavailable(e)?,
            }
            Ok(self.local.stats_local(key))
        }
        .boxed()
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            // Redis first: a clear that could not reach Redis must say so,
            // or the stream would come back when Redis does.
            self.link
                .call_write(Route::Key(key), |mut c| async move {
                    redis::cmd("UNLINK")
                        .arg(key)
                        .query_async::<u64>(&mut c)
                        .await
                })
                .await
                .map_err(Error::from)?;
            self.local.clear_local(key).await?;
            Ok(())
        }
        .boxed()
    }

    fn clear_all(&self) -> BoxFuture<'_, Result<u64, Error>> {
        async move {
            let n = self.clear_all_redis().await.map_err(Error::from)?;
            self.local.clear_all_local().await?;
            Ok(n)
        }
        .boxed()
    }
}

/// Writing streams changed during an outage, as a recovery step.
impl Recovery for RedisTracker {
    fn name(&self) -> &'static str {
        "gap tracker sync"
    }

    fn pending(&self) -> usize {
        self.local.streams.dirty_count()
    }

    fn recover<'a>(&'a self, link: &'a RedisLink) -> BoxFuture<'a, Result<(), RedisFailure>> {
        self.sync(link).boxed()
    }
}
