//! Credentials that need more than a header: Vertex service accounts are
//! exchanged for access tokens (cached until shortly before they expire), and
//! Bedrock requests are signed with SigV4 once their body is final.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use oblivious_core::model::{Channel, Id};
use oblivious_core::provider::Auth;
use oblivious_ports::{Clock, Platform, Upstream, UpstreamRequest};

use crate::upstream::{self, Op};
use crate::Relay;

/// Access tokens by (channel, key index): the token and when it expires (Unix ms).
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<HashMap<(Id, usize), (String, i64)>>);

/// Tokens are renewed this long before they expire.
const RENEW_EARLY_MS: i64 = 5 * 60 * 1000;

impl<P: Platform> Relay<P> {
    /// The signed, authenticated request for one attempt. An `Err` is a
    /// credential problem (counted against the channel like a failed call).
    pub(crate) async fn upstream_request(
        &self,
        ch: &Channel,
        key: Option<usize>,
        op: Op,
        model: &str,
        body: Bytes,
        gemini_sse: bool,
    ) -> Result<UpstreamRequest, String> {
        let secret = key.and_then(|k| ch.spec.keys.get(k)).map(String::as_str);
        match ch.spec.kind.info().auth {
            Auth::GoogleServiceAccount => {
                let (Some(k), Some(sa)) = (key, secret) else {
                    return Err("a vertex channel needs a service-account key".into());
                };
                let token = self.google_token(ch.id, k, sa).await?;
                Ok(upstream::request(ch, Some(&token), op, model, body, gemini_sse))
            }
            Auth::SigV4 => {
                let Some(secret) = secret else {
                    return Err("a bedrock channel needs a key `ACCESS_KEY_ID:SECRET_ACCESS_KEY`".into());
                };
                let mut req = upstream::request(ch, None, op, model, body, gemini_sse);
                sign_bedrock(&mut req, secret, ch.spec.region.as_deref(), self.ports.clock.now_ms() / 1000)?;
                Ok(req)
            }
            _ => Ok(upstream::request(ch, secret, op, model, body, gemini_sse)),
        }
    }

    async fn google_token(&self, channel: Id, key: usize, service_account: &str) -> Result<String, String> {
        let now = self.ports.clock.now_ms();
        if let Some((token, expires)) = self.tokens.0.lock().unwrap_or_else(|p| p.into_inner()).get(&(channel, key)) {
            if *expires - RENEW_EARLY_MS > now {
                return Ok(token.clone());
            }
        }
        let (token_uri, assertion) = oblivious_core::sign::google_assertion(service_account, now / 1000)?;
        let form = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-www-form-urlencoded"));
        let req = UpstreamRequest { method: http::Method::POST, url: token_uri, headers, body: form.into() };
        let resp = self.ports.upstream.send(req).await.map_err(|e| format!("token exchange: {e}"))?;
        let status = resp.status;
        let mut body = resp.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            bytes.extend_from_slice(&chunk.map_err(|e| format!("token exchange: {e}"))?);
            if bytes.len() > 64 * 1024 {
                return Err("token exchange: answer too large".into());
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let token = v.get("access_token").and_then(|t| t.as_str()).ok_or_else(|| {
            format!("token exchange answered {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))
        })?;
        let expires = now + v.get("expires_in").and_then(|e| e.as_i64()).unwrap_or(3600) * 1000;
        self.tokens.0.lock().unwrap_or_else(|p| p.into_inner()).insert((channel, key), (token.to_string(), expires));
        Ok(token.to_string())
    }
}

/// Adds SigV4 headers for `bedrock` in the channel's region. The key is
/// `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`.
fn sign_bedrock(req: &mut UpstreamRequest, key: &str, region: Option<&str>, now_s: i64) -> Result<(), String> {
    let mut parts = key.splitn(3, ':');
    let (Some(access), Some(secret)) = (parts.next(), parts.next()) else {
        return Err("a bedrock key is `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`".into());
    };
    let session = parts.next();
    let region = region.unwrap_or("us-east-1");
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| *n == http::header::CONTENT_TYPE)
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let signed = oblivious_core::sign::sigv4(
        "POST", &req.url, &headers, &req.body, access, secret, session, region, "bedrock", now_s,
    );
    for (name, value) in signed {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value)) {
            req.headers.insert(n, v);
        }
    }
    Ok(())
}
