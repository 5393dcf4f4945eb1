// A real OpenID provider for the sign-in tests (the certified `oidc-provider`
// package), and a GitHub OAuth stand-in, both on 127.0.0.1 only.
//
//   node tests/oidc/provider.mjs OIDC_PORT [GITHUB_PORT]
//
// Prints "oidc ready on http://127.0.0.1:OIDC_PORT" (and "github ready on …")
// once listening. (oidc-provider warns that it wants Node 22 LTS; it runs on 20.)
//
// ── The OpenID provider ─────────────────────────────────────────────────────
// Issuer `http://127.0.0.1:OIDC_PORT`, discovery at
// `/.well-known/openid-configuration`, authorization `/auth`, token `/token`,
// userinfo `/me`, JWKS `/jwks` (one RSA key, kid `rs256`, and one P-256 key,
// kid `es256`; ID tokens are RS256 unless a client asks for ES256). PKCE (S256)
// is required of every client. ID tokens carry the scopes' claims
// (`email`, `email_verified`, `name`, `preferred_username`, `picture`), as
// Google's and Keycloak's do; `/me` answers them too.
//
// Accounts (the login name is the `sub`):
//   alice  alice@example.com  email_verified: true   name "Alice Example"
//   bob    bob@example.com    email_verified: false  name "Bob Example"
// More with POST /admin/accounts {"login","email","email_verified","name"}.
//
// Clients:
//   - one from the environment: OIDC_CLIENT_ID (default `oblivious-test`),
//     OIDC_CLIENT_SECRET (default `oblivious-test-secret`), OIDC_REDIRECT_URIS
//     (comma-separated; default `http://127.0.0.1/api/auth/oidc/test/callback`),
//     client_secret_basic (oidc-provider takes _post from it too). It is
//     registered as a *native* client, so (RFC 8252 §7.3) an `http://127.0.0.1`
//     redirect URI matches on any port: register the path, point it at
//     whatever port the gateway got.
//   - any others with POST /admin/clients and client metadata as JSON, e.g.
//     {"client_id","client_secret","redirect_uris":[…],
//      "token_endpoint_auth_method":"client_secret_post",
//      "id_token_signed_response_alg":"ES256"} → 201 (400 with the reason).
//
// A sign-in over plain HTTP, no browser, cookies kept, redirects not followed:
//   1. GET  /auth?response_type=code&client_id&redirect_uri&scope&state&nonce
//           &code_challenge&code_challenge_method=S256
//        → 303 Location: /interaction/UID  (sets `_interaction` cookies, path
//          /interaction/UID, and `_interaction_resume`, path /auth/UID)
//   2. GET  /interaction/UID
//        → 200 HTML: <form method="post" action="/interaction/UID/login" data-step="login">
//   3. POST /interaction/UID/login   (form: login=alice)
//        → 303 Location: /auth/UID  → GET it (sets `_session`)
//        → 303 Location: /interaction/UID2  (the consent prompt)
//   4. GET  /interaction/UID2
//        → 200 HTML: <form method="post" action="/interaction/UID2/confirm" data-step="consent">
//   5. POST /interaction/UID2/confirm (empty form)
//        → 303 Location: /auth/UID2 → GET it
//        → 303 Location: REDIRECT_URI?code=…&state=…&iss=…
//   (POST /interaction/UID/abort at either step answers the client with
//   error=access_denied instead.) A second sign-in with the same cookies skips
//   the login (the session) and the consent (the grant) steps.
//   Then POST /token (client_secret_basic or _post, grant_type=authorization_code,
//   code, redirect_uri, code_verifier) → {access_token, id_token, …}.
//   tests/src/oidc.rs walks this (`sign_in`).
//
// ── The GitHub stand-in (GITHUB_PORT) ───────────────────────────────────────
// Only what the GitHub preset calls, shaped like github.com's answers:
//   GET  /login/oauth/authorize?client_id&redirect_uri&state[&code_challenge…][&login=bob]
//        → 302 REDIRECT_URI?code=…&state=…  (no page: signs in as `login`, default alice)
//   POST /login/oauth/access_token (form or JSON: client_id, client_secret, code,
//        redirect_uri, code_verifier) → {access_token, token_type, scope} (JSON with
//        `Accept: application/json`, else a form body); errors are 200
//        {"error":"bad_verification_code"|"incorrect_client_credentials"|…}, as GitHub does
//   GET  /api/user         (Authorization: Bearer|token …) → {login, id, name, avatar_url, email}
//   GET  /api/user/emails  → [{email, primary, verified, visibility}]
// Its client: GITHUB_CLIENT_ID / GITHUB_CLIENT_SECRET (default: the OIDC client's).
// GitHub ids: alice 1001 (primary alice@example.com, verified; alice@work.example
// verified too), bob 1002 (primary bob@example.com, unverified; no name).
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import http from "node:http";

