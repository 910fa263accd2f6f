//! The settings cache's rules: which keys a caller may touch and
//! how large a value may be. Storing is the [`Cache`](super::Cache)
//! implementations' job.
//!
//! Keys are 1–512 printable ASCII bytes without spaces. The sequence and
//! tracker families — `user:*:sequence:*`, `seq:*`, `k2:seq:*` — are
//! `forbidden`: no caller can overwrite or delete a counter through the
//! cache, not even with a prefix delete (matching keys of those families
//! are skipped).

use crate::error::Error;

/// Longest key.
pub const MAX_KEY_LEN: usize = 512;

/// True for keys of the sequence and tracker families.
pub fn is_forbidden(key: &str) -> bool {
    key.starts_with("seq:")
        || key.starts_with("k2:seq:")
        || key
            .strip_prefix("user:")
            .is_some_and(|rest| rest.contains(":sequence:"))
}

fn check_shape(what: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{what} contains {bad:?}; use printable ASCII without spaces"
        )));
    }
    Ok(())
}

/// Checks a key a caller wants to read, write or delete.
pub fn validate_key(key: &str) -> Result<(), Error> {
    check_shape("key", key)?;
    if is_forbidden(key) {
        return Err(Error::Forbidden(format!(
            "key '{key}' belongs to the sequence or tracker keys (user:*:sequence:*, seq:*, k2:seq:*)"
        )));
    }
    Ok(())
}

/// Checks a prefix for a prefix delete: shaped like a key, and not inside
/// a forbidden family (a shorter prefix that covers one is allowed; its
/// forbidden keys are skipped).
pub fn validate_prefix(prefix: &str) -> Result<(), Error> {
    check_shape("prefix", prefix)?;
    if is_forbidden(prefix) || prefix == "seq" || prefix == "k2:seq" {
        return Err(Error::Forbidden(format!(
            "prefix '{prefix}' lies inside the sequence or tracker keys"
        )));
    }
    Ok(())
}

/// Checks a value's size against the configured limit.
pub fn validate_value(value: &[u8], max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::TooLarge(format!(
            "value of {} bytes; the limit is {max} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// A `SCAN MATCH` pattern for keys starting with `prefix`, with the glob
/// characters in the prefix escaped.
pub fn scan_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqd_protocol::ErrorCode;

    #[test]
    fn counter_families_are_forbidden() {
        for k in [
            "user:1:sequence:20260101",
            "user:a:b:sequence:x",
            "seq:group:g",
            "seq:private:a:b",
            "k2:seq:asx:BHP",
        ] {
            assert_eq!(
                validate_key(k).unwrap_err().to_wire().code,
                ErrorCode::Forbidden,
                "{k}"
            );
        }
        for k in [
            "user:1:settings:all",
            "user:1:mode:scalp",
            "admin:defaults:all",
            "sequence",
            "k2:other",
            "seqx",
        ] {
            validate_key(k).unwrap();
        }
    }

    #[test]
    fn keys_are_printable_without_spaces_and_bounded() {
        for k in ["", "a b", "tab\there", "é"] {
            assert_eq!(
                validate_key(k).unwrap_err().to_wire().code,
                ErrorCode::InvalidArgument,
                "{k:?}"
            );
        }
        validate_key(&"k".repeat(512)).unwrap();
        assert!(validate_key(&"k".repeat(513)).is_err());
    }

    #[test]
    fn prefixes_inside_a_counter_family_are_forbidden() {
        for p in ["seq:", "seq", "k2:seq:", "k2:seq", "user:1:sequence:"] {
            assert_eq!(
                validate_prefix(p).unwrap_err().to_wire().code,
                ErrorCode::Forbidden,
                "{p}"
            );
        }
        validate_prefix("user:1:").unwrap();
        validate_prefix("admin:defaults:").unwrap();
        validate_prefix("s").unwrap();
    }

    #[test]
    fn values_above_the_limit_are_too_large() {
        validate_value(&[0; 10], 10).unwrap();
        assert_eq!(
            validate_value(&[0; 11], 10).unwrap_err().to_wire().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn scan_patterns_escape_globs() {
        assert_eq!(scan_pattern("user:1:"), "user:1:*");
        assert_eq!(scan_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
