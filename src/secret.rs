//! Secrets that cannot leak by accident.
//!
//! AccessKeySecrets, STS security tokens and command-signing keys pass through
//! settings, credential providers and the signer. Wrapping them in [`Secret`]
//! means a stray `{:?}` in a log line, an error message or a panic prints
//! `[redacted]` instead of the value; reading the value takes an explicit
//! [`Secret::expose`] call that is easy to audit with grep.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A string whose `Debug` and `Display` never show its contents.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; the only way in.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the few places that must use it (signing, HMAC keys).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was given, so callers can treat "" like "absent".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
