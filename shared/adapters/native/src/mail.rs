//! Mail natively: SMTP with lettre (tokio, rustls), an HTTP mail API, or off,
//! chosen by `[mail]` ([`AnyMailer`]).
//!
//! `smtp_url` forms (lettre's own `from_url` sends `smtp://` in clear and has
//! no `tls=none`, so the URL is read here):
//! - `smtps://user:pass@host[:465]`: TLS from the first byte.
//! - `smtp://user:pass@host[:587]`: STARTTLS, required; a password is never
//!   sent over a connection that is not encrypted.
//! - `smtp://host[:587]` (no credentials): STARTTLS when the server offers it.
//! - `smtp://host[:25]?tls=none`: no TLS at all (a relay on this machine).
//! - `?tls=required` / `?tls=opportunistic` choose the STARTTLS mode explicitly.
//!
//! User and password are percent-decoded; a path (`smtp://host/name`) is the
//! EHLO name, else the sender's domain. Errors name the server as
//! `smtp://host:port` and never carry the password.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use oblivious_core::auth::MailSettings;
use oblivious_mailapi::{HttpMailer, NoMailer};
use oblivious_ports::{Mail, Mailer, PortError};

use crate::HttpUpstream;

/// How long one SMTP command may take (connect, TLS, each reply).
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Plain-text UTF-8 mail through one SMTP server; a connection per message.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The sender's domain, for Message-IDs.
    domain: String,
    /// `smtp://host:port`, what errors say of the server.
    shown: String,
    /// The password (raw and as written in the URL), only to scrub it from errors.
    secrets: Vec<String>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("server", &self.shown).field("from", &self.from).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    None,
    Opportunistic,
    Required,
    Wrapper,
}

fn bad(problem: impl std::fmt::Display) -> String {
    format!("mail.smtp_url: {problem}")
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad(format!("the {what} is not UTF-8 once percent-decoded")))
}

impl SmtpMailer {
    /// Reads `url` (the forms in the module docs) and the sender `from`
    /// (`Name <address>`); connects nothing until the first message.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("mail.from: not a mail address ({e})"))?;
        let domain = from.email.domain().to_string();
        // url's errors never quote the input, so none can show the password.
        let u = url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e})")))?;
        let tls_param = u.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        let credentials = match u.password() {
            Some(p) => Some((decode(u.username(), "user name")?, decode(p, "password")?, p.to_string())),
            None if !u.username().is_empty() => return Err(bad("a user name needs a password (user:pass@host)")),
            None => None,
        };
        let mode = match (u.scheme(), tls_param.as_deref()) {
            ("smtps", None | Some("wrapper")) => TlsMode::Wrapper,
            ("smtps", Some(t)) => return Err(bad(format!("smtps:// is TLS from the start; tls={t} contradicts it"))),
            ("smtp", None) if credentials.is_some() => TlsMode::Required,
            ("smtp", None | Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtp", Some("required")) => TlsMode::Required,
            ("smtp", Some("none")) => TlsMode::None,
            ("smtp", Some(t)) => {
                return Err(bad(format!("tls={t} is not one of none, opportunistic, required")));
            }
            (s, _) => return Err(bad(format!("the scheme is {s}, not smtp or smtps"))),
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(bad("no host")),
        };
        let port = u.port().unwrap_or(match mode {
            TlsMode::None => 25,
            TlsMode::Opportunistic | TlsMode::Required => 587,
            TlsMode::Wrapper => 465,
        });
        let tls = match mode {
            TlsMode::None => Tls::None,
            _ => {
                let params = TlsParameters::new(host.clone()).map_err(|e| bad(format!("TLS setup: {e}")))?;
                match mode {
                    TlsMode::Opportunistic => Tls::Opportunistic(params),
                    TlsMode::Required => Tls::Required(params),
                    _ => Tls::Wrapper(params),
                }
            }
        };
        let path = u.path().trim_matches('/');
        let hello = if path.is_empty() { domain.clone() } else { decode(path, "EHLO name")? };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT))
            .hello_name(ClientId::Domain(hello));
        let mut secrets = Vec::new();
        if let Some((user, password, written)) = credentials {
            secrets.extend([password.clone(), written].into_iter().filter(|s| !s.is_empty()));
            builder = builder.credentials(Credentials::new(user, password));
        }
        let shown_host = if host.contains(':') { format!("[{host}]") } else { host };
        let scheme = if mode == TlsMode::Wrapper { "smtps" } else { "smtp" };
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
            domain,
            shown: format!("{scheme}://{shown_host}:{port}"),
            secrets,
        })
    }

    fn error(&self, detail: impl std::fmt::Display) -> PortError {
        let mut text = detail.to_string();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "[redacted]");
        }
        PortError(format!("smtp {}: {text}", self.shown))
    }
}

