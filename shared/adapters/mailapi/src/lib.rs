//! [`Mailer`] over an HTTP mail API, for runtimes that cannot open SMTP
//! connections (the Cloudflare Worker) and anywhere HTTPS is easier; and
//! [`NoMailer`], the adapter for "mail is off". All HTTP goes through the
//! [`Upstream`] port: reqwest natively, the Workers fetch API at the edge.
//!
//! The wire shape is Resend's (`POST /emails`): a JSON body
//! `{"from", "to": [..], "subject", "text"}` with `Authorization: Bearer <key>`;
//! any 2xx means the API accepted the message. `api_url` is the URL posted to,
//! path included (`https://api.resend.com/emails`), so any API of that shape works.

use futures_util::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use oblivious_core::auth::MailSettings;
use oblivious_ports::{Mail, Mailer, PortError, Upstream, UpstreamRequest};

/// What [`NoMailer`] answers every message with.
pub const MAIL_OFF: &str = "mail is not configured ([mail] in the config file)";

/// How much of an error answer's body is read, and how much of it is quoted.
const BODY_READ_LIMIT: usize = 4096;
const EXCERPT_CHARS: usize = 200;

/// Mail is off: every message is refused with [`MAIL_OFF`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMailer;

impl Mailer for NoMailer {
    async fn send(&self, _mail: Mail) -> Result<(), PortError> {
        Err(PortError(MAIL_OFF.into()))
    }
}

/// Posts each message to an HTTP mail API (see the crate docs).
pub struct HttpMailer<U> {
    upstream: U,
    url: String,
    /// `url` without its query and credentials: what errors show of it.
    shown_url: String,
    from: String,
    /// `Authorization: Bearer <key>`, marked sensitive; none without a key.
    auth: Option<HeaderValue>,
    /// The key, only to scrub it from anything an error quotes.
    key: Option<String>,
}

impl<U> std::fmt::Debug for HttpMailer<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMailer").field("url", &self.shown_url).field("from", &self.from).finish_non_exhaustive()
    }
}

impl<U: Upstream> HttpMailer<U> {
    /// `url`: where messages are POSTed; `key`: the Bearer key (none: no
    /// `Authorization` header); `from`: the sender, `Name <address>`.
    pub fn new(upstream: U, url: &str, key: Option<&str>, from: &str) -> Result<Self, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("mail.api_url: must start with https:// or http://".into());
        }
        let key = key.filter(|k| !k.is_empty());
        let auth = match key {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "mail.api_key: not a valid HTTP header value".to_string())?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(HttpMailer {
            upstream,
            shown_url: shown_url(url),
            url: url.to_string(),
            from: from.to_string(),
            auth,
            key: key.map(str::to_string),
        })
    }

    /// An error quoting `detail` with the key and the URL's query scrubbed out.
    fn error(&self, detail: &str) -> PortError {
        let mut text = detail.replace(&self.url, &self.shown_url);
        if let Some(k) = &self.key {
            text = text.replace(k.as_str(), "[redacted]");
        }
        PortError(format!("mail API {}: {text}", self.shown_url))
    }
}

impl<U: Upstream> Mailer for HttpMailer<U> {
    async fn send(&self, mail: Mail) -> Result<(), PortError> {
        let body = serde_json::json!({
            "from": self.from,
            "to": [mail.to],
            "subject": mail.subject,
            "text": mail.text,
        });
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let body = serde_json::to_vec(&body).map_err(|e| self.error(&e.to_string()))?;
        let req = UpstreamRequest { method: Method::POST, url: self.url.clone(), headers, body: body.into() };
        let resp = self.upstream.send(req).await.map_err(|e| self.error(&e.to_string()))?;
        if (200..300).contains(&resp.status) {
            return Ok(());
        }
        let status = resp.status;
        let mut stream = resp.body;
        let mut bytes = Vec::new();
        while bytes.len() < BODY_READ_LIMIT {
            match stream.next().await {
                Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
                // What arrived before the body failed still says something.
                Some(Err(_)) | None => break,
            }
        }
        let excerpt = excerpt(&bytes);
        Err(self.error(&if excerpt.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {excerpt}")
        }))
    }
}

