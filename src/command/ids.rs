//! Validated identifier newtypes.
//!
//! Every identifier a command carries ends up in a URL query, a signed API
//! request, an event or a log line. Holding one of these types is proof that
//! the value passed its contract rule (CONTRACT section 3), so nothing further
//! down (signing, event building) has to re-check or escape for injection
//! such as `mi-abc&Action=DeleteActivation`.

use super::quote::{describe_char, quote};
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier: a short human sentence that never
/// echoes the raw input (it is escaped and truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct InvalidId {
    problem: String,
}

impl InvalidId {
    fn new(problem: impl Into<String>) -> Self {
        Self {
            problem: problem.into(),
        }
    }

    /// The sentence, for a [`super::FieldError`].
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Checks a length (in characters) and that every character is allowed;
/// shared by the identifier rules so their messages read the same.
fn check(
    s: &str,
    min: usize,
    max: usize,
    allowed: fn(char) -> bool,
    allowed_desc: &str,
) -> Result<(), InvalidId> {
    let len = s.chars().count();
    if len < min || len > max {
        return Err(InvalidId::new(format!(
            "must be {min} to {max} characters, got {len}"
        )));
    }
    if let Some((pos, c)) = s.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(InvalidId::new(format!(
            "may contain only {allowed_desc}, found {} at position {pos}",
            describe_char(c)
        )));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The value exactly as the publisher gave it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

fn is_command_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

string_newtype!(
    /// The idempotency key of a command: 1–64 of `[A-Za-z0-9._:-]`. Every
    /// event names it and single-instance deregistrations use it as the API
    /// `ClientToken`, whose own limit is 64 ASCII characters.
    CommandId
);

impl CommandId {
    /// Validates a command id from the body or the AMQP `message_id`.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check(s, 1, 64, is_command_id_char, "A-Z a-z 0-9 . _ : -")?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// An Alibaba Cloud region id such as `cn-hangzhou`: 1–64 of `[a-z0-9-]`.
    /// It picks the API endpoint host, so its syntax is checked before the
    /// allow-list even though only allow-listed regions are ever acted in.
    RegionId
);

impl RegionId {
    /// Validates the syntax only; the allow-list is policy, checked by `parse`.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check(
            s,
            1,
            64,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "a-z 0-9 -",
        )?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// An Alibaba Cloud account id (UID): 1–32 ASCII digits. A string, not a
    /// number, because 16-digit UIDs do not survive a round trip through a
    /// JSON double in every publisher's language.
    AccountId
);

impl AccountId {
    /// Validates the syntax only; whether a role is mapped is policy.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check(s, 1, 32, |c| c.is_ascii_digit(), "digits 0-9")?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// A Cloud Assistant managed instance id: `mi-` then 1–61 of `[A-Za-z0-9]`.
    /// It goes into the `InstanceId` API parameter and into client tokens.
    InstanceId
);

impl InstanceId {
    /// Validates `mi-` followed by 1–61 ASCII letters or digits.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let Some(rest) = s.strip_prefix("mi-") else {
            return Err(InvalidId::new(format!(
                "must start with \"mi-\", got {}",
                quote(s)
            )));
        };
        check(
            rest,
            1,
            61,
            |c| c.is_ascii_alphanumeric(),
            "A-Z a-z 0-9 after \"mi-\"",
        )?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// A host's machine id as Cloud Assistant reports it: 1–64 of
    /// `[A-Za-z0-9-]`, matched with the API's `MachineId` filter.
    MachineId
);

impl MachineId {
    /// Validates 1–64 ASCII letters, digits or hyphens.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check(
            s,
            1,
            64,
            |c| c.is_ascii_alphanumeric() || c == '-',
            "A-Z a-z 0-9 -",
        )?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype!(
    /// An RFC 1123 host name (labels of 1–63 letters, digits and inner
    /// hyphens, at most 253 characters, one trailing dot allowed). The API
    /// has no hostname filter, so the worker compares it with [`Hostname::matches`].
    Hostname
);

