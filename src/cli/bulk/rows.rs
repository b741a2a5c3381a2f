//! The rows of a `send --from-file` file: CSV with a header, or JSON lines,
//! one command per row, read whole and checked before anything is sent.
//!
//! Every row becomes the exact body the worker will parse, and is checked with
//! the worker's own parser ([`command::parse`]) under the local settings' policy,
//! so a typo in row 170 stops the run before row 1 is published rather than
//! half-way through. Problems of the file's shape (CSV syntax, unknown columns,
//! value types) are reported first, then every problem of every row, each
//! naming its line and field.
//!
//! A row's command id is its own `command_id`, or one derived from the row's
//! content (`<prefix>-<24 hex of SHA-256>`): running the same file again
//! publishes the same ids, which is what makes an interrupted run resumable.
//! Two rows with the same id (the same command twice) are an error.

use crate::command::{self, CommandId, CommandKind, Envelope, Policy};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row naming the fields.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// From the file name (`.csv`; `.jsonl`, `.ndjson`, `.json`), else from
    /// the first non-blank byte (`{` is JSON lines).
    pub fn detect(path: &Path, bytes: &[u8]) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            Some(e)
                if ["jsonl", "ndjson", "json"]
                    .iter()
                    .any(|j| e.eq_ignore_ascii_case(j)) =>
            {
                Format::Jsonl
            }
            _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Format::Jsonl,
            _ => Format::Csv,
        }
    }
}

/// One command of the file, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The line the row starts on (1-based), as an editor shows it.
    pub line: u64,
    /// Which queue it goes to.
    pub kind: CommandKind,
    /// Its command id (given or derived).
    pub command_id: String,
    /// The JSON body, `command_id` included.
    pub body: Vec<u8>,
}

/// One problem with the file, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {problem}")]
pub struct Problem {
    /// The line (0 for the file as a whole).
    pub line: u64,
    /// The column / key, or `row` / `file`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl Problem {
    fn new(line: u64, field: &str, problem: impl Into<String>) -> Self {
        Self {
            line,
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

/// What applies to every row unless it says otherwise.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The kind of rows without a `kind` (the positional KIND of `send`).
    pub kind: Option<CommandKind>,
    /// The region of rows without a `region_id` (`--region`).
    pub region: Option<String>,
    /// `--dry-run`: every command is a dry run.
    pub dry_run: bool,
    /// The prefix of derived command ids (`--id-prefix`).
    pub id_prefix: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Text,
    Bool,
}

/// The fields a row may have: the command's own plus `kind`.
const FIELDS: &[(&str, Type)] = &[
    ("kind", Type::Text),
    ("command_id", Type::Text),
    ("region_id", Type::Text),
    ("instance_id", Type::Text),
    ("machine_id", Type::Text),
    ("hostname", Type::Text),
    ("ip", Type::Text),
    ("all_matches", Type::Bool),
    ("activation_id", Type::Text),
    ("detected_at", Type::Text),
    ("quarantine", Type::Text),
    ("delete_if_unused", Type::Bool),
    ("dry_run", Type::Bool),
    ("account_id", Type::Text),
    ("reason", Type::Text),
    ("requested_by", Type::Text),
];

fn field_type(name: &str) -> Option<Type> {
    FIELDS.iter().find(|(f, _)| *f == name).map(|(_, t)| *t)
}

fn unknown_field(name: &str) -> String {
    let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
    format!("unknown field {name:?} (known: {})", known.join(", "))
}

/// Reads every row, or every problem.
pub fn read(
    bytes: &[u8],
    format: Format,
    defaults: &Defaults,
    policy: &Policy,
) -> Result<Vec<Row>, Vec<Problem>> {
    let raw = match format {
        Format::Csv => csv_rows(bytes),
        Format::Jsonl => jsonl_rows(bytes),
    }?;
    let mut rows = Vec::with_capacity(raw.len());
    let mut problems = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (line, fields) in raw {
        match build(line, fields, defaults, policy) {
            Ok(row) => match seen.get(&row.command_id) {
                Some(first) => problems.push(Problem::new(
                    line,
                    "command_id",
                    format!(
                        "{} is also line {first}'s: the same command twice (remove one, or give each its own command_id)",
                        row.command_id
                    ),
                )),
                None => {
                    seen.insert(row.command_id.clone(), line);
                    rows.push(row);
                }
            },
            Err(mut p) => problems.append(&mut p),
        }
    }
    if rows.is_empty() && problems.is_empty() {
        problems.push(Problem::new(0, "file", "has no rows"));
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// A row's fields as JSON values, by name.
type Fields = BTreeMap<String, Value>;

fn csv_rows(bytes: &[u8]) -> Result<Vec<(u64, Fields)>, Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| vec![Problem::new(1, "header", e.to_string())])?
        .clone();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for name in &headers {
        if field_type(name).is_none() {
            problems.push(Problem::new(1, name, unknown_field(name)));
        } else if names.contains(&name) {
            problems.push(Problem::new(1, name, "appears twice in the header"));
        }
        names.push(name);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| line_of(bytes, p));
                problems.push(Problem::new(line, "row", e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| line_of(bytes, p));
        let mut fields = Fields::new();
        for (name, cell) in names.iter().zip(record.iter()) {
            if cell.is_empty() {
                continue;
            }
            let value = match field_type(name) {
                Some(Type::Bool) => match cell.to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        problems.push(Problem::new(
                            line,
                            name,
                            format!("{cell:?} is not true or false"),
                        ));
                        continue;
                    }
                },
                _ => Value::String(cell.to_owned()),
            };
            fields.insert((*name).to_owned(), value);
        }
        rows.push((line, fields));
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// The 1-based line of a CSV position, from its byte offset.
fn line_of(bytes: &[u8], position: &csv::Position) -> u64 {
    let offset = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let before = bytes.get(..offset).unwrap_or(bytes);
    before.iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn jsonl_rows(bytes: &[u8]) -> Result<Vec<(u64, Fields)>, Vec<Problem>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| vec![Problem::new(0, "file", format!("is not UTF-8: {e}"))])?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (i, line_text) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if line_text.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Value>(line_text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                problems.push(Problem::new(line, "row", "is not a JSON object"));
                continue;
            }
            Err(e) => {
                problems.push(Problem::new(line, "row", format!("is not JSON: {e}")));
                continue;
            }
        };
        let mut fields = Fields::new();
        for (name, value) in object {
            let ok = match (field_type(&name), &value) {
                (None, _) => {
                    problems.push(Problem::new(line, &name, unknown_field(&name)));
                    continue;
                }
                (Some(Type::Text), Value::String(_)) | (Some(Type::Bool), Value::Bool(_)) => true,
                (Some(Type::Text), _) => {
                    problems.push(Problem::new(line, &name, "must be a string"));
                    false
                }
                (Some(Type::Bool), _) => {
                    problems.push(Problem::new(line, &name, "must be true or false"));
                    false
                }
            };
            if ok {
                fields.insert(name, value);
            }
        }
        rows.push((line, fields));
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// The id derived from a row's content: the same row always gets the same id,
/// whatever line it is on; any change to it gives another.
fn derived_id(prefix: &str, kind: CommandKind, body: &Fields) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"lifecycle-worker send --from-file v1\n");
    hasher.update(kind.as_str().as_bytes());
    hasher.update(b"\n");
    // A BTreeMap serializes in key order whatever serde_json's features: canonical.
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    let digest = hex::encode(hasher.finalize());
    format!("{prefix}-{}", &digest[..24])
}

