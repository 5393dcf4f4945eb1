-- Accounts: what people sign in with. Credentials and settings, sessions and
-- every refresh token they had, single-use tickets, linked OIDC identities,
-- JWT signing keys and the audit log. Secrets arrive hashed or sealed.

-- The `root` role. A CHECK cannot be altered, so `users` is rebuilt: copied
-- aside, dropped and made again. Tokens reference it; deferring foreign keys
-- lets the drop orphan them until the rows are back (checked at commit).
PRAGMA defer_foreign_keys = ON;
CREATE TABLE users_0004 AS SELECT id, name, role, grp, status, quota, used_quota, created_at, unlimited FROM users;
DROP TABLE users;
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('root', 'admin', 'user')),
    grp         TEXT NOT NULL DEFAULT 'default',
    status      TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    quota       INTEGER NOT NULL DEFAULT 0,
    used_quota  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    unlimited   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users (id, name, role, grp, status, quota, used_quota, created_at, unlimited)
    SELECT id, name, role, grp, status, quota, used_quota, created_at, unlimited FROM users_0004;
DROP TABLE users_0004;
-- The drop took the triggers with it (0001, and users_upd as 0002 made it).
CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER users_del AFTER DELETE ON users BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER users_upd AFTER UPDATE OF role, grp, status, unlimited ON users
    BEGIN UPDATE revision SET value = value + 1; END;

CREATE TABLE accounts (
    user_id        INTEGER PRIMARY KEY REFERENCES users (id),
    email          TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    email_verified INTEGER NOT NULL DEFAULT 0,
    password_hash  TEXT,                          -- Argon2id PHC; NULL: provider sign-in only
    display_name   TEXT NOT NULL DEFAULT '',
    settings       TEXT NOT NULL DEFAULT '{}',    -- JSON Settings
    totp_secret    TEXT,                          -- sealed
    totp_enabled   INTEGER NOT NULL DEFAULT 0,
    recovery_codes TEXT NOT NULL DEFAULT '[]',    -- JSON array of SHA-256 hex
    failed_signins INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER,
    version        INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- No foreign key to users: the port accepts any user id (the row always stays anyway).
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    refresh_hash TEXT NOT NULL,                   -- the current refresh token
    ip           TEXT,
    user_agent   TEXT,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);

-- Every refresh token a session ever had: a rotated-away one seen again is a replay.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE tickets (
    hash       TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL
        CHECK (purpose IN ('verify_email', 'reset_password', 'invite', 'oidc_state', 'second_factor', 'setup')),
    user_id    INTEGER NOT NULL,                  -- 0 for OIDC state
    data       TEXT NOT NULL,                     -- JSON
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tickets_by_user ON tickets (user_id, purpose);
CREATE INDEX tickets_by_expiry ON tickets (expires_at);

CREATE TABLE identities (
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    INTEGER NOT NULL,
    email      TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
) WITHOUT ROWID;
CREATE INDEX identities_by_user ON identities (user_id, provider);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,                     -- sealed
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Append-only. Ids sort by time, so the table is clustered on them (newest-first pages).
CREATE TABLE audit (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    action     TEXT NOT NULL,
    actor_id   INTEGER,
    target_id  INTEGER,
    subject    TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'         -- JSON
) WITHOUT ROWID;
-- Secondary indexes of a WITHOUT ROWID table carry the key: these are (actor_id, id) and (target_id, id).
CREATE INDEX audit_by_actor ON audit (actor_id);
CREATE INDEX audit_by_target ON audit (target_id);
CREATE INDEX audit_by_action ON audit (action);
CREATE INDEX audit_by_at ON audit (at);
