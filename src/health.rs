//! Liveness and readiness, shared by the broker supervisor, the worker and
//! `/readyz`.
//!
//! Ready means: connected to the broker, topology declared, consumers running,
//! not shutting down, and credentials not known to be bad. Each condition keeps
//! its own reason so `/readyz` can say *why* the worker is not ready.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A credential or permission failure as the operator needs to see it: the
/// service's own code and message (for `SignatureDoesNotMatch` the message
/// holds the service's string-to-sign, which is no secret and shows what the
/// service computed), which call was refused, where, as whom, and where the
/// credentials came from. Never a secret: sources are named, not shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialProblem {
    /// The API's error code, e.g. `SignatureDoesNotMatch`.
    pub code: String,
    /// The API's error message, as the service sent it.
    pub message: String,
    /// The refused action (`ResolveCredentials` when no call could be signed).
    pub action: String,
    /// The command's region.
    pub region: String,
    /// The command's account, when it acts in a mapped account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Where the credentials came from (`settings`, `environment`, `oidc_role_arn`, ...).
    pub source: String,
}

impl std::fmt::Display for CredentialProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (action {}, region {}",
            self.code, self.message, self.action, self.region
        )?;
        if let Some(account) = &self.account {
            write!(f, ", account {account}")?;
        }
        write!(f, ", credentials from {})", self.source)
    }
}

impl CredentialProblem {
    /// Same cause (code and source): a change of region or message alone is
    /// not news worth another log line.
    fn same_cause(&self, other: &Self) -> bool {
        self.code == other.code && self.source == other.source
    }
}

/// Why the worker is not ready, by condition.
/// Which broker nodes the worker is on, by position in `amqp.url` (from 1;
/// 0 while not connected), never by host or credentials: what an operator
/// needs to tell which node a worker follows after a failover.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokerLink {
    /// Nodes named in `amqp.url`.
    pub nodes: usize,
    /// The node the consuming connection is on.
    pub consuming_node: usize,
    /// The node the publishing connection is on.
    pub publishing_node: usize,
    /// Sessions opened after the first (each after a lost broker).
    pub reconnects: u64,
    /// The broker blocks the publishing connection (a resource alarm).
    pub publishing_blocked: bool,
}

#[derive(Debug, Default)]
struct State {
    broker: Option<String>,
    link: BrokerLink,
    blocked: Option<String>,
    /// The broker refuses command outcomes (settlements are being republished).
    publishing: Option<String>,
    credentials: Option<CredentialProblem>,
    shutting_down: bool,
    /// Accounts whose role could not be used (the worker stays ready).
    degraded_accounts: BTreeMap<String, CredentialProblem>,
}

/// Shared health state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// The readiness verdict with reasons.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// True when the worker is taking and carrying out commands.
    pub ready: bool,
    /// Why not (empty when ready).
    pub reasons: Vec<String>,
    /// Which broker nodes the session is on, and how often it reconnected.
    pub broker: BrokerLink,
    /// The worker's own credentials failing, in detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialProblem>,
    /// Accounts whose commands are waiting on a role problem, each with its cause.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub degraded_accounts: BTreeMap<String, CredentialProblem>,
}

impl Health {
    /// Starts "not connected yet".
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                broker: Some("not connected to the broker yet".into()),
                ..State::default()
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Broker connected and consuming (`None`) or why not.
    pub fn set_broker(&self, problem: Option<String>) {
        self.with(|s| s.broker = problem);
    }

    /// The broker refuses to take command outcomes (`None`: it takes them again).
    /// Records where the session's connections are (or 0s when lost).
    pub fn set_link(&self, update: impl FnOnce(&mut BrokerLink)) {
        self.with(|s| update(&mut s.link));
    }

    /// A `connection.blocked` from the broker (its reason), or `None` when it
    /// unblocks or the session ends.
    pub fn set_blocked(&self, reason: Option<String>) {
        self.with(|s| {
            s.link.publishing_blocked = reason.is_some();
            s.blocked = reason;
        });
    }

    pub fn set_publishing(&self, problem: Option<String>) {
        self.with(|s| s.publishing = problem);
    }

