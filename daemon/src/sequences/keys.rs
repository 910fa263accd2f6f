//! Daily sequences and conversation sequences: request
//! validation and the Redis key schema. Issuing numbers is the
//! [`Sequences`](super::Sequences) implementations' job; this module
//! decides *which* counter.

use super::ids;
use crate::error::Error;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use seqd_protocol::{Conversation, DailyQuery};

/// Redis TTL of a daily key, set with its first increment.
pub const DAILY_TTL_SECS: u64 = 48 * 3600;
/// Daily numbers are formatted with 5 digits; beyond it seqd warns once per
/// key and keeps counting.
pub const DAILY_WIDTH_MAX: u64 = 99_999;

/// Which family a counter belongs to (each has its own fallback policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Daily,
    Conv,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Daily => "daily",
            Family::Conv => "conv",
        }
    }
}

/// A counter: its Redis key and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqKey {
    /// The Redis key, also the store's key for the high-water mark.
    pub key: String,
    pub family: Family,
    /// Redis TTL set with the first increment; `None` = no TTL.
    pub ttl_secs: Option<u64>,
    /// When the high-water mark may be forgotten (Unix seconds); `None` =
    /// never. For daily keys: no earlier than the Redis key, and never
    /// before the day's window closes.
    pub mark_expires_at: Option<i64>,
    /// Daily keys: no later than when the day's window opened, in any zone
    /// (Unix seconds): a key of the local store may have been issued from
    /// then on (see the store's implied reserve). `None` for conversations.
    pub issuable_from: Option<i64>,
}

/// How daily requests are resolved: the zone when a request names none,
/// and the window of days that accept `NEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyRules {
    pub default_tz: Tz,
    /// `NEXT` is accepted for the local days within this many days of
    /// today in the request's zone (1: yesterday, today and tomorrow).
    pub window_days: u32,
}

/// A resolved daily request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyKey {
    pub key: SeqKey,
    /// YYYYMMDD as a number.
    pub day: u32,
    /// Today in the request's zone, YYYYMMDD.
    pub today: u32,
    /// True when `day` accepts `NEXT` now.
    pub in_window: bool,
}

/// Resolves a daily query at instant `now`: validates the user, the zone
/// and the instant, and finds the local day and whether it is within the
/// window.
///
/// # Why the window
///
/// A day's counter lives for a while (its Redis TTL, its mark) and is then
/// forgotten; a `NEXT` for that day after that would start again at 1 and
/// repeat numbers. So only the days within `window_days` of today accept
/// `NEXT`, and a counter lives at least until its day's window has closed
/// (the start of day + window + 1 in its zone): its Redis TTL is the
/// larger of the 48-hour key TTL (which covers today's keys) and the time
/// until then, and so is its mark's life.
pub fn daily_key(q: &DailyQuery, rules: DailyRules, now: DateTime<Utc>) -> Result<DailyKey, Error> {
    ids::validate("user", &q.user)?;
    let tz = match &q.tz {
        Some(name) => parse_tz(name)?,
        None => rules.default_tz,
    };
    let at = match q.at_ms {
        Some(ms) => DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| Error::invalid(format!("at={ms} ms is out of range")))?,
        None => now,
    };
    let day = local_day(at, tz)?;
    let local = at.with_timezone(&tz).date_naive();
    let today_date = now.with_timezone(&tz).date_naive();
    let distance = (local - today_date).num_days().unsigned_abs();
    let in_window = distance <= u64::from(rules.window_days);
    // The window of `local` closes when its last accepting day ends.
    let closes = local
        .checked_add_days(Days::new(u64::from(rules.window_days) + 1))
        .map_or(now, |d| start_of_day(d, tz));
    let until_close = (closes - now).num_seconds().max(0) as u64;
    let ttl = DAILY_TTL_SECS.max(until_close);
    // The key names the day, not the zone: its window opened no earlier
    // than midnight UTC a day before the window's first day (UTC+14 is
    // the earliest zone).
    let opened = local
        .checked_sub_days(Days::new(u64::from(rules.window_days) + 1))
        .map_or(i64::MIN, |d| {
            d.and_time(NaiveTime::MIN).and_utc().timestamp()
        });
    // Sized once: `format!` guesses its capacity and grows (two
    // allocations per request).
    let mut key = String::with_capacity(q.user.len() + 23);
    key.push_str("user:");
    key.push_str(&q.user);
    key.push_str(":sequence:");
    use std::fmt::Write as _;
    let _ = write!(key, "{day:08}");
    Ok(DailyKey {
        key: SeqKey {
            key,
            family: Family::Daily,
            ttl_secs: Some(ttl),
            mark_expires_at: Some(now.timestamp() + ttl as i64),
            issuable_from: Some(opened),
        },
        day,
        today: local_day(now, tz)?,
        in_window,
    })
}

