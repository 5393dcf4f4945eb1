//! Conformance cases for the [`Accounts`] port: accounts, sessions and their
//! refresh tokens, tickets, identities, signing keys and the audit log.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed case

use futures_util::future::join_all;
use oblivious_core::model::Role;

use super::{new_user, FullStore, T0};
use crate::{
    AuditEntry, AuditFilter, Identity, NewAccount, NewUser, Purpose, RefreshLookup, Session, SigningKey, StoreError,
    Ticket,
};

pub fn new_account(email: &str) -> NewAccount {
    NewAccount {
        email: email.into(),
        email_verified: false,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        display_name: "Ada".into(),
    }
}

pub fn session(id: &str, user_id: i64, refresh_hash: &str) -> Session {
    Session {
        id: id.into(),
        user_id,
        refresh_hash: refresh_hash.into(),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
        created_at: T0,
        last_seen_at: T0,
        expires_at: T0 + 1_000_000,
        revoked_at: None,
    }
}

fn audit_row(id: &str, at: i64, action: &str, actor: Option<i64>, target: Option<i64>) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at,
        action: action.into(),
        actor_id: actor,
        target_id: target,
        subject: None,
        ip: Some("10.0.0.1".into()),
        user_agent: None,
        request_id: Some(format!("req_{id}")),
        detail: "{}".into(),
    }
}

pub async fn accounts<S: FullStore>(s: S) {
    let (user, acct) = s
        .create_account(new_user("ada", 500), new_account("Ada@Example.com"), Some(session("ses_a", 0, "h1")), T0)
        .await
        .unwrap();
    assert_eq!((user.quota, user.role, user.group.as_str()), (500, Role::User, "default"));
    assert_eq!((acct.user_id, acct.email.as_str(), acct.version), (user.id, "ada@example.com", 1));
    assert_eq!(s.user(user.id).await.unwrap().unwrap().name, "ada");
    // The first session was made with the account, for the new user.
    let first = s.session("ses_a").await.unwrap().expect("first session");
    assert_eq!(first.user_id, user.id);

    // One email, whatever its case; the failed attempt leaves no user behind.
    let before = s.users(crate::Page { offset: 0, limit: 100 }).await.unwrap().total;
    let taken = s.create_account(new_user("ada2", 0), new_account("ADA@example.COM"), None, T0).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(s.users(crate::Page { offset: 0, limit: 100 }).await.unwrap().total, before, "no half-made user");
    // A session id already in use fails the whole creation too.
    let dup = s.create_account(new_user("bob", 0), new_account("bob@example.com"), Some(session("ses_a", 0, "h9")), T0);
    assert!(matches!(dup.await, Err(StoreError::Conflict(_))));
    assert_eq!(s.account_by_email("bob@example.com").await.unwrap(), None);

    assert_eq!(s.account_by_email("ADA@EXAMPLE.COM").await.unwrap().unwrap().user_id, user.id);
    assert_eq!(s.account(user.id).await.unwrap().unwrap(), acct);
    assert_eq!(s.account(user.id + 1000).await.unwrap(), None);

    // Compare-and-set on the version.
    let mut changed = acct.clone();
    changed.display_name = "Ada L.".into();
    changed.email_verified = true;
    changed.recovery_codes = vec!["c1".into(), "c2".into()];
    changed.settings.language = Some("zh-CN".into());
    changed.failed_signins = 2;
    changed.locked_until = Some(T0 + 5);
    changed.totp_secret = Some("sealed".into());
    let saved = s.update_account(changed.clone(), T0 + 10).await.unwrap();
    assert_eq!((saved.version, saved.updated_at, saved.display_name.as_str()), (2, T0 + 10, "Ada L."));
    assert_eq!(s.account(user.id).await.unwrap().unwrap(), saved);
    let stale = s.update_account(changed, T0 + 11).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "a stale version is refused: {stale:?}");

    // Of concurrent updates from one version, exactly one wins.
    let tries = (0..6).map(|i| {
        let mut a = saved.clone();
        a.failed_signins = i;
        s.update_account(a, T0 + 20)
    });
    let wins = join_all(tries).await.into_iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1);

    // Changing the email: to a free one works (and is lowercased); to a taken one conflicts.
    let (other, _) = s.create_account(new_user("cy", 0), new_account("cy@example.com"), None, T0).await.unwrap();
    let mut cur = s.account(user.id).await.unwrap().unwrap();
    cur.email = "cy@example.com".into();
    assert!(matches!(s.update_account(cur.clone(), T0 + 30).await, Err(StoreError::Conflict(_))));
    cur.email = "Ada.New@Example.com".into();
    let moved = s.update_account(cur, T0 + 31).await.unwrap();
    assert_eq!(moved.email, "ada.new@example.com");
    assert_eq!(s.account_by_email("ada@example.com").await.unwrap(), None, "the old email is free");
    assert_eq!(s.account_by_email("ada.new@example.com").await.unwrap().unwrap().user_id, user.id);

    // Deleting frees the email and ends sessions and identities; the user row stays.
    s.link_identity(Identity {
        provider: "github".into(),
        subject: "42".into(),
        user_id: other.id,
        email: None,
        created_at: T0,
    })
    .await
    .unwrap();
    s.create_session(session("ses_cy", other.id, "hc")).await.unwrap();
    s.delete_account(other.id).await.unwrap();
    assert_eq!(s.account(other.id).await.unwrap(), None);
    assert_eq!(s.identity("github", "42").await.unwrap(), None);
    assert!(s.sessions(other.id, T0).await.unwrap().is_empty());
    assert!(s.user(other.id).await.unwrap().is_some(), "the user row stays for usage history");
    let again = s.create_account(new_user("cy-again", 0), new_account("cy@example.com"), None, T0).await;
    assert!(again.is_ok(), "{again:?}");
    let mut gone = s.account(user.id).await.unwrap().unwrap();
    gone.user_id = other.id;
    assert!(matches!(s.update_account(gone, T0).await, Err(StoreError::NotFound(_))));
}