import Provider, { interactionPolicy } from "oidc-provider";

const [oidcPortArg, githubPortArg] = process.argv.slice(2);
const port = (s) => {
  const n = Number.parseInt(s ?? "", 10);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) {
    console.error(`provider.mjs: bad port ${JSON.stringify(s)}`);
    process.exit(2);
  }
  return n;
};
const oidcPort = port(oidcPortArg);
const githubPort = githubPortArg === undefined ? undefined : port(githubPortArg);
const issuer = `http://127.0.0.1:${oidcPort}`;

const clientId = process.env.OIDC_CLIENT_ID || "oblivious-test";
const clientSecret = process.env.OIDC_CLIENT_SECRET || "oblivious-test-secret";
const redirectUris = (process.env.OIDC_REDIRECT_URIS || "http://127.0.0.1/api/auth/oidc/test/callback")
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);

// login → claims; shared by both servers.
const accounts = new Map([
  ["alice", { email: "alice@example.com", email_verified: true, name: "Alice Example", github_id: 1001,
    github_emails: [
      { email: "alice@example.com", primary: true, verified: true, visibility: "public" },
      { email: "alice@work.example", primary: false, verified: true, visibility: null },
    ] }],
  ["bob", { email: "bob@example.com", email_verified: false, name: "Bob Example", github_id: 1002, github_name: null,
    github_emails: [{ email: "bob@example.com", primary: true, verified: false, visibility: "private" }] }],
]);
let nextGithubId = 2001;

function oidcClaims(login) {
  const a = accounts.get(login);
  return {
    sub: login,
    email: a.email,
    email_verified: a.email_verified,
    name: a.name,
    preferred_username: login,
    picture: `${issuer}/avatars/${encodeURIComponent(login)}.png`,
  };
}

const jwk = (type, options, kid, alg) => {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: "jwk" }), kid, alg, use: "sig" };
};

// The default client is native only for the loopback port rule: drop the
// consent oidc-provider asks of native clients on every sign-in, so a second
// sign-in within the session shows no page, as a web client's does.
const policy = interactionPolicy.base();
policy.get("consent").checks.remove("native_client_prompt");

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    application_type: "native",
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  jwks: {
    keys: [
      jwk("rsa", { modulusLength: 2048 }, "rs256", "RS256"),
      jwk("ec", { namedCurve: "P-256" }, "es256", "ES256"),
    ],
  },
  pkce: { required: () => true },
  // Scope claims in the ID token too (Google, Keycloak, Entra ID put them there).
  conformIdTokenClaims: false,
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username", "picture"],
  },
  scopes: ["openid", "email", "profile"],
  async findAccount(_ctx, id) {
    if (!accounts.has(id)) return undefined;
    return { accountId: id, claims: async () => oidcClaims(id) };
  },
  cookies: { keys: ["oblivious-test-cookie-key"] },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
  },
  interactions: { policy, url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
});
// Cookies are never `Secure` here: the requests are plain http (ctx.secure is false).

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;
}

