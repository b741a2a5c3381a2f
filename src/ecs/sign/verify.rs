//! Server-side verification of either signature, for the simulator.
//!
//! It sees a request as an HTTP server does: repeated field lines of one name
//! are one field whose value is their values joined with `,` (RFC 9110 section
//! 5.3), and the query is the raw query exactly as sent, decoded as the service
//! decodes it. A request whose signed header was sent twice therefore fails
//! here exactly as it fails at the service.
//!
//! It re-derives the signature with the functions the signer uses, so it is
//! *not* evidence that the signer is right: a mistake the two share passes
//! here. What judges the signer is `tests/wire/`, which verifies the worker's
//! real requests with the official SDK's own code.

use super::{
    ACS3_ALGORITHM, SignatureVersion, acs3_canonical_request, acs3_signature, acs3_string_to_sign,
    canonical_query, rpc_signature, rpc_string_to_sign, sha256_hex, signatures_equal,
};
use crate::secret::Secret;
use std::borrow::Cow;

/// Read access to request headers by lower-case name, so the verifier needs no
/// particular HTTP library and the simulator can pass its header map without copying.
pub trait HeaderLookup {
    /// The field's value as a server sees it: every line of that name, in
    /// order, joined with `,`; `None` when absent or not valid text.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// Joins the values of repeated field lines (RFC 9110 section 5.3).
fn joined<'a>(mut values: impl Iterator<Item = Option<&'a str>>) -> Option<Cow<'a, str>> {
    let first = values.next()??;
    let mut out: Option<String> = None;
    for value in values {
        let out = out.get_or_insert_with(|| first.to_owned());
        out.push(',');
        out.push_str(value?);
    }
    Some(out.map_or(Cow::Borrowed(first), Cow::Owned))
}

impl HeaderLookup for [(String, String)] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        joined(
            self.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| Some(v.as_str())),
        )
    }
}

impl HeaderLookup for axum::http::HeaderMap {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        joined(self.get_all(name).iter().map(|v| v.to_str().ok()))
    }
}

/// One request as it arrived.
pub struct IncomingRequest<'a, H: HeaderLookup + ?Sized> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The request path (the service only serves `/`).
    pub path: &'a str,
    /// The raw query string without `?`, possibly form-encoded (`+` = space).
    pub raw_query: &'a str,
    /// The request headers.
    pub headers: &'a H,
    /// The body; parameters in a form-encoded body count like query parameters.
    pub body: &'a [u8],
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCall {
    /// The AccessKey id that signed it.
    pub access_key_id: String,
    /// The API action.
    pub action: String,
    /// The API version the caller asked for.
    pub version: String,
    /// The API parameters (common signing parameters removed), in wire order.
    pub params: Vec<(String, String)>,
    /// The signature nonce, for replay detection.
    pub nonce: String,
    /// The request timestamp as sent, for the freshness check.
    pub timestamp: String,
    /// The STS token, when the caller used temporary credentials.
    pub security_token: Option<Secret>,
    /// Which scheme signed it.
    pub signature_version: SignatureVersion,
}

/// Why a request was refused, with the code and HTTP status the real service uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature is absent or malformed, or names a header that is missing.
    #[error("the request signature is incomplete or malformed: {0}")]
    IncompleteSignature(String),
    /// The signature does not match the one computed with the key's secret.
    /// Like the service, the message gives the server's string-to-sign (no
    /// secret: it is what was signed, not how), which is what a caller needs
    /// to find the difference.
    #[error(
        "The request signature does not conform to Aliyun standards. server string to sign is:{string_to_sign}"
    )]
    SignatureDoesNotMatch {
        /// The string-to-sign the server computed from the request it received.
        string_to_sign: String,
    },
    /// No such AccessKey id (or it was revoked).
    #[error("specified access key is not found")]
    AccessKeyNotFound,
    /// A mandatory signing parameter is absent.
    #[error(
        "the input parameter \"{0}\" that is mandatory for processing this request is not supplied"
    )]
    MissingParameter(&'static str),
    /// An unsupported `SignatureMethod` / `SignatureVersion` or algorithm.
    #[error("the signature method {0:?} is not supported")]
    UnsupportedSignatureMethod(String),
}

impl VerifyError {
    /// The Alibaba error code for the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IncompleteSignature(_) => "IncompleteSignature",
            Self::SignatureDoesNotMatch { .. } => "SignatureDoesNotMatch",
            Self::AccessKeyNotFound => "InvalidAccessKeyId.NotFound",
            Self::MissingParameter(_) => "MissingParameter",
            Self::UnsupportedSignatureMethod(_) => "InvalidSignatureMethod",
        }
    }

    /// The HTTP status the real service answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::AccessKeyNotFound => 404,
            _ => 400,
        }
    }
}

/// Parameters of the RPC scheme that are about signing, not about the API call.
const RPC_COMMON: &[&str] = &[
    "Action",
    "Format",
    "Version",
    "Timestamp",
    "SignatureNonce",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureType",
    "AccessKeyId",
    "SecurityToken",
    "Signature",
];

