-- Billing: unlimited users, token spend caps, versioned prices, reservations
-- (pre-consume → settle/refund), the balance ledger and redemption codes.

ALTER TABLE users ADD COLUMN unlimited INTEGER NOT NULL DEFAULT 0;
UPDATE users SET unlimited = 1 WHERE name = 'admin' AND role = 'admin';
ALTER TABLE tokens ADD COLUMN daily_limit INTEGER;
ALTER TABLE tokens ADD COLUMN monthly_limit INTEGER;

DROP TRIGGER users_upd;
CREATE TRIGGER users_upd AFTER UPDATE OF role, grp, status, unlimited ON users
    BEGIN UPDATE revision SET value = value + 1; END;
DROP TRIGGER tokens_upd;
CREATE TRIGGER tokens_upd AFTER UPDATE OF user_id, name, status, unlimited, models, ips, expires_at, daily_limit, monthly_limit ON tokens
    BEGIN UPDATE revision SET value = value + 1; END;

-- A price change is a new row; the price in force is the latest effective_at <= now.
CREATE TABLE price_versions (
    id                 INTEGER PRIMARY KEY,
    model              TEXT NOT NULL,               -- exact name or prefix*
    effective_at       INTEGER NOT NULL,
    input_per_m        INTEGER NOT NULL DEFAULT 0,
    output_per_m       INTEGER NOT NULL DEFAULT 0,
    cached_input_per_m INTEGER,
    per_request        INTEGER NOT NULL DEFAULT 0,
    per_image          INTEGER NOT NULL DEFAULT 0,
    per_audio_second   INTEGER NOT NULL DEFAULT 0,
    free               INTEGER NOT NULL DEFAULT 0,
    retired            INTEGER NOT NULL DEFAULT 0,  -- this version removes the price
    source             TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_at         INTEGER NOT NULL
);
CREATE INDEX price_versions_by_model ON price_versions (model, effective_at);
INSERT INTO price_versions (model, effective_at, input_per_m, output_per_m, per_request, source, created_at)
    SELECT model, 0, input_per_m, output_per_m, per_request, source, 0 FROM prices;
DROP TRIGGER prices_ins;
DROP TRIGGER prices_del;
DROP TRIGGER prices_upd;
DROP TABLE prices;
CREATE TRIGGER price_versions_ins AFTER INSERT ON price_versions BEGIN UPDATE revision SET value = value + 1; END;

ALTER TABLE usage_log ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN price_version INTEGER;

-- One row per request that held money: reserved, then settled or refunded exactly once.
CREATE TABLE reservations (
    request_id TEXT PRIMARY KEY,
    token_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    amount     INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'refunded')),
    charged    INTEGER,
    periods    TEXT NOT NULL,                       -- the spend periods it counted against
    created_at INTEGER NOT NULL,
    closed_at  INTEGER
);
CREATE INDEX reservations_open ON reservations (state, created_at);

-- Keyset order for streaming exports.
CREATE INDEX usage_by_time_id ON usage_log (created_at, request_id);

-- Spend per token per UTC day (d:YYYY-MM-DD) and month (m:YYYY-MM), for caps.
CREATE TABLE token_spend (
    token_id INTEGER NOT NULL,
    period   TEXT NOT NULL,
    spent    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (token_id, period)
) WITHOUT ROWID;

-- Balance changes other than request charges: top-ups, redemptions, adjustments.
CREATE TABLE balance_ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL,
    delta         INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('topup', 'redeem', 'adjust')),
    actor         TEXT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
);
CREATE INDEX balance_ledger_by_user ON balance_ledger (user_id, id);

-- Low-balance alerts, and per subject (user:ID / token:ID) the lowest threshold alerted.
CREATE TABLE alerts (
    id                INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('user', 'token')),
    subject_id        INTEGER NOT NULL,
    name              TEXT NOT NULL,
    threshold_percent INTEGER NOT NULL,
    remaining         INTEGER NOT NULL,
    total             INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE TABLE alert_levels (
    subject TEXT PRIMARY KEY,
    level   INTEGER
);

CREATE TABLE redemption_codes (
    id          INTEGER PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    code_hint   TEXT NOT NULL,
    batch       TEXT NOT NULL,
    value       INTEGER NOT NULL,
    expires_at  INTEGER,
    redeemed_by INTEGER,
    redeemed_at INTEGER,
    created_at  INTEGER NOT NULL
);
