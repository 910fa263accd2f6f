//! The shared state every connection gets a reference to. No globals: the
//! server owns one `Arc<Context>` and hands out clones.

use crate::backend::cache::Cache;
use crate::backend::store::Store;
use crate::backend::tracker::Tracker;
use crate::backend::Sequences;
use crate::config::Config;
use crate::metrics::Metrics;
use chrono_tz::Tz;
use std::sync::Arc;

pub struct Context {
    pub config: Config,
    /// `config.default_tz`, parsed once at start.
    pub default_tz: Tz,
    pub sequences: Arc<dyn Sequences>,
    pub tracker: Arc<dyn Tracker>,
    pub cache: Arc<dyn Cache>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}