    /// Records a credential failure (or its end); returns true if this changed
    /// the cause (so the caller logs once per change, not once per command).
    pub fn set_credential_problem(&self, problem: Option<CredentialProblem>) -> bool {
        self.with(|s| {
            let changed = !same(s.credentials.as_ref(), problem.as_ref());
            s.credentials = problem;
            changed
        })
    }

    /// True while credentials are known to be bad.
    pub fn credentials_bad(&self) -> bool {
        self.with(|s| s.credentials.is_some())
    }

    /// Marks shutdown (readiness turns false at once).
    pub fn set_shutting_down(&self) {
        self.with(|s| s.shutting_down = true);
    }

    /// Records (or clears) a per-account role problem; true when its cause changed.
    pub fn set_account_problem(&self, account: &str, problem: Option<CredentialProblem>) -> bool {
        self.with(|s| match problem {
            Some(p) => {
                let before = s.degraded_accounts.insert(account.to_owned(), p.clone());
                !same(before.as_ref(), Some(&p))
            }
            None => s.degraded_accounts.remove(account).is_some(),
        })
    }

    /// The verdict.
    pub fn readiness(&self) -> Readiness {
        self.with(|s| {
            let mut reasons = Vec::new();
            if s.shutting_down {
                reasons.push("shutting down".to_owned());
            }
            if let Some(b) = &s.broker {
                reasons.push(b.clone());
            }
            if let Some(b) = &s.blocked {
                reasons.push(format!(
                    "the broker blocks publishing ({b}): no new commands are taken until it unblocks"
                ));
            }
            if let Some(p) = &s.publishing {
                reasons.push(p.clone());
            }
            if let Some(c) = &s.credentials {
                reasons.push(format!("credentials: {c}"));
            }
            Readiness {
                ready: reasons.is_empty(),
                reasons,
                broker: s.link.clone(),
                credentials: s.credentials.clone(),
                degraded_accounts: s.degraded_accounts.clone(),
            }
        })
    }
}

fn same(a: Option<&CredentialProblem>, b: Option<&CredentialProblem>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_cause(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(code: &str, account: Option<&str>) -> CredentialProblem {
        CredentialProblem {
            code: code.into(),
            message: "server string to sign is:ACS3-HMAC-SHA256\nabc".into(),
            action: "DeregisterManagedInstance".into(),
            region: "cn-hangzhou".into(),
            account: account.map(str::to_owned),
            source: "environment".into(),
        }
    }

    #[test]
    fn readiness_follows_each_condition() {
        let h = Health::new();
        assert!(!h.readiness().ready);
        h.set_broker(None);
        assert!(h.readiness().ready);
        assert!(h.set_credential_problem(Some(problem("InvalidAccessKeyId.NotFound", None))));
        assert!(!h.set_credential_problem(Some(problem("InvalidAccessKeyId.NotFound", None))));
        assert!(h.set_credential_problem(Some(problem("SignatureDoesNotMatch", None))));
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(
            r.reasons[0],
            "credentials: SignatureDoesNotMatch: server string to sign is:ACS3-HMAC-SHA256\nabc \
             (action DeregisterManagedInstance, region cn-hangzhou, credentials from environment)"
        );
        let body = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(body["credentials"]["code"], "SignatureDoesNotMatch");
        assert_eq!(body["credentials"]["source"], "environment");
        assert!(h.set_credential_problem(None));
        assert!(h.set_account_problem("123", Some(problem("NoPermission", Some("123")))));
        assert!(
            h.readiness().degraded_accounts["123"]
                .to_string()
                .contains("account 123")
        );
        assert!(
            h.readiness().ready,
            "a degraded account keeps the worker ready"
        );
        h.set_blocked(Some("low on memory".into()));
        let r = h.readiness();
        assert!(!r.ready && r.broker.publishing_blocked);
        assert!(
            r.reasons[0].contains("blocks publishing (low on memory)"),
            "{r:?}"
        );
        h.set_blocked(None);
        assert!(h.readiness().ready);
        h.set_link(|l| {
            l.nodes = 3;
            l.consuming_node = 2;
        });
        let body = serde_json::to_value(h.readiness()).unwrap_or_default();
        assert_eq!(body["broker"]["nodes"], 3);
        assert_eq!(body["broker"]["consuming_node"], 2);
        h.set_shutting_down();
        assert!(!h.readiness().ready);
    }
}
