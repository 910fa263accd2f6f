//! Typed key builders for the settings cache schema (Epic 6), so callers
//! never format keys by hand.
//!
//! ```
//! use seqd_client::keys::{self, Mode};
//! assert_eq!(keys::settings_all(42), "user:42:settings:all");
//! assert_eq!(keys::mode(42, Mode::Scalp), "user:42:mode:scalp");
//! assert_eq!(keys::binance_positions(42), "binance:42:positions");
//! ```

use std::fmt::Display;
use std::time::Duration;

/// TTL of the `binance:{id}:positions|orders` keys.
pub const BINANCE_TTL: Duration = Duration::from_secs(5);

/// A trading mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ultra,
    Scalp,
    Swing,
    Position,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ultra => "ultra",
            Mode::Scalp => "scalp",
            Mode::Swing => "swing",
            Mode::Position => "position",
        }
    }
}

/// `user:{id}:settings:all`
pub fn settings_all(user: impl Display) -> String {
    format!("user:{user}:settings:all")
}

/// `user:{id}:settings:trading`
pub fn settings_trading(user: impl Display) -> String {
    format!("user:{user}:settings:trading")
}

/// `user:{id}:settings:notifications`
pub fn settings_notifications(user: impl Display) -> String {
    format!("user:{user}:settings:notifications")
}

/// `user:{id}:mode:{ultra|scalp|swing|position}`
pub fn mode(user: impl Display, mode: Mode) -> String {
    format!("user:{user}:mode:{}", mode.as_str())
}

/// `user:{id}:scalp_reentry`
pub fn scalp_reentry(user: impl Display) -> String {
    format!("user:{user}:scalp_reentry")
}

/// `user:{id}:circuit_breaker`
pub fn circuit_breaker(user: impl Display) -> String {
    format!("user:{user}:circuit_breaker")
}

/// `user:{id}:` — the prefix that resets all of a user's keys.
pub fn user_prefix(user: impl Display) -> String {
    format!("user:{user}:")
}

/// `admin:defaults:all`
pub fn admin_defaults_all() -> &'static str {
    "admin:defaults:all"
}

/// `admin:defaults:hash`
pub fn admin_defaults_hash() -> &'static str {
    "admin:defaults:hash"
}

/// `admin:defaults:` — the prefix of every admin default.
pub const ADMIN_DEFAULTS_PREFIX: &str = "admin:defaults:";

/// `binance:{id}:positions` (cache with [`BINANCE_TTL`]).
pub fn binance_positions(user: impl Display) -> String {
    format!("binance:{user}:positions")
}

/// `binance:{id}:orders` (cache with [`BINANCE_TTL`]).
pub fn binance_orders(user: impl Display) -> String {
    format!("binance:{user}:orders")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_schema() {
        assert_eq!(settings_trading("7"), "user:7:settings:trading");
        assert_eq!(settings_notifications(7), "user:7:settings:notifications");
        for (m, s) in [
            (Mode::Ultra, "ultra"),
            (Mode::Swing, "swing"),
            (Mode::Position, "position"),
        ] {
            assert_eq!(mode(1, m), format!("user:1:mode:{s}"));
        }
        assert_eq!(scalp_reentry(1), "user:1:scalp_reentry");
        assert_eq!(circuit_breaker(1), "user:1:circuit_breaker");
        assert_eq!(user_prefix(1), "user:1:");
        assert_eq!(admin_defaults_all(), "admin:defaults:all");
        assert_eq!(admin_defaults_hash(), "admin:defaults:hash");
        assert_eq!(binance_orders(9), "binance:9:orders");
        assert_eq!(BINANCE_TTL, Duration::from_secs(5));
    }
}
