//! The `[auth]` and `[mail]` sections of the config file.

use serde::Deserialize;

use crate::model::Role;

/// Who may create an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Anyone with an email address.
    #[default]
    Open,
    /// Only with an invitation code an admin made.
    Invite,
    /// No one signs up; admins create users.
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub registration: Registration,
    /// Units (1,000,000 = $1) a new account starts with.
    pub starting_balance: i64,
    /// The group a new account lands in.
    pub default_group: String,
    pub min_password_length: usize,
    /// Refuse password sign-in until the address is verified.
    pub require_verified_email: bool,
    /// Lifetime of an access token (a signed JWT).
    pub access_token_seconds: u64,
    /// Lifetime of a session's refresh token (renewed on each rotation).
    pub refresh_token_days: u64,
    /// A new signing key is made when the newest is older than this.
    pub signing_key_rotation_hours: u64,
    /// Verification and reset links expire after this long.
    pub email_link_minutes: u64,
    /// Roles that must have a second factor to sign in.
    pub require_2fa: Vec<Role>,
    /// The web app's public origin, for links in mail and OIDC redirects
    /// (`http://127.0.0.1:8080` when unset: the local default).
    pub base_url: Option<String>,
    /// `Secure` on session cookies. Off only for plain-HTTP deployments
    /// other than localhost (browsers treat localhost as secure).
    pub cookie_secure: bool,
    /// Failed password sign-ins before an account locks.
    pub lockout_threshold: i64,
    /// The first lock's length; each further failure doubles it, up to an hour.
    pub lockout_seconds: u64,
    /// Sign-in and sign-up attempts per client IP per minute (429 past it).
    pub attempts_per_ip_per_minute: i64,
    pub oidc: Vec<OidcProvider>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            registration: Registration::Open,
            starting_balance: 0,
            default_group: crate::config::DEFAULT_GROUP.into(),
            min_password_length: 10,
            require_verified_email: false,
            access_token_seconds: 900,
            refresh_token_days: 30,
            signing_key_rotation_hours: 24,
            email_link_minutes: 60,
            require_2fa: vec![],
            base_url: None,
            cookie_secure: true,
            lockout_threshold: 5,
            lockout_seconds: 30,
            attempts_per_ip_per_minute: 30,
            oidc: vec![],
        }
    }
}

impl AuthSettings {
    pub fn registration_name(&self) -> &'static str {
        match self.registration {
            Registration::Open => "open",
            Registration::Invite => "invite",
            Registration::Closed => "closed",
        }
    }

    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().unwrap_or("http://127.0.0.1:8080").trim_end_matches('/')
    }
}

/// What kind of sign-in a provider speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenID Connect with discovery (Google, Microsoft, Keycloak, Authentik, …).
    #[default]
    Oidc,
    /// GitHub's OAuth2 and its user and email API (GitHub is not an OpenID provider).
    Github,
}

/// One `[[auth.oidc]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short name in URLs and the identities table (`google`, `github`).
    pub name: String,
    #[serde(default)]
    pub kind: ProviderKind,
    /// What the sign-in button says (the name when unset).
    #[serde(default)]
    pub display_name: Option<String>,
    /// The issuer; discovery reads `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<String>,
    pub client_id: String,
    /// `${ENV}` is expanded.
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// GitHub preset only: where its OAuth and API endpoints live (GitHub
    /// Enterprise, or a test double); github.com's when unset.
    #[serde(default)]
    pub github_url: Option<String>,
    #[serde(default)]
    pub github_api_url: Option<String>,
}

impl OidcProvider {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ProviderKind::Oidc => "oidc",
            ProviderKind::Github => "github",
        }
    }

    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    /// Scopes asked for: the configured ones, else the kind's defaults.
    pub fn scopes(&self) -> Vec<String> {
        if !self.scopes.is_empty() {
            return self.scopes.clone();
        }
        match self.kind {
            ProviderKind::Oidc => vec!["openid".into(), "email".into(), "profile".into()],
            ProviderKind::Github => vec!["read:user".into(), "user:email".into()],
        }
    }
}

/// `[mail]`: how verification and reset mail leaves. One of `smtp_url` or
/// `api_url`; neither means mail is off (sign-up still works, links are not sent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// `smtp://user:pass@host:port` (STARTTLS when offered), `smtps://…` (TLS),
    /// `smtp://host:port?tls=none` for a local relay; `${ENV}` is expanded.
    pub smtp_url: Option<String>,
    /// An HTTP mail API taking `{from, to, subject, text}` JSON with a Bearer
    /// key (Resend's shape; the edge's only way out); `${ENV}` is expanded.
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    /// The sender, `Name <address>`.
    pub from: String,
}

impl MailSettings {
    pub fn enabled(&self) -> bool {
        self.smtp_url.is_some() || self.api_url.is_some()
    }
}

