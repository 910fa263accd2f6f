//! The typed answers of sequence requests, and the order-id format.

use seqd_protocol::Source;

/// A daily sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailySeq {
    pub seq: u64,
    /// The local day, YYYYMMDD.
    pub day: u32,
    pub source: Source,
    /// The host that issued the number from its local store while Redis
    /// could not answer (`None`: from Redis, a read, or local mode). Other
    /// hosts may issue the same bare number meanwhile, never the same
    /// `(host, seq)`: build ids with [`format_order_id`].
    pub host: Option<u16>,
}

/// A conversation sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSeq {
    pub seq: u64,
    pub source: Source,
    /// As [`DailySeq::host`].
    pub host: Option<u16>,
}

/// Formats a daily number in the 5-digit form of order ids (`00042`).
/// Past 99999 the number keeps all its digits (`100000`): it never wraps.
pub fn format_daily_seq(seq: u64) -> String {
    format!("{seq:05}")
}

/// An order id that stays unique across a fleet of hosts sharing one
/// Redis: `ORD-20261122-00042` for a number from Redis (or local mode),
/// `ORD-20261122-L7-00042` for one host 7 issued from its local store
/// while Redis could not answer — another host may have handed out the
/// bare `00042` meanwhile, never with `L7`.
pub fn format_order_id(d: &DailySeq) -> String {
    match d.host {
        Some(host) => format!("ORD-{}-L{host}-{}", d.day, format_daily_seq(d.seq)),
        None => format!("ORD-{}-{}", d.day, format_daily_seq(d.seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_numbers_format_to_five_digits_without_wrapping() {
        assert_eq!(format_daily_seq(1), "00001");
        assert_eq!(format_daily_seq(99_999), "99999");
        assert_eq!(format_daily_seq(100_000), "100000");
    }

    #[test]
    fn order_ids_carry_the_host_of_locally_issued_numbers() {
        let mut d = DailySeq {
            seq: 42,
            day: 20_261_122,
            source: Source::Redis,
            host: None,
        };
        assert_eq!(format_order_id(&d), "ORD-20261122-00042");
        d.source = Source::Local;
        d.host = Some(7);
        assert_eq!(format_order_id(&d), "ORD-20261122-L7-00042");
        d.seq = 123_456;
        assert_eq!(format_order_id(&d), "ORD-20261122-L7-123456");
    }
}
