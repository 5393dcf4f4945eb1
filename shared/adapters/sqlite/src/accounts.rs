//! [`Accounts`] over SQLite. Every multi-row change is one write job, so it
//! runs in one savepoint of the writer's transaction: all of it or nothing.

use oblivious_core::model::{Id, User};
use oblivious_ports::{
    Account, Accounts, AuditEntry, AuditFilter, Identity, NewAccount, NewUser, Purpose, RefreshLookup, Session,
    SigningKey, StoreError, StoreResult, Ticket,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::db::{Cached, DbResult};
use crate::rows::{self, ACCOUNT_COLS, AUDIT_COLS, IDENTITY_COLS, SESSION_COLS, SIGNING_KEY_COLS, TICKET_COLS};
use crate::store::{found, insert_user};
use crate::SqliteStore;

fn account_by_id(c: &Connection, user_id: Id) -> DbResult<Option<Account>> {
    Ok(c.row(&format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE user_id = ?1"), [user_id], rows::account)
        .optional()?)
}

fn session_by_id(c: &Connection, id: &str) -> DbResult<Option<Session>> {
    Ok(c.row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"), [id], rows::session).optional()?)
}

/// The session and its first refresh token (every token is remembered, to spot replays).
fn insert_session(c: &Connection, s: &Session) -> DbResult<()> {
    c.exec(
        &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            s.id,
            s.user_id,
            s.refresh_hash,
            s.ip,
            s.user_agent,
            s.created_at,
            s.last_seen_at,
            s.expires_at,
            s.revoked_at
        ],
    )?;
    c.exec("INSERT INTO refresh_tokens (hash, session_id) VALUES (?1, ?2)", params![s.refresh_hash, s.id])?;
    Ok(())
}

fn rows_of<T>(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> DbResult<Vec<T>> {
    let mut st = c.prepare_cached(sql)?;
    let v = st.query_map(args, f)?.collect::<Result<Vec<_>, _>>()?;
    Ok(v)
}

/// The audit query for the filters present: a fixed `?1 IS NULL OR …` form
/// would keep SQLite from using the actor and target indexes.
fn audit_query(f: &AuditFilter, limit: u64) -> (String, Vec<Value>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &'static str, v: Option<Value>| {
        if let Some(v) = v {
            clauses.push(clause);
            args.push(v);
        }
    };
    add("actor_id = ?", f.actor_id.map(Value::Integer));
    add("target_id = ?", f.target_id.map(Value::Integer));
    add("action = ?", f.action.clone().map(Value::Text));
    add("at >= ?", f.since.map(Value::Integer));
    add("at < ?", f.until.map(Value::Integer));
    add("id < ?", f.before.clone().map(Value::Text));
    if let Some(id) = f.involving {
        clauses.push("(actor_id = ? OR target_id = ?)");
        args.extend([Value::Integer(id), Value::Integer(id)]);
    }
    let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    args.push(Value::Integer(limit.min(i64::MAX as u64) as i64));
    (format!("SELECT {AUDIT_COLS} FROM audit {filter} ORDER BY id DESC LIMIT ?"), args)
}

impl Accounts for SqliteStore {
    async fn create_account(
        &self,
        user: NewUser,
        account: NewAccount,
        session: Option<Session>,
        now_ms: i64,
    ) -> StoreResult<(User, Account)> {
        self.db()
            .write(move |tx| {
                let user = insert_user(tx, &user, now_ms)?;
                tx.exec(
                    "INSERT INTO accounts (user_id, email, email_verified, password_hash, display_name, version,
                        created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
                    params![
                        user.id,
                        account.email.to_lowercase(),
                        account.email_verified,
                        account.password_hash,
                        account.display_name,
                        now_ms
                    ],
                )?;
                if let Some(s) = session {
                    insert_session(tx, &Session { user_id: user.id, ..s })?;
                }
                let account = found(account_by_id(tx, user.id)?, || format!("account {}", user.id))?;
                Ok((user, account))
            })
            .await
    }

    async fn attach_account(&self, user_id: Id, account: NewAccount, now_ms: i64) -> StoreResult<Account> {
        self.db()
            .write(move |tx| {
                let exists = tx.row("SELECT COUNT(*) FROM users WHERE id = ?1", [user_id], |r| r.get::<_, i64>(0))?;
                if exists == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")).into());
                }
                tx.exec(
                    "INSERT INTO accounts (user_id, email, email_verified, password_hash, display_name, version,
                        created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
                    params![
                        user_id,
                        account.email.to_lowercase(),
                        account.email_verified,
                        account.password_hash,
                        account.display_name,
                        now_ms
                    ],
                )?;
                found(account_by_id(tx, user_id)?, || format!("account {user_id}"))
            })
            .await
    }

    async fn account(&self, user_id: Id) -> StoreResult<Option<Account>> {
        self.db().read(move |c| account_by_id(c, user_id)).await
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let email = email.to_lowercase();
        self.db()
            .read(move |c| {
                Ok(c.row(&format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE email = ?1"), [email], rows::account)
                    .optional()?)
            })
            .await
    }

    async fn update_account(&self, a: Account, now_ms: i64) -> StoreResult<Account> {
        self.db()
            .write(move |tx| {
                let changed = tx.exec(
                    "UPDATE accounts SET email = ?2, email_verified = ?3, password_hash = ?4, display_name = ?5,
                        settings = ?6, totp_secret = ?7, totp_enabled = ?8, recovery_codes = ?9, failed_signins = ?10,
                        locked_until = ?11, version = version + 1, updated_at = ?12
                     WHERE user_id = ?1 AND version = ?13",
                    params![
                        a.user_id,
                        a.email.to_lowercase(),
                        a.email_verified,
                        a.password_hash,
                        a.display_name,
                        serde_json::to_string(&a.settings)?,
                        a.totp_secret,
                        a.totp_enabled,
                        serde_json::to_string(&a.recovery_codes)?,
                        a.failed_signins,
                        a.locked_until,
                        now_ms,
                        a.version
                    ],
                )?;
                if changed == 0 {
                    let exists =
                        tx.row("SELECT 1 FROM accounts WHERE user_id = ?1", [a.user_id], |_| Ok(())).optional()?;
                    let err = match exists {
                        Some(()) => StoreError::Conflict(format!(
                            "account {} changed since version {} was read",
                            a.user_id, a.version
                        )),
                        None => StoreError::NotFound(format!("account {}", a.user_id)),
                    };
                    return Err(err.into());
                }
                found(account_by_id(tx, a.user_id)?, || format!("account {}", a.user_id))
            })
            .await
    }

    async fn delete_account(&self, user_id: Id) -> StoreResult<()> {
        self.db()
            .write(move |tx| {
                tx.exec(
                    "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = ?1)",
                    [user_id],
                )?;
                tx.exec("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
                tx.exec("DELETE FROM identities WHERE user_id = ?1", [user_id])?;
                tx.exec("DELETE FROM accounts WHERE user_id = ?1", [user_id])?;
                Ok(())
            })
            .await
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        self.db().write(move |tx| insert_session(tx, &session)).await
    }

    async fn session(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_string();
        self.db().read(move |c| session_by_id(c, &id)).await
    }

    async fn sessions(&self, user_id: Id, now_ms: i64) -> StoreResult<Vec<Session>> {
        self.db()
            .read(move |c| {
                rows_of(
                    c,
                    &format!(
                        "SELECT {SESSION_COLS} FROM sessions
                         WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                         ORDER BY created_at DESC, id"
                    ),
                    params![user_id, now_ms],
                    rows::session,
                )
            })
            .await
    }

    async fn session_by_refresh(&self, refresh_hash: &str) -> StoreResult<RefreshLookup> {
        let hash = refresh_hash.to_string();
        self.db()
            .read(move |c| {
                let found = c
                    .row(
                        &format!(
                            "SELECT {SESSION_COLS} FROM sessions
                             WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = ?1)"
                        ),
                        [&hash],
                        rows::session,
                    )
                    .optional()?;
                Ok(match found {
                    None => RefreshLookup::Unknown,
                    Some(s) if s.refresh_hash == hash => RefreshLookup::Current(s),
                    Some(s) => RefreshLookup::Reused(s),
                })
            })
            .await
    }

    async fn rotate_session(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
        ip: Option<String>,
        user_agent: Option<String>,
        now_ms: i64,
    ) -> StoreResult<Option<Session>> {
        let (id, old, new) = (id.to_string(), old_hash.to_string(), new_hash.to_string());
        self.db()
            .write(move |tx| {
                // Compare-and-set on the current hash: of racing rotations, one matches.
                // An unknown ip or user agent keeps the last one seen.
                let swapped = tx.exec(
                    "UPDATE sessions SET refresh_hash = ?3, last_seen_at = ?4, ip = COALESCE(?5, ip),
                        user_agent = COALESCE(?6, user_agent)
                     WHERE id = ?1 AND refresh_hash = ?2 AND revoked_at IS NULL",
                    params![id, old, new, now_ms, ip, user_agent],
                )?;
                if swapped == 0 {
                    return Ok(None);
                }
                tx.exec("INSERT INTO refresh_tokens (hash, session_id) VALUES (?1, ?2)", params![new, id])?;
                session_by_id(tx, &id)
            })
            .await
    }

    async fn revoke_session(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        let id = id.to_string();
        self.db()
            .write(move |tx| {
                // Matched rows count, changed or not: 0 means no such session.
                let n = tx.exec(
                    "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, now_ms],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("session {id}")).into());
                }
                Ok(())
            })
            .await
    }

    async fn revoke_sessions(&self, user_id: Id, except: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        let except = except.map(str::to_string);
        self.db()
            .write(move |tx| {
                let n = tx.exec(
                    "UPDATE sessions SET revoked_at = ?2
                     WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 AND (?3 IS NULL OR id != ?3)",
                    params![user_id, now_ms, except],
                )?;
                Ok(n as u64)
            })
            .await
    }

    async fn put_ticket(&self, t: Ticket) -> StoreResult<()> {
        self.db()
            .write(move |tx| {
                // Abandoned tickets (an OIDC sign-in never finished, a link never
                // opened) go as new ones come, a bounded batch at a time.
                tx.exec(
                    "DELETE FROM tickets WHERE hash IN (SELECT hash FROM tickets WHERE expires_at < ?1 LIMIT 100)",
                    [t.created_at],
                )?;
                tx.exec(
                    &format!("INSERT INTO tickets ({TICKET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![t.hash, t.purpose.as_str(), t.user_id, t.data, t.created_at, t.expires_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn take_ticket(&self, hash: &str, purpose: Purpose, now_ms: i64) -> StoreResult<Option<Ticket>> {
        let hash = hash.to_string();
        self.db()
            .write(move |tx| {
                // Gone once found, whatever it was for: a guess at the wrong purpose burns it.
                let t = tx
                    .row(&format!("DELETE FROM tickets WHERE hash = ?1 RETURNING {TICKET_COLS}"), [hash], rows::ticket)
                    .optional()?;
                Ok(t.filter(|t| t.purpose == purpose && now_ms < t.expires_at))
            })
            .await
    }

    async fn drop_tickets(&self, user_id: Id, purpose: Purpose) -> StoreResult<u64> {
        self.db()
            .write(move |tx| {
                let n = tx.exec(
                    "DELETE FROM tickets WHERE user_id = ?1 AND purpose = ?2",
                    params![user_id, purpose.as_str()],
                )?;
                Ok(n as u64)
            })
            .await
    }

    async fn link_identity(&self, i: Identity) -> StoreResult<()> {
        self.db()
            .write(move |tx| {
                tx.exec(
                    &format!("INSERT INTO identities ({IDENTITY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![i.provider, i.subject, i.user_id, i.email, i.created_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn identity(&self, provider: &str, subject: &str) -> StoreResult<Option<Identity>> {
        let (provider, subject) = (provider.to_string(), subject.to_string());
        self.db()
            .read(move |c| {
                Ok(c.row(
                    &format!("SELECT {IDENTITY_COLS} FROM identities WHERE provider = ?1 AND subject = ?2"),
                    [provider, subject],
                    rows::identity,
                )
                .optional()?)
            })
            .await
    }

    async fn identities(&self, user_id: Id) -> StoreResult<Vec<Identity>> {
        self.db()
            .read(move |c| {
                rows_of(
                    c,
                    &format!("SELECT {IDENTITY_COLS} FROM identities WHERE user_id = ?1 ORDER BY provider, subject"),
                    [user_id],
                    rows::identity,
                )
            })
            .await
    }

    async fn unlink_identity(&self, user_id: Id, provider: &str) -> StoreResult<()> {
        let provider = provider.to_string();
        self.db()
            .write(move |tx| {
                let n =
                    tx.exec("DELETE FROM identities WHERE user_id = ?1 AND provider = ?2", params![user_id, provider])?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("{provider} identity of user {user_id}")).into());
                }
                Ok(())
            })
            .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        self.db()
            .read(|c| {
                rows_of(
                    c,
                    &format!("SELECT {SIGNING_KEY_COLS} FROM signing_keys ORDER BY created_at DESC, kid DESC"),
                    [],
                    rows::signing_key,
                )
            })
            .await
    }

    async fn add_signing_key(&self, k: SigningKey) -> StoreResult<()> {
        self.db()
            .write(move |tx| {
                tx.exec(
                    &format!("INSERT INTO signing_keys ({SIGNING_KEY_COLS}) VALUES (?1, ?2, ?3, ?4)"),
                    params![k.kid, k.secret, k.created_at, k.expires_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn prune_signing_keys(&self, now_ms: i64) -> StoreResult<u64> {
        self.db().write(move |tx| Ok(tx.exec("DELETE FROM signing_keys WHERE expires_at < ?1", [now_ms])? as u64)).await
    }

    async fn append_audit(&self, e: AuditEntry) -> StoreResult<()> {
        self.db()
            .write(move |tx| {
                tx.exec(
                    &format!(
                        "INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    params![
                        e.id,
                        e.at,
                        e.action,
                        e.actor_id,
                        e.target_id,
                        e.subject,
                        e.ip,
                        e.user_agent,
                        e.request_id,
                        e.detail
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn audit(&self, filter: AuditFilter, limit: u64) -> StoreResult<Vec<AuditEntry>> {
        self.db()
            .read(move |c| {
                let (sql, args) = audit_query(&filter, limit);
                rows_of(c, &sql, params_from_iter(args), rows::audit)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Db;
    use oblivious_core::model::Role;
    use oblivious_ports::conformance::{new_account, new_user};
    use oblivious_ports::{Store, UserPatch};

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("obl-accounts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_new_account_moves_the_revision_as_a_new_user_does() {
        let dir = temp("revision");
        let s = SqliteStore::new(Db::open(&dir.join("t.db")).unwrap());
        let before = s.revision().await.unwrap();
        s.create_account(new_user("ada", 0), new_account("ada@example.com"), None, 1).await.unwrap();
        assert!(s.revision().await.unwrap() > before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// 0004 rebuilds `users` (for the `root` role) under the tokens that reference it.
    #[tokio::test(flavor = "multi_thread")]
    async fn upgrading_keeps_users_tokens_and_their_link() {
        let dir = temp("upgrade");
        let path = dir.join("t.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "foreign_keys", "ON").unwrap();
            c.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for (version, sql) in &crate::db::MIGRATIONS[..3] {
                c.execute_batch(sql).unwrap();
                c.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).unwrap();
            }
            c.execute_batch(
                "INSERT INTO users (id, name, role, quota, used_quota, created_at, unlimited)
                    VALUES (7, 'old', 'admin', 50, 5, 3, 1);
                 INSERT INTO tokens (user_id, name, key_hash, key_hint, status, unlimited, remaining_quota, created_at)
                    VALUES (7, 't', 'h', 'sk-…', 'normal', 0, 10, 3);",
            )
            .unwrap();
        }
        let s = SqliteStore::new(Db::open(&path).unwrap());
        let u = s.user(7).await.unwrap().unwrap();
        assert_eq!((u.name.as_str(), u.role, u.quota, u.used_quota, u.unlimited), ("old", Role::Admin, 50, 5, true));
        assert_eq!(s.token_by_hash("h").await.unwrap().unwrap().user_id, 7);
        let rev = s.revision().await.unwrap();
        let patch = UserPatch { role: Some(Role::Root), ..Default::default() };
        assert_eq!(s.update_user(7, patch).await.unwrap().role, Role::Root);
        assert!(s.revision().await.unwrap() > rev, "the rebuilt table's triggers are back");
        // The tokens' foreign key points at the new table.
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        let orphan = c.execute(
            "INSERT INTO tokens (user_id, name, key_hash, key_hint, status, unlimited, remaining_quota, created_at)
                VALUES (99, 't', 'h2', 'sk-…', 'normal', 0, 10, 3)",
            [],
        );
        assert!(orphan.is_err(), "{orphan:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