/// Mail through an HTTP API, or off: the one type a runtime without SMTP (the
/// edge) names, chosen by `[mail]` at start.
pub enum EdgeMailer<U> {
    Api(HttpMailer<U>),
    Off(NoMailer),
}

impl<U> std::fmt::Debug for EdgeMailer<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeMailer::Api(m) => f.debug_tuple("Api").field(m).finish(),
            EdgeMailer::Off(m) => f.debug_tuple("Off").field(m).finish(),
        }
    }
}

impl<U: Upstream> EdgeMailer<U> {
    /// `api_url` set: the API; nothing set: off. `smtp_url` is refused (with
    /// the key and the problem): this runtime cannot open SMTP connections.
    pub fn from_settings(upstream: U, mail: &MailSettings) -> Result<Self, String> {
        match (&mail.smtp_url, &mail.api_url) {
            (Some(_), _) => Err("mail.smtp_url: this runtime cannot open SMTP connections; \
                                 set mail.api_url (an HTTP mail API) instead"
                .into()),
            (None, Some(url)) => {
                HttpMailer::new(upstream, url, mail.api_key.as_deref(), &mail.from).map(EdgeMailer::Api)
            }
            (None, None) => Ok(EdgeMailer::Off(NoMailer)),
        }
    }
}

impl<U: Upstream> Mailer for EdgeMailer<U> {
    async fn send(&self, mail: Mail) -> Result<(), PortError> {
        match self {
            EdgeMailer::Api(m) => m.send(mail).await,
            EdgeMailer::Off(m) => m.send(mail).await,
        }
    }
}

/// `scheme://host[:port]/path`: a URL without its credentials, query or fragment.
fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// The start of an error body as one line of text: at most
/// [`EXCERPT_CHARS`] characters, control characters as spaces.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(EXCERPT_CHARS).collect::<String>();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_keep_no_credentials_or_query() {
        assert_eq!(shown_url("https://api.resend.com/emails"), "https://api.resend.com/emails");
        assert_eq!(
            shown_url("https://u:p@mail.example:8443/v1/send?key=s3cret#x"),
            "https://mail.example:8443/v1/send"
        );
        assert_eq!(shown_url("http://127.0.0.1:2526"), "http://127.0.0.1:2526");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt(b"{\"message\":\n\t\"bad\"}\r\n"), "{\"message\": \"bad\"}");
        let long = "x".repeat(500);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }

    #[test]
    fn settings_choose_the_api_or_off_and_refuse_smtp() {
        #[derive(Clone)]
        struct Never;
        impl Upstream for Never {
            async fn send(
                &self,
                _req: UpstreamRequest,
            ) -> Result<oblivious_ports::UpstreamResponse, oblivious_ports::UpstreamError> {
                Err(oblivious_ports::UpstreamError::Connect("no network in unit tests".into()))
            }
        }
        let off = MailSettings::default();
        assert!(matches!(EdgeMailer::from_settings(Never, &off), Ok(EdgeMailer::Off(_))));
        let api = MailSettings {
            api_url: Some("https://api.example/emails".into()),
            api_key: Some("re_key".into()),
            from: "O <no-reply@example.com>".into(),
            ..Default::default()
        };
        assert!(matches!(EdgeMailer::from_settings(Never, &api), Ok(EdgeMailer::Api(_))));
        let smtp = MailSettings { smtp_url: Some("smtp://relay:25".into()), ..api.clone() };
        let e = EdgeMailer::from_settings(Never, &smtp).unwrap_err();
        assert!(e.starts_with("mail.smtp_url:"), "{e}");
        let bad_key = MailSettings { api_key: Some("re_\nkey".into()), ..api };
        assert!(EdgeMailer::from_settings(Never, &bad_key).unwrap_err().starts_with("mail.api_key:"));
    }
}
