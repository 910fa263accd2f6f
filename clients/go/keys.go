package seqd

// Key builders for the settings cache schema, so callers never format
// keys by hand: SettingsAllKey("42") is "user:42:settings:all".

import (
	"fmt"
	"time"
)

// BinanceTTL is the TTL of the binance:{id}:positions|orders keys.
const BinanceTTL = 5 * time.Second

// A trading mode, for ModeKey.
const (
	ModeUltra    = "ultra"
	ModeScalp    = "scalp"
	ModeSwing    = "swing"
	ModePosition = "position"
)

// AdminDefaultsAllKey, AdminDefaultsHashKey and AdminDefaultsPrefix are the
// admin defaults' keys and the prefix that covers them all.
const (
	AdminDefaultsAllKey  = "admin:defaults:all"
	AdminDefaultsHashKey = "admin:defaults:hash"
	AdminDefaultsPrefix  = "admin:defaults:"
)

// SettingsAllKey is user:{id}:settings:all.
func SettingsAllKey(user string) string { return fmt.Sprintf("user:%s:settings:all", user) }

// SettingsTradingKey is user:{id}:settings:trading.
func SettingsTradingKey(user string) string { return fmt.Sprintf("user:%s:settings:trading", user) }

// SettingsNotificationsKey is user:{id}:settings:notifications.
func SettingsNotificationsKey(user string) string {
	return fmt.Sprintf("user:%s:settings:notifications", user)
}

// ModeKey is user:{id}:mode:{ultra|scalp|swing|position} (see ModeUltra...).
func ModeKey(user, mode string) string { return fmt.Sprintf("user:%s:mode:%s", user, mode) }

// ScalpReentryKey is user:{id}:scalp_reentry.
func ScalpReentryKey(user string) string { return fmt.Sprintf("user:%s:scalp_reentry", user) }

// CircuitBreakerKey is user:{id}:circuit_breaker.
func CircuitBreakerKey(user string) string { return fmt.Sprintf("user:%s:circuit_breaker", user) }

// UserPrefix is user:{id}: — the prefix that resets all of a user's keys
// (DeletePrefix).
func UserPrefix(user string) string { return fmt.Sprintf("user:%s:", user) }

// BinancePositionsKey is binance:{id}:positions (cache with BinanceTTL).
func BinancePositionsKey(user string) string { return fmt.Sprintf("binance:%s:positions", user) }

// BinanceOrdersKey is binance:{id}:orders (cache with BinanceTTL).
func BinanceOrdersKey(user string) string { return fmt.Sprintf("binance:%s:orders", user) }
