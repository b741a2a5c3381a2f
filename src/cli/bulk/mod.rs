//! `send --from-file FILE`: one command per row of a CSV or JSON-lines file,
//! published with confirms at a bounded rate, every terminal event awaited,
//! and a summary at the end.
//!
//! How a run survives an interrupt without doing anything twice:
//! - every row's command id is fixed by the row ([`rows`]), so a second run
//!   sends the same ids;
//! - the journal ([`journal`], `FILE.journal` by default) records each
//!   confirmed publish and each terminal event as they happen; a second run
//!   skips finished rows and publishes only rows never confirmed;
//! - terminal events come back through `reply_to` on a durable server-named
//!   queue that expires a day after its last use, not with the process: the
//!   events of commands that finished while no run was waiting are there for
//!   the next run. Only if that queue is gone are the unfinished rows
//!   published again (same ids); the worker's idempotency (the command id is
//!   the `ClientToken`, not-found is done) means no API effect is repeated.

pub mod journal;
pub mod progress;
pub mod report;
pub mod rows;
mod session;

use crate::cli::output::OutputMode;
use crate::command::Policy;
use crate::settings::Settings;
use anyhow::Context;
use journal::Journal;
use report::{RowEnd, Summary};
use session::Session;
use std::path::PathBuf;
use std::time::Duration;

/// What `send --from-file` needs besides the settings.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// The file.
    pub file: PathBuf,
    /// Its format, when not detected from the name or content.
    pub format: Option<rows::Format>,
    /// Kind, region, dry run, id prefix for every row.
    pub defaults: rows::Defaults,
    /// Commands published per second at most.
    pub rate: u32,
    /// How long to wait for terminal events after the last publish.
    pub timeout: Duration,
    /// The journal (default `FILE.journal`).
    pub journal: Option<PathBuf>,
    /// Sign with this publisher key.
    pub key_id: Option<String>,
    /// Summary as a table or JSON.
    pub output: OutputMode,
}

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every row succeeded, was already done, or was a dry run.
    AllGood,
    /// Some row failed, was rejected, or has no outcome yet.
    NotAllGood,
    /// The file has problems; nothing was sent.
    BadInput,
}

/// Where one row stands in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// To be published.
    Queued,
    /// Handed to the broker, not confirmed yet.
    Unconfirmed,
    /// Confirmed; waiting for its terminal event.
    Published,
    /// Terminal event received (now or in an earlier run).
    Finished(RowEnd, Option<String>),
    /// The broker would not take it.
    Refused(String),
}

/// The policy rows are checked against: the local settings', as the worker builds it.
fn policy(settings: &Settings) -> Policy {
    Policy {
        allowed_regions: settings.security.allowed_regions.0.clone(),
        delete_if_unused_default: settings.leak_alert.delete_if_unused,
        known_accounts: settings
            .accounts
            .roles
            .0
            .iter()
            .map(|(a, _)| a.clone())
            .collect(),
        max_body_bytes: crate::command::DEFAULT_MAX_BODY_BYTES,
    }
}

/// Runs `send --from-file`.
pub async fn run(settings: &Settings, opts: BulkOptions) -> anyhow::Result<RunEnd> {
    let bytes =
        std::fs::read(&opts.file).with_context(|| format!("reading {}", opts.file.display()))?;
    let format = opts
        .format
        .unwrap_or_else(|| rows::Format::detect(&opts.file, &bytes));
    let rows = match rows::read(&bytes, format, &opts.defaults, &policy(settings)) {
        Ok(rows) => rows,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", opts.file.display());
            }
            eprintln!(
                "{} problem(s) in {}: nothing was sent",
                problems.len(),
                opts.file.display()
            );
            return Ok(RunEnd::BadInput);
        }
    };
    let journal_path = opts.journal.clone().unwrap_or_else(|| {
        let mut name = opts.file.clone().into_os_string();
        name.push(".journal");
        PathBuf::from(name)
    });
    let earlier = journal::load(&journal_path)?;
    let mut states: Vec<State> = rows
        .iter()
        .map(|row| match earlier.finished.get(&row.command_id) {
            Some((result, error)) => State::Finished(
                RowEnd::from_name(result).unwrap_or(RowEnd::Failed),
                error.clone(),
            ),
            None if earlier.published.contains(&row.command_id) => State::Published,
            None => State::Queued,
        })
        .collect();
    let resumed = states.iter().filter(|s| **s != State::Queued).count();
    if resumed > 0 {
        eprintln!(
            "resuming from {}: {} of {} rows already published or finished",
            journal_path.display(),
            resumed,
            rows.len()
        );
    }
    let mut failure = None;
    if states.iter().any(|s| !matches!(s, State::Finished(..))) {
        let mut journal = Journal::open(&journal_path)?;
        let session = Session::open(settings, &opts, &mut states, &earlier, &mut journal)
            .await
            .context("connecting to the broker")?;
        failure = session
            .drive(&opts, &rows, &mut states, &mut journal)
            .await
            .err();
    }
    let summary = Summary::of(rows.iter().zip(&states).map(|(row, state)| {
        let (end, error) = match state {
            State::Finished(end, error) => (*end, error.as_deref()),
            State::Published | State::Unconfirmed => (RowEnd::Pending, None),
            State::Queued => (RowEnd::NotSent, None),
            State::Refused(why) => (RowEnd::NotSent, Some(why.as_str())),
        };
        (row.line, row.command_id.as_str(), end, error)
    }));
    if opts.output.human() {
        println!("{}", summary.table());
    } else {
        println!("{}", summary.json());
    }
    if let Some(e) = failure {
        eprintln!("lifecycle-worker: {e:#}");
    }
    if summary
        .troubles
        .iter()
        .any(|t| matches!(t.result, RowEnd::Pending | RowEnd::NotSent))
    {
        eprintln!(
            "not every row has an outcome: run the same command again to resume ({} keeps what is done)",
            journal_path.display()
        );
    }
    Ok(if summary.all_good() {
        RunEnd::AllGood
    } else {
        RunEnd::NotAllGood
    })
}
