//! How a row ended, and the summary a run ends with.
//!
//! A command's terminal event says `succeeded` also when nothing needed doing
//! (the host was already gone): for an operator running a list that is worth
//! telling apart, so a `succeeded` whose steps changed nothing (none
//! `succeeded`, at least one `already_done`) is reported as `already_done`.

use crate::cli::output::error_text;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use std::fmt;

/// The end of one row, from the summary's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowEnd {
    /// The change was made.
    Succeeded,
    /// Nothing needed doing.
    AlreadyDone,
    /// A dry run reported what it would do.
    DryRun,
    /// Some steps failed.
    PartiallyFailed,
    /// Failed for good.
    Failed,
    /// The worker refused the command.
    Rejected,
    /// Published, no terminal event yet (interrupted or timed out).
    Pending,
    /// Never published (interrupted, or the broker refused it).
    NotSent,
}

impl RowEnd {
    /// Every result, in summary order.
    pub const ALL: [RowEnd; 8] = [
        RowEnd::Succeeded,
        RowEnd::AlreadyDone,
        RowEnd::DryRun,
        RowEnd::PartiallyFailed,
        RowEnd::Failed,
        RowEnd::Rejected,
        RowEnd::Pending,
        RowEnd::NotSent,
    ];

    /// The name used in the summary, the journal and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            RowEnd::Succeeded => "succeeded",
            RowEnd::AlreadyDone => "already_done",
            RowEnd::DryRun => "dry_run",
            RowEnd::PartiallyFailed => "partially_failed",
            RowEnd::Failed => "failed",
            RowEnd::Rejected => "rejected",
            RowEnd::Pending => "pending",
            RowEnd::NotSent => "not_sent",
        }
    }

    /// From [`RowEnd::as_str`].
    pub fn from_name(name: &str) -> Option<RowEnd> {
        RowEnd::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// True when the row reached what was asked (the run can exit 0).
    pub fn is_good(self) -> bool {
        matches!(
            self,
            RowEnd::Succeeded | RowEnd::AlreadyDone | RowEnd::DryRun
        )
    }
}

impl fmt::Display for RowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a terminal event: its command id, how it ended, and why if badly.
/// `None` for anything that is not a terminal event.
pub fn classify(event: &Value) -> Option<(String, RowEnd, Option<String>)> {
    let id = event.get("command_id")?.as_str()?.to_owned();
    let outcome = event.get("outcome").and_then(Value::as_str);
    let result = match (event.get("type")?.as_str()?, outcome) {
        ("command.rejected", _) => RowEnd::Rejected,
        ("command.completed", Some("succeeded")) => {
            let steps = event.get("steps").and_then(Value::as_array);
            let step_is = |o: &str| {
                steps
                    .into_iter()
                    .flatten()
                    .any(|s| s.get("outcome").and_then(Value::as_str) == Some(o))
            };
            if step_is("already_done") && !step_is("succeeded") {
                RowEnd::AlreadyDone
            } else {
                RowEnd::Succeeded
            }
        }
        ("command.completed", Some("dry_run")) => RowEnd::DryRun,
        ("command.completed", Some("partially_failed")) => RowEnd::PartiallyFailed,
        ("command.completed", Some("failed")) => RowEnd::Failed,
        _ => return None,
    };
    let error = (!result.is_good()).then(|| error_text(event)).flatten();
    Some((id, result, error))
}

/// One row that did not end well, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    /// The file line.
    pub line: u64,
    /// Command id.
    pub command_id: String,
    /// How it ended.
    pub result: RowEnd,
    /// Why, when known.
    pub error: Option<String>,
}

/// Counts per result, and the rows that did not end well.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// (result, rows), every result listed.
    pub counts: Vec<(RowEnd, usize)>,
    /// Rows that did not end well, in file order.
    pub troubles: Vec<Trouble>,
}