/// The text as a body. lettre ends DATA with CRLF . CRLF after the body, so
/// a 7bit or quoted-printable text's own last line end would arrive as an extra
/// empty line: it is left to that CRLF (a base64 body keeps its bytes exactly).
fn body(text: String) -> Body {
    let Some(trimmed) = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)) else {
        return Body::new(text);
    };
    let body = Body::new(trimmed.to_string());
    if body.encoding() == ContentTransferEncoding::Base64 {
        Body::new(text)
    } else {
        body
    }
}

/// A subject on one line: a line break in a header would start another header.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

impl Mailer for SmtpMailer {
    async fn send(&self, mail: Mail) -> Result<(), PortError> {
        // The address stays out of the error: errors are logged.
        let to: Mailbox = mail.to.parse().map_err(|_| self.error("the recipient is not a valid mail address"))?;
        let message_id = format!("<{:016x}{:016x}@{}>", rand::random::<u64>(), rand::random::<u64>(), self.domain);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&mail.subject))
            .message_id(Some(message_id))
            .header(ContentType::TEXT_PLAIN)
            .body(body(mail.text))
            .map_err(|e| self.error(format!("building the message: {e}")))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| self.error(e))
    }
}

/// The mailer a native shell names: SMTP, an HTTP mail API, or off.
#[derive(Debug)]
pub enum AnyMailer {
    Smtp(Box<SmtpMailer>),
    Api(HttpMailer<HttpUpstream>),
    Off(NoMailer),
}

impl AnyMailer {
    /// The mailer `[mail]` describes (`smtp_url`, else `api_url` over
    /// `upstream`, else off). Nothing is contacted until the first message.
    pub fn from_settings(mail: &MailSettings, upstream: HttpUpstream) -> Result<Self, String> {
        match (&mail.smtp_url, &mail.api_url) {
            (Some(url), _) => SmtpMailer::new(url, &mail.from).map(|m| AnyMailer::Smtp(Box::new(m))),
            (None, Some(url)) => {
                HttpMailer::new(upstream, url, mail.api_key.as_deref(), &mail.from).map(AnyMailer::Api)
            }
            (None, None) => Ok(AnyMailer::Off(NoMailer)),
        }
    }
}

impl Mailer for AnyMailer {
    async fn send(&self, mail: Mail) -> Result<(), PortError> {
        match self {
            AnyMailer::Smtp(m) => m.send(mail).await,
            AnyMailer::Api(m) => m.send(mail).await,
            AnyMailer::Off(m) => m.send(mail).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "Oblivious <no-reply@example.com>";

    #[test]
    fn urls_choose_tls_and_port() {
        let shown = |url: &str| SmtpMailer::new(url, FROM).map(|m| m.shown);
        assert_eq!(shown("smtps://u:p@mail.example").unwrap(), "smtps://mail.example:465");
        assert_eq!(shown("smtp://u:p@mail.example").unwrap(), "smtp://mail.example:587");
        assert_eq!(shown("smtp://127.0.0.1?tls=none").unwrap(), "smtp://127.0.0.1:25");
        assert_eq!(shown("smtp://[::1]:2525?tls=none").unwrap(), "smtp://[::1]:2525");
        for (url, problem) in [
            ("http://mail.example", "scheme"),
            ("smtp://mail.example?tls=maybe", "tls=maybe"),
            ("smtps://mail.example?tls=none", "contradicts"),
            ("smtp://user@mail.example", "needs a password"),
            ("smtp://", "no host"),
            ("smtp://:2525?tls=none", "host"),
        ] {
            let e = shown(url).unwrap_err();
            assert!(e.starts_with("mail.smtp_url: ") && e.contains(problem), "{url}: {e}");
        }
        assert!(SmtpMailer::new("smtp://h?tls=none", "nobody").unwrap_err().starts_with("mail.from:"));
    }

    #[test]
    fn the_password_stays_out_of_errors() {
        let m = SmtpMailer::new("smtp://me:p%40ss-w0rd@mail.example:2525", FROM).unwrap();
        assert_eq!(m.secrets, ["p@ss-w0rd", "p%40ss-w0rd"]);
        let e = m.error("server said p@ss-w0rd and p%40ss-w0rd");
        assert_eq!(e.0, "smtp smtp://mail.example:2525: server said [redacted] and [redacted]");
        assert!(!format!("{m:?}").contains("w0rd"));
    }

    #[test]
    fn subjects_stay_on_one_line() {
        assert_eq!(one_line("a\r\nBcc: x@y\tz"), "a  Bcc: x@y z");
    }
}
