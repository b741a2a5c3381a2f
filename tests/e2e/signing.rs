//! The signer and verifier against the official SDK's vectors, plus round-trip properties.

use lifecycle_worker::credentials::Credentials;
use lifecycle_worker::ecs::sign::{
    self, IncomingRequest, SignatureVersion, SigningInput, VerifyError,
};
use lifecycle_worker::secret::Secret;
use proptest::prelude::*;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signatures.json"
    ))
    .unwrap_or_default();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let list = parsed.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 10, "fixture must hold 10 vectors");
    list
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

fn is_acs3(v: &Value) -> bool {
    s(v, &["signature"]).starts_with("ACS3")
}

/// The API params of a vector: the query minus the RPC common params.
fn api_params(v: &Value) -> Vec<(String, String)> {
    const COMMON: &[&str] = &[
        "Action",
        "Format",
        "Version",
        "Timestamp",
        "SignatureNonce",
        "SignatureMethod",
        "SignatureVersion",
        "AccessKeyId",
        "Signature",
    ];
    v["request"]["query"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !COMMON.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v["request"]["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn creds(v: &Value) -> Credentials {
    Credentials::static_key(s(v, &["access_key_id"]), s(v, &["access_key_secret"]))
}

fn lookup(id: &str) -> Option<Secret> {
    (id == "testid").then(|| Secret::new("testsecret"))
}

#[test]
fn acs3_vectors_reproduce_every_step() {
    for v in vectors().iter().filter(|v| is_acs3(v)) {
        let case = s(v, &["case"]);
        let headers = headers_of(v);
        let signed: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .cloned()
            .collect();
        let query = sign::canonical_query(&api_params(v));
        let (canonical, signed_headers) =
            sign::acs3_canonical_request("POST", "/", &query, &signed, sign::EMPTY_BODY_SHA256);
        assert_eq!(
            canonical,
            s(v, &["expected", "canonical_request"]),
            "{case}"
        );
        let sts = sign::acs3_string_to_sign(&canonical);
        assert_eq!(sts, s(v, &["expected", "string_to_sign"]), "{case}");
        let sig = sign::acs3_signature(&Secret::new(s(v, &["access_key_secret"])), &sts);
        let auth = sign::acs3_authorization("testid", &signed_headers, &sig);
        assert_eq!(auth, s(v, &["expected", "authorization"]), "{case}");

        // The whole signer, given the SDK's extra headers, yields the same header.
        let extra: Vec<(String, String)> = ["accept", "user-agent", "x-acs-credentials-provider"]
            .iter()
            .map(|k| ((*k).to_owned(), s(v, &["request", "headers", k]).to_owned()))
            .collect();
        let params = api_params(v);
        let out = sign::sign(
            SignatureVersion::Acs3HmacSha256,
            &creds(v),
            &SigningInput {
                action: s(v, &["request", "headers", "x-acs-action"]),
                version: "2014-05-26",
                host: s(v, &["request", "headers", "host"]),
                params: &params,
                nonce: s(v, &["nonce"]),
                timestamp: s(v, &["timestamp"]),
                extra_signed_headers: &extra,
            },
        );
        let got = out.headers.iter().find(|(k, _)| k == "authorization");
        assert_eq!(
            got.map(|(_, v)| v.as_str()),
            Some(s(v, &["expected", "authorization"])),
            "{case}"
        );
        assert!(out.headers.iter().all(|(k, _)| k != "host"));
        assert_eq!(out.query, query, "{case}");
    }
}

#[test]
fn rpc_vectors_reproduce_every_step() {
    for v in vectors().iter().filter(|v| !is_acs3(v)) {
        let case = s(v, &["case"]);
        let all: Vec<(String, String)> = v["request"]["query"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != "Signature")
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let sts = sign::rpc_string_to_sign("POST", &all);
        assert_eq!(sts, s(v, &["expected", "string_to_sign"]), "{case}");
        let sig = sign::rpc_signature(&Secret::new("testsecret"), &sts);
        assert_eq!(sig, s(v, &["expected", "signature"]), "{case}");

        let params = api_params(v);
        let out = sign::sign(
            SignatureVersion::RpcHmacSha1,
            &creds(v),
            &SigningInput {
                action: s(v, &["request", "query", "Action"]),
                version: "2014-05-26",
                host: s(v, &["request", "headers", "host"]),
                params: &params,
                nonce: s(v, &["nonce"]),
                timestamp: s(v, &["timestamp"]),
                extra_signed_headers: &[],
            },
        );
        let expected = format!(
            "Signature={}",
            sign::percent_encode(s(v, &["expected", "signature"]))
        );
        assert!(out.query.ends_with(&expected), "{case}: {}", out.query);
        assert!(out.headers.is_empty());
    }
}

fn verify_vector(v: &Value, raw_query: &str) -> Result<sign::VerifiedCall, VerifyError> {
    let headers = headers_of(v);
    let req = IncomingRequest {
        method: "POST",
        path: "/",
        raw_query,
        headers: headers.as_slice(),
        body: b"",
    };
    sign::verify(&req, lookup)
}

#[test]
fn verifier_accepts_every_vector_as_sent_and_refuses_tampering() {
    for v in vectors() {
        let case = s(&v, &["case"]);
        let raw = s(&v, &["request", "raw_query"]);
        let call = verify_vector(&v, raw);
        let call = match call {
            Ok(c) => c,
            Err(e) => panic!("{case}: {e:?}"),
        };
        assert_eq!(call.access_key_id, "testid");
        assert_eq!(call.nonce, s(&v, &["nonce"]));
        assert_eq!(call.timestamp, s(&v, &["timestamp"]));
        let mut want = api_params(&v);
        let mut got = call.params.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{case}");
        let version = if is_acs3(&v) {
            SignatureVersion::Acs3HmacSha256
        } else {
            SignatureVersion::RpcHmacSha1
        };
        assert_eq!(call.signature_version, version);

        let tampered = raw.replacen("RegionId=cn-", "RegionId=us-", 1);
        assert_ne!(tampered, raw);
        let refused = verify_vector(&v, &tampered).err();
        assert!(
            matches!(refused, Some(VerifyError::SignatureDoesNotMatch { .. })),
            "{case}: {refused:?}"
        );
    }
}

/// A server joins repeated field lines (RFC 9110 section 5.3): a signed header
/// sent twice is a different value from the one signed, and the simulator
/// refuses it as the service does, naming the string-to-sign it computed.
#[test]
fn verifier_refuses_a_signed_header_sent_twice() {
    let mut refused = 0;
    for v in vectors().iter().filter(|v| is_acs3(v)) {
        let case = s(v, &["case"]);
        let raw = s(v, &["request", "raw_query"]);
        let mut headers = headers_of(v);
        let auth = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        let again = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-acs-action"))
            .cloned()
            .expect("x-acs-action is sent");
        assert!(
            auth.contains("x-acs-action"),
            "{case}: x-acs-action is signed"
        );
        headers.push(again);
        let req = IncomingRequest {
            method: "POST",
            path: "/",
            raw_query: raw,
            headers: headers.as_slice(),
            body: b"",
        };
        match sign::verify(&req, |_| Some(Secret::new("testsecret"))) {
            Err(VerifyError::SignatureDoesNotMatch { string_to_sign }) => {
                assert!(string_to_sign.starts_with("ACS3-HMAC-SHA256\n"), "{case}");
                refused += 1;
            }
            other => panic!("{case}: a repeated signed header was not refused: {other:?}"),
        }
    }
    assert!(refused > 0, "no ACS3 vector");
}

#[test]
fn verifier_error_codes() {
    let v = &vectors()[0];
    let raw = s(v, &["request", "raw_query"]);
    let headers = headers_of(v);
    let req = IncomingRequest {
        method: "POST",
        path: "/",
        raw_query: raw,
        headers: headers.as_slice(),
        body: b"",
    };
    let unknown = sign::verify(&req, |_| None).err();
    assert_eq!(
        unknown.as_ref().map(VerifyError::code),
        Some("InvalidAccessKeyId.NotFound")
    );
    assert_eq!(unknown.map(|e| e.http_status()), Some(404));

    let no_auth: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != "authorization")
        .cloned()
        .collect();
    let req = IncomingRequest {
        headers: no_auth.as_slice(),
        ..req
    };
    let err = sign::verify(&req, lookup).err();
    assert_eq!(
        err.as_ref().map(VerifyError::code),
        Some("IncompleteSignature")
    );

    let mut broken = no_auth.clone();
    broken.push((
        "authorization".into(),
        "ACS3-HMAC-SHA256 Credential=testid".into(),
    ));
    let req = IncomingRequest {
        headers: broken.as_slice(),
        ..req
    };
    let err = sign::verify(&req, lookup).err();
    assert_eq!(
        err.as_ref().map(VerifyError::code),
        Some("IncompleteSignature")
    );

    let rpc = "Action=X&AccessKeyId=testid&Signature=abc&SignatureMethod=HMAC-SHA1";
    let empty: Vec<(String, String)> = Vec::new();
    let req = IncomingRequest {
        raw_query: rpc,
        headers: empty.as_slice(),
        ..req
    };
    let err = sign::verify(&req, lookup).err();
    assert_eq!(err, Some(VerifyError::MissingParameter("Version")));
}

fn round_trip(version: SignatureVersion, params: Vec<(String, String)>, token: Option<&str>) {
    let mut creds = Credentials::static_key("testid", "testsecret");
    creds.security_token = token.map(Secret::new);
    let nonce = sign::new_nonce();
    let ts = sign::timestamp_now();
    let extra = vec![("user-agent".to_owned(), "lifecycle-worker test".to_owned())];
    let out = sign::sign(
        version,
        &creds,
        &SigningInput {
            action: "DescribeManagedInstances",
            version: "2014-05-26",
            host: "127.0.0.1:8080",
            params: &params,
            nonce: &nonce,
            timestamp: &ts,
            extra_signed_headers: &extra,
        },
    );
    let mut headers = out.headers.clone();
    headers.push(("host".into(), "127.0.0.1:8080".into()));
    let req = IncomingRequest {
        method: "POST",
        path: "/",
        raw_query: &out.query,
        headers: headers.as_slice(),
        body: b"",
    };
    let call = sign::verify(&req, lookup);
    let call = match call {
        Ok(c) => c,
        Err(e) => panic!("{version}: {e:?} for {params:?}"),
    };
    let mut got = call.params;
    let mut want = params;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(call.action, "DescribeManagedInstances");
    assert_eq!(call.nonce, nonce);
    assert_eq!(call.security_token.as_ref().map(Secret::expose), token);
    assert_eq!(call.signature_version, version);
}

#[test]
fn round_trip_with_security_token() {
    for v in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RpcHmacSha1,
    ] {
        round_trip(
            v,
            vec![("RegionId".into(), "cn-hangzhou".into())],
            Some("sts+/="),
        );
    }
}

fn param_name() -> impl Strategy<Value = String> {
    "[A-Z][A-Za-z0-9.]{0,12}".prop_filter("not an RPC common parameter", |k| {
        ![
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
        ]
        .contains(&k.as_str())
    })
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(
        values in proptest::collection::btree_map(
            param_name(),
            "(\\PC|[ &=+%*/~])*",
            0..6,
        ),
        acs3 in any::<bool>(),
    ) {
        let version = if acs3 { SignatureVersion::Acs3HmacSha256 } else { SignatureVersion::RpcHmacSha1 };
        round_trip(version, values.into_iter().collect(), None);
    }
}