pub async fn sessions<S: FullStore>(s: S) {
    let (u, _) = s.create_account(new_user("sam", 0), new_account("sam@example.com"), None, T0).await.unwrap();
    s.create_session(session("ses_1", u.id, "r1")).await.unwrap();
    let mut later = session("ses_2", u.id, "r2");
    later.created_at = T0 + 5;
    s.create_session(later).await.unwrap();
    let mut short = session("ses_3", u.id, "r3");
    short.expires_at = T0 + 50;
    s.create_session(short).await.unwrap();
    assert!(matches!(s.create_session(session("ses_1", u.id, "rx")).await, Err(StoreError::Conflict(_))));

    let ids = |v: Vec<Session>| v.into_iter().map(|x| x.id).collect::<Vec<_>>();
    assert_eq!(ids(s.sessions(u.id, T0 + 10).await.unwrap()), ["ses_2", "ses_1", "ses_3"]);
    assert_eq!(ids(s.sessions(u.id, T0 + 60).await.unwrap()), ["ses_2", "ses_1"], "expired ones are not listed");

    // Rotation: current → new; the old hash is then a replay.
    assert_eq!(s.session_by_refresh("nope").await.unwrap(), RefreshLookup::Unknown);
    assert!(matches!(s.session_by_refresh("r1").await.unwrap(), RefreshLookup::Current(x) if x.id == "ses_1"));
    let rotated =
        s.rotate_session("ses_1", "r1", "r1b", Some("10.1.1.1".into()), Some("curl".into()), T0 + 20).await.unwrap();
    let rotated = rotated.expect("rotated");
    assert_eq!((rotated.refresh_hash.as_str(), rotated.last_seen_at), ("r1b", T0 + 20));
    assert_eq!((rotated.ip.as_deref(), rotated.user_agent.as_deref()), (Some("10.1.1.1"), Some("curl")));
    assert!(matches!(s.session_by_refresh("r1").await.unwrap(), RefreshLookup::Reused(x) if x.id == "ses_1"));
    assert!(matches!(s.session_by_refresh("r1b").await.unwrap(), RefreshLookup::Current(_)));
    assert_eq!(s.rotate_session("ses_1", "r1", "r1c", None, None, T0 + 21).await.unwrap(), None, "a stale hash");

    // Concurrent rotations from one token: one wins.
    let tries = (0..5).map(|i| s.rotate_session("ses_2", "r2", ["a", "b", "c", "d", "e"][i], None, None, T0 + 30));
    let won: Vec<_> = join_all(tries).await.into_iter().map(|r| r.unwrap()).filter(Option::is_some).collect();
    assert_eq!(won.len(), 1);

    // Revocation.
    s.revoke_session("ses_1", T0 + 40).await.unwrap();
    s.revoke_session("ses_1", T0 + 41).await.unwrap();
    assert_eq!(s.session("ses_1").await.unwrap().unwrap().revoked_at, Some(T0 + 40));
    assert!(matches!(s.revoke_session("ses_none", T0).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.rotate_session("ses_1", "r1b", "r1d", None, None, T0 + 42).await.unwrap(), None, "revoked");
    assert!(matches!(s.session_by_refresh("r1b").await.unwrap(), RefreshLookup::Current(x) if x.revoked_at.is_some()));
    s.create_session(session("ses_4", u.id, "r4")).await.unwrap();
    assert_eq!(s.revoke_sessions(u.id, Some("ses_4"), T0 + 45).await.unwrap(), 2, "ses_2 and ses_3");
    assert_eq!(ids(s.sessions(u.id, T0 + 46).await.unwrap()), ["ses_4"]);
    assert_eq!(s.revoke_sessions(u.id, None, T0 + 47).await.unwrap(), 1);
    assert!(s.sessions(u.id, T0 + 48).await.unwrap().is_empty());
}

pub async fn tickets<S: FullStore>(s: S) {
    let ticket = |hash: &str, purpose, user_id, expires_at| Ticket {
        hash: hash.into(),
        purpose,
        user_id,
        data: r#"{"email":"a@b.c"}"#.into(),
        created_at: T0,
        expires_at,
    };
    s.put_ticket(ticket("t1", Purpose::VerifyEmail, 1, T0 + 100)).await.unwrap();
    assert!(matches!(s.put_ticket(ticket("t1", Purpose::VerifyEmail, 1, T0)).await, Err(StoreError::Conflict(_))));
    // The wrong purpose neither gives nor keeps it.
    assert_eq!(s.take_ticket("t1", Purpose::ResetPassword, T0).await.unwrap(), None);
    assert_eq!(s.take_ticket("t1", Purpose::VerifyEmail, T0).await.unwrap(), None, "burnt by the wrong purpose");

    s.put_ticket(ticket("t2", Purpose::ResetPassword, 1, T0 + 100)).await.unwrap();
    let got = s.take_ticket("t2", Purpose::ResetPassword, T0 + 99).await.unwrap().expect("taken");
    assert_eq!((got.user_id, got.data.as_str()), (1, r#"{"email":"a@b.c"}"#));
    assert_eq!(s.take_ticket("t2", Purpose::ResetPassword, T0 + 99).await.unwrap(), None, "single use");

    s.put_ticket(ticket("t3", Purpose::Invite, 1, T0 + 100)).await.unwrap();
    assert_eq!(s.take_ticket("t3", Purpose::Invite, T0 + 100).await.unwrap(), None, "expired");
    assert_eq!(s.take_ticket("t3", Purpose::Invite, T0).await.unwrap(), None, "and gone");

    s.put_ticket(ticket("t4", Purpose::OidcState, 0, T0 + 100)).await.unwrap();
    let takes = join_all((0..6).map(|_| s.take_ticket("t4", Purpose::OidcState, T0))).await;
    assert_eq!(takes.into_iter().filter(|r| matches!(r, Ok(Some(_)))).count(), 1, "one taker");

    for h in ["r1", "r2"] {
        s.put_ticket(ticket(h, Purpose::ResetPassword, 7, T0 + 100)).await.unwrap();
    }
    s.put_ticket(ticket("v7", Purpose::VerifyEmail, 7, T0 + 100)).await.unwrap();
    s.put_ticket(ticket("r8", Purpose::ResetPassword, 8, T0 + 100)).await.unwrap();
    assert_eq!(s.drop_tickets(7, Purpose::ResetPassword).await.unwrap(), 2);
    assert_eq!(s.take_ticket("r1", Purpose::ResetPassword, T0).await.unwrap(), None);
    assert!(s.take_ticket("v7", Purpose::VerifyEmail, T0).await.unwrap().is_some(), "other purposes stay");
    assert!(s.take_ticket("r8", Purpose::ResetPassword, T0).await.unwrap().is_some(), "other users' stay");
}

pub async fn identities<S: FullStore>(s: S) {
    let (u, _) = s.create_account(new_user("ida", 0), new_account("ida@example.com"), None, T0).await.unwrap();
    let id = |provider: &str, subject: &str, user_id| Identity {
        provider: provider.into(),
        subject: subject.into(),
        user_id,
        email: Some("ida@example.com".into()),
        created_at: T0,
    };
    s.link_identity(id("github", "1", u.id)).await.unwrap();
    s.link_identity(id("google", "x-1", u.id)).await.unwrap();
    assert!(matches!(s.link_identity(id("github", "1", u.id + 1)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.identity("github", "1").await.unwrap().unwrap().user_id, u.id);
    assert_eq!(s.identity("github", "2").await.unwrap(), None);
    let mut providers: Vec<_> = s.identities(u.id).await.unwrap().into_iter().map(|i| i.provider).collect();
    providers.sort();
    assert_eq!(providers, ["github", "google"]);
    s.unlink_identity(u.id, "github").await.unwrap();
    assert!(matches!(s.unlink_identity(u.id, "github").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.identity("github", "1").await.unwrap(), None);
    s.link_identity(id("github", "1", u.id + 1)).await.unwrap();
}

pub async fn signing_keys<S: FullStore>(s: S) {
    let key = |kid: &str, created_at, expires_at| SigningKey {
        kid: kid.into(),
        secret: "sealed".into(),
        created_at,
        expires_at,
    };
    assert!(s.signing_keys().await.unwrap().is_empty());
    s.add_signing_key(key("k1", T0, T0 + 100)).await.unwrap();
    s.add_signing_key(key("k2", T0 + 50, T0 + 200)).await.unwrap();
    assert!(matches!(s.add_signing_key(key("k1", T0, T0)).await, Err(StoreError::Conflict(_))));
    let kids = |v: Vec<SigningKey>| v.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(kids(s.signing_keys().await.unwrap()), ["k2", "k1"]);
    assert_eq!(s.prune_signing_keys(T0 + 150).await.unwrap(), 1);
    assert_eq!(kids(s.signing_keys().await.unwrap()), ["k2"]);
}

pub async fn audit_log<S: FullStore>(s: S) {
    let rows = [
        audit_row("a01", T0, "sign_in", Some(1), Some(1)),
        audit_row("a02", T0 + 1, "sign_in_failed", None, Some(2)),
        audit_row("a03", T0 + 2, "key_create", Some(1), Some(1)),
        audit_row("a04", T0 + 3, "role_change", Some(1), Some(2)),
        audit_row("a05", T0 + 4, "sign_in", Some(2), Some(2)),
    ];
    for r in &rows {
        s.append_audit(r.clone()).await.unwrap();
    }
    s.append_audit(rows[0].clone()).await.unwrap();
    let ids = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let all = s.audit(AuditFilter::default(), 100).await.unwrap();
    assert_eq!(all[4], rows[0], "stored as given");
    assert_eq!(ids(all), ["a05", "a04", "a03", "a02", "a01"], "idempotent by id, newest first");
    let page = |before: Option<&str>| AuditFilter { before: before.map(Into::into), ..Default::default() };
    assert_eq!(ids(s.audit(page(None), 2).await.unwrap()), ["a05", "a04"]);
    assert_eq!(ids(s.audit(page(Some("a04")), 2).await.unwrap()), ["a03", "a02"]);
    assert_eq!(ids(s.audit(page(Some("a02")), 2).await.unwrap()), ["a01"]);
    let f = |f: AuditFilter| s.audit(f, 100);
    assert_eq!(ids(f(AuditFilter { actor_id: Some(1), ..Default::default() }).await.unwrap()), ["a04", "a03", "a01"]);
    assert_eq!(ids(f(AuditFilter { target_id: Some(2), ..Default::default() }).await.unwrap()), ["a05", "a04", "a02"]);
    assert_eq!(
        ids(f(AuditFilter { involving: Some(2), ..Default::default() }).await.unwrap()),
        ["a05", "a04", "a02"],
        "as actor or target"
    );
    assert_eq!(
        ids(f(AuditFilter { action: Some("sign_in".into()), since: Some(T0 + 1), ..Default::default() })
            .await
            .unwrap()),
        ["a05"]
    );
    assert_eq!(
        ids(f(AuditFilter { since: Some(T0 + 1), until: Some(T0 + 3), ..Default::default() }).await.unwrap()),
        ["a03", "a02"]
    );
    let filtered_page = AuditFilter { involving: Some(1), before: Some("a03".into()), ..Default::default() };
    assert_eq!(ids(f(filtered_page).await.unwrap()), ["a01"]);
}

/// Root accounts: creating one with a role keeps the role; an existing
/// user (the bootstrap root) can be given an account once.
pub async fn account_roles<S: FullStore>(s: S) {
    let root = NewUser { name: "root".into(), role: Role::Root, group: "default".into(), quota: 0, unlimited: true };
    let (u, _) = s.create_account(root, new_account("root@example.com"), None, T0).await.unwrap();
    let back = s.user(u.id).await.unwrap().unwrap();
    assert_eq!((back.role, back.unlimited), (Role::Root, true));

    let boot = s.create_user(new_user("boot", 0), T0).await.unwrap();
    let taken = s.attach_account(boot.id, new_account("ROOT@example.com"), T0).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "the email is taken: {taken:?}");
    let acct = s.attach_account(boot.id, new_account("Boot@Example.com"), T0 + 1).await.unwrap();
    assert_eq!((acct.user_id, acct.email.as_str(), acct.version), (boot.id, "boot@example.com", 1));
    assert_eq!(s.account_by_email("boot@example.com").await.unwrap().unwrap().user_id, boot.id);
    let twice = s.attach_account(boot.id, new_account("other@example.com"), T0).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "one account per user: {twice:?}");
    assert_eq!(s.account_by_email("other@example.com").await.unwrap(), None, "nothing half-made");
    let ghost = s.attach_account(boot.id + 999, new_account("ghost@example.com"), T0).await;
    assert!(matches!(ghost, Err(StoreError::NotFound(_))), "{ghost:?}");
}