// The interaction pages and the admin API, in front of the provider's own routes.
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
  if (m) {
    const [, uid, action] = m;
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, "interaction cookie does not match the URL");
    const { prompt, params, session } = details;
    if (!action && ctx.method === "GET") {
      ctx.type = "html";
      ctx.body = prompt.name === "login"
        ? page("Sign in", `<h1>Sign in to ${esc(params.client_id)}</h1>
<form method="post" action="/interaction/${esc(uid)}/login" data-step="login">
<label>Login <input name="login" autofocus></label> <button type="submit">Sign in</button></form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`)
        : page("Consent", `<h1>${esc(params.client_id)} asks for ${esc(params.scope)}</h1>
<form method="post" action="/interaction/${esc(uid)}/confirm" data-step="consent"><button type="submit">Allow</button></form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Deny</button></form>`);
      return;
    }
    if (ctx.method !== "POST" || !action) ctx.throw(405);
    const form = new URLSearchParams(await readBody(ctx.req));
    let result;
    if (action === "abort") {
      result = { error: "access_denied", error_description: "End-User aborted interaction" };
    } else if (action === "login") {
      if (prompt.name !== "login") ctx.throw(400, `this interaction is ${prompt.name}, not login`);
      const login = (form.get("login") || "").trim();
      if (!accounts.has(login)) {
        ctx.status = 400;
        ctx.type = "html";
        ctx.body = page("Sign in", `<p>No account named ${esc(login)}.</p>`);
        return;
      }
      result = { login: { accountId: login } };
    } else {
      if (prompt.name !== "consent") ctx.throw(400, `this interaction is ${prompt.name}, not consent`);
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(" "));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }

  if (ctx.path === "/admin/clients" && ctx.method === "POST") {
    const metadata = { grant_types: ["authorization_code"], response_types: ["code"], ...JSON.parse(await readBody(ctx.req)) };
    try {
      await provider.Client.validate(metadata);
    } catch (e) {
      ctx.status = 400;
      ctx.body = { error: e.error || "invalid_client_metadata", error_description: e.error_description || e.message };
      return;
    }
    await provider.Client.adapter.upsert(metadata.client_id, metadata);
    ctx.status = 201;
    ctx.body = { client_id: metadata.client_id };
    return;
  }
  if (ctx.path === "/admin/accounts" && ctx.method === "POST") {
    const a = JSON.parse(await readBody(ctx.req));
    if (!a.login || !a.email) ctx.throw(400, "login and email are required");
    const github_id = a.github_id ?? nextGithubId++;
    accounts.set(a.login, {
      email: a.email,
      email_verified: Boolean(a.email_verified),
      name: a.name ?? null,
      github_id,
      github_emails: [{ email: a.email, primary: true, verified: Boolean(a.email_verified), visibility: null }],
    });
    ctx.status = 201;
    ctx.body = { login: a.login, github_id };
    return;
  }
  await next();
});

const servers = [];
const oidcServer = http.createServer(provider.callback());
servers.push(oidcServer);
oidcServer.on("error", (err) => {
  console.error(`provider.mjs (oidc): ${err.message}`);
  process.exit(1);
});
oidcServer.listen(oidcPort, "127.0.0.1", () => console.log(`oidc ready on ${issuer}`));

