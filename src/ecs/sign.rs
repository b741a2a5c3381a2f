//! Both Alibaba Cloud request signatures: `ACS3-HMAC-SHA256` and the RPC `HMAC-SHA1`.
//!
//! One module signs (for the ECS and STS clients) and verifies (for the simulator),
//! so the simulator accepting a request proves only that the two agree, not that
//! the service would accept it. What pins the signer to the real thing is code the
//! team did not write: the official SDK's vectors in `tests/fixtures/signatures.json`
//! (every step reproduced), and `tests/wire/`, where the official SDK's own
//! canonicalisation verifies the worker's real requests as raw bytes.
//!
//! Every step (encoding, canonical query, canonical request, string-to-sign,
//! signature) is a public pure function so tests can check each one separately.

use crate::credentials::Credentials;
use crate::secret::Secret;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod verify;
pub use verify::{HeaderLookup, IncomingRequest, VerifiedCall, VerifyError, verify};

/// Which of the two signature schemes a request uses; chosen by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum SignatureVersion {
    /// `ACS3-HMAC-SHA256`: the current SDKs' default, signed headers and query.
    #[serde(rename = "acs3-hmac-sha256")]
    Acs3HmacSha256,
    /// The RPC `HMAC-SHA1` signature (`SignatureVersion=1.0`), everything in the query.
    #[serde(rename = "hmac-sha1")]
    RpcHmacSha1,
}

impl SignatureVersion {
    /// The configuration spelling, the inverse of [`std::str::FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acs3HmacSha256 => "acs3-hmac-sha256",
            Self::RpcHmacSha1 => "hmac-sha1",
        }
    }
}

