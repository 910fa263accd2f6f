//! Local mode: numbers come from the SQLite store alone.

use super::keys::SeqKey;
use super::{Issued, Sequences};
use crate::error::Error;
use crate::store::Store;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use seqd_protocol::Source;

/// Issues numbers on this host only: each one is the key's mark plus one,
/// committed to SQLite before it is returned.
pub struct LocalSequences {
    store: Store,
}

impl LocalSequences {
    pub fn new(store: Store) -> Self {
        LocalSequences { store }
    }
}

impl Sequences for LocalSequences {
    fn next<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            self.store.read_if_new(
                &key.key,
                key.mark_expires_at,
                key.ttl_secs,
                key.issuable_from,
            );
            let seq = self
                .store
                .issue(
                    &key.key,
                    key.mark_expires_at,
                    key.ttl_secs,
                    key.issuable_from,
                )
                .await?;
            Ok(Issued {
                seq,
                source: Source::Local,
                host: None,
            })
        }
        .boxed()
    }

    fn current<'a>(&'a self, key: &'a SeqKey) -> BoxFuture<'a, Result<Issued, Error>> {
        async move {
            let seq = self.store.mark(&key.key).await?;
            Ok(Issued {
                seq,
                source: Source::Local,
                host: None,
            })
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        async move {
            vec![
                ("redis".into(), "disabled".into()),
                // No Redis, so nothing to break: requests always flow.
                ("breaker".into(), "closed".into()),
            ]
        }
        .boxed()
    }

    fn mode(&self) -> &'static str {
        "local"
    }
}