// ── GitHub ──────────────────────────────────────────────────────────────────
if (githubPort !== undefined) {
  const ghClientId = process.env.GITHUB_CLIENT_ID || clientId;
  const ghClientSecret = process.env.GITHUB_CLIENT_SECRET || clientSecret;
  const codes = new Map(); // code → {login, redirect_uri, code_challenge, client_id}
  const tokens = new Map(); // access token → login

  const json = (res, status, body) => {
    res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify(body));
  };
  const tokenAnswer = (req, res, body) => {
    if ((req.headers.accept || "").includes("application/json")) return json(res, 200, body);
    res.writeHead(200, { "content-type": "application/x-www-form-urlencoded; charset=utf-8" });
    res.end(new URLSearchParams(body).toString());
  };
  const ghError = (req, res, error, description) =>
    tokenAnswer(req, res, { error, error_description: description, error_uri: "https://docs.github.com/apps/oauth" });
  const bearer = (req) => {
    const m = (req.headers.authorization || "").match(/^(?:bearer|token)\s+(\S+)$/i);
    return m ? tokens.get(m[1]) : undefined;
  };

  const github = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, `http://127.0.0.1:${githubPort}`);
      if (req.method === "GET" && url.pathname === "/login/oauth/authorize") {
        const q = url.searchParams;
        const redirect = q.get("redirect_uri");
        if (q.get("client_id") !== ghClientId || !redirect) return json(res, 404, { message: "Not Found" });
        const login = q.get("login") || "alice";
        if (!accounts.has(login)) return json(res, 404, { message: `no account ${login}` });
        const code = randomBytes(10).toString("hex");
        codes.set(code, { login, redirect_uri: redirect, code_challenge: q.get("code_challenge"), client_id: q.get("client_id") });
        const back = new URL(redirect);
        back.searchParams.set("code", code);
        if (q.has("state")) back.searchParams.set("state", q.get("state"));
        res.writeHead(302, { location: back.toString() });
        return res.end();
      }
      if (req.method === "POST" && url.pathname === "/login/oauth/access_token") {
        const raw = await readBody(req);
        const p = (req.headers["content-type"] || "").includes("json")
          ? new Map(Object.entries(JSON.parse(raw || "{}")))
          : new URLSearchParams(raw);
        if (p.get("client_id") !== ghClientId || p.get("client_secret") !== ghClientSecret) {
          return ghError(req, res, "incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.");
        }
        const grant = codes.get(p.get("code"));
        codes.delete(p.get("code"));
        if (!grant || grant.client_id !== p.get("client_id")) {
          return ghError(req, res, "bad_verification_code", "The code passed is incorrect or expired.");
        }
        if (p.get("redirect_uri") && p.get("redirect_uri") !== grant.redirect_uri) {
          return ghError(req, res, "redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.");
        }
        if (grant.code_challenge) {
          const verifier = p.get("code_verifier") || "";
          if (createHash("sha256").update(verifier).digest("base64url") !== grant.code_challenge) {
            return ghError(req, res, "bad_verification_code", "The code_verifier does not match the code_challenge.");
          }
        }
        const token = `gho_${randomBytes(18).toString("hex")}`;
        tokens.set(token, grant.login);
        return tokenAnswer(req, res, { access_token: token, token_type: "bearer", scope: "read:user,user:email" });
      }
      if (req.method === "GET" && (url.pathname === "/api/user" || url.pathname === "/api/user/emails")) {
        const login = bearer(req);
        if (!login) return json(res, 401, { message: "Bad credentials", documentation_url: "https://docs.github.com/rest", status: "401" });
        const a = accounts.get(login);
        if (url.pathname === "/api/user/emails") return json(res, 200, a.github_emails);
        const name = "github_name" in a ? a.github_name : a.name;
        return json(res, 200, {
          login,
          id: a.github_id,
          node_id: `U_${a.github_id}`,
          avatar_url: `http://127.0.0.1:${githubPort}/avatars/${a.github_id}`,
          type: "User",
          name,
          email: a.github_emails.find((e) => e.visibility === "public")?.email ?? null,
        });
      }
      return json(res, 404, { message: "Not Found" });
    } catch (e) {
      return json(res, 500, { message: String(e && e.message || e) });
    }
  });
  servers.push(github);
  github.on("error", (err) => {
    console.error(`provider.mjs (github): ${err.message}`);
    process.exit(1);
  });
  github.listen(githubPort, "127.0.0.1", () => console.log(`github ready on http://127.0.0.1:${githubPort}`));
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const s of servers) s.close();
    process.exit(0);
  });
}