impl std::fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signature name that is neither `acs3-hmac-sha256` nor `hmac-sha1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature version {0:?}: expected \"acs3-hmac-sha256\" or \"hmac-sha1\"")]
pub struct UnknownSignatureVersion(pub String);

impl std::str::FromStr for SignatureVersion {
    type Err = UnknownSignatureVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "acs3-hmac-sha256" => Ok(Self::Acs3HmacSha256),
            "hmac-sha1" => Ok(Self::RpcHmacSha1),
            other => Err(UnknownSignatureVersion(other.to_owned())),
        }
    }
}

/// Everything that goes into one signed ECS call, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// The API action, e.g. `DeregisterManagedInstance`.
    pub action: &'a str,
    /// The API version, `2014-05-26` for ECS.
    pub version: &'a str,
    /// The `Host` header value (`host[:port]`); ACS3 signs it.
    pub host: &'a str,
    /// The API parameters (`RegionId`, `InstanceId`, ...), in any order.
    pub params: &'a [(String, String)],
    /// A fresh random nonce; the service refuses one it has seen.
    pub nonce: &'a str,
    /// UTC time, `YYYY-MM-DDTHH:MM:SSZ`; the service refuses a stale one.
    pub timestamp: &'a str,
    /// More headers to send and sign in ACS3 (e.g. `accept`, `user-agent`); RPC ignores them.
    pub extra_signed_headers: &'a [(String, String)],
}

/// What to put on the wire: `POST /?{query}` with an empty body and these headers.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The encoded query string, without the leading `?`.
    pub query: String,
    /// Headers to send (lower-case names), `authorization` included for ACS3; not `host`.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for SignedRequest {
    // A security token travels in the query (RPC) or a header (ACS3): never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("query", &"[redacted]")
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// The `x-acs-content-sha256` of an empty body, which is all this client sends.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The ACS3 algorithm name, first word of the `authorization` header.
pub const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Alibaba's unreserved set: everything but `A-Za-z0-9-_.~` is percent-encoded.
const ALIBABA_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Alibaba percent-encoding (RFC 3986 unreserved kept; space is `%20`, `*` is `%2A`).
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, ALIBABA_ENCODE).to_string()
}

/// The canonical query: pairs encoded, sorted by encoded name then value, joined by `&`.
///
/// Both schemes use it: ACS3 as the query line of the canonical request, RPC as the
/// text that is encoded once more into the string-to-sign.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    let mut out = String::with_capacity(encoded.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Lower-case hex SHA-256, used for the payload hash and the ACS3 string-to-sign.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The ACS3 canonical request and its `SignedHeaders` list.
///
/// `headers` are the headers to sign: names are lower-cased, values trimmed, and the
/// lines sorted by name, as the service does.
pub fn acs3_canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    hashed_payload: &str,
) -> (String, String) {
    let mut sorted: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    sorted.sort();
    let signed_headers = sorted
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!("{method}\n{path}\n{canonical_query}\n");
    for (k, v) in &sorted {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers);
    canonical.push('\n');
    canonical.push_str(hashed_payload);
    (canonical, signed_headers)
}

/// The ACS3 string-to-sign: the algorithm name and the canonical request's hash.
pub fn acs3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ACS3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The ACS3 signature: lower-case hex HMAC-SHA256 of the string-to-sign.
pub fn acs3_signature(secret: &Secret, string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(
        secret.expose().as_bytes(),
        string_to_sign.as_bytes(),
    ))
}

/// The ACS3 `authorization` header value.
pub fn acs3_authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ACS3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// The RPC string-to-sign: `METHOD&%2F&` and the canonical query encoded once more.
///
/// `params` are every query parameter except `Signature` itself.
pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// The RPC signature: base64 HMAC-SHA1 keyed with `secret + "&"`.
pub fn rpc_signature(secret: &Secret, string_to_sign: &str) -> String {
    let key = format!("{}&", secret.expose());
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time comparison of a presented signature with the expected one.
pub(crate) fn signatures_equal(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Signs one call; every attempt must call it afresh with a new nonce and timestamp.
pub fn sign(
    version: SignatureVersion,
    creds: &Credentials,
    input: &SigningInput<'_>,
) -> SignedRequest {
    match version {
        SignatureVersion::Acs3HmacSha256 => sign_acs3(creds, input),
        SignatureVersion::RpcHmacSha1 => sign_rpc(creds, input),
    }
}

fn sign_acs3(creds: &Credentials, input: &SigningInput<'_>) -> SignedRequest {
    let query = canonical_query(input.params);
    let mut headers: Vec<(String, String)> = vec![
        ("x-acs-action".into(), input.action.into()),
        ("x-acs-version".into(), input.version.into()),
        ("x-acs-date".into(), input.timestamp.into()),
        ("x-acs-signature-nonce".into(), input.nonce.into()),
        ("x-acs-content-sha256".into(), EMPTY_BODY_SHA256.into()),
    ];
    if let Some(token) = creds.security_token.as_ref().filter(|t| !t.is_empty()) {
        headers.push(("x-acs-security-token".into(), token.expose().into()));
    }
    for (k, v) in input.extra_signed_headers {
        let name = k.trim().to_ascii_lowercase();
        if name != "host" && name != "authorization" && !headers.iter().any(|(h, _)| *h == name) {
            headers.push((name, v.trim().to_owned()));
        }
    }
    let mut to_sign = headers.clone();
    to_sign.push(("host".into(), input.host.into()));
    let (canonical, signed_headers) =
        acs3_canonical_request("POST", "/", &query, &to_sign, EMPTY_BODY_SHA256);
    let signature = acs3_signature(&creds.access_key_secret, &acs3_string_to_sign(&canonical));
    headers.push((
        "authorization".into(),
        acs3_authorization(&creds.access_key_id, &signed_headers, &signature),
    ));
    SignedRequest { query, headers }
}

fn sign_rpc(creds: &Credentials, input: &SigningInput<'_>) -> SignedRequest {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), input.action.into()),
        // The official SDK sends lower-case `json`; the service accepts either.
        ("Format".into(), "json".into()),
        ("Version".into(), input.version.into()),
        ("Timestamp".into(), input.timestamp.into()),
        ("SignatureNonce".into(), input.nonce.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("AccessKeyId".into(), creds.access_key_id.clone()),
    ];
    if let Some(token) = creds.security_token.as_ref().filter(|t| !t.is_empty()) {
        params.push(("SecurityToken".into(), token.expose().into()));
    }
    params.extend(input.params.iter().cloned());
    let signature = rpc_signature(
        &creds.access_key_secret,
        &rpc_string_to_sign("POST", &params),
    );
    let mut query = canonical_query(&params);
    query.push_str("&Signature=");
    query.push_str(&percent_encode(&signature));
    SignedRequest {
        query,
        headers: Vec::new(),
    }
}

/// A fresh random nonce (UUID v4, 32 hex digits) for one attempt.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The current UTC time as the service wants it, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn timestamp_now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SSZ` in UTC (sub-seconds dropped).
pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (the only form the signers send); `None` when malformed.
pub fn parse_timestamp(s: &str) -> Option<time::OffsetDateTime> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_follows_alibaba_rules() {
        assert_eq!(percent_encode("a b*c~d-_.e"), "a%20b%2Ac~d-_.e");
        assert_eq!(percent_encode("主"), "%E4%B8%BB");
        assert_eq!(percent_encode("+/=&%"), "%2B%2F%3D%26%25");
    }

    #[test]
    fn canonical_query_sorts_after_encoding() {
        let p = vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "x y".to_owned()),
        ];
        assert_eq!(canonical_query(&p), "a=x%20y&b=2");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn nonces_differ_and_timestamps_round_trip() {
        assert_ne!(new_nonce(), new_nonce());
        assert_eq!(new_nonce().len(), 32);
        let now = timestamp_now();
        let parsed = parse_timestamp(&now).map(format_timestamp);
        assert_eq!(parsed.as_deref(), Some(now.as_str()));
        assert!(parse_timestamp("2026-11-22 08:00:00").is_none());
    }

    #[test]
    fn signature_version_parses_and_prints() {
        for v in [
            SignatureVersion::Acs3HmacSha256,
            SignatureVersion::RpcHmacSha1,
        ] {
            assert_eq!(v.as_str().parse::<SignatureVersion>(), Ok(v));
        }
        assert!("v4".parse::<SignatureVersion>().is_err());
    }

    #[test]
    fn security_token_is_sent_and_signed() {
        let mut creds = Credentials::static_key("id", "secret");
        creds.security_token = Some(Secret::new("tok"));
        let input = SigningInput {
            action: "A",
            version: "2014-05-26",
            host: "h",
            params: &[],
            nonce: "n",
            timestamp: "2026-01-01T00:00:00Z",
            extra_signed_headers: &[],
        };
        let acs3 = sign(SignatureVersion::Acs3HmacSha256, &creds, &input);
        let auth = acs3.headers.iter().find(|(k, _)| k == "authorization");
        assert!(auth.is_some_and(|(_, v)| v.contains("x-acs-security-token")));
        let rpc = sign(SignatureVersion::RpcHmacSha1, &creds, &input);
        assert!(rpc.query.contains("SecurityToken=tok"));
        assert!(!format!("{rpc:?}").contains("tok"));
    }
}
