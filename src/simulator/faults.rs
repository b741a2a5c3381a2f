//! Fault injection: the failures a worker must survive, on demand.
//!
//! Set from the command line or through `POST /_sim/faults` (which replaces the
//! settings as a whole; `DELETE /_sim/faults` clears them). Faults apply to API
//! calls only, after the signature was verified, except outages, which hit everything.

use super::actions::ApiError;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How an outage shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// Every call answers 503 `ServiceUnavailable`.
    Unavailable,
    /// API requests are aborted (the connection is closed without an answer):
    /// the client sees a transport failure. The control plane keeps answering.
    Refuse,
}

/// "Fail the next `count` calls (of `action`, or of any action) with this error."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailNext {
    /// Only this action; any action when absent.
    #[serde(default)]
    pub action: Option<String>,
    /// How many calls to fail.
    pub count: u32,
    /// The error code, e.g. `Throttling.User` or `InternalError`.
    pub code: String,
    /// The HTTP status.
    pub status: u16,
    /// The message; a generic one when absent.
    #[serde(default)]
    pub message: Option<String>,
    /// `x-acs-retry-after` in milliseconds.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// Every fault knob; the default is a healthy service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Probability (0..=1) that any call fails with 500 `InternalError.Dispatch`.
    pub dispatch_error_rate: f64,
    /// Per-action probability of 500 `InternalError.Dispatch`, overriding the global one.
    pub action_error_rates: BTreeMap<String, f64>,
    /// Probability of 400 `Throttling.User`.
    pub throttle_rate: f64,
    /// `x-acs-retry-after` (milliseconds) on those throttling answers.
    pub throttle_retry_after_ms: Option<u64>,
    /// Probability of 503 `ServiceUnavailable`.
    pub unavailable_rate: f64,
    /// Delay added before every answer, in milliseconds.
    pub latency_ms: u64,
    /// A full outage, when set.
    pub outage: Option<Outage>,
    /// Queued one-shot failures, consumed first to last.
    pub fail_next: Vec<FailNext>,
    /// Hold every API call unanswered until this is cleared: a test that must
    /// act while calls are in flight (a crash, a broker outage) sets it rather
    /// than racing a clock, and releases the calls when it is done.
    pub hold: bool,
}

impl FaultSettings {
    /// Refuses probabilities outside 0..=1 and impossible statuses.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("dispatch_error_rate", self.dispatch_error_rate),
            ("throttle_rate", self.throttle_rate),
            ("unavailable_rate", self.unavailable_rate),
        ];
        let per_action = self
            .action_error_rates
            .iter()
            .map(|(k, v)| (k.as_str(), *v));
        for (name, rate) in rates.into_iter().chain(per_action) {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: probability {rate} is not within 0..=1"));
            }
        }
        for f in &self.fail_next {
            if !(400..=599).contains(&f.status) {
                return Err(format!(
                    "fail_next status {} is not an error status",
                    f.status
                ));
            }
        }
        Ok(())
    }

    /// The fault for one call of `action`, if any; consumes a `fail_next` entry.
    pub fn pick(&mut self, action: &str) -> Option<ApiError> {
        if let Some(at) = self
            .fail_next
            .iter()
            .position(|f| f.action.as_deref().is_none_or(|a| a == action))
        {
            let f = &mut self.fail_next[at];
            let err = ApiError {
                status: f.status,
                code: Cow::Owned(f.code.clone()),
                message: f
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("Injected fault {}.", f.code)),
                retry_after_ms: f.retry_after_ms,
            };
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                self.fail_next.remove(at);
            }
            return Some(err);
        }
        let dispatch = self
            .action_error_rates
            .get(action)
            .copied()
            .unwrap_or(self.dispatch_error_rate);
        if chance(dispatch) {
            return Some(dispatch_error());
        }
        if chance(self.throttle_rate) {
            let mut e = ApiError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            );
            e.retry_after_ms = self.throttle_retry_after_ms;
            return Some(e);
        }
        if chance(self.unavailable_rate) {
            return Some(unavailable());
        }
        None
    }

    /// True when nothing but latency or an outage could apply: the fast path.
    pub fn is_quiet(&self) -> bool {
        self.fail_next.is_empty()
            && self.dispatch_error_rate == 0.0
            && self.throttle_rate == 0.0
            && self.unavailable_rate == 0.0
            && self.action_error_rates.values().all(|r| *r == 0.0)
    }
}

fn chance(p: f64) -> bool {
    p > 0.0 && (p >= 1.0 || rand::random::<f64>() < p)
}

/// 500 `InternalError.Dispatch`, the seeds' documented transient error.
pub fn dispatch_error() -> ApiError {
    ApiError::new(
        500,
        "InternalError.Dispatch",
        "An error occurred when you dispatch the request.",
    )
}

/// 503 `ServiceUnavailable`.
pub fn unavailable() -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_is_consumed_per_action() {
        let mut f = FaultSettings {
            fail_next: vec![FailNext {
                action: Some("DisableActivation".into()),
                count: 2,
                code: "Throttling.User".into(),
                status: 400,
                message: None,
                retry_after_ms: Some(50),
            }],
            ..FaultSettings::default()
        };
        assert!(f.pick("DeleteActivation").is_none());
        let e = f.pick("DisableActivation");
        assert_eq!(e.as_ref().and_then(|e| e.retry_after_ms), Some(50));
        assert!(f.pick("DisableActivation").is_some());
        assert!(f.pick("DisableActivation").is_none());
        assert!(f.is_quiet());
    }

    #[test]
    fn rates_are_validated_and_certain_rate_always_fires() {
        let mut f = FaultSettings {
            dispatch_error_rate: 1.0,
            ..FaultSettings::default()
        };
        assert_eq!(f.pick("X").map(|e| e.status), Some(500));
        f.dispatch_error_rate = 1.5;
        assert!(f.validate().is_err());
    }
}