impl Hostname {
    /// Validates RFC 1123 syntax; the value is kept as given (case, dot).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let bare = s.strip_suffix('.').unwrap_or(s);
        let len = bare.chars().count();
        if len == 0 || len > 253 {
            return Err(InvalidId::new(format!(
                "must be 1 to 253 characters (without a trailing dot), got {len}"
            )));
        }
        for (index, label) in bare.split('.').enumerate() {
            let n = label.chars().count();
            if n == 0 || n > 63 {
                return Err(InvalidId::new(format!(
                    "label {index} must be 1 to 63 characters, got {n}"
                )));
            }
            if let Some(c) = label
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || c == '-'))
            {
                return Err(InvalidId::new(format!(
                    "labels may contain only A-Z a-z 0-9 -, found {} in label {index}",
                    describe_char(c)
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(InvalidId::new(format!(
                    "label {index} must not start or end with '-'"
                )));
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether a `Hostname` reported by the API names this host: ASCII case
    /// is ignored (DNS names are case-insensitive) and so is one trailing
    /// dot on either side (a fully qualified name is the same host).
    pub fn matches(&self, reported: &str) -> bool {
        let ours = self.0.strip_suffix('.').unwrap_or(&self.0);
        let theirs = reported.strip_suffix('.').unwrap_or(reported);
        ours.eq_ignore_ascii_case(theirs)
    }

    /// The canonical form: lower case, no trailing dot. Two hostnames that
    /// [`Hostname::matches`] each other have the same canonical form.
    pub fn canonical(&self) -> String {
        self.0
            .strip_suffix('.')
            .unwrap_or(&self.0)
            .to_ascii_lowercase()
    }
}

string_newtype!(
    /// An activation code id in the UUID form `8-4-4-4-12` hex digits, either
    /// case, kept as given. Braces, `urn:uuid:` and the hyphen-less form that
    /// UUID libraries accept are refused: the API only knows this form.
    ActivationId
);

impl ActivationId {
    /// Validates exactly `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
        let problem = || {
            InvalidId::new(format!(
                "must be a UUID in the form 8-4-4-4-12 hex digits, got {}",
                quote(s)
            ))
        };
        let mut groups = s.split('-');
        for expected in GROUPS {
            let group = groups.next().ok_or_else(problem)?;
            if group.len() != expected || !group.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(problem());
            }
        }
        if groups.next().is_some() {
            return Err(problem());
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(c: char, len: usize) -> String {
        std::iter::repeat_n(c, len).collect()
    }

    #[test]
    fn command_id_lengths() {
        assert!(CommandId::parse("").is_err());
        assert!(CommandId::parse("a").is_ok());
        assert!(CommandId::parse(&n('a', 64)).is_ok());
        assert!(CommandId::parse(&n('a', 65)).is_err());
    }

    #[test]
    fn command_id_characters() {
        assert!(CommandId::parse("Ab9._:-").is_ok());
        for bad in [
            "a b",
            "a/b",
            "a&b",
            "a=b",
            "a%26b",
            "a\nb",
            "a\u{0}b",
            "ａ",
            "a\u{202e}b",
        ] {
            assert!(CommandId::parse(bad).is_err(), "{bad:?}");
        }
        let err = CommandId::parse("x\u{202e}").unwrap_err();
        assert!(err.problem().contains("U+202E"), "{err}");
        assert!(err.problem().is_ascii());
    }

    #[test]
    fn region_id_rules() {
        assert!(RegionId::parse("cn-hangzhou").is_ok());
        assert!(RegionId::parse("ap-southeast-1").is_ok());
        assert!(RegionId::parse(&n('a', 64)).is_ok());
        assert!(RegionId::parse(&n('a', 65)).is_err());
        for bad in [
            "",
            "CN-HANGZHOU",
            "cn_hangzhou",
            "cn-hangzhou ",
            "cn.hangzhou",
            "сn-hangzhou",
        ] {
            assert!(RegionId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn account_id_rules() {
        assert!(AccountId::parse("1234567890123456").is_ok());
        assert!(AccountId::parse("0").is_ok());
        assert!(AccountId::parse(&n('9', 32)).is_ok());
        assert!(AccountId::parse(&n('9', 33)).is_err());
        for bad in ["", "-1", "1e5", "12 34", "١٢٣", "0x12", "+1"] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_id_rules() {
        assert!(InstanceId::parse("mi-a").is_ok());
        assert!(InstanceId::parse(&format!("mi-{}", n('Z', 61))).is_ok());
        assert!(InstanceId::parse(&format!("mi-{}", n('Z', 62))).is_err());
        for bad in [
            "mi-",
            "",
            "MI-abc",
            "i-abc",
            "mi-ab-c",
            "mi-abc&Action=DeleteActivation",
            "mi-abc%26",
            "mi-abc ",
            "mi-ａbc",
            "mi-abc\u{202e}",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn machine_id_rules() {
        assert!(MachineId::parse("a").is_ok());
        assert!(MachineId::parse("4c4c4544-0033-4410").is_ok());
        assert!(MachineId::parse(&n('f', 64)).is_ok());
        assert!(MachineId::parse(&n('f', 65)).is_err());
        for bad in ["", "a_b", "a b", "a/b", "a.b", "é"] {
            assert!(MachineId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostname_rules() {
        for good in [
            "a",
            "web-1",
            "Web-1.Example.COM",
            "web-1.example.com.",
            "1.2.3.4",
            "xn--bcher-kva.example",
        ] {
            assert!(Hostname::parse(good).is_ok(), "{good:?}");
        }
        let label63 = n('a', 63);
        assert!(Hostname::parse(&label63).is_ok());
        assert!(Hostname::parse(&n('a', 64)).is_err());
        // 4 labels of 63 = 255 characters with dots: too long.
        let long = [label63.as_str(); 4].join(".");
        assert!(Hostname::parse(&long).is_err());
        // Exactly 253 characters, plus a trailing dot.
        let exact = format!("{}.{}.{}.{}", label63, label63, label63, n('b', 61));
        assert_eq!(exact.len(), 253);
        assert!(Hostname::parse(&exact).is_ok());
        assert!(Hostname::parse(&format!("{exact}.")).is_ok());
        assert!(Hostname::parse(&format!("{exact}b")).is_err());
        for bad in [
            "",
            ".",
            "a..b",
            "-a",
            "a-",
            "a.-b",
            "a_b",
            "bücher.example",
            "a b",
            "a.b..",
            ".a",
            "web\u{0}",
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostname_matching() {
        let h = Hostname::parse("Web-1.Example.com.").unwrap();
        assert!(h.matches("web-1.example.com"));
        assert!(h.matches("WEB-1.EXAMPLE.COM."));
        assert!(!h.matches("web-1.example.com.."));
        assert!(!h.matches("web-1"));
        assert!(!h.matches("web-1.example.co"));
        assert_eq!(h.canonical(), "web-1.example.com");
    }

    #[test]
    fn activation_id_rules() {
        assert!(ActivationId::parse("4ECEEE12-DE25-4BB4-A8F0-09F8F0DE7B5D").is_ok());
        assert!(ActivationId::parse("4eceee12-de25-4bb4-a8f0-09f8f0de7b5d").is_ok());
        for bad in [
            "",
            "{4eceee12-de25-4bb4-a8f0-09f8f0de7b5d}",
            "urn:uuid:4eceee12-de25-4bb4-a8f0-09f8f0de7b5d",
            "4eceee12de254bb4a8f009f8f0de7b5d",
            "4eceee12-de25-4bb4-a8f0-09f8f0de7b5",
            "4eceee12-de25-4bb4-a8f0-09f8f0de7b5dd",
            "4eceee1-2de25-4bb4-a8f0-09f8f0de7b5d",
            "4eceee12-de25-4bb4-a8f0-09f8f0de7b5d-",
            "4eceee12-de25-4bb4-a8f0-09f8f0de7b5g",
            "4eceee12-de25-4bb4-a8f0-09f8f0de7b5\u{ff44}",
        ] {
            assert!(ActivationId::parse(bad).is_err(), "{bad:?}");
        }
        let kept = ActivationId::parse("4ECEEE12-de25-4BB4-A8F0-09F8F0DE7B5D").unwrap();
        assert_eq!(kept.as_str(), "4ECEEE12-de25-4BB4-A8F0-09F8F0DE7B5D");
    }

    #[test]
    fn serialize_as_string() {
        let id = CommandId::parse("c-1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"c-1\"");
        assert_eq!(id.to_string(), "c-1");
    }
}