fn build(
    line: u64,
    mut fields: Fields,
    defaults: &Defaults,
    policy: &Policy,
) -> Result<Row, Vec<Problem>> {
    let kind = match fields.remove("kind") {
        Some(Value::String(k)) => CommandKind::from_name(&k).ok_or_else(|| {
            vec![Problem::new(
                line,
                "kind",
                format!("{k:?} is not decommission or leak-alert"),
            )]
        })?,
        _ => defaults.kind.ok_or_else(|| {
            vec![Problem::new(
                line,
                "kind",
                "is missing (a kind column, or the KIND argument of send)",
            )]
        })?,
    };
    if !fields.contains_key("region_id")
        && let Some(region) = &defaults.region
    {
        fields.insert("region_id".into(), Value::String(region.clone()));
    }
    if defaults.dry_run {
        fields.insert("dry_run".into(), Value::Bool(true));
    }
    let command_id = match fields.remove("command_id") {
        Some(Value::String(id)) => id,
        _ => derived_id(&defaults.id_prefix, kind, &fields),
    };
    fields.insert("command_id".into(), Value::String(command_id.clone()));
    let body = serde_json::to_vec(&fields.into_iter().collect::<Map<String, Value>>())
        .map_err(|e| vec![Problem::new(line, "row", e.to_string())])?;
    let envelope = Envelope {
        kind,
        body: &body,
        content_type: Some("application/json"),
        message_id: Some(&command_id),
    };
    if let Err(rejection) = command::parse(&envelope, policy) {
        return Err(rejection
            .errors
            .iter()
            .map(|e| Problem::new(line, &e.field, &e.problem))
            .collect());
    }
    Ok(Row {
        line,
        kind,
        command_id,
        body,
    })
}

/// Checks `--id-prefix` against the command id rules (what is left of 64
/// characters after the 25 of the hash).
pub fn check_id_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.chars().count() > 32 {
        return Err("--id-prefix must be 1 to 32 characters".into());
    }
    CommandId::parse(prefix)
        .map(|_| ())
        .map_err(|e| format!("--id-prefix: {e}"))
}

#[cfg(test)]
mod tests;
