//! Strict JSON: a document tree that keeps every key, so duplicates are seen.
//!
//! `serde_json::Value` silently keeps the last of two equal keys. For a
//! command that means `{"instance_id":"mi-a","instance_id":"mi-b"}` could be
//! read one way by an auditing proxy and another way by the worker, so the
//! contract rejects duplicate keys at any depth. This module parses into
//! [`Json`], whose objects are key/value lists in document order, with a
//! nesting bound so hostile input (10,000 `[`) is an error, not a stack
//! overflow, and then looks for duplicates (compared after unescaping, so
//! `"a"` and `"\u0061"` are the same key).

use super::quote::quote;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeSet;
use std::fmt;

/// The deepest nesting of arrays and objects accepted. Commands are flat
/// (depth 1); this leaves room for unknown fields a publisher adds while
/// keeping recursion small (serde_json's own limit of 128 is never reached).
pub const MAX_DEPTH: usize = 32;

/// How many duplicate keys one rejection lists at most, so a body made of
/// thousands of duplicates still gives a small event.
const MAX_DUPLICATES_REPORTED: usize = 16;

/// The message our visitor fails with when [`MAX_DEPTH`] is passed; used to
/// tell that error apart from serde_json's syntax errors.
const TOO_DEEP: &str = "lifecycle: nesting too deep";

/// A parsed JSON document that keeps duplicate keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The JSON type's name with an article, for "must be a string, got a number".
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum JsonError {
    /// Not JSON at all, truncated, or followed by trailing garbage.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("arrays and objects nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The same key twice in one object: the keys' paths (bounded) and the
    /// document, from which unambiguous context can still be read.
    #[error("duplicate keys")]
    DuplicateKeys {
        /// Dotted paths of the repeated keys, in document order.
        paths: Vec<String>,
        /// The whole parsed document, duplicates included.
        document: Box<Json>,
    },
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else)
/// and rejects duplicate keys anywhere in it.
pub(crate) fn parse_strict(text: &str) -> Result<Json, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Seed { depth: 0 }
        .deserialize(&mut deserializer)
        .map_err(classify)?;
    deserializer.end().map_err(classify)?;
    let mut paths = Vec::new();
    find_duplicates(&value, &mut String::new(), &mut paths);
    if paths.is_empty() {
        Ok(value)
    } else {
        Err(JsonError::DuplicateKeys {
            paths,
            document: Box::new(value),
        })
    }
}

fn classify(error: serde_json::Error) -> JsonError {
    if error.is_data() && error.to_string().starts_with(TOO_DEEP) {
        JsonError::TooDeep
    } else {
        // serde_json's messages name a category and a position, never the input.
        JsonError::Syntax(error.to_string())
    }
}

/// Collects the path of every repeated key (bounded), depth-first.
fn find_duplicates(value: &Json, path: &mut String, out: &mut Vec<String>) {
    match value {
        Json::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                find_duplicates(item, path, out);
                path.truncate(len);
            }
        }
        Json::Object(entries) => {
            let mut seen = BTreeSet::new();
            for (key, item) in entries {
                let len = path.len();
                push_key(path, key);
                if !seen.insert(key.as_str()) && out.len() < MAX_DUPLICATES_REPORTED {
                    out.push(bounded(path));
                }
                find_duplicates(item, path, out);
                path.truncate(len);
            }
        }
        Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_) => {}
    }
}

/// The longest path reported, in characters; deeper paths keep their end,
/// which names the repeated key.
const MAX_PATH_CHARS: usize = 200;

fn bounded(path: &str) -> String {
    let count = path.chars().count();
    if count <= MAX_PATH_CHARS {
        return path.to_owned();
    }
    let tail: String = path.chars().skip(count - (MAX_PATH_CHARS - 1)).collect();
    format!("…{tail}")
}

/// Appends a key to a dotted path, quoting keys that are not plain words.
fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push_str(key);
    } else {
        path.push_str(&quote(key));
    }
}

struct Seed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor { depth: self.depth })
    }
}

struct JsonVisitor {
    depth: usize,
}

impl JsonVisitor {
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let inner = self.depth + 1;
        if inner > MAX_DEPTH {
            Err(E::custom(TOO_DEEP))
        } else {
            Ok(inner)
        }
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let depth = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed { depth })? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let depth = self.enter()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Seed { depth })?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicates(text: &str) -> Vec<String> {
        match parse_strict(text) {
            Err(JsonError::DuplicateKeys { paths, .. }) => paths,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_plain_documents() {
        let v = parse_strict(r#" {"a": [1, -2, 3.5, true, null, "x"]} "#).unwrap();
        let Json::Object(entries) = v else {
            panic!("not an object")
        };
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(matches!(parse_strict("{} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_strict("{}{}"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_strict(""), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert_eq!(duplicates(r#"{"a":1,"a":2}"#), vec!["a".to_string()]);
        assert_eq!(
            duplicates(r#"{"x":[{"k":1},{"k":1,"k":2}]}"#),
            vec!["x[1].k".to_string()]
        );
        assert_eq!(duplicates(r#"{"a":1,"\u0061":2}"#), vec!["a".to_string()]);
        assert_eq!(
            duplicates(r#"{"a b":{"\n":1,"\n":1}}"#),
            vec![r#""a b"."\n""#.to_string()]
        );
    }

    #[test]
    fn duplicate_report_is_bounded() {
        let body: String = std::iter::once("{".to_string())
            .chain((0..1000).map(|i| format!("\"k\":{i},")))
            .chain(std::iter::once("\"z\":0}".to_string()))
            .collect();
        assert_eq!(duplicates(&body).len(), MAX_DUPLICATES_REPORTED);
    }

    #[test]
    fn long_duplicate_paths_are_bounded() {
        let key = "k".repeat(60);
        let open = format!("{{\"{key}\":").repeat(20);
        let body = format!("{open}{{\"a\":1,\"a\":2}}{}", "}".repeat(20));
        let paths = duplicates(&body);
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].chars().count(), MAX_PATH_CHARS);
        assert!(paths[0].ends_with(".a"));
    }

    #[test]
    fn depth_bound() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_strict(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse_strict(&deep), Err(JsonError::TooDeep));
        assert_eq!(parse_strict(&"[".repeat(10_000)), Err(JsonError::TooDeep));
        assert_eq!(
            parse_strict(&"{\"a\":".repeat(10_000)),
            Err(JsonError::TooDeep)
        );
    }

    #[test]
    fn lone_surrogates_and_huge_numbers_are_syntax_errors() {
        assert!(matches!(
            parse_strict(r#"{"a":"\ud800"}"#),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_strict(r#"{"a":1e400}"#),
            Err(JsonError::Syntax(_))
        ));
    }
}
