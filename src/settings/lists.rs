//! List-valued settings.
//!
//! Environment variables can only carry strings, so every list accepts either a
//! TOML array or one comma-separated string, with spaces around items ignored.

use crate::secret::Secret;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    One(String),
    Many(Vec<String>),
}

fn items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Raw::deserialize(d)?;
    let all: Vec<String> = match raw {
        Raw::One(s) => s.split(',').map(|s| s.trim().to_owned()).collect(),
        Raw::Many(v) => v.into_iter().map(|s| s.trim().to_owned()).collect(),
    };
    Ok(all.into_iter().filter(|s| !s.is_empty()).collect())
}

/// A plain list of strings (e.g. the region allow-list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl StringList {
    /// True when the list has no items.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        items(d).map(StringList)
    }
}

/// Retry-queue delays, in order; each item is a number with a unit (`ms`, `s`,
/// `m`, `h`). Never empty, by construction: a parked command always has a
/// stage to wait in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delays {
    all: Vec<Duration>,
    last: Duration,
}

impl Delays {
    /// The delays, if there is at least one.
    pub fn new(delays: Vec<Duration>) -> Option<Self> {
        let last = *delays.last()?;
        Some(Self { all: delays, last })
    }

    /// The delays, in order.
    pub fn as_slice(&self) -> &[Duration] {
        &self.all
    }

    /// How many there are (at least one).
    pub fn count(&self) -> std::num::NonZeroUsize {
        std::num::NonZeroUsize::new(self.all.len()).unwrap_or(std::num::NonZeroUsize::MIN)
    }

    /// Delay `index` (0-based), or the last one past the end.
    pub fn get_clamped(&self, index: usize) -> Duration {
        self.all.get(index).copied().unwrap_or(self.last)
    }
}

impl<'de> Deserialize<'de> for Delays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = items(d)?;
        let delays = list
            .iter()
            .map(|s| parse_duration(s).map_err(de::Error::custom))
            .collect::<Result<Vec<_>, _>>()?;
        Delays::new(delays).ok_or_else(|| de::Error::custom("needs at least one delay, e.g. 30s"))
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`. Anything else is an error naming the item.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has no unit (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

/// Formats a delay the way queue names use it (`30s`, `5m`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Publisher keys for signed commands: `key_id:secret` pairs.
#[derive(Clone, Default)]
pub struct CommandKeys(pub Vec<(String, Secret)>);

impl CommandKeys {
    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for CommandKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| format!("{id}:[redacted]")))
            .finish()
    }
}

impl CommandKeys {
    /// Parses `key_id:secret` items (already split); never echoes an item,
    /// since a malformed one may be a secret with a typo.
    fn from_items(items: Vec<String>) -> Result<Self, String> {
        items
            .into_iter()
            .map(|item| match item.split_once(':') {
                Some((id, secret)) if !id.trim().is_empty() && !secret.is_empty() => {
                    Ok((id.trim().to_owned(), Secret::new(secret)))
                }
                _ => Err("each item must be key_id:secret".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CommandKeys)
    }

    /// Parses a comma-separated `key_id:secret` list (e.g. a key file's contents).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_items(
            text.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for CommandKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_items(items(d)?).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for crate::auth::scopes::KeyScopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&items(d)?).map_err(de::Error::custom)
    }
}

/// Account id → RAM role ARN, for commands that carry `account_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRoles(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for AccountRoles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        items(d)?
            .into_iter()
            .map(|item| {
                let (account, arn) = item
                    .split_once('=')
                    .ok_or_else(|| de::Error::custom(format!("{item:?} is not account_id=role_arn")))?;
                let (account, arn) = (account.trim(), arn.trim());
                if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(de::Error::custom(format!("{account:?} is not an account id (digits)")));
                }
                // acs:ram::<account>:role/<name>
                let arn_account = arn.strip_prefix("acs:ram::").and_then(|r| r.split(':').next());
                if arn_account != Some(account) || !arn.contains(":role/") {
                    return Err(de::Error::custom(format!(
                        "{arn:?} is not a role ARN of account {account} (acs:ram::{account}:role/NAME)"
                    )));
                }
                Ok((account.to_owned(), arn.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AccountRoles)
    }
}
