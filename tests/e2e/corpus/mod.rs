//! The hostile-input corpus (`tests/fixtures/hostile/corpus.json`, format in
//! its README), read the same way by the parser test and the live replay.

use base64::Engine as _;
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString};
use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<Case>,
    timestamp_cases: Vec<TimestampCase>,
}

/// One malformed or malicious command and the rejection it must get.
#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub kind: String,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    body: Option<String>,
    body_b64: Option<String>,
    pub reason: String,
}

impl Case {
    /// The body bytes (text, or base64 for bytes that are not UTF-8).
    pub fn body(&self) -> Vec<u8> {
        match (&self.body, &self.body_b64) {
            (Some(text), None) => text.clone().into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|e| panic!("{}: bad body_b64: {e}", self.name)),
            _ => panic!("{}: exactly one of body and body_b64", self.name),
        }
    }
}

/// A valid command signed with a malformed or far-off `x-lifecycle-timestamp`:
/// only sent with signatures required, where it must be rejected with `reason`.
#[derive(Deserialize)]
pub struct TimestampCase {
    pub name: String,
    pub kind: String,
    pub body: String,
    /// The header as `{"<amqp type>": value}`.
    timestamp: serde_json::Map<String, serde_json::Value>,
    pub reason: String,
}

impl TimestampCase {
    /// The header's AMQP value.
    pub fn value(&self) -> AMQPValue {
        let (ty, v) = self
            .timestamp
            .iter()
            .next()
            .unwrap_or_else(|| panic!("{}: empty timestamp", self.name));
        amqp(ty, v).unwrap_or_else(|| panic!("{}: bad timestamp {ty}: {v}", self.name))
    }

    /// What a publisher would put before the full stop: the text as sent, or
    /// the value's JSON form for what is not text.
    pub fn signing_text(&self) -> String {
        match self.timestamp.values().next() {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
}

fn amqp(ty: &str, v: &serde_json::Value) -> Option<AMQPValue> {
    Some(match ty {
        "string" => AMQPValue::LongString(LongString::from(v.as_str()?)),
        "integer" => AMQPValue::LongLongInt(v.as_i64()?),
        "double" => AMQPValue::Double(v.as_f64()?),
        "boolean" => AMQPValue::Boolean(v.as_bool()?),
        "amqp_timestamp" => AMQPValue::Timestamp(v.as_u64()?),
        "bytes_b64" => AMQPValue::ByteArray(ByteArray::from(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?,
        )),
        "array" => AMQPValue::FieldArray(FieldArray::from(
            v.as_array()?
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(_) => amqp("string", item),
                    _ => amqp("integer", item),
                })
                .collect::<Option<Vec<_>>>()?,
        )),
        "table" => {
            let mut t = FieldTable::default();
            for (k, item) in v.as_object()? {
                t.insert(k.as_str().into(), amqp("integer", item)?);
            }
            AMQPValue::FieldTable(t)
        }
        _ => return None,
    })
}

fn corpus() -> Corpus {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hostile/corpus.json"
    );
    let text = std::fs::read_to_string(path).expect("corpus readable");
    serde_json::from_str::<Corpus>(&text).expect("corpus is valid")
}

/// Every case of the corpus.
pub fn load() -> Vec<Case> {
    corpus().cases
}

/// Every timestamp case of the corpus.
pub fn load_timestamp_cases() -> Vec<TimestampCase> {
    corpus().timestamp_cases
}
