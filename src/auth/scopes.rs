//! What each publisher key may ask for: `security.key_scopes` (CONTRACT
//! section 6).
//!
//! `key_id=scope|scope|...`, each scope `kind:region:account`, where a part is
//! a value or `*`, and the account is an `account_id` or `own` (commands
//! without one; `*` covers `own` too). A key with no entry may ask for
//! anything, so a typo in a key id would silently lift its limits: settings
//! refuse scopes for keys that `security.command_keys` does not have.
//! Scopes are judged on every delivery, retry copies included, so tightening
//! them also stops commands already waiting in the retry stages.

use crate::command::CommandKind;
use std::collections::BTreeMap;
use std::fmt;

/// One part of a scope: a value or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part<T> {
    Any,
    Is(T),
}

/// The account part: `*`, `own`, or an account id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Account {
    Any,
    Own,
    Id(String),
}

/// One `kind:region:account`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    kind: Part<CommandKind>,
    region: Part<String>,
    account: Account,
}

/// What a command asks for, as far as scopes are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The queue's kind.
    pub kind: CommandKind,
    /// The command's `region_id`.
    pub region: &'a str,
    /// The command's `account_id`; `None` acts in the worker's own account.
    pub account: Option<&'a str>,
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.kind, self.region)?;
        match self.account {
            Some(a) => write!(f, " in account {a}"),
            None => f.write_str(" in the worker's own account"),
        }
    }
}

/// Scopes per key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScopes(BTreeMap<String, Vec<Scope>>);

/// A `security.key_scopes` entry that does not parse: which key, which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", key.as_ref().map(|k| format!("key {k:?}: ")).unwrap_or_default())]
pub struct ScopeError {
    /// The key id, when the entry got that far.
    pub key: Option<String>,
    /// What is wrong, quoting the bad part.
    pub problem: String,
}

impl KeyScopes {
    /// Parses `key_id=scope|scope|...` entries (already split at commas).
    pub fn parse(entries: &[String]) -> Result<Self, ScopeError> {
        let mut all = BTreeMap::new();
        for entry in entries {
            let Some((key, scopes)) = entry.split_once('=') else {
                return Err(ScopeError {
                    key: None,
                    problem: format!("{entry:?} is not key_id=kind:region:account|..."),
                });
            };
            let key = key.trim();
            let err = |problem: String| ScopeError {
                key: Some(key.to_owned()),
                problem,
            };
            if key.is_empty() {
                return Err(ScopeError {
                    key: None,
                    problem: format!("{entry:?} has no key id before ="),
                });
            }
            let scopes = scopes
                .split('|')
                .map(|s| Scope::parse(s.trim()).map_err(&err))
                .collect::<Result<Vec<_>, _>>()?;
            if all.insert(key.to_owned(), scopes).is_some() {
                return Err(err(
                    "has two entries; list all its scopes in one, joined by |".into(),
                ));
            }
        }
        Ok(Self(all))
    }

    /// True when no key is limited.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key ids that have an entry.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether `key_id` may ask for `request` (a key without an entry may).
    pub fn allows(&self, key_id: &str, request: &Request<'_>) -> bool {
        self.0
            .get(key_id)
            .is_none_or(|scopes| scopes.iter().any(|s| s.covers(request)))
    }
}

