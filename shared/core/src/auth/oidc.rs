//! Sign-in with an OpenID provider or GitHub, sans IO: PKCE, discovery, the
//! authorization URL, the callback, the token request and its answer, ID-token
//! verification against the provider's JWKS, userinfo, and GitHub's OAuth2 +
//! REST preset. The caller does the HTTP and passes `now` (Unix seconds) and
//! random bytes in; nothing here reads a clock or draws randomness.
//!
//! A sign-in, as the routes drive it:
//! 1. `GET {discovery_url(issuer)}` → [`parse_discovery`] (cacheable: it is `Serialize`);
//!    `GET jwks_uri` → [`parse_jwks`].
//! 2. Draw random bytes for the state, the nonce and the PKCE verifier ([`random_token`],
//!    [`pkce_verifier`]), keep them server-side, redirect to [`authorization_url`].
//! 3. On the callback, [`parse_callback`] checks `state` (and `iss`) and yields the code.
//! 4. POST [`token_request`] to the token endpoint, read it with [`parse_token_response`].
//! 5. [`verify_id_token`] → [`Claims`]; optionally `GET userinfo` → [`parse_userinfo`], [`Claims::or`].
//!
//! GitHub is not an OpenID provider: [`GithubEndpoints`] for the URLs, the same
//! authorization URL (no nonce) and token request (client_secret_post), then
//! `GET /user` and `GET /user/emails` → [`parse_github_user`], [`parse_github_emails`],
//! [`github_claims`].

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::OidcProvider;

/// base64url without padding, strict: JWS segments, PKCE.
const B64: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// base64url with or without padding: JWK members (some providers pad them).
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: i64 = 60;
/// The only PKCE method sent.
pub const CODE_CHALLENGE_METHOD: &str = "S256";
/// The token request's content type.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// An ID token longer than this is refused before any decoding.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("invalid {what}: {detail}")]
    InvalidDocument { what: &'static str, detail: String },
    #[error("invalid URL `{url}`: {detail}")]
    InvalidUrl { url: String, detail: String },
    #[error("the provider says its issuer is `{got}`, but `{expected}` is configured")]
    IssuerMismatch { expected: String, got: String },
    #[error("the provider answered `{error}`{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider { error: String, description: Option<String> },
    #[error("{what} answered HTTP {status}{}", message.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http { what: &'static str, status: u16, message: Option<String> },
    #[error("the callback's state is not the one this sign-in sent")]
    StateMismatch,
    #[error("the callback carries no code")]
    MissingCode,

    #[error("malformed ID token: {0}")]
    MalformedToken(&'static str),
    #[error("the ID token is unsigned (alg none)")]
    AlgNone,
    #[error("the ID token is signed with a shared secret ({0}); only RS256 and ES256 are accepted")]
    SymmetricAlg(String),
    #[error("the ID token is signed with {0}; only RS256 and ES256 are accepted")]
    UnsupportedAlg(String),
    #[error("no key in the provider's JWKS has kid `{0}`")]
    UnknownKid(String),
    #[error("the token names no kid and the provider's JWKS has {found} {kty} signing keys, not one")]
    NoKey { kty: &'static str, found: usize },
    #[error("unusable JWK: {0}")]
    BadKey(String),
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token's issuer is `{got}`, not `{expected}`")]
    WrongIssuer { expected: String, got: String },
    #[error("the ID token's audience does not include this client")]
    WrongAudience,
    #[error("the ID token's authorized party is {}, not this client", got.as_deref().unwrap_or("missing"))]
    WrongAuthorizedParty { got: Option<String> },
    #[error("the ID token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("the ID token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("the ID token was issued in the future ({iat}, now {now})")]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("the ID token's nonce is not the one this sign-in sent")]
    NonceMismatch,
    #[error("the ID token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the userinfo answer is for another subject")]
    SubjectMismatch,
}

fn invalid(what: &'static str, detail: impl Into<String>) -> OidcError {
    OidcError::InvalidDocument { what, detail: detail.into() }
}

/// Whether two issuer URLs are the same, ignoring trailing slashes.
pub fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

// ---------------------------------------------------------------- randomness in

/// base64url (no padding) of caller-drawn random bytes: state and nonce
/// values (16 bytes or more).
pub fn random_token(random: &[u8]) -> String {
    B64.encode(random)
}

/// A PKCE code verifier (RFC 7636): 43 base64url characters from 32 random bytes.
pub fn pkce_verifier(random: &[u8; 32]) -> String {
    B64.encode(random)
}

/// The S256 code challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

// ---------------------------------------------------------------- discovery

/// `{issuer}/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic` (the OAuth2 default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The parts of an OpenID provider's configuration sign-in needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

impl Discovery {
    /// client_secret_basic unless the provider lists only client_secret_post
    /// (an empty list means basic, RFC 8414).
    pub fn client_auth(&self) -> ClientAuth {
        let m = &self.token_endpoint_auth_methods_supported;
        if !m.iter().any(|s| s == "client_secret_basic") && m.iter().any(|s| s == "client_secret_post") {
            ClientAuth::ClientSecretPost
        } else {
            ClientAuth::ClientSecretBasic
        }
    }
}

fn check_http_url(what: &'static str, url: &str) -> Result<(), OidcError> {
    let bad = |detail: &str| OidcError::InvalidUrl { url: url.to_string(), detail: format!("{what}: {detail}") };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("not http(s)"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("has a fragment"));
    }
    Ok(())
}

/// Reads `/.well-known/openid-configuration` and checks that the issuer it
/// states is the configured one (trailing slashes aside) and that its
/// endpoints are http(s) URLs.
pub fn parse_discovery(body: &[u8], configured_issuer: &str) -> Result<Discovery, OidcError> {
    let d: Discovery = serde_json::from_slice(body).map_err(|e| invalid("discovery document", e.to_string()))?;
    if !same_issuer(&d.issuer, configured_issuer) {
        return Err(OidcError::IssuerMismatch { expected: configured_issuer.to_string(), got: d.issuer });
    }
    check_http_url("authorization_endpoint", &d.authorization_endpoint)?;
    check_http_url("token_endpoint", &d.token_endpoint)?;
    check_http_url("jwks_uri", &d.jwks_uri)?;
    if let Some(u) = &d.userinfo_endpoint {
        check_http_url("userinfo_endpoint", u)?;
    }
    let algs = &d.id_token_signing_alg_values_supported;
    if !algs.is_empty() && !algs.iter().any(|a| a == "RS256" || a == "ES256") {
        return Err(invalid(
            "discovery document",
            format!("the provider signs ID tokens with {algs:?}, none of RS256 and ES256"),
        ));
    }
    Ok(d)
}

// ---------------------------------------------------------------- authorization

/// What goes into the authorization redirect.
#[derive(Clone, Copy, Debug)]
pub struct AuthorizationRequest<'a> {
    /// The provider's authorization endpoint (any query it carries is kept).
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub state: &'a str,
    /// Always for OpenID providers; `None` for GitHub.
    pub nonce: Option<&'a str>,
    /// [`pkce_challenge`] of the verifier kept for the callback.
    pub code_challenge: &'a str,
}

