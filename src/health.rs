//! Liveness and readiness, shared by the broker supervisor, the worker and
//! `/readyz`.
//!
//! Ready means: connected to the broker, topology declared, consumers running,
//! not shutting down, and credentials not known to be bad. Each condition keeps
//! its own reason so `/readyz` can say *why* the worker is not ready.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Why the worker is not ready, by condition.
#[derive(Debug, Default)]
struct State {
    broker: Option<String>,
    credentials: Option<String>,
    shutting_down: bool,
    /// Accounts whose role could not be assumed (the worker stays ready).
    degraded_accounts: BTreeMap<String, String>,
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
    /// Accounts whose commands are waiting on a role problem.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub degraded_accounts: BTreeMap<String, String>,
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

    /// Records a credential failure; returns true if this changed the state
    /// (so the caller logs once per change, not once per command).
    pub fn set_credential_problem(&self, problem: Option<String>) -> bool {
        self.with(|s| {
            let changed = s.credentials.is_some() != problem.is_some();
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

    /// Records (or clears) a per-account role problem.
    pub fn set_account_problem(&self, account: &str, problem: Option<String>) -> bool {
        self.with(|s| match problem {
            Some(p) => s.degraded_accounts.insert(account.to_owned(), p).is_none(),
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
            if let Some(c) = &s.credentials {
                reasons.push(format!("credentials: {c}"));
            }
            Readiness {
                ready: reasons.is_empty(),
                reasons,
                degraded_accounts: s.degraded_accounts.clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_each_condition() {
        let h = Health::new();
        assert!(!h.readiness().ready);
        h.set_broker(None);
        assert!(h.readiness().ready);
        assert!(h.set_credential_problem(Some("InvalidAccessKeyId.NotFound".into())));
        assert!(!h.set_credential_problem(Some("again".into())));
        let r = h.readiness();
        assert!(!r.ready);
        assert!(r.reasons[0].contains("credentials"));
        assert!(h.set_credential_problem(None));
        assert!(h.set_account_problem("123", Some("NoPermission".into())));
        assert!(
            h.readiness().ready,
            "a degraded account keeps the worker ready"
        );
        h.set_shutting_down();
        assert!(!h.readiness().ready);
    }
}
