//! The shared state every connection gets a reference to. No globals: the
//! server owns one `Arc<Context>` and hands out clones.

use crate::budget::Budget;
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::{self, Levels, Metrics};
use crate::sequences::Sequences;
use crate::store::Store;
use crate::tracker::Tracker;
use chrono_tz::Tz;
use std::sync::{Arc, RwLock};

pub struct Context {
    /// The configuration in force; SIGHUP may replace it (see `reload`).
    /// Readers take a cheap `Arc` clone and never hold the lock.
    config: RwLock<Arc<Config>>,
    /// `config.default_tz`, parsed once at start.
    pub default_tz: Tz,
    /// This host's id (`Config::host`), resolved once at start.
    pub host_id: u16,
    /// Memory for buffered frames, shared by every connection.
    pub buffer_budget: Budget,
    pub sequences: Arc<dyn Sequences>,
    pub tracker: Arc<dyn Tracker>,
    pub cache: Arc<dyn Cache>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        default_tz: Tz,
        host_id: u16,
        sequences: Arc<dyn Sequences>,
        tracker: Arc<dyn Tracker>,
        cache: Arc<dyn Cache>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Context {
        let buffer_budget = Budget::new(config.max_buffered_bytes as usize);
        Context {
            config: RwLock::new(Arc::new(config)),
            default_tz,
            host_id,
            buffer_budget,
            sequences,
            tracker,
            cache,
            store,
            metrics,
        }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new configuration in force (reload).
    pub fn replace_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// `HEALTH`'s `name=value` pairs: Redis and the breaker first, then
    /// the cache, the mode and the store.
    pub async fn health(&self) -> Vec<(String, String)> {
        let mut fields = self.sequences.health().await;
        fields.extend(self.cache.health());
        fields.push(("mode".into(), self.sequences.mode().into()));
        fields.push(("host".into(), self.host_id.to_string()));
        fields.push(("local_marks".into(), self.store.len().to_string()));
        fields.push(("version".into(), env!("CARGO_PKG_VERSION").into()));
        fields
    }

    /// What a client needs to know of this daemon (`INFO`): the version,
    /// the protocol versions, mode and host id, every limit a request can
    /// hit and the requests it knows. Names are a contract: new ones are
    /// appended, none is renamed.
    pub fn info(&self) -> Vec<(String, String)> {
        let c = self.config();
        let protocols: Vec<String> = (seqd_protocol::MIN_PROTOCOL_VERSION
            ..=seqd_protocol::PROTOCOL_VERSION)
            .map(|v| v.to_string())
            .collect();
        let fields: [(&str, String); 16] = [
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("protocols", protocols.join(",")),
            ("mode", self.sequences.mode().into()),
            ("host", self.host_id.to_string()),
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
    pub fn render_metrics(&self) -> String {
        let levels = Levels {
            local_marks: self.store.len(),
            buffered: (
                self.buffer_budget.total() - self.buffer_budget.available(),
                self.buffer_budget.total(),
            ),
            pending_reconciliation: self.store.pending(),
            cache_outbox: self.cache.outbox_len(),
        };
        metrics::render(&self.metrics, levels)
    }
}
