//! The hostile-input corpus (`tests/fixtures/hostile/corpus.json`, format in
//! its README), read the same way by the parser test and the live replay.

use base64::Engine as _;
use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<Case>,
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

/// Every case of the corpus.
pub fn load() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hostile/corpus.json"
    );
    let text = std::fs::read_to_string(path).expect("corpus readable");
    serde_json::from_str::<Corpus>(&text)
        .expect("corpus is valid")
        .cases
}