/// The URL to send the browser to: `response_type=code` with the client,
/// redirect URI, scopes, state, nonce and an S256 code challenge.
pub fn authorization_url(r: &AuthorizationRequest<'_>) -> Result<String, OidcError> {
    check_http_url("authorization endpoint", r.endpoint)?;
    let mut url = url::Url::parse(r.endpoint)
        .map_err(|e| OidcError::InvalidUrl { url: r.endpoint.to_string(), detail: e.to_string() })?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", r.client_id)
            .append_pair("redirect_uri", r.redirect_uri)
            .append_pair("scope", &r.scopes.join(" "))
            .append_pair("state", r.state);
        if let Some(nonce) = r.nonce {
            q.append_pair("nonce", nonce);
        }
        q.append_pair("code_challenge", r.code_challenge).append_pair("code_challenge_method", CODE_CHALLENGE_METHOD);
    }
    Ok(url.into())
}

/// Reads the callback's query string (without `?`): the code, once the state
/// is the one sent and, when the provider says who it is (RFC 9207 `iss`),
/// that it is `issuer`. An `error=` answer (the person declined, …) comes back
/// as [`OidcError::Provider`].
pub fn parse_callback(query: &str, expected_state: &str, issuer: Option<&str>) -> Result<String, OidcError> {
    let (mut code, mut state, mut iss, mut error, mut description) = (None, None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
        let slot = match k.as_ref() {
            "code" => &mut code,
            "state" => &mut state,
            "iss" => &mut iss,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        slot.get_or_insert(v.into_owned());
    }
    if let Some(error) = error {
        return Err(OidcError::Provider { error, description });
    }
    if state.as_deref() != Some(expected_state) {
        return Err(OidcError::StateMismatch);
    }
    if let (Some(got), Some(expected)) = (iss, issuer) {
        if !same_issuer(&got, expected) {
            return Err(OidcError::IssuerMismatch { expected: expected.to_string(), got });
        }
    }
    code.filter(|c| !c.is_empty()).ok_or(OidcError::MissingCode)
}

// ---------------------------------------------------------------- token endpoint

/// A token request: POST `body` as [`FORM_CONTENT_TYPE`] (with
/// `Accept: application/json`), with `authorization` as the `Authorization`
/// header when it is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub body: String,
    pub authorization: Option<String>,
}

/// `Basic base64(urlencode(client_id):urlencode(client_secret))` (RFC 6749 §2.3.1).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(client_secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The authorization-code grant with its PKCE verifier. With
/// client_secret_basic the credentials go in the header and the body has no
/// client_id; with client_secret_post both go in the body.
pub fn token_request(
    code: &str,
    redirect_uri: &str,
    client_id: &str,
    client_secret: &str,
    code_verifier: &str,
    auth: ClientAuth,
) -> TokenRequest {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", code_verifier);
    let authorization = match auth {
        ClientAuth::ClientSecretPost => {
            form.append_pair("client_id", client_id).append_pair("client_secret", client_secret);
            None
        }
        ClientAuth::ClientSecretBasic => Some(basic_authorization(client_id, client_secret)),
    };
    TokenRequest { body: form.finish(), authorization }
}

/// The token endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: Option<String>,
    /// Always there from an OpenID provider (scope `openid`); never from GitHub.
    pub id_token: Option<String>,
    pub expires_in: Option<i64>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Reads the token endpoint's answer: JSON (or a form body, GitHub's answer
/// without `Accept: application/json`). An `error` member is
/// [`OidcError::Provider`] whatever the status (GitHub answers errors with 200).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenResponse, OidcError> {
    let v: Option<Value> = serde_json::from_slice(body).ok().or_else(|| {
        let text = std::str::from_utf8(body).ok()?;
        if !text.contains('=') || text.trim_start().starts_with('<') {
            return None;
        }
        let map = url::form_urlencoded::parse(text.trim().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect::<serde_json::Map<_, _>>();
        Some(Value::Object(map))
    });
    let Some(v) = v.filter(Value::is_object) else {
        return Err(if (200..300).contains(&status) {
            invalid("token response", "not a JSON object")
        } else {
            OidcError::Http { what: "the token endpoint", status, message: None }
        });
    };
    if let Some(error) = str_field(&v, "error") {
        return Err(OidcError::Provider { error, description: str_field(&v, "error_description") });
    }
    if !(200..300).contains(&status) {
        return Err(OidcError::Http { what: "the token endpoint", status, message: str_field(&v, "message") });
    }
    let access_token = str_field(&v, "access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("token response", "no access_token"))?;
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token,
        token_type: str_field(&v, "token_type"),
        id_token: str_field(&v, "id_token"),
        expires_in,
        refresh_token: str_field(&v, "refresh_token"),
        scope: str_field(&v, "scope"),
    })
}

// ---------------------------------------------------------------- JWKS

