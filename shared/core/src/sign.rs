//! Request credentials computed from secrets: AWS Signature Version 4 (for
//! Bedrock) and the RS256 JWT a Google service account trades for an access
//! token (for Vertex). Pure functions: the caller passes the time.
//! SigV4 per AWS's "Create a signed AWS API request" (canonical request,
//! string to sign, HMAC key chain); the JWT per Google's "Using OAuth 2.0 for
//! Server to Server Applications".

use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn uri_encode(s: &str) -> String {
    crate::provider::encode_segment(s)
}

/// `(host, path, query)` of an absolute URL.
fn split_url(url: &str) -> (&str, &str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    (authority, path, query)
}

/// The headers that sign `method url` with `body` for AWS `service` in
/// `region`: `x-amz-date`, `authorization` and, with a session token,
/// `x-amz-security-token`. `headers` are the other headers to sign (e.g.
/// content-type). Path segments are encoded once more for the canonical URI,
/// as every service but S3 requires (Bedrock model ids hold `:`, sent as `%3A`).
#[allow(clippy::too_many_arguments)]
pub fn sigv4(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    access_key: &str,
    secret_key: &str,
    session_token: Option<&str>,
    region: &str,
    service: &str,
    now_unix_s: i64,
) -> Vec<(String, String)> {
    let time = chrono::DateTime::from_timestamp(now_unix_s, 0).unwrap_or_default();
    let amz_date = time.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let (host, path, query) = split_url(url);
    let canonical_uri =
        if path.is_empty() { "/".to_string() } else { path.split('/').map(uri_encode).collect::<Vec<_>>().join("/") };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k), uri_encode(v))
        })
        .collect();
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut signed: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    signed.push(("host".into(), host.to_string()));
    signed.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(t) = session_token {
        signed.push(("x-amz-security-token".into(), t.to_string()));
    }
    signed.sort();
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_names = signed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{}",
        sha256_hex(body)
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let k_date = hmac(format!("AWS4{secret_key}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let signature = hex::encode(hmac(&k_signing, &to_sign));
    let mut out = vec![
        ("x-amz-date".to_string(), amz_date),
        (
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_names}, Signature={signature}"
            ),
        ),
    ];
    if let Some(t) = session_token {
        out.push(("x-amz-security-token".to_string(), t.to_string()));
    }
    out
}

const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The token endpoint and the signed JWT assertion for a service-account key
/// (the JSON file Google issues), valid for an hour from `now_unix_s`.
pub fn google_assertion(service_account_json: &str, now_unix_s: i64) -> Result<(String, String), String> {
    let sa: serde_json::Value =
        serde_json::from_str(service_account_json).map_err(|e| format!("the service-account key is not JSON: {e}"))?;
    let field = |k: &str| sa.get(k).and_then(|v| v.as_str());
    let email = field("client_email").ok_or("the service-account key has no client_email")?;
    let pem = field("private_key").ok_or("the service-account key has no private_key")?;
    let token_uri = field("token_uri").unwrap_or(GOOGLE_TOKEN_URI).to_string();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("unreadable private_key: {e}"))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = field("private_key_id") {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": token_uri,
        "iat": now_unix_s,
        "exp": now_unix_s + 3600,
    });
    let signing_input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    let signature = signer.try_sign(signing_input.as_bytes()).map_err(|e| format!("could not sign: {e}"))?;
    Ok((token_uri, format!("{signing_input}.{}", b64.encode(signature.to_vec()))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// AWS's SigV4 test suite, `get-vanilla` (AKIDEXAMPLE, 20150830T123600Z, us-east-1, `service`).
    #[test]
    fn sigv4_matches_the_aws_test_suite() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z").unwrap().timestamp();
        let h = sigv4(
            "GET",
            "https://example.amazonaws.com/",
            &[],
            b"",
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            "us-east-1",
            "service",
            now,
        );
        assert_eq!(h[0], ("x-amz-date".to_string(), "20150830T123600Z".to_string()));
        assert_eq!(
            h[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn sigv4_double_encodes_path_segments() {
        let sign = |url: &str| sigv4("POST", url, &[], b"{}", "A", "S", Some("T"), "us-east-1", "bedrock", 0);
        let a = sign("https://h/model/anthropic.claude%3A0/converse");
        let b = sign("https://h/model/anthropic.claude%253A0/converse");
        // Different canonical URIs give different signatures; the token is signed and sent.
        assert_ne!(a[1], b[1]);
        assert!(a[1].1.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"));
        assert_eq!(a[2], ("x-amz-security-token".to_string(), "T".to_string()));
    }

    #[test]
    fn google_assertion_is_a_verifiable_rs256_jwt() {
        use rsa::pkcs1v15::VerifyingKey;
        use rsa::signature::Verifier;
        let pem = include_str!("../../../tests/fixtures/test_service_account_key.pem");
        let sa = serde_json::json!({"client_email": "a@p.iam.gserviceaccount.com", "private_key": pem,
                                    "private_key_id": "k1", "token_uri": "http://127.0.0.1:1/token"});
        let (uri, jwt) = google_assertion(&sa.to_string(), 1_700_000_000).unwrap();
        assert_eq!(uri, "http://127.0.0.1:1/token");
        let parts: Vec<&str> = jwt.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["exp"], 1_700_003_600);
        assert_eq!(claims["aud"], "http://127.0.0.1:1/token");
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(key.to_public_key());
        let sig = rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
        verifier.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        assert!(google_assertion("{}", 0).is_err());
    }
}
