-- Oblivious schema v1 (SQLite; WAL mode is set by the adapter on open).
-- Times are Unix milliseconds; money is integer quota units (1 unit = 1 micro-USD).

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    grp         TEXT NOT NULL DEFAULT 'default',
    status      TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    quota       INTEGER NOT NULL DEFAULT 0,
    used_quota  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    key_hint        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('normal', 'disabled', 'deleted')),
    unlimited       INTEGER NOT NULL,
    remaining_quota INTEGER NOT NULL,
    used_quota      INTEGER NOT NULL DEFAULT 0,
    models          TEXT NOT NULL DEFAULT '[]',  -- JSON array of names / prefix* patterns
    ips             TEXT NOT NULL DEFAULT '[]',  -- JSON array of CIDRs
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE channels (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    spec          TEXT NOT NULL,                 -- JSON ChannelSpec
    status        TEXT NOT NULL CHECK (status IN ('enabled', 'disabled', 'auto_disabled')),
    status_reason TEXT,
    source        TEXT NOT NULL CHECK (source IN ('config', 'api')),
    updated_at    INTEGER NOT NULL
);

CREATE TABLE user_groups (
    name        TEXT PRIMARY KEY,
    ratio_bp    INTEGER NOT NULL,                -- 10000 = 1.0
    description TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL CHECK (source IN ('config', 'api'))
);

CREATE TABLE prices (
    model        TEXT PRIMARY KEY,
    input_per_m  INTEGER NOT NULL,
    output_per_m INTEGER NOT NULL,
    per_request  INTEGER NOT NULL DEFAULT 0,
    source       TEXT NOT NULL CHECK (source IN ('config', 'api'))
);

CREATE TABLE usage_log (
    request_id        TEXT PRIMARY KEY,
    created_at        INTEGER NOT NULL,
    endpoint          TEXT NOT NULL,
    user_id           INTEGER NOT NULL,
    token_id          INTEGER NOT NULL,
    channel_id        INTEGER,
    key_index         INTEGER,
    requested_model   TEXT NOT NULL,
    upstream_model    TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    usage_estimated   INTEGER NOT NULL,
    cost              INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttfb_ms           INTEGER,
    status            INTEGER NOT NULL,
    stream            INTEGER NOT NULL,
    retries           INTEGER NOT NULL,
    error             TEXT
);
CREATE INDEX usage_by_time ON usage_log (created_at);
CREATE INDEX usage_by_user ON usage_log (user_id, created_at);
CREATE INDEX usage_by_token ON usage_log (token_id, created_at);

-- Jobs published through the in-process queue; a row lives until its job is done.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    payload    TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL DEFAULT 0,
    dead       INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (dead, next_at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One counter that every cache-relevant change bumps, so a running server
-- notices edits made by the CLI (another process) with one cheap read.
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER users_del AFTER DELETE ON users BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER users_upd AFTER UPDATE OF role, grp, status ON users BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER tokens_ins AFTER INSERT ON tokens BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER tokens_del AFTER DELETE ON tokens BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER tokens_upd AFTER UPDATE OF user_id, name, status, unlimited, models, ips, expires_at ON tokens
    BEGIN UPDATE revision SET value = value + 1; END;
-- Spending quota changes nothing a cache needs, unless the token runs out or is revived.
CREATE TRIGGER tokens_quota AFTER UPDATE OF remaining_quota ON tokens
    WHEN (old.remaining_quota > 0) != (new.remaining_quota > 0)
    BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER channels_ins AFTER INSERT ON channels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER channels_del AFTER DELETE ON channels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER channels_upd AFTER UPDATE ON channels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER groups_ins AFTER INSERT ON user_groups BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER groups_del AFTER DELETE ON user_groups BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER groups_upd AFTER UPDATE ON user_groups BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER prices_ins AFTER INSERT ON prices BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER prices_del AFTER DELETE ON prices BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER prices_upd AFTER UPDATE ON prices BEGIN UPDATE revision SET value = value + 1; END;