/// One JSON Web Key; only public signing keys (RSA, EC P-256) are used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A provider's key set (`jwks_uri`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Reads a JWKS document. Keys of other types stay in the set and are never chosen.
pub fn parse_jwks(body: &[u8]) -> Result<Jwks, OidcError> {
    serde_json::from_slice(body).map_err(|e| invalid("JWKS", e.to_string()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn parse(alg: &str) -> Result<Alg, OidcError> {
        match alg {
            "RS256" => Ok(Alg::Rs256),
            "ES256" => Ok(Alg::Es256),
            a if a.eq_ignore_ascii_case("none") => Err(OidcError::AlgNone),
            a if a.starts_with("HS") => Err(OidcError::SymmetricAlg(a.to_string())),
            a => Err(OidcError::UnsupportedAlg(a.to_string())),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
    fn kty(self) -> &'static str {
        match self {
            Alg::Rs256 => "RSA",
            Alg::Es256 => "EC",
        }
    }
}

fn fits(key: &Jwk, alg: Alg) -> bool {
    key.kty == alg.kty()
        && key.use_.as_deref().is_none_or(|u| u == "sig")
        && key.alg.as_deref().is_none_or(|a| a == alg.name())
        && (alg != Alg::Es256 || key.crv.as_deref() == Some("P-256"))
}

fn choose_key<'k>(jwks: &'k Jwks, kid: Option<&str>, alg: Alg) -> Result<&'k Jwk, OidcError> {
    match kid {
        Some(kid) => {
            let mut named = jwks.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
            if named.peek().is_none() {
                return Err(OidcError::UnknownKid(kid.to_string()));
            }
            let found: Vec<&Jwk> = named.collect();
            found.iter().copied().find(|k| fits(k, alg)).ok_or_else(|| {
                let k = found[0];
                OidcError::BadKey(format!(
                    "key `{kid}` is {} (alg {}, use {}), the token says {}",
                    k.kty,
                    k.alg.as_deref().unwrap_or("unset"),
                    k.use_.as_deref().unwrap_or("unset"),
                    alg.name()
                ))
            })
        }
        None => {
            let usable: Vec<&Jwk> = jwks.keys.iter().filter(|k| fits(k, alg)).collect();
            match usable.as_slice() {
                [only] => Ok(only),
                _ => Err(OidcError::NoKey { kty: alg.kty(), found: usable.len() }),
            }
        }
    }
}

fn key_bytes(key: &Jwk, member: &'static str, value: &Option<String>) -> Result<Vec<u8>, OidcError> {
    let v = value.as_deref().ok_or_else(|| OidcError::BadKey(format!("{} key without `{member}`", key.kty)))?;
    B64_LENIENT.decode(v).map_err(|_| OidcError::BadKey(format!("`{member}` is not base64url")))
}

fn verify_signature(key: &Jwk, alg: Alg, input: &[u8], sig: &[u8]) -> Result<(), OidcError> {
    match alg {
        Alg::Rs256 => {
            use rsa::signature::Verifier;
            use rsa::traits::PublicKeyParts;
            let n = rsa::BigUint::from_bytes_be(&key_bytes(key, "n", &key.n)?);
            let e = rsa::BigUint::from_bytes_be(&key_bytes(key, "e", &key.e)?);
            let public = rsa::RsaPublicKey::new(n, e).map_err(|e| OidcError::BadKey(e.to_string()))?;
            if public.n().bits() < 2048 {
                return Err(OidcError::BadKey(format!("RSA key of {} bits (2048 at least)", public.n().bits())));
            }
            let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| OidcError::BadSignature)?;
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public).verify(input, &sig).map_err(|_| OidcError::BadSignature)
        }
        Alg::Es256 => {
            use p256::ecdsa::signature::Verifier;
            let (x, y) = (key_bytes(key, "x", &key.x)?, key_bytes(key, "y", &key.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(OidcError::BadKey("P-256 coordinates must be 32 bytes".into()));
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                p256::FieldBytes::from_slice(&x),
                p256::FieldBytes::from_slice(&y),
                false,
            );
            let public = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map_err(|_| OidcError::BadKey("the point is not on P-256".into()))?;
            // JWS carries r ‖ s, 64 bytes (RFC 7518 §3.4), not DER.
            let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| OidcError::BadSignature)?;
            public.verify(input, &sig).map_err(|_| OidcError::BadSignature)
        }
    }
}

// ---------------------------------------------------------------- ID token

/// What an ID token must match.
#[derive(Clone, Copy, Debug)]
pub struct IdTokenExpect<'a> {
    /// The discovered issuer (trailing slashes aside).
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent in the authorization request.
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// Who signed in: an ID token's (or GitHub's) verified claims.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stable per provider: the identity's key (GitHub: the numeric user id).
    pub sub: String,
    pub email: Option<String>,
    /// Whether the provider vouches for `email` (false when it does not say).
    pub email_verified: bool,
    pub name: Option<String>,
    /// GitHub: the login.
    pub preferred_username: Option<String>,
    pub picture: Option<String>,
}

impl Claims {
    /// Fills what this lacks from `other` (ID-token claims completed by userinfo).
    pub fn or(mut self, other: Claims) -> Claims {
        if self.email.is_none() {
            self.email = other.email;
            self.email_verified = other.email_verified;
        }
        self.name = self.name.or(other.name);
        self.preferred_username = self.preferred_username.or(other.preferred_username);
        self.picture = self.picture.or(other.picture);
        self
    }

    fn from_json(v: &Value) -> Claims {
        let text = |k: &str| str_field(v, k).filter(|s| !s.is_empty());
        Claims {
            sub: text("sub").unwrap_or_default(),
            email: text("email"),
            // Some providers (Cognito among them) send the string "true".
            email_verified: match v.get("email_verified") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                _ => false,
            },
            name: text("name"),
            preferred_username: text("preferred_username"),
            picture: text("picture"),
        }
    }
}

/// A NumericDate claim (seconds, possibly fractional), floored.
fn date(v: &Value, k: &'static str) -> Result<Option<i64>, OidcError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(OidcError::MalformedToken("a date claim is out of range")),
        Some(_) => Err(OidcError::MalformedToken("a date claim is not a number")),
    }
}

/// Verifies a compact JWS ID token: RS256 or ES256 against the key the
/// header's `kid` names (else the set's only key of that type), then `iss`,
/// `aud` (and `azp` when there are several audiences), `exp`, `nbf`, `iat`
/// (± [`LEEWAY_SECONDS`]) and `nonce`.
pub fn verify_id_token(token: &str, jwks: &Jwks, expect: &IdTokenExpect<'_>) -> Result<Claims, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::MalformedToken("longer than 64 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(OidcError::MalformedToken("not three dot-separated parts (a JWE, or not a JWT)"));
    };
    let header: Value = B64
        .decode(h64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or(OidcError::MalformedToken("the header is not base64url JSON"))?;
    let alg = Alg::parse(header.get("alg").and_then(Value::as_str).ok_or(OidcError::MalformedToken("no alg"))?)?;
    if header.get("crit").is_some() {
        return Err(OidcError::MalformedToken("critical header extensions are not understood"));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let key = choose_key(jwks, kid, alg)?;
    let sig = B64.decode(s64).map_err(|_| OidcError::MalformedToken("the signature is not base64url"))?;
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    verify_signature(key, alg, signing_input, &sig)?;

    let claims: Value = B64
        .decode(p64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or(OidcError::MalformedToken("the payload is not base64url JSON"))?;
    let iss = str_field(&claims, "iss").ok_or(OidcError::MissingClaim("iss"))?;
    if !same_issuer(&iss, expect.issuer) {
        return Err(OidcError::WrongIssuer { expected: expect.issuer.to_string(), got: iss });
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(OidcError::MissingClaim("aud")),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(OidcError::WrongAudience);
    }
    let azp = str_field(&claims, "azp");
    if (audiences.len() > 1 || azp.is_some()) && azp.as_deref() != Some(expect.client_id) {
        return Err(OidcError::WrongAuthorizedParty { got: azp });
    }
    let now = expect.now;
    let exp = date(&claims, "exp")?.ok_or(OidcError::MissingClaim("exp"))?;
    if now > exp.saturating_add(LEEWAY_SECONDS) {
        return Err(OidcError::Expired { exp, now });
    }
    if let Some(nbf) = date(&claims, "nbf")? {
        if nbf > now.saturating_add(LEEWAY_SECONDS) {
            return Err(OidcError::NotYetValid { nbf, now });
        }
    }
    let iat = date(&claims, "iat")?.ok_or(OidcError::MissingClaim("iat"))?;
    if iat > now.saturating_add(LEEWAY_SECONDS) {
        return Err(OidcError::IssuedInFuture { iat, now });
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(expect.nonce) {
        return Err(OidcError::NonceMismatch);
    }
    let out = Claims::from_json(&claims);
    if out.sub.is_empty() {
        return Err(OidcError::MissingClaim("sub"));
    }
    Ok(out)
}

/// Reads a userinfo answer (JSON) for the subject the ID token named.
pub fn parse_userinfo(status: u16, body: &[u8], sub: &str) -> Result<Claims, OidcError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        if (200..300).contains(&status) {
            invalid("userinfo answer", e.to_string())
        } else {
            OidcError::Http { what: "the userinfo endpoint", status, message: None }
        }
    })?;
    if !(200..300).contains(&status) {
        return Err(match str_field(&v, "error") {
            Some(error) => OidcError::Provider { error, description: str_field(&v, "error_description") },
            None => OidcError::Http { what: "the userinfo endpoint", status, message: None },
        });
    }
    let claims = Claims::from_json(&v);
    if claims.sub != sub {
        return Err(OidcError::SubjectMismatch);
    }
    Ok(claims)
}

