//! The typed answers of sequence requests, and the order-id format.

use seqd_protocol::Source;

/// A daily sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailySeq {
    pub seq: u64,
    /// The local day, YYYYMMDD.
    pub day: u32,
    pub source: Source,
}

/// A conversation sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSeq {
    pub seq: u64,
    pub source: Source,
}

/// Formats a daily number in the 5-digit form of order ids (`00042`).
/// Past 99999 the number keeps all its digits (`100000`): it never wraps.
pub fn format_daily_seq(seq: u64) -> String {
    format!("{seq:05}")
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
}
