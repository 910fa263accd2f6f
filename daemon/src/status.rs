//! What the daemon says of itself: `HEALTH` (Redis, the breakers, the
//! cache's outbox, the mode, the store), `INFO` (version, protocols, every
//! limit) and `METRICS` (also served over HTTP). Read from the shared
//! state; nothing here changes it.

use crate::context::Context;
use crate::metrics::{self, Levels};

/// `HEALTH`'s `name=value` pairs: Redis and the breaker first, then
/// the cache, the mode and the store.
pub async fn health(ctx: &Context) -> Vec<(String, String)> {
    let mut fields = ctx.sequences.health().await;
    fields.extend(ctx.cache.health());
    fields.push(("mode".into(), ctx.sequences.mode().into()));
    fields.push(("host".into(), ctx.host_id.to_string()));
    let store = ctx.store.condition();
    fields.push(("store".into(), store.state().as_str().into()));
    fields.push((
        "journal".into(),
        if store.journal() { "on" } else { "off" }.into(),
    ));
    fields.push(("local_marks".into(), ctx.store.len().to_string()));
    fields.push(("version".into(), env!("CARGO_PKG_VERSION").into()));
    fields
}

/// What a client needs to know of this daemon (`INFO`): the version,
/// the protocol versions, mode and host id, every limit a request can
/// hit and the requests it knows. Names are a contract: new ones are
/// appended, none is renamed.
pub fn info(ctx: &Context) -> Vec<(String, String)> {
    let c = ctx.config();
    let protocols: Vec<String> = (seqd_protocol::MIN_PROTOCOL_VERSION
        ..=seqd_protocol::PROTOCOL_VERSION)
        .map(|v| v.to_string())
        .collect();
    let fields: [(&str, String); 16] = [
        ("version", env!("CARGO_PKG_VERSION").into()),
        ("protocols", protocols.join(",")),
        ("mode", ctx.sequences.mode().into()),
        ("host", ctx.host_id.to_string()),
        ("max_frame", c.max_frame.to_string()),
        ("max_line", c.max_line.to_string()),
        ("max_value", c.max_value.to_string()),
        ("max_batch", c.max_batch.to_string()),
        ("max_keys", c.max_keys.to_string()),
        ("max_inflight", c.max_inflight.to_string()),
        (
            "max_key_bytes",
            crate::cache::rules::MAX_KEY_LEN.to_string(),
        ),
        ("max_id_chars", seqd_protocol::MAX_ID_LEN.to_string()),
        ("handshake_timeout_ms", c.handshake_timeout_ms.to_string()),
        ("idle_timeout_ms", c.idle_timeout_ms.to_string()),
        ("default_tz", c.default_tz.clone()),
        ("requests", seqd_protocol::Request::NAMES.join(",")),
    ];
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The metrics in the Prometheus text format (`METRICS`, HTTP).
pub fn metrics(ctx: &Context) -> String {
    let levels = Levels {
        local_marks: ctx.store.len(),
        buffered: (
            ctx.buffer_budget.total() - ctx.buffer_budget.available(),
            ctx.buffer_budget.total(),
        ),
        pending_reconciliation: ctx.store.pending(),
        cache_outbox: ctx.cache.outbox_len(),
        store_state: ctx.store.condition().state().code().into(),
        store_journal: ctx.store.condition().journal(),
    };
    metrics::render(&ctx.metrics, levels)
}