// ---------------------------------------------------------------- GitHub

pub const GITHUB_URL: &str = "https://github.com";
pub const GITHUB_API_URL: &str = "https://api.github.com";
/// `Accept` for GitHub's REST API (send a `User-Agent` too: GitHub refuses requests without one).
pub const GITHUB_API_ACCEPT: &str = "application/vnd.github+json";
/// The REST API version header GitHub documents.
pub const GITHUB_API_VERSION: (&str, &str) = ("X-GitHub-Api-Version", "2022-11-28");

/// Where a GitHub preset's OAuth and API endpoints are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubEndpoints {
    /// `{github_url}/login/oauth/authorize`
    pub authorize: String,
    /// `{github_url}/login/oauth/access_token`: POST [`github_token_request`]
    /// with `Accept: application/json`.
    pub token: String,
    /// `{api}/user`
    pub user: String,
    /// `{api}/user/emails`
    pub emails: String,
}

impl GithubEndpoints {
    /// github.com's unless `github_url` is set; the API is `github_api_url`,
    /// else `{github_url}/api/v3` (GitHub Enterprise Server), else api.github.com.
    pub fn for_provider(p: &OidcProvider) -> GithubEndpoints {
        let web = p.github_url.as_deref().unwrap_or(GITHUB_URL).trim_end_matches('/');
        let api = match (&p.github_api_url, &p.github_url) {
            (Some(api), _) => api.trim_end_matches('/').to_string(),
            (None, Some(_)) => format!("{web}/api/v3"),
            (None, None) => GITHUB_API_URL.to_string(),
        };
        GithubEndpoints {
            authorize: format!("{web}/login/oauth/authorize"),
            token: format!("{web}/login/oauth/access_token"),
            user: format!("{api}/user"),
            emails: format!("{api}/user/emails"),
        }
    }
}

/// GitHub's code exchange: client_secret_post, with the PKCE verifier.
pub fn github_token_request(
    code: &str,
    redirect_uri: &str,
    client_id: &str,
    client_secret: &str,
    code_verifier: &str,
) -> TokenRequest {
    token_request(code, redirect_uri, client_id, client_secret, code_verifier, ClientAuth::ClientSecretPost)
}

/// The parts of `GET /user` sign-in uses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GithubUser {
    pub id: u64,
    pub login: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// One entry of `GET /user/emails`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GithubEmail {
    pub email: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(default)]
    pub verified: bool,
}

fn github_api<T: serde::de::DeserializeOwned>(what: &'static str, status: u16, body: &[u8]) -> Result<T, OidcError> {
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| str_field(&v, "message"));
        return Err(OidcError::Http { what, status, message });
    }
    serde_json::from_slice(body).map_err(|e| invalid(what, e.to_string()))
}

pub fn parse_github_user(status: u16, body: &[u8]) -> Result<GithubUser, OidcError> {
    github_api("GitHub's /user", status, body)
}

pub fn parse_github_emails(status: u16, body: &[u8]) -> Result<Vec<GithubEmail>, OidcError> {
    github_api("GitHub's /user/emails", status, body)
}

