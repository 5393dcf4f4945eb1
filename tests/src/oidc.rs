//! A real OpenID provider (`oidc-provider`, tests/oidc/provider.mjs) and a
//! GitHub OAuth stand-in on 127.0.0.1 for the sign-in tests, and a scripted
//! browser that walks the provider's login and consent pages.
//!
//! ```ignore
//! let idp = Idp::start().await;               // issuer idp.issuer, client CLIENT_ID / CLIENT_SECRET
//! // … the gateway redirects to the provider's /auth?… (its `Location`):
//! let callback = sign_in(&location, "alice").await;   // the redirect back to the gateway
//! // … GET `callback` on the gateway (with its cookies) finishes the sign-in.
//! ```
//!
//! Accounts: `alice` (alice@example.com, verified), `bob` (bob@example.com,
//! not verified); more with [`Idp::add_account`]. The client registered at start
//! accepts `http://127.0.0.1:<any port>/api/auth/oidc/test/callback` (a native
//! client: RFC 8252's loopback rule), or the URIs given to
//! [`Idp::start_with_redirect_uris`]; [`Idp::register_client`] adds others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::gateway::{repo_root, temp_dir};

pub const CLIENT_ID: &str = "oblivious-test";
pub const CLIENT_SECRET: &str = "oblivious-test-secret";
/// The redirect URI the default client accepts, on any 127.0.0.1 port.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1/api/auth/oidc/test/callback";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// The OpenID provider and the GitHub stand-in, stopped on drop.
pub struct Idp {
    /// `http://127.0.0.1:PORT`: the issuer (discovery under it).
    pub issuer: String,
    /// The GitHub stand-in: a preset's `github_url`…
    pub github_url: String,
    /// … and its `github_api_url` (`{github_url}/api`).
    pub github_api_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The script's output, for a failing test's message.
    pub log: PathBuf,
    http: reqwest::Client,
    child: Child,
}

impl Idp {
    /// With the default client ([`CLIENT_ID`], [`DEFAULT_REDIRECT_URI`] on any port).
    pub async fn start() -> Idp {
        Idp::start_with_redirect_uris(&[DEFAULT_REDIRECT_URI]).await
    }

