//! The signer against AWS's published SigV4 test vectors (the aws-sig-v4-test-suite
//! cases: their requests, credentials and expected `Authorization` headers written
//! here as test data), and Temporal's credential-provider semantics.

use std::time::{Duration, SystemTime};

use super::*;
use crate::config::Secret;
use crate::config::persistence::AwsStaticCredentials;

/// Every vector signs at 2015-08-30T12:36:00Z in us-east-1 for service `service` with
/// this key pair.
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const CREDENTIAL_SCOPE: &str = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

struct Vector {
    name: &'static str,
    method: &'static str,
    /// Path and query as the suite's request line has them, on host example.amazonaws.com.
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    token: Option<&'static str>,
    signed_headers: &'static str,
    signature: &'static str,
}

const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

const fn get(name: &'static str, target: &'static str, signature: &'static str) -> Vector {
    Vector {
        name,
        method: "GET",
        target,
        headers: &[],
        body: "",
        token: None,
        signed_headers: "host;x-amz-date",
        signature,
    }
}

const VECTORS: &[Vector] = &[
    get("get-vanilla", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    get(
        "get-vanilla-query-order-key-case",
        "/?Param2=value2&Param1=value1",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    get(
        "get-vanilla-query-order-encoded",
        "/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
        "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
    ),
    get(
        "get-vanilla-query-unreserved",
        "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    ),
    get("get-vanilla-utf8-query", "/?\u{1234}=bar", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    get(
        "get-vanilla-empty-query-key",
        "/?Param1=value1",
        "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    ),
    get(
        "get-unreserved",
        "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    get("get-slashes-normalized", "//example//", "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"),
    get(
        "get-relative-relative-normalized",
        "/example1/example2/../..",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    Vector {
        headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
        signed_headers: "host;my-header1;my-header2;x-amz-date",
        ..get("get-header-value-trim", "/", "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736")
    },
    Vector {
        token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
        signed_headers: "host;x-amz-date;x-amz-security-token",
        ..get("get-vanilla-with-session-token", "/", "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8")
    },
    Vector {
        method: "POST",
        ..get("post-vanilla", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    },
    Vector {
        method: "POST",
        ..get(
            "post-vanilla-query",
            "/?Param1=value1",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        )
    },
    Vector {
        method: "POST",
        headers: &[("My-Header1", "value1")],
        signed_headers: "host;my-header1;x-amz-date",
        ..get("post-header-key-sort", "/", "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c")
    },
    Vector {
        method: "POST",
        headers: &[("My-Header1", "VALUE1")],
        signed_headers: "host;my-header1;x-amz-date",
        ..get("post-header-value-case", "/", "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d")
    },
    Vector {
        method: "POST",
        token: Some(STS_TOKEN),
        signed_headers: "host;x-amz-date;x-amz-security-token",
        ..get("post-sts-header-before", "/", "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
    },
    // The 2015 suite's form of this case: the body signed through the canonical
    // request's payload hash, with no x-amz-content-sha256 header (as vismig signs).
    Vector {
        method: "POST",
        headers: &[("Content-Type", "application/x-www-form-urlencoded")],
        body: "Param1=value1",
        signed_headers: "content-type;host;x-amz-date",
        ..get("post-x-www-form-urlencoded", "/", "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
    },
];

fn vector_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

#[test]
fn signatures_match_the_published_sigv4_test_vectors() {
    for v in VECTORS {
        let url = reqwest::Url::parse(&format!("https://example.amazonaws.com{}", v.target)).unwrap();
        let mut req = reqwest::Request::new(v.method.parse().unwrap(), url);
        for (name, value) in v.headers {
            req.headers_mut().insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        if !v.body.is_empty() {
            *req.body_mut() = Some(v.body.into());
        }
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY, v.token.map(String::from), None, "test");
        sign_request(&mut req, &creds, "us-east-1", "service", vector_time()).unwrap();
        let expected = format!(
            "AWS4-HMAC-SHA256 Credential={CREDENTIAL_SCOPE}, SignedHeaders={}, Signature={}",
            v.signed_headers, v.signature
        );
        assert_eq!(req.headers()["authorization"], expected.as_str(), "vector {}", v.name);
        assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z", "vector {}", v.name);
        assert_eq!(
            req.headers().get("x-amz-security-token").map(|t| t.to_str().unwrap()),
            v.token,
            "vector {}",
            v.name
        );
    }
}

#[test]
fn a_changed_body_or_secret_changes_the_signature() {
    let sign_with = |body: &str, secret: &str| {
        let mut req = reqwest::Request::new(
            reqwest::Method::POST,
            "http://127.0.0.1:9200/_bulk?filter_path=errors,items.*.status".parse().unwrap(),
        );
        *req.body_mut() = Some(body.to_string().into());
        let creds = Credentials::new(ACCESS_KEY, secret, None, None, "test");
        sign_request(&mut req, &creds, "eu-west-1", SERVICE, vector_time()).unwrap();
        req.headers()["authorization"].to_str().unwrap().to_string()
    };
    let base = sign_with("{}\n", SECRET_KEY);
    assert!(base.contains("/20150830/eu-west-1/es/aws4_request"), "{base}");
    assert_ne!(base, sign_with("{ }\n", SECRET_KEY));
    assert_ne!(base, sign_with("{}\n", "another-secret"));
    assert!(!base.contains(SECRET_KEY));
}

fn block(provider: &str) -> AwsRequestSigning {
    AwsRequestSigning {
        enabled: true,
        region: "us-east-1".into(),
        credential_provider: provider.into(),
        ..Default::default()
    }
}

fn err(cfg: &AwsRequestSigning) -> String {
    match AwsSigner::new(cfg) {
        Ok(_) => panic!("accepted {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn credential_providers_are_temporals_three_and_refusals_name_the_field() {
    let e = err(&block("iam-role"));
    assert!(e.contains("credentialProvider: \"iam-role\" is not one of static, environment, aws-sdk-default"), "{e}");
    let e = err(&block("static"));
    assert!(e.contains("aws-request-signing.static: accessKeyID and secretAccessKey"), "{e}");
    let mut cfg = block("Static");
    cfg.static_credentials = AwsStaticCredentials {
        access_key_id: "AKID".into(),
        secret_access_key: Some(Secret::new("s3cr3t-value")),
        token: None,
    };
    assert!(AwsSigner::new(&cfg).is_ok(), "Temporal compares the provider name case-insensitively");
    assert!(AwsSigner::new(&block("AWS-SDK-Default")).is_ok());
    cfg.region = String::new();
    if std::env::var_os("AWS_REGION").is_none() {
        let e = err(&cfg);
        assert!(e.contains("region: empty and AWS_REGION is not set"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}

#[test]
fn environment_credentials_follow_aws_sdk_go_names_and_fallbacks() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    };
    let c = from_environment(env(&[("AWS_ACCESS_KEY_ID", "A1"), ("AWS_SECRET_ACCESS_KEY", "S1")])).unwrap();
    assert_eq!((c.access_key_id(), c.secret_access_key(), c.session_token()), ("A1", "S1", None));
    let c = from_environment(env(&[
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_ACCESS_KEY", "A2"),
        ("AWS_SECRET_KEY", "S2"),
        ("AWS_SESSION_TOKEN", "T2"),
    ]))
    .unwrap();
    assert_eq!((c.access_key_id(), c.secret_access_key(), c.session_token()), ("A2", "S2", Some("T2")));
    let e = from_environment(env(&[("AWS_ACCESS_KEY_ID", "A3")])).unwrap_err().to_string();
    assert!(e.contains("credentialProvider environment needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{e}");
}