/// The subject is the numeric id (a login can be renamed); the email is the
/// primary address, verified or not as GitHub says; the name falls back to the login.
pub fn github_claims(user: &GithubUser, emails: &[GithubEmail]) -> Claims {
    let primary = emails.iter().find(|e| e.primary);
    Claims {
        sub: user.id.to_string(),
        email: primary.map(|e| e.email.clone()),
        email_verified: primary.is_some_and(|e| e.verified),
        name: user.name.clone().filter(|n| !n.is_empty()).or_else(|| Some(user.login.clone())),
        preferred_username: Some(user.login.clone()),
        picture: user.avatar_url.clone().filter(|u| !u.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use serde_json::json;

    const ISS: &str = "https://id.example.com";
    const CLIENT: &str = "oblivious";
    const NONCE: &str = "n-0S6_WzA2Mj";
    const NOW: i64 = 1_700_000_000;

    /// A second throwaway key (this module's tests only): signs with another key under a known kid.
    const OTHER_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCwPpHA8OnTsNYe
gfsAcQMpghKE/572BeyKdRRHx0FXlAg9/a3fQkMpiDq0rDSWXPUOsPfql/M380Vk
9I2SNndx+GcYPL1GUeJqfv8aEs8r3Uh3zyPsnZ318zBfyqwQAUyhffEPO3uRyOJr
JSr9VnMuakKLntaVPy1+TeluyaT6wu58mR5VBUlVjj1WpV/UMM7+tvIVshG1AkRa
1ZTqqs46Q7Om+LQsAEazWmBlJAV8WqrSrJxdody8B4FCH6/0ZzZe/PsuTikEZiFm
p2PKCSU5zYCLxPR9K/gSihuXG7tIFj/7R3VN7Ns76O1iXnenXHVANWCmT5C48YWW
b2pUuC2nAgMBAAECggEAMk9qI/2hggB03viTwiiAkpTC3JxrsCc4wr1xMJw8ltd3
EtsbiyPLMEvnFjQiPtoCSlNSMfF2SH51TMBSuW464pnaNB0CmtQ9IdFm2PaNlSPx
z+Gdi6nisZbeNDoSq+7zBRaCfaqpN5B0sclGYFMRRiqnHFwXPTtvrSJohGujYMFT
M48DNMDYapQ0xb9o6oj6wERW2/PKuhE+E7aZCYHWXJuEUIBXS8MaEAO0Af/CjIj2
A2ZW4cKqRlcgaqW/akJRnqNPOKCOlY0vWpNVe/OMSVunufkc0CmGKQTwS/pdx2Ki
iHxJXcBEyhd0mxg9RBf3slM5Airu31m/+MIF7kJggQKBgQDW25/Lv4d+pO2WrdfL
qGqoIm4yZhHfVP2a2k24UQDO5twA85Mxwrqxny15WYDhdpOGBZK46asgMrNUf2cP
xLX/ob+N3DpfoZKlSk+0SHfmsE3JVpC/TsIBjUryuHi5hqrWxt3U1irCXlI5goSP
Imk9LgVkHGvuuGzemmUsPsvUcQKBgQDR/hqsdqyhNT6EskUV7F0mkdsR5TsQFb3w
+WDhJFNaJ20othHSKPqfta1QD3jShEeE96BJ6tRAmbr8Z45lZlmHTCSNLYRHogyd
4tU/vr9+Lr9b1M1uJNueJFJanLK/LDQn+LY7V7cdfF/R/8AtbWWQtj7wQj2avuGa
ampEbl9PlwKBgQDH7mar+fXjayWK6Qm9gWJ+Qku4qjJHV5cF2c4ojXfrD/f5Cq8V
xtZjInP2T8sWAnkUZWs6lnWe6I7nOgZ1Ld8NmT3ei+flxTvog1XXtPedusEncV4Q
JwFw4EG1yuLMAPxID5Wsz/3KEGsDCOjBKIw1WfW6SphE82ibW6B5o5WYgQKBgBQf
TV8JYDFycLM2gfg/1g1EHMHyPV6lNrZIr0fjuzkAXi1whPSmiJ2VQy5QzTsfAdtz
/yAWKJCoKorVQYfl7t5QJZCBtBNJK/xVKCoblS36PMwH8EeFsKXOxTV5nodDLRxH
cO7u0NU6fdQZtcikmv7q98z+C/kwIV4ypEw6Z1exAoGAOVCXMwBGDW2K1W3nfH2j
hKjxA+6gnkgekylxs69DveIk5FTB1n4qgqtzy4buvb+gwGha6C/6hdmh68/mrFAb
CfQCTbXSY5n6RiGcR7RtCcm9N7z9kh5lTvGNMbVJFeEUwn+zHjoTqTVW1XwR3DL1
e9WWXCQPuuhy0AzjmMnfBwQ=
-----END PRIVATE KEY-----
";

    fn rsa_key() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../../../../tests/fixtures/test_service_account_key.pem"))
            .unwrap()
    }

    fn other_key() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::from_pkcs8_pem(OTHER_PEM).unwrap()
    }

    fn ec_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap()
    }

    fn rsa_jwk(key: &rsa::RsaPrivateKey, kid: Option<&str>) -> Jwk {
        let p = key.to_public_key();
        Jwk {
            kty: "RSA".into(),
            kid: kid.map(Into::into),
            alg: Some("RS256".into()),
            use_: Some("sig".into()),
            n: Some(B64.encode(p.n().to_bytes_be())),
            e: Some(B64.encode(p.e().to_bytes_be())),
            ..Jwk::default()
        }
    }

    fn ec_jwk(kid: Option<&str>) -> Jwk {
        let point = ec_key().verifying_key().to_encoded_point(false);
        Jwk {
            kty: "EC".into(),
            kid: kid.map(Into::into),
            crv: Some("P-256".into()),
            x: Some(B64.encode(point.x().unwrap())),
            y: Some(B64.encode(point.y().unwrap())),
            ..Jwk::default()
        }
    }

    fn jwks() -> Jwks {
        Jwks { keys: vec![rsa_jwk(&rsa_key(), Some("r1")), ec_jwk(Some("e1"))] }
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "sub": "248289761001", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 5,
            "nonce": NONCE, "email": "alice@example.com", "email_verified": true, "name": "Alice",
            "preferred_username": "alice", "picture": "https://id.example.com/a.png"
        })
    }

    fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    fn rs256_with(key: rsa::RsaPrivateKey, header: &Value, claims: &Value) -> String {
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
        jws(header, claims, |m| signer.sign(m).to_vec())
    }

    fn rs256(claims: &Value) -> String {
        rs256_with(rsa_key(), &json!({"alg": "RS256", "kid": "r1", "typ": "JWT"}), claims)
    }

    fn es256(header: &Value, claims: &Value) -> String {
        jws(header, claims, |m| {
            let sig: p256::ecdsa::Signature = ec_key().sign(m);
            sig.to_bytes().to_vec()
        })
    }

    fn expect() -> IdTokenExpect<'static> {
        IdTokenExpect { issuer: ISS, client_id: CLIENT, nonce: NONCE, now: NOW }
    }

    fn verify(token: &str) -> Result<Claims, OidcError> {
        verify_id_token(token, &jwks(), &expect())
    }

    fn with(changes: Value) -> Value {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        let random = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191,
            240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = pkce_verifier(&random);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(verifier.len(), 43);
        assert_eq!(pkce_challenge(&verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(random_token(&[0xfb; 16]), "-_v7-_v7-_v7-_v7-_v7-w");
    }

    fn discovery_json(issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": "https://id.example.com/auth",
            "token_endpoint": "https://id.example.com/token",
            "userinfo_endpoint": "https://id.example.com/me",
            "jwks_uri": "https://id.example.com/jwks",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
        })
    }

    #[test]
    fn discovery_is_read_and_its_issuer_checked() {
        assert_eq!(discovery_url("https://id.example.com/"), "https://id.example.com/.well-known/openid-configuration");
        let d = parse_discovery(discovery_json(ISS).to_string().as_bytes(), "https://id.example.com/").unwrap();
        assert_eq!(d.token_endpoint, "https://id.example.com/token");
        assert_eq!(d.userinfo_endpoint.as_deref(), Some("https://id.example.com/me"));
        assert_eq!(d.id_token_signing_alg_values_supported, ["RS256", "ES256"]);
        assert_eq!(d.client_auth(), ClientAuth::ClientSecretBasic);
        let d = parse_discovery(discovery_json("https://id.example.com/").to_string().as_bytes(), ISS).unwrap();
        assert_eq!(d.issuer, "https://id.example.com/");

        let e = parse_discovery(discovery_json("https://evil.example.com").to_string().as_bytes(), ISS).unwrap_err();
        assert!(matches!(e, OidcError::IssuerMismatch { .. }), "{e}");
        let mut missing = discovery_json(ISS);
        missing.as_object_mut().unwrap().remove("jwks_uri");
        assert!(matches!(parse_discovery(missing.to_string().as_bytes(), ISS), Err(OidcError::InvalidDocument { .. })));
        let mut hs = discovery_json(ISS);
        hs["id_token_signing_alg_values_supported"] = json!(["HS256"]);
        assert!(matches!(parse_discovery(hs.to_string().as_bytes(), ISS), Err(OidcError::InvalidDocument { .. })));
        let mut bad = discovery_json(ISS);
        bad["token_endpoint"] = json!("javascript:alert(1)");
        assert!(matches!(parse_discovery(bad.to_string().as_bytes(), ISS), Err(OidcError::InvalidUrl { .. })));
        assert!(parse_discovery(b"<html>", ISS).is_err());

        let mut post = discovery_json(ISS);
        post["token_endpoint_auth_methods_supported"] = json!(["client_secret_post", "private_key_jwt"]);
        let d = parse_discovery(post.to_string().as_bytes(), ISS).unwrap();
        assert_eq!(d.client_auth(), ClientAuth::ClientSecretPost);
    }

    #[test]
    fn authorization_url_is_percent_encoded_and_keeps_the_endpoints_query() {
        let scopes = vec!["openid".to_string(), "email".into(), "profile".into()];
        let req = AuthorizationRequest {
            endpoint: "https://id.example.com/auth?p=b2c_1_signin",
            client_id: "my app&co",
            redirect_uri: "http://127.0.0.1:8080/api/auth/oidc/test/callback",
            scopes: &scopes,
            state: "s/+=",
            nonce: Some("n"),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuWk2ImhwFM",
        };
        let url = authorization_url(&req).unwrap();
        assert_eq!(
            url,
            "https://id.example.com/auth?p=b2c_1_signin&response_type=code&client_id=my+app%26co\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fapi%2Fauth%2Foidc%2Ftest%2Fcallback\
             &scope=openid+email+profile&state=s%2F%2B%3D&nonce=n\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuWk2ImhwFM&code_challenge_method=S256"
        );
        let parsed = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "my app&co");
        assert_eq!(q["state"], "s/+=");
        let github = authorization_url(&AuthorizationRequest { nonce: None, ..req }).unwrap();
        assert!(!github.contains("nonce="));
        assert!(authorization_url(&AuthorizationRequest { endpoint: "ftp://x/auth", ..req }).is_err());
        assert!(authorization_url(&AuthorizationRequest { endpoint: "not a url", ..req }).is_err());
    }

    #[test]
    fn callback_yields_the_code_after_the_state_and_issuer() {
        assert_eq!(parse_callback("code=abc&state=s1", "s1", Some(ISS)).unwrap(), "abc");
        assert_eq!(
            parse_callback("?code=a%2Bb&state=s1&iss=https%3A%2F%2Fid.example.com%2F", "s1", Some(ISS)).unwrap(),
            "a+b"
        );
        assert_eq!(parse_callback("code=abc&state=s2", "s1", None), Err(OidcError::StateMismatch));
        assert_eq!(parse_callback("code=abc", "s1", None), Err(OidcError::StateMismatch));
        assert!(matches!(
            parse_callback("code=abc&state=s1&iss=https%3A%2F%2Fevil", "s1", Some(ISS)),
            Err(OidcError::IssuerMismatch { .. })
        ));
        assert_eq!(parse_callback("state=s1", "s1", None), Err(OidcError::MissingCode));
        assert_eq!(
            parse_callback("error=access_denied&error_description=The+user+said+no&state=s1", "s1", None),
            Err(OidcError::Provider { error: "access_denied".into(), description: Some("The user said no".into()) })
        );
    }

    #[test]
    fn token_request_in_the_body_or_basic() {
        let post = token_request("c o", "http://127.0.0.1/cb", "id", "s&cret", "v", ClientAuth::ClientSecretPost);
        assert_eq!(
            post.body,
            "grant_type=authorization_code&code=c+o&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&code_verifier=v\
             &client_id=id&client_secret=s%26cret"
        );
        assert_eq!(post.authorization, None);
        let basic = token_request("c", "http://127.0.0.1/cb", "id", "s&cret", "v", ClientAuth::ClientSecretBasic);
        assert!(!basic.body.contains("client_id") && !basic.body.contains("client_secret"));
        // RFC 6749 §2.3.1: form-encoded, then base64: "id:s%26cret".
        assert_eq!(basic.authorization.as_deref(), Some("Basic aWQ6cyUyNmNyZXQ="));
        assert_eq!(basic_authorization("a", "b"), "Basic YTpi");
        assert_eq!(github_token_request("c", "r", "id", "s", "v").authorization, None);
    }

    #[test]
    fn token_responses_and_their_errors() {
        let ok = parse_token_response(
            200,
            br#"{"access_token":"at","token_type":"Bearer","id_token":"a.b.c","expires_in":3600,"scope":"openid"}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.id_token.as_deref(), ok.expires_in),
            ("at", Some("a.b.c"), Some(3600))
        );
        assert_eq!(
            parse_token_response(400, br#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#),
            Err(OidcError::Provider {
                error: "invalid_grant".into(),
                description: Some("grant request is invalid".into())
            })
        );
        // GitHub: errors with 200.
        assert!(matches!(
            parse_token_response(200, br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#),
            Err(OidcError::Provider { ref error, .. }) if error == "bad_verification_code"
        ));
        // GitHub without Accept: application/json.
        let form = parse_token_response(
            200,
            b"access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer",
        )
        .unwrap();
        assert_eq!(form.scope.as_deref(), Some("repo,gist"));
        assert_eq!(
            parse_token_response(502, b"<html>bad gateway</html>"),
            Err(OidcError::Http { what: "the token endpoint", status: 502, message: None })
        );
        assert!(matches!(
            parse_token_response(200, br#"{"token_type":"Bearer"}"#),
            Err(OidcError::InvalidDocument { .. })
        ));
        assert!(matches!(
            parse_token_response(500, br#"{"message":"down"}"#),
            Err(OidcError::Http { status: 500, .. })
        ));
        assert_eq!(
            parse_token_response(200, br#"{"access_token":"a","expires_in":"60"}"#).unwrap().expires_in,
            Some(60)
        );
    }

    #[test]
    fn an_rs256_token_verifies_and_yields_its_claims() {
        let c = verify(&rs256(&claims())).unwrap();
        assert_eq!(
            c,
            Claims {
                sub: "248289761001".into(),
                email: Some("alice@example.com".into()),
                email_verified: true,
                name: Some("Alice".into()),
                preferred_username: Some("alice".into()),
                picture: Some("https://id.example.com/a.png".into()),
            }
        );
        // No kid: the set's only RSA key.
        let no_kid = rs256_with(rsa_key(), &json!({"alg": "RS256"}), &claims());
        assert!(verify(&no_kid).is_ok());
        // An audience array with this client as azp; fractional dates; email_verified as a string.
        let arr =
            with(json!({"aud": [CLIENT, "other"], "azp": CLIENT, "exp": NOW as f64 + 0.5, "email_verified": "true"}));
        assert!(verify(&rs256(&arr)).unwrap().email_verified);
        let unverified = verify(&rs256(&with(json!({"email_verified": null})))).unwrap();
        assert!(!unverified.email_verified);
        // Expired, but within the leeway.
        assert!(verify(&rs256(&with(json!({"exp": NOW - LEEWAY_SECONDS})))).is_ok());
        // JWK members with padding.
        let mut padded = jwks();
        padded.keys[0].e = Some("AQAB".into());
        padded.keys[0].n = padded.keys[0].n.clone().map(|n| format!("{n}=="));
        assert!(verify_id_token(&rs256(&claims()), &padded, &expect()).is_ok());
    }

    #[test]
    fn an_es256_token_verifies() {
        let t = es256(&json!({"alg": "ES256", "kid": "e1"}), &claims());
        assert_eq!(verify(&t).unwrap().sub, "248289761001");
        let no_kid = es256(&json!({"alg": "ES256"}), &claims());
        assert!(verify(&no_kid).is_ok());
        let mut tampered = es256(&json!({"alg": "ES256", "kid": "e1"}), &claims());
        tampered.replace_range(tampered.len() - 3.., "AAA");
        assert_eq!(verify(&tampered), Err(OidcError::BadSignature));
        // An EC key under an RSA token's kid.
        let wrong_type = rs256_with(rsa_key(), &json!({"alg": "RS256", "kid": "e1"}), &claims());
        assert!(matches!(verify(&wrong_type), Err(OidcError::BadKey(_))));
    }

    #[test]
    fn unsigned_and_shared_secret_tokens_are_refused() {
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode(claims().to_string()));
        assert_eq!(verify(&none), Err(OidcError::AlgNone));
        let none_caps = jws(&json!({"alg": "None"}), &claims(), |_| vec![]);
        assert_eq!(verify(&none_caps), Err(OidcError::AlgNone));
        // HS256 keyed with the RSA public key's bytes: the classic confusion attack.
        let hs = jws(&json!({"alg": "HS256", "kid": "r1"}), &claims(), |m| {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(jwks().keys[0].n.as_ref().unwrap().as_bytes()).unwrap();
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        });
        assert_eq!(verify(&hs), Err(OidcError::SymmetricAlg("HS256".into())));
        let ps = rs256_with(rsa_key(), &json!({"alg": "PS256", "kid": "r1"}), &claims());
        assert_eq!(verify(&ps), Err(OidcError::UnsupportedAlg("PS256".into())));
        let crit = rs256_with(rsa_key(), &json!({"alg": "RS256", "kid": "r1", "crit": ["exp"], "exp": 1}), &claims());
        assert!(matches!(verify(&crit), Err(OidcError::MalformedToken(_))));
    }

    #[test]
    fn keys_are_chosen_by_kid_or_as_the_only_one() {
        let unknown = rs256_with(rsa_key(), &json!({"alg": "RS256", "kid": "rotated-away"}), &claims());
        assert_eq!(verify(&unknown), Err(OidcError::UnknownKid("rotated-away".into())));
        let two = Jwks { keys: vec![rsa_jwk(&rsa_key(), Some("r1")), rsa_jwk(&other_key(), Some("r2"))] };
        let no_kid = rs256_with(rsa_key(), &json!({"alg": "RS256"}), &claims());
        assert_eq!(verify_id_token(&no_kid, &two, &expect()), Err(OidcError::NoKey { kty: "RSA", found: 2 }));
        assert_eq!(
            verify_id_token(&no_kid, &Jwks::default(), &expect()),
            Err(OidcError::NoKey { kty: "RSA", found: 0 })
        );
        // kid r2 picks the other key, which did not sign it.
        let r2 = rs256_with(rsa_key(), &json!({"alg": "RS256", "kid": "r2"}), &claims());
        assert_eq!(verify_id_token(&r2, &two, &expect()), Err(OidcError::BadSignature));
        let by_r2 = rs256_with(other_key(), &json!({"alg": "RS256", "kid": "r2"}), &claims());
        assert!(verify_id_token(&by_r2, &two, &expect()).is_ok());
        // Another key under the right kid.
        let forged = rs256_with(other_key(), &json!({"alg": "RS256", "kid": "r1"}), &claims());
        assert_eq!(verify(&forged), Err(OidcError::BadSignature));
        // A key marked for encryption or for another algorithm is not used.
        let mut enc = jwks();
        enc.keys[0].use_ = Some("enc".into());
        assert!(matches!(verify_id_token(&rs256(&claims()), &enc, &expect()), Err(OidcError::BadKey(_))));
        let mut rs384 = jwks();
        rs384.keys[0].alg = Some("RS384".into());
        assert!(matches!(verify_id_token(&rs256(&claims()), &rs384, &expect()), Err(OidcError::BadKey(_))));
        let mut broken = jwks();
        broken.keys[0].n = Some("!!".into());
        assert!(matches!(verify_id_token(&rs256(&claims()), &broken, &expect()), Err(OidcError::BadKey(_))));
    }

    #[test]
    fn a_tampered_token_fails_its_signature() {
        let token = rs256(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let evil = B64.encode(with(json!({"email": "admin@example.com"})).to_string());
        assert_eq!(verify(&format!("{}.{evil}.{}", parts[0], parts[2])), Err(OidcError::BadSignature));
        assert_eq!(
            verify(&format!("{}.{}.{}", parts[0], parts[1], B64.encode([0u8; 256]))),
            Err(OidcError::BadSignature)
        );
        assert_eq!(verify(&format!("{}.{}.AAAA", parts[0], parts[1])), Err(OidcError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in ["", "a.b", "a.b.c.d.e", "!!.b.c", &format!("{}.x.y", B64.encode("[1]"))] {
            assert!(matches!(verify(t), Err(OidcError::MalformedToken(_))), "{t}");
        }
        let no_alg = jws(&json!({"kid": "r1"}), &claims(), |_| vec![1]);
        assert_eq!(verify(&no_alg), Err(OidcError::MalformedToken("no alg")));
        let bad_sig = format!("{}.{}.***", B64.encode(r#"{"alg":"RS256","kid":"r1"}"#), B64.encode("{}"));
        assert!(matches!(verify(&bad_sig), Err(OidcError::MalformedToken(_))));
        // Signed, but the payload is not JSON.
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key());
        let input = format!("{}.{}", B64.encode(r#"{"alg":"RS256","kid":"r1"}"#), B64.encode("not json"));
        let t = format!("{input}.{}", B64.encode(signer.sign(input.as_bytes()).to_vec()));
        assert!(matches!(verify(&t), Err(OidcError::MalformedToken(_))));
        assert!(matches!(verify(&"a".repeat(70_000)), Err(OidcError::MalformedToken(_))));
    }

    #[test]
    fn claims_are_checked() {
        let cases: Vec<(Value, OidcError)> = vec![
            (
                json!({"iss": "https://evil.example.com"}),
                OidcError::WrongIssuer { expected: ISS.into(), got: "https://evil.example.com".into() },
            ),
            (json!({"iss": null}), OidcError::MissingClaim("iss")),
            (json!({"aud": "someone-else"}), OidcError::WrongAudience),
            (json!({"aud": ["someone-else", "x"]}), OidcError::WrongAudience),
            (json!({"aud": null}), OidcError::MissingClaim("aud")),
            (json!({"aud": [CLIENT, "other"]}), OidcError::WrongAuthorizedParty { got: None }),
            (
                json!({"aud": [CLIENT, "other"], "azp": "other"}),
                OidcError::WrongAuthorizedParty { got: Some("other".into()) },
            ),
            (json!({"azp": "other"}), OidcError::WrongAuthorizedParty { got: Some("other".into()) }),
            (json!({"exp": NOW - 61}), OidcError::Expired { exp: NOW - 61, now: NOW }),
            (json!({"exp": null}), OidcError::MissingClaim("exp")),
            (json!({"exp": "tomorrow"}), OidcError::MalformedToken("a date claim is not a number")),
            (json!({"nbf": NOW + 61}), OidcError::NotYetValid { nbf: NOW + 61, now: NOW }),
            (json!({"iat": NOW + 61}), OidcError::IssuedInFuture { iat: NOW + 61, now: NOW }),
            (json!({"iat": null}), OidcError::MissingClaim("iat")),
            (json!({"nonce": "replayed"}), OidcError::NonceMismatch),
            (json!({"nonce": null}), OidcError::NonceMismatch),
            (json!({"sub": null}), OidcError::MissingClaim("sub")),
            (json!({"sub": ""}), OidcError::MissingClaim("sub")),
        ];
        for (change, want) in cases {
            assert_eq!(verify(&rs256(&with(change.clone()))), Err(want), "{change}");
        }
        assert!(verify(&rs256(&with(json!({"nbf": NOW + 60, "iat": NOW + 60})))).is_ok());
        assert!(verify(&rs256(&with(json!({"iss": "https://id.example.com/"})))).is_ok());
    }

    #[test]
    fn userinfo_fills_what_the_id_token_lacks() {
        let bare = Claims { sub: "s1".into(), ..Claims::default() };
        let info =
            parse_userinfo(200, br#"{"sub":"s1","email":"a@example.com","email_verified":true,"name":"A"}"#, "s1")
                .unwrap();
        let merged = bare.or(info);
        assert_eq!(
            (merged.email.as_deref(), merged.email_verified, merged.name.as_deref()),
            (Some("a@example.com"), true, Some("A"))
        );
        assert_eq!(parse_userinfo(200, br#"{"sub":"s2"}"#, "s1"), Err(OidcError::SubjectMismatch));
        assert!(matches!(parse_userinfo(401, br#"{"error":"invalid_token"}"#, "s1"), Err(OidcError::Provider { .. })));
        assert!(matches!(parse_userinfo(503, b"", "s1"), Err(OidcError::Http { status: 503, .. })));
    }

    fn github(url: Option<&str>, api: Option<&str>) -> OidcProvider {
        OidcProvider {
            name: "github".into(),
            kind: super::super::ProviderKind::Github,
            display_name: None,
            issuer: None,
            client_id: "gh".into(),
            client_secret: "s".into(),
            scopes: vec![],
            github_url: url.map(Into::into),
            github_api_url: api.map(Into::into),
        }
    }

    #[test]
    fn github_endpoints_default_to_github_com() {
        let e = GithubEndpoints::for_provider(&github(None, None));
        assert_eq!(e.authorize, "https://github.com/login/oauth/authorize");
        assert_eq!(e.token, "https://github.com/login/oauth/access_token");
        assert_eq!(e.user, "https://api.github.com/user");
        assert_eq!(e.emails, "https://api.github.com/user/emails");
        let ghe = GithubEndpoints::for_provider(&github(Some("https://git.corp.example/"), None));
        assert_eq!(ghe.authorize, "https://git.corp.example/login/oauth/authorize");
        assert_eq!(ghe.user, "https://git.corp.example/api/v3/user");
        let test = GithubEndpoints::for_provider(&github(Some("http://127.0.0.1:9"), Some("http://127.0.0.1:9/api/")));
        assert_eq!(test.emails, "http://127.0.0.1:9/api/user/emails");
    }

    #[test]
    fn github_user_and_emails_become_claims() {
        let user = parse_github_user(
            200,
            br#"{"login":"octocat","id":583231,"avatar_url":"https://avatars.githubusercontent.com/u/583231?v=4","name":"The Octocat","email":null}"#,
        )
        .unwrap();
        let emails = parse_github_emails(
            200,
            br#"[{"email":"octo@work.example","primary":false,"verified":true,"visibility":null},
                 {"email":"octocat@github.com","primary":true,"verified":true,"visibility":"public"}]"#,
        )
        .unwrap();
        let c = github_claims(&user, &emails);
        assert_eq!(c.sub, "583231");
        assert_eq!((c.email.as_deref(), c.email_verified), (Some("octocat@github.com"), true));
        assert_eq!((c.name.as_deref(), c.preferred_username.as_deref()), (Some("The Octocat"), Some("octocat")));
        assert!(c.picture.is_some());

        let unverified = [GithubEmail { email: "new@example.com".into(), primary: true, verified: false }];
        let c =
            github_claims(&GithubUser { id: 7, login: "nameless".into(), name: None, avatar_url: None }, &unverified);
        assert_eq!(
            (c.email.as_deref(), c.email_verified, c.name.as_deref()),
            (Some("new@example.com"), false, Some("nameless"))
        );
        let c =
            github_claims(&GithubUser { id: 7, login: "l".into(), name: Some(String::new()), avatar_url: None }, &[]);
        assert_eq!((c.email, c.email_verified, c.name.as_deref()), (None, false, Some("l")));

        assert_eq!(
            parse_github_user(
                401,
                br#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#
            ),
            Err(OidcError::Http { what: "GitHub's /user", status: 401, message: Some("Bad credentials".into()) })
        );
        assert!(matches!(parse_github_emails(200, br#"{"not":"a list"}"#), Err(OidcError::InvalidDocument { .. })));
    }
}
