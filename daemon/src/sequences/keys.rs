//! Daily sequences (SPEC §4.1) and conversation sequences (§4.2): request
//! validation and the Redis key schema. Issuing numbers is the
//! [`Sequences`](super::Sequences) implementations' job; this module
//! decides *which* counter.

use super::ids;
use crate::error::Error;
use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use seqd_protocol::{Conversation, DailyQuery};

/// Redis TTL of a daily key, set with its first increment.
pub const DAILY_TTL_SECS: u64 = 48 * 3600;
/// Daily numbers are formatted with 5 digits; beyond it seqd warns once per
/// key and keeps counting.
pub const DAILY_WIDTH_MAX: u64 = 99_999;

/// A counter: its Redis key and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqKey {
    /// The Redis key, also the store's key for the high-water mark.
    pub key: String,
    /// Redis TTL set with the first increment; `None` = no TTL.
    pub ttl_secs: Option<u64>,
    /// When the high-water mark may be forgotten (Unix seconds); `None` =
    /// never. For daily keys: 48 hours after the latest number issued,
    /// which outlives the Redis key.
    pub mark_expires_at: Option<i64>,
}

/// A resolved daily request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyKey {
    pub key: SeqKey,
    /// YYYYMMDD as a number.
    pub day: u32,
}

/// Resolves a daily query at instant `now`: validates the user, the zone
/// and the instant, and finds the local day.
pub fn daily_key(q: &DailyQuery, default_tz: Tz, now: DateTime<Utc>) -> Result<DailyKey, Error> {
    ids::validate("user", &q.user)?;
    let tz = match &q.tz {
        Some(name) => parse_tz(name)?,
        None => default_tz,
    };
    let at = match q.at_ms {
        Some(ms) => DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| Error::invalid(format!("at={ms} ms is out of range")))?,
        None => now,
    };
    let day = local_day(at, tz);
    Ok(DailyKey {
        key: SeqKey {
            key: format!("user:{}:sequence:{day:08}", q.user),
            ttl_secs: Some(DAILY_TTL_SECS),
            mark_expires_at: Some(now.timestamp() + DAILY_TTL_SECS as i64),
        },
        day,
    })
}

/// Parses an IANA zone name (`Asia/Kolkata`); anything else is
/// `invalid_argument`.
pub fn parse_tz(name: &str) -> Result<Tz, Error> {
    name.parse::<Tz>().map_err(|_| {
        let shown: String = name.chars().take(64).collect();
        Error::invalid(format!(
            "unknown time zone '{shown}'; expected an IANA name such as Asia/Kolkata"
        ))
    })
}

/// The local date of `at` in `tz` as YYYYMMDD.
pub fn local_day(at: DateTime<Utc>, tz: Tz) -> u32 {
    let local = at.with_timezone(&tz).date_naive();
    // Years before 1 or after 9999 do not fit the 8-digit form; chrono's
    // range stays within ±262143, so clamp rather than overflow.
    let year = local.year().clamp(0, 9999) as u32;
    year * 10_000 + local.month() * 100 + local.day()
}

/// Resolves a conversation: validates ids and builds `seq:private:{lo}:{hi}`
/// (ids sorted in byte order) or `seq:group:{id}`. No TTL.
pub fn conv_key(c: &Conversation) -> Result<SeqKey, Error> {
    let key = match c {
        Conversation::Private { a, b } => {
            ids::validate("user a", a)?;
            ids::validate("user b", b)?;
            let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
                (a, b)
            } else {
                (b, a)
            };
            format!("seq:private:{lo}:{hi}")
        }
        Conversation::Group { id } => {
            ids::validate("group id", id)?;
            format!("seq:group:{id}")
        }
    };
    Ok(SeqKey {
        key,
        ttl_secs: None,
        mark_expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn query(user: &str, tz: Option<&str>, at: Option<&str>) -> DailyQuery {
        DailyQuery {
            user: user.into(),
            tz: tz.map(Into::into),
            at_ms: at.map(|a| utc(a).timestamp_millis()),
        }
    }

    #[test]
    fn daily_sequence_resets_at_kolkata_midnight() {
        let now = utc("2026-01-06T00:00:00Z");
        let before = daily_key(
            &query("123", Some("Asia/Kolkata"), Some("2026-01-06T18:29:59Z")),
            Tz::UTC,
            now,
        )
        .unwrap();
        let after = daily_key(
            &query("123", Some("Asia/Kolkata"), Some("2026-01-06T18:30:00Z")),
            Tz::UTC,
            now,
        )
        .unwrap();
        assert_eq!(before.day, 20260106);
        assert_eq!(before.key.key, "user:123:sequence:20260106");
        assert_eq!(after.day, 20260107);
        assert_eq!(after.key.key, "user:123:sequence:20260107");
        assert_eq!(after.key.ttl_secs, Some(172_800));
    }

    #[test]
    fn year_boundary_uses_local_date() {
        let now = utc("2026-12-31T00:00:00Z");
        let k = daily_key(
            &query("u", Some("America/New_York"), Some("2027-01-01T04:59:59Z")),
            Tz::UTC,
            now,
        )
        .unwrap();
        assert_eq!(k.day, 20261231);
        let k = daily_key(
            &query("u", Some("America/New_York"), Some("2027-01-01T05:00:00Z")),
            Tz::UTC,
            now,
        )
        .unwrap();
        assert_eq!(k.day, 20270101);
    }

    #[test]
    fn default_zone_and_now_apply_when_omitted() {
        let now = utc("2026-03-01T20:00:00Z");
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(
            daily_key(&query("u", None, None), tokyo, now).unwrap().day,
            20260302
        );
    }

    #[test]
    fn bad_zone_and_user_are_invalid_arguments() {
        let now = Utc::now();
        for q in [
            query("u", Some("Mars/Olympus"), None),
            query("a:b", None, None),
            query("", None, None),
        ] {
            let e = daily_key(&q, Tz::UTC, now).unwrap_err();
            assert_eq!(
                e.to_wire().code,
                seqd_protocol::ErrorCode::InvalidArgument,
                "{q:?}"
            );
        }
    }

    #[test]
    fn private_chat_key_is_order_independent() {
        let ab = conv_key(&Conversation::Private {
            a: "user002".into(),
            b: "user001".into(),
        })
        .unwrap();
        let ba = conv_key(&Conversation::Private {
            a: "user001".into(),
            b: "user002".into(),
        })
        .unwrap();
        assert_eq!(ab.key, "seq:private:user001:user002");
        assert_eq!(ab, ba);
        assert_eq!(ab.ttl_secs, None);
        assert_eq!(
            conv_key(&Conversation::Group { id: "g1".into() })
                .unwrap()
                .key,
            "seq:group:g1"
        );
        assert!(conv_key(&Conversation::Group { id: "".into() }).is_err());
    }

    proptest! {
        #[test]
        fn private_key_is_symmetric(a in "[a-zA-Z0-9_.-]{1,64}", b in "[a-zA-Z0-9_.-]{1,64}") {
            let x = conv_key(&Conversation::Private { a: a.clone(), b: b.clone() }).unwrap();
            let y = conv_key(&Conversation::Private { a: b, b: a }).unwrap();
            prop_assert_eq!(x, y);
        }

        #[test]
        fn local_day_matches_chrono(ms in -2_000_000_000_000i64..4_000_000_000_000i64) {
            let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let tz: Tz = "Asia/Kolkata".parse().unwrap();
            let want: u32 = at.with_timezone(&tz).format("%Y%m%d").to_string().parse().unwrap();
            prop_assert_eq!(local_day(at, tz), want);
        }
    }
}