/// Verifies a request signed with either scheme; `lookup` maps a key id to its secret.
///
/// ACS3 is recognised by an `authorization` header starting with `ACS3-HMAC-SHA256`;
/// anything else is treated as RPC and must carry `Signature` and `AccessKeyId`.
pub fn verify<H, F>(req: &IncomingRequest<'_, H>, lookup: F) -> Result<VerifiedCall, VerifyError>
where
    H: HeaderLookup + ?Sized,
    F: FnOnce(&str) -> Option<Secret>,
{
    let mut params = decode_form(req.raw_query.as_bytes());
    let form_body = req
        .headers
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form_body && !req.body.is_empty() {
        params.extend(decode_form(req.body));
    }
    match req.headers.header("authorization") {
        Some(auth) if auth.trim_start().starts_with(ACS3_ALGORITHM) => {
            verify_acs3(req, &auth, params, lookup)
        }
        _ => verify_rpc(req.method, params, lookup),
    }
}

/// Pairs of a query or a form body, decoded as `application/x-www-form-urlencoded`
/// (`+` is a space), as the service does: the official SDK sends a space in a
/// query parameter as `+` (the `DescribeManagedInstances-unicode` vector).
fn decode_form(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

struct Acs3Auth<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_acs3_auth(auth: &str) -> Result<Acs3Auth<'_>, VerifyError> {
    let rest = auth.trim().strip_prefix(ACS3_ALGORITHM).unwrap_or_default();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) if !c.is_empty() && !s.is_empty() => Ok(Acs3Auth {
            credential: c,
            signed_headers: h,
            signature: s,
        }),
        _ => Err(VerifyError::IncompleteSignature(
            "authorization needs Credential, SignedHeaders and Signature".into(),
        )),
    }
}

fn verify_acs3<H, F>(
    req: &IncomingRequest<'_, H>,
    auth: &str,
    params: Vec<(String, String)>,
    lookup: F,
) -> Result<VerifiedCall, VerifyError>
where
    H: HeaderLookup + ?Sized,
    F: FnOnce(&str) -> Option<Secret>,
{
    let auth = parse_acs3_auth(auth)?;
    let required = |name: &'static str, param: &'static str| {
        req.headers
            .header(name)
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingParameter(param))
    };
    let action = required("x-acs-action", "Action")?;
    let version = required("x-acs-version", "Version")?;
    let timestamp = required("x-acs-date", "Timestamp")?;
    let nonce = required("x-acs-signature-nonce", "SignatureNonce")?;
    let mut signed = Vec::new();
    for name in auth.signed_headers.split(';').filter(|n| !n.is_empty()) {
        let value = req.headers.header(name).ok_or_else(|| {
            VerifyError::IncompleteSignature(format!("signed header {name:?} is absent"))
        })?;
        signed.push((name.to_owned(), value.into_owned()));
    }
    for must in [
        "host",
        "x-acs-action",
        "x-acs-signature-nonce",
        "x-acs-date",
    ] {
        if !signed.iter().any(|(k, _)| k.eq_ignore_ascii_case(must)) {
            return Err(VerifyError::IncompleteSignature(format!(
                "header {must:?} must be signed"
            )));
        }
    }
    let body_hash = sha256_hex(req.body);
    let (canonical, _) = acs3_canonical_request(
        req.method,
        req.path,
        &canonical_query(&params),
        &signed,
        &body_hash,
    );
    let string_to_sign = acs3_string_to_sign(&canonical);
    if let Some(claimed) = req.headers.header("x-acs-content-sha256")
        && !claimed.eq_ignore_ascii_case(&body_hash)
    {
        return Err(VerifyError::SignatureDoesNotMatch { string_to_sign });
    }
    let secret = lookup(auth.credential).ok_or(VerifyError::AccessKeyNotFound)?;
    let expected = acs3_signature(&secret, &string_to_sign);
    if !signatures_equal(&auth.signature.to_ascii_lowercase(), &expected) {
        return Err(VerifyError::SignatureDoesNotMatch { string_to_sign });
    }
    Ok(VerifiedCall {
        access_key_id: auth.credential.to_owned(),
        action: action.into_owned(),
        version: version.into_owned(),
        params,
        nonce: nonce.into_owned(),
        timestamp: timestamp.into_owned(),
        security_token: req.headers.header("x-acs-security-token").map(Secret::new),
        signature_version: SignatureVersion::Acs3HmacSha256,
    })
}

fn verify_rpc<F>(
    method: &str,
    mut params: Vec<(String, String)>,
    lookup: F,
) -> Result<VerifiedCall, VerifyError>
where
    F: FnOnce(&str) -> Option<Secret>,
{
    let Some(sig_at) = params.iter().position(|(k, _)| k == "Signature") else {
        return Err(VerifyError::IncompleteSignature(
            "neither an ACS3 authorization header nor a Signature parameter".into(),
        ));
    };
    let (_, signature) = params.remove(sig_at);
    let get = |name: &'static str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingParameter(name))
    };
    let access_key_id = get("AccessKeyId")?;
    let action = get("Action")?;
    let version = get("Version")?;
    let timestamp = get("Timestamp")?;
    let nonce = get("SignatureNonce")?;
    let method_name = get("SignatureMethod")?;
    if method_name != "HMAC-SHA1" {
        return Err(VerifyError::UnsupportedSignatureMethod(method_name));
    }
    if let Ok(v) = get("SignatureVersion")
        && v != "1.0"
    {
        return Err(VerifyError::UnsupportedSignatureMethod(v));
    }
    let secret = lookup(&access_key_id).ok_or(VerifyError::AccessKeyNotFound)?;
    let string_to_sign = rpc_string_to_sign(method, &params);
    let expected = rpc_signature(&secret, &string_to_sign);
    if !signatures_equal(&signature, &expected) {
        return Err(VerifyError::SignatureDoesNotMatch { string_to_sign });
    }
    let security_token = get("SecurityToken").ok().map(Secret::new);
    params.retain(|(k, _)| !RPC_COMMON.contains(&k.as_str()));
    Ok(VerifiedCall {
        access_key_id,
        action,
        version,
        params,
        nonce,
        timestamp,
        security_token,
        signature_version: SignatureVersion::RpcHmacSha1,
    })
}