/// The first instant of `date` in `tz` (midnight, or the first hour that
/// exists where a DST change skips midnight).
fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    (0..4)
        .find_map(|h| {
            let t = NaiveTime::from_hms_opt(h, 0, 0)?;
            tz.from_local_datetime(&date.and_time(t)).earliest()
        })
        .map_or_else(
            || date.and_time(NaiveTime::MIN).and_utc(),
            |t| t.with_timezone(&Utc),
        )
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

/// The local date of `at` in `tz` as YYYYMMDD; a local date outside the
/// years 0001–9999 does not fit the 8-digit form and is
/// `invalid_argument` (clamping it would share another day's counter).
pub fn local_day(at: DateTime<Utc>, tz: Tz) -> Result<u32, Error> {
    let local = at.with_timezone(&tz).date_naive();
    if !(1..=9999).contains(&local.year()) {
        return Err(Error::invalid(format!(
            "the local date of that instant in {tz} is {local}, outside the years 0001-9999"
        )));
    }
    Ok(local.year() as u32 * 10_000 + local.month() * 100 + local.day())
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
        family: Family::Conv,
        ttl_secs: None,
        mark_expires_at: None,
        issuable_from: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(default_tz: Tz) -> DailyRules {
        DailyRules {
            default_tz,
            window_days: 1,
        }
    }

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
            rules(Tz::UTC),
            now,
        )
        .unwrap();
        let after = daily_key(
            &query("123", Some("Asia/Kolkata"), Some("2026-01-06T18:30:00Z")),
            rules(Tz::UTC),
            now,
        )
        .unwrap();
        assert_eq!(before.day, 20260106);
        assert_eq!(before.key.key, "user:123:sequence:20260106");
        assert_eq!(after.day, 20260107);
        assert_eq!(after.key.key, "user:123:sequence:20260107");
        // Today's key: the key's 48 hours (its window closes sooner).
        assert_eq!(before.key.ttl_secs, Some(172_800));
        // Tomorrow's key lives until the end of the day after it in
        // Kolkata: 2026-01-09T00:00+05:30 is 66.5 hours after `now`.
        assert_eq!(after.key.ttl_secs, Some(239_400));
        assert_eq!(after.key.mark_expires_at, Some(now.timestamp() + 239_400));
    }

    #[test]
    fn next_is_accepted_within_the_window_of_days_around_today_only() {
        let now = utc("2026-11-22T12:00:00Z");
        let day = |at: &str, window_days| {
            let r = DailyRules {
                default_tz: Tz::UTC,
                window_days,
            };
            let k = daily_key(&query("u", None, Some(at)), r, now).unwrap();
            (k.day, k.in_window, k.key.ttl_secs.unwrap())
        };
        assert_eq!(day("2026-11-21T00:00:00Z", 1), (20261121, true, 172_800));
        assert_eq!(day("2026-11-22T23:59:59Z", 1), (20261122, true, 172_800));
        // Tomorrow's window closes at the start of 2026-11-25: 60 hours.
        assert_eq!(day("2026-11-23T00:00:00Z", 1), (20261123, true, 216_000));
        assert!(!day("2026-11-20T23:59:59Z", 1).1);
        assert!(!day("2026-11-24T00:00:00Z", 1).1);
        assert!(!day("2026-11-23T00:00:00Z", 0).1);
        // Four days ahead with a wider window: alive until its window closes.
        let (d, ok, ttl) = day("2026-11-26T10:00:00Z", 7);
        assert_eq!((d, ok), (20261126, true));
        assert_eq!(ttl, (12 + 24 * 11) * 3600);
    }

    #[test]
    fn a_local_date_past_year_9999_is_invalid_not_clamped() {
        let now = utc("2026-11-22T12:00:00Z");
        let q = query(
            "u",
            Some("Pacific/Kiritimati"),
            Some("9999-12-31T23:59:59Z"),
        );
        let e = daily_key(&q, rules(Tz::UTC), now).unwrap_err();
        assert_eq!(e.to_wire().code, seqd_protocol::ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("outside the years 0001-9999"), "{e}");
    }

    #[test]
    fn a_day_that_skips_midnight_starts_at_its_first_hour() {
        // America/Santiago springs forward at 00:00 (to 01:00) on
        // 2026-09-06.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = start_of_day(NaiveDate::from_ymd_opt(2026, 9, 6).unwrap(), tz);
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn year_boundary_uses_local_date() {
        let now = utc("2026-12-31T00:00:00Z");
        let k = daily_key(
            &query("u", Some("America/New_York"), Some("2027-01-01T04:59:59Z")),
            rules(Tz::UTC),
            now,
        )
        .unwrap();
        assert_eq!(k.day, 20261231);
        let k = daily_key(
            &query("u", Some("America/New_York"), Some("2027-01-01T05:00:00Z")),
            rules(Tz::UTC),
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
            daily_key(&query("u", None, None), rules(tokyo), now)
                .unwrap()
                .day,
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
            let e = daily_key(&q, rules(Tz::UTC), now).unwrap_err();
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
            prop_assert_eq!(local_day(at, tz).unwrap(), want);
        }
    }
}
