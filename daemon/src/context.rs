//! The shared state every connection gets a reference to. No globals: the
//! server owns one `Arc<Context>` and hands out clones.

use crate::backend::cache::Cache;
use crate::backend::store::Store;
use crate::backend::tracker::Tracker;
use crate::backend::Sequences;
use crate::config::Config;
use crate::metrics::Metrics;
use chrono_tz::Tz;
use std::sync::{Arc, RwLock};

pub struct Context {
    /// The configuration in force; SIGHUP may replace it (see `reload`).
    /// Readers take a cheap `Arc` clone and never hold the lock.
    config: RwLock<Arc<Config>>,
    /// `config.default_tz`, parsed once at start.
    pub default_tz: Tz,
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
        sequences: Arc<dyn Sequences>,
        tracker: Arc<dyn Tracker>,
        cache: Arc<dyn Cache>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Context {
        Context {
            config: RwLock::new(Arc::new(config)),
            default_tz,
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
}
