//! The shared state every connection gets a reference to. No globals: the
//! server owns one `Arc<Context>` and hands out clones. It holds state and
//! answers nothing: what the daemon says of itself is `status.rs`'s.

use crate::budget::Budget;
use crate::cache::Cache;
use crate::config::Config;
use crate::failures::FailureLog;
use crate::metrics::Metrics;
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
    /// Failures logged by class, never a line per request.
    pub failures: Arc<FailureLog>,
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
            failures: Arc::default(),
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
}