impl Summary {
    /// Builds the summary from every row's end: (line, id, result, error).
    pub fn of<'a>(
        ends: impl IntoIterator<Item = (u64, &'a str, RowEnd, Option<&'a str>)>,
    ) -> Summary {
        let mut counts: Vec<(RowEnd, usize)> = RowEnd::ALL.iter().map(|r| (*r, 0)).collect();
        let mut troubles = Vec::new();
        for (line, id, result, error) in ends {
            if let Some(c) = counts.iter_mut().find(|(r, _)| *r == result) {
                c.1 += 1;
            }
            if !result.is_good() {
                troubles.push(Trouble {
                    line,
                    command_id: id.to_owned(),
                    result,
                    error: error.map(str::to_owned),
                });
            }
        }
        troubles.sort_by_key(|t| t.line);
        Summary { counts, troubles }
    }

    /// True when every row ended well.
    pub fn all_good(&self) -> bool {
        self.troubles.is_empty()
    }

    /// The summary as tables: counts, then the rows that need a look.
    pub fn table(&self) -> String {
        let mut counts = Table::new();
        counts
            .load_style(UTF8_FULL_CONDENSED)
            .set_header(["result", "rows"]);
        let total: usize = self.counts.iter().map(|(_, n)| n).sum();
        for (result, n) in &self.counts {
            // The four every operator looks for always; the rest when they happened.
            let always = matches!(
                result,
                RowEnd::Succeeded | RowEnd::AlreadyDone | RowEnd::Failed | RowEnd::Rejected
            );
            if *n > 0 || always {
                counts.add_row([
                    Cell::new(result),
                    Cell::new(n).set_alignment(CellAlignment::Right),
                ]);
            }
        }
        counts.add_row([
            Cell::new("total"),
            Cell::new(total).set_alignment(CellAlignment::Right),
        ]);
        let mut out = counts.to_string();
        if !self.troubles.is_empty() {
            let mut rows = Table::new();
            rows.load_style(UTF8_FULL_CONDENSED).set_header([
                "line",
                "command_id",
                "result",
                "error",
            ]);
            for t in &self.troubles {
                rows.add_row([
                    Cell::new(t.line).set_alignment(CellAlignment::Right),
                    Cell::new(&t.command_id),
                    Cell::new(t.result),
                    Cell::new(t.error.as_deref().unwrap_or("")),
                ]);
            }
            out.push('\n');
            out.push_str(&rows.to_string());
        }
        out
    }

    /// The summary as one JSON object.
    pub fn json(&self) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(r, n)| (r.as_str().to_owned(), json!(n)))
            .collect();
        let troubles: Vec<Value> = self
            .troubles
            .iter()
            .map(|t| {
                json!({"line": t.line, "command_id": t.command_id,
                       "result": t.result.as_str(), "error": t.error})
            })
            .collect();
        json!({"summary": counts, "not_ok": troubles})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(outcome: &str, steps: &[&str]) -> Value {
        let steps: Vec<Value> = steps
            .iter()
            .map(|o| json!({"step": "DeregisterManagedInstance", "outcome": o}))
            .collect();
        json!({"type": "command.completed", "command_id": "c1", "outcome": outcome,
               "steps": steps,
               "error": if outcome.contains("failed") {
                   json!({"code": "IncorrectInstanceStatus", "message": "busy"})
               } else { Value::Null }})
    }

    #[test]
    fn terminal_events_are_classified() {
        let result = |e: &Value| classify(e).map(|(_, r, _)| r);
        assert_eq!(
            result(&completed("succeeded", &["succeeded"])),
            Some(RowEnd::Succeeded)
        );
        assert_eq!(
            result(&completed("succeeded", &["already_done"])),
            Some(RowEnd::AlreadyDone)
        );
        assert_eq!(
            result(&completed("succeeded", &["already_done", "succeeded"])),
            Some(RowEnd::Succeeded),
            "something changed"
        );
        assert_eq!(
            result(&completed("dry_run", &["dry_run"])),
            Some(RowEnd::DryRun)
        );
        assert_eq!(
            result(&completed("failed", &["failed"])),
            Some(RowEnd::Failed)
        );
        assert_eq!(
            result(&completed("partially_failed", &["succeeded", "failed"])),
            Some(RowEnd::PartiallyFailed)
        );
        let (id, r, error) = classify(&completed("failed", &["failed"])).expect("terminal");
        assert_eq!((id.as_str(), r), ("c1", RowEnd::Failed));
        assert_eq!(error.as_deref(), Some("IncorrectInstanceStatus: busy"));
        let rejected = json!({"type": "command.rejected", "command_id": "c2", "outcome": "rejected",
                              "reason": "target_not_allowed",
                              "errors": [{"field": "instance_id", "problem": "not allowed"}]});
        let (_, r, error) = classify(&rejected).expect("terminal");
        assert_eq!(r, RowEnd::Rejected);
        assert_eq!(
            error.as_deref(),
            Some("target_not_allowed (instance_id: not allowed)")
        );
        assert_eq!(
            classify(&json!({"type": "instance.deregistered", "command_id": "c1"})),
            None
        );
        assert_eq!(
            classify(&json!({"type": "command.rejected", "command_id": null})),
            None
        );
    }

    #[test]
    fn the_summary_counts_every_row_and_lists_the_bad_ones() {
        let ends = [
            (2, "a", RowEnd::Succeeded, None),
            (3, "b", RowEnd::Failed, Some("Code: msg")),
            (4, "c", RowEnd::AlreadyDone, None),
            (5, "d", RowEnd::Rejected, Some("invalid_field (x: y)")),
            (6, "e", RowEnd::Succeeded, None),
        ];
        let s = Summary::of(ends);
        assert!(!s.all_good());
        let count = |r| s.counts.iter().find(|(x, _)| *x == r).map(|(_, n)| *n);
        assert_eq!(count(RowEnd::Succeeded), Some(2));
        assert_eq!(count(RowEnd::Pending), Some(0));
        assert_eq!(s.troubles.len(), 2);
        let table = s.table();
        assert!(table.contains("already_done"), "{table}");
        assert!(
            !table.contains("pending"),
            "empty pending/not_sent rows are left out:\n{table}"
        );
        assert!(
            table.contains("Code: msg") && table.contains("invalid_field (x: y)"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("total") && l.contains('5')),
            "{table}"
        );
        assert_eq!(s.json()["summary"]["failed"], 1);
        assert_eq!(s.json()["not_ok"][1]["command_id"], "d");
        assert!(Summary::of([(2, "a", RowEnd::DryRun, None)]).all_good());
    }
}
