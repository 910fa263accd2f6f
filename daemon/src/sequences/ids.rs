//! The character rule for user, group and conversation ids.
//!
//! 1–64 characters of `A–Z a–z 0–9 _ . - @ +`: e-mail-like ids
//! (`alice+orders@example.com`) are common user ids. Everything else stays
//! out: `:` separates the parts of a Redis key (so no caller can forge
//! another user's key), whitespace splits text commands, `* ? [ ]` are
//! glob characters of prefix deletes, `{ }` would pick a Cluster slot.

use crate::error::Error;
use seqd_protocol::MAX_ID_LEN;

/// Checks an id; `what` names it in the error ("user", "group id").
pub fn validate(what: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; at most {MAX_ID_LEN} are allowed",
            id.len()
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | '+')))
    {
        return Err(Error::invalid(format!(
            "{what} contains {bad:?}; only A-Z a-z 0-9 _ . - @ + are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_allowed_alphabet_up_to_64() {
        validate("user", "123").unwrap();
        validate("user", "Alice_Bob.x-9").unwrap();
        validate("user", "alice+orders@example.com").unwrap();
        validate("user", &"a".repeat(64)).unwrap();
    }

    #[test]
    fn rejects_empty_long_and_forging_ids() {
        for bad in [
            "",
            "a:b",
            "a b",
            "ü",
            "a*",
            "a?",
            "a[1]",
            "{a}",
            "a\tb",
            "x\n",
            "1:sequence:20260101",
        ] {
            assert!(validate("user", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate("user", &"a".repeat(65)).is_err());
    }

    proptest! {
        #[test]
        fn valid_ids_never_contain_a_key_separator(s in ".{0,80}") {
            if validate("user", &s).is_ok() {
                prop_assert!(!s.contains(':') && !s.is_empty() && s.len() <= 64);
            }
        }
    }
}
