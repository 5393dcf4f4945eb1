#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The mail adapters against a real SMTP server and an HTTP mail API (the
//! sink, `tests/mail/sink.py`): what each sends arrives with its sender,
//! recipient, subject and UTF-8 text intact; logins, refused keys and refused
//! connections are errors that never carry the password or the key.

use oblivious_core::auth::MailSettings;
use oblivious_e2e::mail::{self, API_KEY, SMTP_PASSWORD, SMTP_USER};
use oblivious_mailapi::MAIL_OFF;
use oblivious_native::{AnyMailer, HttpMailer, HttpUpstream, SmtpMailer};
use oblivious_ports::{Mail, Mailer};

const FROM: &str = "Oblivious <no-reply@example.com>";
const SUBJECT: &str = "验证 your address — Oblivious";
const TEXT: &str = "Hello,\n\nyour code is 493 021 (验证码).\nIt expires in 30 minutes.\n";

fn mail_to(to: &str) -> Mail {
    Mail { to: to.to_string(), subject: SUBJECT.into(), text: TEXT.into() }
}

fn api_mailer(key: &str) -> HttpMailer<HttpUpstream> {
    HttpMailer::new(HttpUpstream::new().unwrap(), &mail::api_url(), Some(key), FROM).unwrap()
}

/// A 127.0.0.1 port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn smtp_delivers_plain_utf8_text() {
    let to = mail::address("smtp");
    SmtpMailer::new(&mail::smtp_url(), FROM).unwrap().send(mail_to(&to)).await.unwrap();
    let got = mail::wait_for(&to).await;
    assert_eq!(got.via, "smtp");
    assert_eq!(got.to, vec![to.clone()]);
    assert_eq!(got.from, FROM);
    assert_eq!(got.subject, SUBJECT);
    assert_eq!(got.text, TEXT);
    let ct = got.content_type.to_ascii_lowercase();
    assert!(ct.starts_with("text/plain") && ct.contains("utf-8"), "{ct}");
    assert_eq!(got.auth_user, None);
    assert_eq!(mail::messages(&to).await.len(), 1, "sent once, received once");
}

/// Mostly non-ASCII text goes as base64 (lettre's choice), and still arrives as written.
#[tokio::test]
async fn smtp_delivers_mostly_non_ascii_text() {
    let to = mail::address("cjk");
    let text = "验证码：493021\n请在三十分钟内使用。如果不是您本人操作，请忽略。\n";
    let mail = Mail { to: to.clone(), subject: "验证码".into(), text: text.into() };
    SmtpMailer::new(&mail::smtp_url(), FROM).unwrap().send(mail).await.unwrap();
    let got = mail::wait_for(&to).await;
    assert_eq!((got.subject.as_str(), got.text.as_str()), ("验证码", text));
}

#[tokio::test]
async fn smtp_logs_in_with_a_percent_encoded_password() {
    let to = mail::address("login");
    let mailer = SmtpMailer::new(&mail::smtp_url_with_login(SMTP_PASSWORD), FROM).unwrap();
    mailer.send(mail_to(&to)).await.unwrap();
    let got = mail::wait_for(&to).await;
    assert_eq!(got.auth_user.as_deref(), Some(SMTP_USER));
    assert_eq!(got.subject, SUBJECT);
}

#[tokio::test]
async fn a_refused_login_is_an_error_without_the_password() {
    let to = mail::address("badlogin");
    let wrong = "wrong-s3cret-pw";
    let e = SmtpMailer::new(&mail::smtp_url_with_login(wrong), FROM).unwrap().send(mail_to(&to)).await.unwrap_err();
    assert!(e.0.contains("535"), "{e}");
    assert!(!e.0.contains(wrong), "the password is in the error: {e}");
    assert!(mail::messages(&to).await.is_empty());
}

