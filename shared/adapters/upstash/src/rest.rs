//! A small client for Upstash Redis's REST protocol over the [`Upstream`] port:
//! `POST <url>` with a command as a JSON array (`["SET","k","v","PX","1000"]`)
//! answers `{"result": …}` or `{"error": "…"}`; `POST <url>/pipeline` with an
//! array of commands answers an array of those. Every request carries
//! `Authorization: Bearer <token>`; the token never appears in an error.

use futures_util::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use oblivious_ports::{ByteStream, PortError, Upstream, UpstreamRequest};
use serde_json::Value;

/// A Lua script and its SHA-1, computed once: run with `EVALSHA`, falling back
/// to `EVAL` (which also caches it on the server) when the server answers `NOSCRIPT`.
pub struct Script {
    text: &'static str,
    sha: String,
}

impl Script {
    pub fn new(text: &'static str) -> Self {
        Script { text, sha: sha1_smol::Sha1::from(text).digest().to_string() }
    }

    /// The script's SHA-1 in lowercase hex, as `EVALSHA` and `SCRIPT EXISTS` take it.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

/// One command's outcome: its result, or the error the server gave for it.
pub type Reply = Result<Value, String>;

pub struct Rest<U> {
    upstream: U,
    url: String,
    pipeline_url: String,
    /// `None` when the token cannot be a header value; every call then fails.
    auth: Option<HeaderValue>,
}

fn port(message: impl std::fmt::Display) -> PortError {
    PortError(format!("upstash: {message}"))
}

impl<U: Upstream> Rest<U> {
    /// `url`: the REST URL (`https://….upstash.io`); `token`: the REST token.
    pub fn new(upstream: U, url: impl Into<String>, token: &str) -> Self {
        let url = url.into().trim_end_matches('/').to_string();
        let auth = HeaderValue::from_str(&format!("Bearer {token}")).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        });
        Rest { pipeline_url: format!("{url}/pipeline"), url, upstream, auth }
    }

    /// Runs one command; an error the server gives for it becomes a [`PortError`].
    pub async fn command<S: AsRef<str>>(&self, args: &[S]) -> Result<Value, PortError> {
        self.call(args).await?.map_err(|e| port(format!("{}: {e}", name(args))))
    }

    /// Runs commands in one request (not atomically: other clients' commands
    /// may run between them); one reply per command, in order.
    pub async fn pipeline<S: AsRef<str>>(&self, commands: &[Vec<S>]) -> Result<Vec<Reply>, PortError> {
        let body: Vec<Vec<&str>> = commands.iter().map(|c| c.iter().map(AsRef::as_ref).collect()).collect();
        let answer = self.post(&self.pipeline_url, serde_json::to_vec(&body).map_err(port)?).await?;
        let Value::Array(items) = answer else {
            return Err(port(format!("pipeline: {}", reply(answer).err().unwrap_or_else(|| "not an array".into()))));
        };
        if items.len() != commands.len() {
            return Err(port(format!("pipeline: {} replies to {} commands", items.len(), commands.len())));
        }
        Ok(items.into_iter().map(reply).collect())
    }

    /// Runs `script` with `EVALSHA`, or with `EVAL` when the server does not
    /// have it cached (a restart, `SCRIPT FLUSH`, a new database).
    pub async fn eval(&self, script: &Script, keys: &[&str], args: &[String]) -> Result<Value, PortError> {
        let numkeys = keys.len().to_string();
        let tail = || keys.iter().copied().chain(args.iter().map(String::as_str));
        let by_sha: Vec<&str> = ["EVALSHA", script.sha.as_str(), &numkeys].into_iter().chain(tail()).collect();
        match self.call(&by_sha).await? {
            Ok(v) => Ok(v),
            Err(e) if e.contains("NOSCRIPT") => {
                let by_text: Vec<&str> = ["EVAL", script.text, &numkeys].into_iter().chain(tail()).collect();
                self.call(&by_text).await?.map_err(|e| port(format!("EVAL: {e}")))
            }
            Err(e) => Err(port(format!("EVALSHA: {e}"))),
        }
    }

    async fn call<S: AsRef<str>>(&self, args: &[S]) -> Result<Reply, PortError> {
        let body: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Ok(reply(self.post(&self.url, serde_json::to_vec(&body).map_err(port)?).await?))
    }

    /// POSTs a JSON body (a command or an array of them); the answer's JSON. Command errors come back as JSON
    /// with a 4xx/5xx status (Upstash says 400) and are returned for the caller
    /// to read; a refused token or a body that is not JSON is a [`PortError`].
    async fn post(&self, url: &str, body: Vec<u8>) -> Result<Value, PortError> {
        let auth = self.auth.clone().ok_or_else(|| port("the REST token is not a valid header value"))?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let req = UpstreamRequest { method: Method::POST, url: url.to_string(), headers, body: body.into() };
        let resp = self.upstream.send(req).await.map_err(port)?;
        let status = resp.status;
        let bytes = collect(resp.body).await?;
        if status == 401 || status == 403 {
            return Err(port(format!("HTTP {status}: the REST token was refused")));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if (200..300).contains(&status) || v.get("error").is_some() => Ok(v),
            _ => {
                let text = String::from_utf8_lossy(&bytes);
                let snippet: String = text.chars().take(200).collect();
                Err(port(format!("HTTP {status}: unexpected answer `{snippet}`")))
            }
        }
    }
}

/// `{"result": …}` or `{"error": "…"}`.
fn reply(v: Value) -> Reply {
    match v {
        Value::Object(mut o) => match (o.remove("error"), o.remove("result")) {
            (Some(Value::String(e)), _) => Err(e),
            (Some(e), _) => Err(e.to_string()),
            (None, Some(r)) => Ok(r),
            (None, None) => Err("an answer with neither result nor error".into()),
        },
        other => Err(format!("unexpected answer `{other}`")),
    }
}

/// The command's name, for error messages (never its arguments).
fn name<S: AsRef<str>>(args: &[S]) -> String {
    args.first().map(|a| a.as_ref().to_ascii_uppercase()).unwrap_or_default()
}

async fn collect(mut body: ByteStream) -> Result<Vec<u8>, PortError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.map_err(port)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_sha_is_redis_sha() {
        // What `SCRIPT LOAD "return 1"` answers (Redis's documentation).
        assert_eq!(Script::new("return 1").sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn replies_are_results_or_errors() {
        assert_eq!(reply(json!({"result": "OK"})), Ok(json!("OK")));
        assert_eq!(reply(json!({"result": null})), Ok(Value::Null));
        assert_eq!(reply(json!({"error": "ERR wrong"})), Err("ERR wrong".into()));
        assert!(reply(json!({})).is_err());
        assert!(reply(json!([1])).is_err());
        assert_eq!(name(&["evalsha", "x"]), "EVALSHA");
    }
}
