//! The journal of a `send --from-file` run: what was published and how each
//! command ended, appended as JSON lines as it happens, so that running the
//! same command again after an interrupt (Ctrl-C, a lost terminal, `kill -9`)
//! carries on instead of starting over.
//!
//! Entries are keyed by command id, and ids derive from row content, so the
//! journal stays right when the file is edited between runs: an unchanged row
//! keeps its id and its recorded outcome; a changed row is a new command.
//! A line cut short by a kill is the last one and is skipped.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// The queue the worker sends this run's terminal events to (`reply_to`).
    ReplyQueue {
        /// Its server-generated name.
        name: String,
    },
    /// The broker confirmed the command.
    Published {
        /// Command id.
        command_id: String,
    },
    /// The command's terminal event arrived.
    Finished {
        /// Command id.
        command_id: String,
        /// `succeeded`, `already_done`, `dry_run`, `partially_failed`, `failed`, `rejected`.
        result: String,
        /// Why it failed or was rejected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another run holds the journal.
    #[error(
        "journal {path} is in use by another send --from-file of this file: let it finish (two runs would share one reply queue)"
    )]
    Busy {
        /// The journal file.
        path: PathBuf,
    },
    /// A line other than the last is not a journal entry.
    #[error(
        "journal {path}, line {line}: not a journal entry ({reason}); move the file away to start over"
    )]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// The parse error.
        reason: String,
    },
}

/// What earlier runs recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// The latest reply queue.
    pub reply_queue: Option<String>,
    /// Ids the broker confirmed.
    pub published: HashSet<String>,
    /// Finished ids: (result, error).
    pub finished: HashMap<String, (String, Option<String>)>,
}

impl State {
    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::ReplyQueue { name } => self.reply_queue = Some(name),
            Entry::Published { command_id } => {
                self.published.insert(command_id);
            }
            Entry::Finished {
                command_id,
                result,
                error,
            } => {
                self.published.insert(command_id.clone());
                self.finished.entry(command_id).or_insert((result, error));
            }
        }
    }
}

/// Reads what a journal holds (nothing if it does not exist).
pub fn load(path: &Path) -> Result<State, JournalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut state = State::default();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) => state.apply(entry),
            // Cut short by a kill mid-write: nothing after it was written.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(state)
}

/// Appends entries, each written whole with one `write` before the caller goes on.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) the journal for appending. A line cut short by a kill
    /// is cut off first, so the next entry starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // One run at a time: the lock goes with the process, a kill included.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Busy {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let bytes = std::fs::read(path).map_err(io)?;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            file.set_len(whole as u64).map_err(io)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one entry.
    pub fn record(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(id: &str, result: &str) -> Entry {
        Entry::Finished {
            command_id: id.into(),
            result: result.into(),
            error: (result == "failed").then(|| "Code: message".to_owned()),
        }
    }

    #[test]
    fn what_is_recorded_is_what_the_next_run_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts.csv.journal");
        assert_eq!(load(&path).expect("absent is empty"), State::default());
        let mut j = Journal::open(&path).expect("open");
        j.record(&Entry::ReplyQueue {
            name: "amq.gen-1".into(),
        })
        .expect("write");
        j.record(&Entry::Published {
            command_id: "a".into(),
        })
        .expect("write");
        j.record(&Entry::Published {
            command_id: "b".into(),
        })
        .expect("write");
        j.record(&finished("a", "failed")).expect("write");
        drop(j);
        let mut j = Journal::open(&path).expect("reopen appends");
        j.record(&Entry::ReplyQueue {
            name: "amq.gen-2".into(),
        })
        .expect("write");
        // A duplicate terminal event later: the first outcome stands.
        j.record(&finished("a", "succeeded")).expect("write");
        j.record(&finished("c", "rejected")).expect("write");
        assert!(
            matches!(Journal::open(&path), Err(JournalError::Busy { .. })),
            "a second run is refused while the first holds the journal"
        );
        drop(j);
        let state = load(&path).expect("load");
        assert_eq!(state.reply_queue.as_deref(), Some("amq.gen-2"));
        assert_eq!(state.published, ["a", "b", "c"].map(String::from).into());
        assert_eq!(
            state.finished["a"],
            ("failed".to_owned(), Some("Code: message".to_owned()))
        );
        assert_eq!(state.finished["c"].0, "rejected");
        assert!(!state.finished.contains_key("b"));
    }

    #[test]
    fn a_line_cut_by_a_kill_is_skipped_and_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        std::fs::write(
            &path,
            "{\"entry\":\"published\",\"command_id\":\"a\"}\n{\"entry\":\"finis",
        )
        .expect("write");
        let state = load(&path).expect("the cut line is ignored");
        assert!(state.published.contains("a"));
        let mut j = Journal::open(&path).expect("open");
        j.record(&finished("a", "succeeded")).expect("write");
        assert_eq!(load(&path).expect("load").finished["a"].0, "succeeded");

        std::fs::write(
            &path,
            "garbage\n{\"entry\":\"published\",\"command_id\":\"a\"}\n",
        )
        .expect("write");
        let e = load(&path).expect_err("corrupt");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