/// `smtp://user:pass@…` without `tls=none` requires STARTTLS; the sink offers
/// none, so the message fails before the password could cross in clear.
#[tokio::test]
async fn a_password_is_never_sent_without_tls_unless_the_url_says_so() {
    let to = mail::address("cleartext");
    let url = format!("smtp://{SMTP_USER}:clear-text-pw@{}", mail::smtp_addr());
    let e = SmtpMailer::new(&url, FROM).unwrap().send(mail_to(&to)).await.unwrap_err();
    assert!(!e.0.contains("clear-text-pw"), "{e}");
    assert!(mail::messages(&to).await.is_empty());
}

#[tokio::test]
async fn the_api_delivers_to_the_same_sink() {
    let to = mail::address("api");
    api_mailer(API_KEY).send(mail_to(&to)).await.unwrap();
    let got = mail::wait_for(&to).await;
    assert_eq!(got.via, "api");
    assert_eq!(got.to, vec![to.clone()]);
    assert_eq!(got.from, FROM);
    assert_eq!(got.subject, SUBJECT);
    assert_eq!(got.text, TEXT);
    assert!(got.content_type.starts_with("application/json"), "{}", got.content_type);
    mail::forget(&to).await;
    assert!(mail::messages(&to).await.is_empty(), "DELETE /messages?to= forgets them");
}

/// The sink's 403 quotes the key it got; the error keeps the status and the
/// message but not the key.
#[tokio::test]
async fn a_refused_api_key_is_an_error_without_the_key() {
    let to = mail::address("badkey");
    let wrong = "re_wrong_key_5ecret";
    let e = api_mailer(wrong).send(mail_to(&to)).await.unwrap_err();
    assert!(e.0.contains("HTTP 403") && e.0.contains("API key is invalid"), "{e}");
    assert!(e.0.contains("[redacted]") && !e.0.contains(wrong), "{e}");
    let e = HttpMailer::new(HttpUpstream::new().unwrap(), &mail::api_url(), None, FROM)
        .unwrap()
        .send(mail_to(&to))
        .await
        .unwrap_err();
    assert!(e.0.contains("HTTP 401"), "{e}");
    assert!(mail::messages(&to).await.is_empty());
}

#[tokio::test]
async fn refused_connections_are_errors() {
    let port = closed_port();
    let e = SmtpMailer::new(&format!("smtp://{SMTP_USER}:pw-{port}@127.0.0.1:{port}?tls=none"), FROM)
        .unwrap()
        .send(mail_to("nobody@example.test"))
        .await
        .unwrap_err();
    assert!(e.0.starts_with(&format!("smtp smtp://127.0.0.1:{port}: ")), "{e}");
    assert!(!e.0.contains(&format!("pw-{port}")), "{e}");
    let url = format!("http://127.0.0.1:{port}/emails?key=query-5ecret");
    let e = HttpMailer::new(HttpUpstream::new().unwrap(), &url, Some(API_KEY), FROM)
        .unwrap()
        .send(mail_to("nobody@example.test"))
        .await
        .unwrap_err();
    assert!(e.0.starts_with(&format!("mail API http://127.0.0.1:{port}/emails: ")), "{e}");
    assert!(!e.0.contains("query-5ecret") && !e.0.contains(API_KEY), "{e}");
}

/// The enum the native shells name: `[mail]` chooses SMTP, the API or off.
#[tokio::test]
async fn settings_choose_the_mailer() {
    let smtp = MailSettings { smtp_url: Some(mail::smtp_url()), from: FROM.into(), ..Default::default() };
    let api = MailSettings {
        api_url: Some(mail::api_url()),
        api_key: Some(API_KEY.into()),
        from: FROM.into(),
        ..Default::default()
    };
    for (settings, via) in [(smtp, "smtp"), (api, "api")] {
        let to = mail::address(via);
        AnyMailer::from_settings(&settings, HttpUpstream::new().unwrap()).unwrap().send(mail_to(&to)).await.unwrap();
        assert_eq!(mail::wait_for(&to).await.via, via);
    }
    let off = AnyMailer::from_settings(&MailSettings::default(), HttpUpstream::new().unwrap()).unwrap();
    assert_eq!(off.send(mail_to("nobody@example.test")).await.unwrap_err().0, MAIL_OFF);
}
