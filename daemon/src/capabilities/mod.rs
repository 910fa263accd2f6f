//! Capabilities: what seqd offers, independent of the wire and of the
//! backend. Each validates its input and decides which counter or key a
//! request means; the backends do the storing.

pub mod cache;
pub mod ids;
pub mod sequences;
pub mod tracker;
