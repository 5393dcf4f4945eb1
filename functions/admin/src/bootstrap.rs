//! What every deployment needs before its first request: the `default` group
//! and the bootstrap user `admin`, whose role is root (both runtimes call
//! this at start; it is idempotent and safe to race).

use oblivious_ports::{Platform, Ports, Store};

pub const ADMIN: &str = "admin";

/// Makes sure the `admin` user and the `default` group exist.
pub async fn ensure_basics<P: Platform>(ports: &Ports<P>) -> Result<oblivious_core::model::User, String> {
    use oblivious_core::model::{Group, Role};
    let store = &ports.store;
    let s = |e: oblivious_ports::StoreError| e.to_string();
    if !store.groups().await.map_err(s)?.iter().any(|g| g.name == oblivious_core::config::DEFAULT_GROUP) {
        store
            .put_group(Group {
                name: oblivious_core::config::DEFAULT_GROUP.into(),
                ratio_bp: 10_000,
                description: String::new(),
            })
            .await
            .map_err(s)?;
    }
    if let Some(u) = store.user_by_name(ADMIN).await.map_err(s)? {
        return promote_if_rootless(store, u).await;
    }
    let new = oblivious_ports::NewUser {
        name: ADMIN.into(),
        role: Role::Root,
        group: oblivious_core::config::DEFAULT_GROUP.into(),
        quota: 0,
        unlimited: true,
    };
    match store.create_user(new, oblivious_ports::Clock::now_ms(&ports.clock)).await {
        Ok(u) => Ok(u),
        // Another process (CLI or server) created it first.
        Err(oblivious_ports::StoreError::Conflict(_)) => {
            store.user_by_name(ADMIN).await.map_err(s)?.ok_or_else(|| "admin user vanished".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A store made before roles had `root` has none: its bootstrap user becomes root.
async fn promote_if_rootless<S: Store>(
    store: &S,
    boot: oblivious_core::model::User,
) -> Result<oblivious_core::model::User, String> {
    use oblivious_core::model::Role;
    if boot.role == Role::Root {
        return Ok(boot);
    }
    let mut offset = 0;
    loop {
        let page = store.users(oblivious_ports::Page { offset, limit: 500 }).await.map_err(|e| e.to_string())?;
        if page.items.iter().any(|u| u.role == Role::Root) {
            return Ok(boot);
        }
        offset += page.items.len() as u64;
        if page.items.is_empty() || offset >= page.total {
            break;
        }
    }
    let patch = oblivious_ports::UserPatch { role: Some(Role::Root), ..Default::default() };
    store.update_user(boot.id, patch).await.map_err(|e| e.to_string())
}
