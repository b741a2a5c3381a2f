//! W3C trace context across the broker (CONTRACT section 8).
//!
//! A command's `traceparent` is continued: this processing gets its own span
//! id under the same trace id, and every event, retry copy, dead letter and
//! ECS request carries `00-<trace id>-<our span id>-<flags>`. A command without
//! (valid) context starts a new trace, so events are always correlatable.

use rand::RngCore;

/// The trace context of one processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// The publisher's span (16 hex), when the command had context.
    pub parent_span_id: Option<String>,
    /// Our span id (16 hex).
    pub span_id: String,
    /// Trace flags (2 hex), e.g. `01` = sampled.
    pub flags: String,
    /// Vendor state passed through unchanged.
    pub tracestate: Option<String>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    loop {
        rand::rng().fill_bytes(&mut buf);
        if buf.iter().any(|b| *b != 0) {
            return hex::encode(&buf);
        }
    }
}

impl TraceContext {
    /// Continues `traceparent` if it is valid (version 00 layout), else starts a trace.
    pub fn continue_or_start(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        let parsed = traceparent.and_then(|tp| {
            let mut parts = tp.trim().split('-');
            let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let valid = is_hex(v, 2)
                && v != "ff"
                && is_hex(t, 32)
                && t.bytes().any(|b| b != b'0')
                && is_hex(p, 16)
                && p.bytes().any(|b| b != b'0')
                && is_hex(f, 2)
                && (v != "00" || parts.next().is_none());
            valid.then(|| (t.to_owned(), p.to_owned(), f.to_owned()))
        });
        match parsed {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id: random_hex(8),
                flags,
                tracestate: tracestate
                    .filter(|s| s.len() <= 512 && s.is_ascii())
                    .map(str::to_owned),
            },
            None => Self {
                trace_id: random_hex(16),
                parent_span_id: None,
                span_id: random_hex(8),
                flags: "01".to_owned(),
                tracestate: None,
            },
        }
    }

    /// The `traceparent` for everything this processing sends.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_parent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::continue_or_start(Some(tp), Some("congo=t61rcWkgMzE"));
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(c.span_id, "00f067aa0ba902b7");
        let out = c.traceparent();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_eq!(c.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn invalid_context_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let c = TraceContext::continue_or_start(Some(bad), None);
            assert!(c.parent_span_id.is_none(), "{bad}");
            assert!(is_hex(&c.trace_id, 32));
        }
    }
}