/// Validates and expands `[auth]` and `[mail]`: the dotted key and the problem on error.
pub(crate) fn settings_check(
    mut auth: AuthSettings,
    mut mail: MailSettings,
    groups: &std::collections::BTreeSet<&str>,
    expand: impl Fn(&str) -> Result<String, String>,
) -> Result<(AuthSettings, MailSettings), (String, String)> {
    let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    if !(0..=crate::money::MAX_UNITS).contains(&auth.starting_balance) {
        return bad("auth.starting_balance", "must be from 0 to 1e15 units");
    }
    if !groups.contains(auth.default_group.as_str()) {
        return bad("auth.default_group", "names no group in [groups]");
    }
    if !(8..=256).contains(&auth.min_password_length) {
        return bad("auth.min_password_length", "must be from 8 to 256");
    }
    for (key, v) in [
        ("auth.access_token_seconds", auth.access_token_seconds),
        ("auth.refresh_token_days", auth.refresh_token_days),
        ("auth.signing_key_rotation_hours", auth.signing_key_rotation_hours),
        ("auth.email_link_minutes", auth.email_link_minutes),
        ("auth.lockout_seconds", auth.lockout_seconds),
    ] {
        if v == 0 {
            return bad(key, "must be at least 1");
        }
    }
    if auth.access_token_seconds > 86_400 {
        return bad("auth.access_token_seconds", "must be at most 86400 (a day): revocation waits for it");
    }
    if auth.lockout_threshold < 1 || auth.attempts_per_ip_per_minute < 1 {
        return bad("auth.lockout_threshold", "limits must be at least 1");
    }
    if let Some(url) = &auth.base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad("auth.base_url", "must start with http:// or https://");
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in auth.oidc.iter_mut().enumerate() {
        let at = |f: &str| format!("auth.oidc[{i}].{f}");
        let valid_name = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err((at("name"), "must be 1-32 of a-z, 0-9, - and _".into()));
        }
        if !names.insert(p.name.clone()) {
            return Err((at("name"), format!("`{}` is declared twice", p.name)));
        }
        p.client_id = expand(&p.client_id).map_err(|m| (at("client_id"), m))?;
        p.client_secret = expand(&p.client_secret).map_err(|m| (at("client_secret"), m))?;
        if p.client_id.is_empty() {
            return Err((at("client_id"), "is required".into()));
        }
        match p.kind {
            ProviderKind::Oidc => match p.issuer.as_deref() {
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => {}
                _ => return Err((at("issuer"), "an OIDC provider needs an http(s) issuer URL".into())),
            },
            ProviderKind::Github => {
                if p.issuer.is_some() {
                    return Err((at("issuer"), "GitHub is not an OpenID provider: leave issuer out".into()));
                }
            }
        }
    }
    for (key, v) in [
        ("mail.smtp_url", &mut mail.smtp_url),
        ("mail.api_url", &mut mail.api_url),
        ("mail.api_key", &mut mail.api_key),
    ] {
        if let Some(raw) = v.as_deref() {
            *v = Some(expand(raw).map_err(|m| (key.to_string(), m))?);
        }
    }
    if mail.smtp_url.is_some() && mail.api_url.is_some() {
        return bad("mail.api_url", "set smtp_url or api_url, not both");
    }
    if let Some(u) = &mail.smtp_url {
        if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
            return bad("mail.smtp_url", "must start with smtp:// or smtps://");
        }
    }
    if let Some(u) = &mail.api_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return bad("mail.api_url", "must start with https:// or http://");
        }
    }
    if mail.enabled() && !mail.from.contains('@') {
        return bad("mail.from", "needs a sender address, like `Oblivious <no-reply@example.com>`");
    }
    Ok((auth, mail))
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn env(k: &str) -> Option<String> {
        (k == "SECRET").then(|| "s3cret".into())
    }

    #[test]
    fn auth_and_mail_are_checked_with_their_keys() {
        let ok = "[auth]\nregistration = \"invite\"\nrequire_2fa = [\"root\"]\n\n[[auth.oidc]]\nname = \"google\"\n\
                  issuer = \"https://accounts.google.com\"\nclient_id = \"c\"\nclient_secret = \"${SECRET}\"\n\n\
                  [mail]\nsmtp_url = \"smtp://u:${SECRET}@mail.example.com:587\"\nfrom = \"O <no-reply@example.com>\"\n";
        let c = parse("o.toml", ok, env).unwrap();
        assert_eq!(c.auth.oidc[0].client_secret, "s3cret");
        assert_eq!(c.auth.oidc[0].scopes(), ["openid", "email", "profile"]);
        assert_eq!(c.mail.smtp_url.as_deref(), Some("smtp://u:s3cret@mail.example.com:587"));
        assert!(c.mail.enabled());
        let bad = |text: &str| parse("o.toml", text, env).unwrap_err().key;
        assert_eq!(bad("[auth]\nmin_password_length = 4\n"), "auth.min_password_length");
        assert_eq!(bad("[auth]\ndefault_group = \"vip\"\n"), "auth.default_group");
        assert_eq!(bad("[auth]\naccess_token_seconds = 0\n"), "auth.access_token_seconds");
        assert_eq!(bad("[auth]\nbase_url = \"ftp://x\"\n"), "auth.base_url");
        assert_eq!(
            bad("[[auth.oidc]]\nname = \"Bad Name\"\nclient_id = \"c\"\nclient_secret = \"s\"\n"),
            "auth.oidc[0].name"
        );
        assert_eq!(
            bad("[[auth.oidc]]\nname = \"g\"\nclient_id = \"c\"\nclient_secret = \"s\"\n"),
            "auth.oidc[0].issuer"
        );
        assert_eq!(
            bad("[[auth.oidc]]\nname = \"gh\"\nkind = \"github\"\nclient_id = \"c\"\nclient_secret = \"${NOPE}\"\n"),
            "auth.oidc[0].client_secret"
        );
        assert_eq!(bad("[mail]\nsmtp_url = \"http://x\"\nfrom = \"a@b.c\"\n"), "mail.smtp_url");
        assert_eq!(bad("[mail]\napi_url = \"https://api.example.com/emails\"\n"), "mail.from");
        assert!(parse("o.toml", "[auth]\nregistration = \"sometimes\"\n", env).is_err());
    }
}