    /// With the default client accepting these redirect URIs (a `http://127.0.0.1`
    /// one on any port).
    pub async fn start_with_redirect_uris(redirect_uris: &[&str]) -> Idp {
        let script = repo_root().join("tests/oidc/provider.mjs");
        assert!(
            repo_root().join("tests/oidc/node_modules/oidc-provider").exists(),
            "tests/oidc/node_modules is missing: run `npm ci` in tests/oidc (`.ci/run` does)"
        );
        let dir = temp_dir("oidc");
        let log = dir.join("provider.log");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        // A free port can be taken between the probe and the bind: try again then.
        for attempt in 0.. {
            let (oidc_port, github_port) = (free_port(), free_port());
            let out = std::fs::File::create(&log).expect("log");
            let child = Command::new(std::env::var("OBLIVIOUS_NODE").unwrap_or_else(|_| "node".into()))
                .arg(&script)
                .args([oidc_port.to_string(), github_port.to_string()])
                .env("OIDC_CLIENT_ID", CLIENT_ID)
                .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
                .env("OIDC_REDIRECT_URIS", redirect_uris.join(","))
                .env("GITHUB_CLIENT_ID", CLIENT_ID)
                .env("GITHUB_CLIENT_SECRET", CLIENT_SECRET)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("node (tests/oidc/provider.mjs)");
            let github_url = format!("http://127.0.0.1:{github_port}");
            let mut idp = Idp {
                issuer: format!("http://127.0.0.1:{oidc_port}"),
                github_api_url: format!("{github_url}/api"),
                github_url,
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                log: log.clone(),
                http: http.clone(),
                child,
            };
            match idp.wait_ready().await {
                Ok(()) => return idp,
                Err(output) if attempt < 3 && output.contains("EADDRINUSE") => continue,
                Err(output) => panic!("tests/oidc/provider.mjs did not start:\n{output}"),
            }
        }
        unreachable!()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        let github = format!("{}/user", self.github_api_url);
        loop {
            let oidc_up = matches!(self.http.get(&discovery).send().await, Ok(r) if r.status() == 200);
            // Without a token the stand-in answers 401, as GitHub does.
            let github_up = matches!(self.http.get(&github).send().await, Ok(r) if r.status() == 401);
            if oidc_up && github_up {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s:\n{}", self.output()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Registers another client: oidc-provider client metadata (`client_id`,
    /// `client_secret`, `redirect_uris`, and e.g. `token_endpoint_auth_method`,
    /// `id_token_signed_response_alg`); authorization_code and `code` are implied.
    pub async fn register_client(&self, metadata: Value) {
        let r = self.http.post(format!("{}/admin/clients", self.issuer)).json(&metadata).send().await.expect("admin");
        let status = r.status();
        assert_eq!(status, 201, "registering {metadata}: {}", r.text().await.unwrap_or_default());
    }

    /// Adds an account to both servers (its GitHub id is returned; its only
    /// GitHub email is `email`, primary).
    pub async fn add_account(&self, login: &str, email: &str, email_verified: bool, name: Option<&str>) -> u64 {
        let body = json!({"login": login, "email": email, "email_verified": email_verified, "name": name});
        let r = self.http.post(format!("{}/admin/accounts", self.issuer)).json(&body).send().await.expect("admin");
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.expect("json")["github_id"].as_u64().expect("github_id")
    }

    /// An `[[auth.oidc]]` entry for this provider.
    pub fn oidc_toml(&self, name: &str) -> String {
        format!(
            "[[auth.oidc]]\nname = \"{name}\"\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
            self.issuer, self.client_id, self.client_secret
        )
    }

    /// An `[[auth.oidc]]` entry for the GitHub stand-in.
    pub fn github_toml(&self, name: &str) -> String {
        format!(
            "[[auth.oidc]]\nname = \"{name}\"\nkind = \"github\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             github_url = \"{}\"\ngithub_api_url = \"{}\"\n",
            self.client_id, self.client_secret, self.github_url, self.github_api_url
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cookie {
    name: String,
    value: String,
    path: String,
}

/// A client that keeps cookies (by name and path, RFC 6265's path rule; one
/// host) and never follows redirects by itself: a person's browser, scripted.
/// Keep one to sign in again within the provider's session.
pub struct Browser {
    http: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie) && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

impl Browser {
    pub fn new() -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Browser { http, jar: Mutex::new(Vec::new()) }
    }

    fn cookies_for(&self, url: &Url) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| path_matches(url.path(), &c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn keep(&self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let mut jar = self.jar.lock().unwrap();
        for h in headers.get_all(SET_COOKIE) {
            let Ok(line) = h.to_str() else { continue };
            let mut parts = line.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
            // The default path: the request path up to its last '/'.
            let mut path = match url.path().rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(i) => url.path()[..i].to_string(),
            };
            let mut gone = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.to_ascii_lowercase().as_str() {
                    "path" if v.starts_with('/') => path = v.to_string(),
                    "max-age" => gone |= v.parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => gone |= v.contains("1970"),
                    _ => {}
                }
            }
            jar.retain(|c| !(c.name == name && c.path == path));
            if !gone {
                jar.push(Cookie { name: name.to_string(), value: value.to_string(), path });
            }
        }
    }

    async fn send(&self, url: &Url, form: Option<Vec<(&str, &str)>>) -> reqwest::Response {
        let mut req = match &form {
            Some(f) => self.http.post(url.clone()).form(f),
            None => self.http.get(url.clone()),
        };
        if let Some(c) = self.cookies_for(url) {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        self.keep(url, r.headers());
        r
    }

    /// Walks the provider from `authorization_url` (its `/auth?…`, where the
    /// gateway redirected): signs in as `login` and consents when asked, and
    /// returns the URL the provider finally redirects to on another origin
    /// (the gateway's callback, with `code`, `state` and `iss`, or `error`).
    pub async fn sign_in(&self, authorization_url: &str, login: &str) -> String {
        self.walk(authorization_url, Some(login)).await
    }

    /// Like [`Browser::sign_in`], but cancels at the first page: the callback
    /// gets `error=access_denied`.
    pub async fn decline(&self, authorization_url: &str) -> String {
        self.walk(authorization_url, None).await
    }

    async fn walk(&self, start: &str, login: Option<&str>) -> String {
        let mut url = Url::parse(start).unwrap_or_else(|e| panic!("{start}: {e}"));
        let origin = url.origin();
        let mut form: Option<Vec<(&str, &str)>> = None;
        let mut trail = Vec::new();
        for _ in 0..20 {
            trail.push(format!("{} {url}", if form.is_some() { "POST" } else { "GET" }));
            let r = self.send(&url, form.take()).await;
            let status = r.status();
            if status.is_redirection() {
                let location = r.headers().get(LOCATION).and_then(|l| l.to_str().ok()).unwrap_or_default();
                let next = url.join(location).unwrap_or_else(|e| panic!("Location {location:?}: {e}"));
                if next.origin() != origin {
                    return next.into();
                }
                url = next;
                continue;
            }
            let body = r.text().await.unwrap_or_default();
            assert_eq!(status, StatusCode::OK, "{}\n→ {status}: {body}", trail.join("\n"));
            let actions: Vec<String> = body
                .split("action=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
                .map(|a| a.replace("&amp;", "&"))
                .collect();
            let pick = |suffix: &str| actions.iter().find(|a| a.ends_with(suffix)).cloned();
            let (action, fields) = match login {
                None => (pick("/abort"), vec![]),
                Some(login) => match pick("/login") {
                    Some(a) => (Some(a), vec![("login", login)]),
                    None => (pick("/confirm"), vec![]),
                },
            };
            let action = action.unwrap_or_else(|| panic!("{}\n→ a page with no form to use: {body}", trail.join("\n")));
            url = url.join(&action).expect("form action");
            form = Some(fields);
        }
        panic!("no redirect off the provider after 20 steps:\n{}", trail.join("\n"))
    }
}

/// [`Browser::sign_in`] with a fresh browser (no session at the provider).
pub async fn sign_in(authorization_url: &str, login: &str) -> String {
    Browser::new().sign_in(authorization_url, login).await
}

/// The GitHub stand-in's authorize URL redirects straight back: signs in as
/// `login` (its `login=` parameter) and returns the callback URL (`code`, `state`).
pub async fn github_sign_in(authorize_url: &str, login: &str) -> String {
    let mut url = Url::parse(authorize_url).unwrap_or_else(|e| panic!("{authorize_url}: {e}"));
    url.query_pairs_mut().append_pair("login", login);
    let r = Browser::new().send(&url, None).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{url}: {}", r.text().await.unwrap_or_default());
    r.headers().get(LOCATION).and_then(|l| l.to_str().ok()).expect("Location").to_string()
}