impl Scope {
    fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let [kind, region, account] = parts.as_slice() else {
            return Err(format!("scope {text:?} is not kind:region:account"));
        };
        let kind = match *kind {
            "*" => Part::Any,
            k => Part::Is(CommandKind::from_name(k).ok_or_else(|| {
                format!("scope {text:?}: kind {k:?} is not decommission, leak-alert or *")
            })?),
        };
        let region = match *region {
            "*" => Part::Any,
            r if crate::command::RegionId::parse(r).is_ok() => Part::Is(r.to_owned()),
            r => {
                return Err(format!(
                    "scope {text:?}: region {r:?} is not a region id or *"
                ));
            }
        };
        let account = match *account {
            "*" => Account::Any,
            "own" => Account::Own,
            a if crate::command::AccountId::parse(a).is_ok() => Account::Id(a.to_owned()),
            a => {
                return Err(format!(
                    "scope {text:?}: account {a:?} is not an account id (digits), own or *"
                ));
            }
        };
        Ok(Self {
            kind,
            region,
            account,
        })
    }

    fn covers(&self, r: &Request<'_>) -> bool {
        let kind = match self.kind {
            Part::Any => true,
            Part::Is(k) => k == r.kind,
        };
        let region = match &self.region {
            Part::Any => true,
            Part::Is(region) => region == r.region,
        };
        let account = match (&self.account, r.account) {
            (Account::Any, _) | (Account::Own, None) => true,
            (Account::Id(id), Some(a)) => id == a,
            _ => false,
        };
        kind && region && account
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> Result<KeyScopes, ScopeError> {
        let entries: Vec<String> = text
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        KeyScopes::parse(&entries)
    }

    fn ask(kind: CommandKind, region: &str, account: Option<&str>) -> Request<'static> {
        Request {
            kind,
            region: Box::leak(region.to_owned().into_boxed_str()),
            account: account.map(|a| &*Box::leak(a.to_owned().into_boxed_str())),
        }
    }

    const D: CommandKind = CommandKind::Decommission;
    const L: CommandKind = CommandKind::LeakAlert;

    #[test]
    fn the_contract_example() {
        let s = scopes(
            "soc=leak-alert:*:*,offboarding=decommission:cn-hangzhou:own|decommission:cn-beijing:own",
        )
        .expect("parses");
        assert!(s.allows("soc", &ask(L, "cn-shanghai", Some("123"))));
        assert!(
            s.allows("soc", &ask(L, "cn-hangzhou", None)),
            "* covers own"
        );
        assert!(!s.allows("soc", &ask(D, "cn-hangzhou", None)), "kind");
        assert!(s.allows("offboarding", &ask(D, "cn-hangzhou", None)));
        assert!(s.allows("offboarding", &ask(D, "cn-beijing", None)));
        assert!(
            !s.allows("offboarding", &ask(D, "cn-shanghai", None)),
            "region"
        );
        assert!(
            !s.allows("offboarding", &ask(D, "cn-hangzhou", Some("123"))),
            "own is not an account"
        );
        assert!(
            !s.allows("offboarding", &ask(L, "cn-hangzhou", None)),
            "kind"
        );
        assert!(
            s.allows("anyone-else", &ask(D, "cn-shanghai", Some("9"))),
            "no entry: anything"
        );
    }

    #[test]
    fn accounts_own_and_star() {
        let s = scopes("a=*:*:123, b=decommission:*:own, c=*:cn-hangzhou:*").expect("parses");
        assert!(s.allows("a", &ask(D, "cn-beijing", Some("123"))));
        assert!(
            !s.allows("a", &ask(D, "cn-beijing", Some("1234"))),
            "exact account"
        );
        assert!(
            !s.allows("a", &ask(D, "cn-beijing", None)),
            "an account is not own"
        );
        assert!(s.allows("b", &ask(D, "cn-beijing", None)));
        assert!(!s.allows("b", &ask(D, "cn-beijing", Some("123"))));
        assert!(s.allows("c", &ask(L, "cn-hangzhou", Some("5"))));
        assert!(s.allows("c", &ask(D, "cn-hangzhou", None)));
        assert!(
            !s.allows("c", &ask(D, "cn-hangzhou-x", None)),
            "exact region"
        );
    }

    #[test]
    fn rotation_two_keys_same_scopes() {
        let s = scopes("old=decommission:cn-hangzhou:own,new=decommission:cn-hangzhou:own")
            .expect("parses");
        for key in ["old", "new"] {
            assert!(s.allows(key, &ask(D, "cn-hangzhou", None)));
            assert!(!s.allows(key, &ask(D, "cn-beijing", None)));
        }
    }

    #[test]
    fn errors_name_the_key_and_the_bad_part() {
        let cases = [
            ("soc", "\"soc\" is not key_id="),
            ("=leak-alert:*:*", "has no key id"),
            (
                "soc=leak-alert:*",
                "key \"soc\": scope \"leak-alert:*\" is not kind:region:account",
            ),
            (
                "soc=leak-alert:*:*:*",
                "key \"soc\": scope \"leak-alert:*:*:*\"",
            ),
            ("soc=", "key \"soc\": scope \"\" is not kind:region:account"),
            ("soc=leak-alert:*:*|", "key \"soc\": scope \"\""),
            (
                "soc=leakalert:*:*",
                "key \"soc\": scope \"leakalert:*:*\": kind \"leakalert\"",
            ),
            ("soc=leak-alert:CN-HZ:*", "region \"CN-HZ\""),
            ("soc=leak-alert:*:me", "account \"me\""),
            ("soc=leak-alert:*:12a", "account \"12a\""),
            (
                "soc=leak-alert:*:*,soc=decommission:*:*",
                "key \"soc\": has two entries",
            ),
        ];
        for (text, want) in cases {
            let e = scopes(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_request_names_what_was_asked_only() {
        assert_eq!(
            ask(D, "cn-beijing", None).to_string(),
            "decommission in cn-beijing in the worker's own account"
        );
        assert_eq!(
            ask(L, "cn-beijing", Some("42")).to_string(),
            "leak-alert in cn-beijing in account 42"
        );
    }
}
