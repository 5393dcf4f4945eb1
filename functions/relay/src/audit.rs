//! The audit log's writer: one append per sensitive action, carrying who,
//! on whom, from where and the request id the caller saw.

use http::request::Parts;
use oblivious_core::model::Id;
use oblivious_ports::{Accounts, AuditEntry, Clock, Ids, Platform};
use serde_json::Value;

use crate::{ClientIp, Relay};

/// The request id [`crate::gate`] chose; it also answers with it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// One sensitive action.
pub struct Audit {
    pub action: &'static str,
    pub actor: Option<Id>,
    pub target: Option<Id>,
    /// What else was acted on (`token:12`, `channel:3`, `price:gpt-4o`).
    pub subject: Option<String>,
    /// Small details, never a secret.
    pub detail: Value,
}

impl Audit {
    pub fn new(action: &'static str, actor: Option<Id>, target: Option<Id>) -> Self {
        Audit { action, actor, target, subject: None, detail: Value::Object(Default::default()) }
    }

    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }

    pub fn detail(mut self, d: Value) -> Self {
        self.detail = d;
        self
    }
}

/// Where a request came from, kept apart from the request so a row can be
/// written after the request was handed on.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Origin {
    pub fn of(parts: &Parts) -> Origin {
        Origin {
            ip: parts.extensions.get::<ClientIp>().map(|c| c.0.to_string()),
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        }
    }
}

impl<P: Platform> Relay<P> {
    /// Appends `a` to the audit log. A failed write is logged, not returned:
    /// the action already happened, and refusing its answer would hide that.
    pub async fn audit(&self, parts: &Parts, a: Audit) {
        self.audit_from(Origin::of(parts), a).await
    }

    pub async fn audit_from(&self, origin: Origin, a: Audit) {
        let now_us = self.ports.clock.now_us();
        let entry = AuditEntry {
            // Fixed-width hex: ids sort as time does, with 32 random bits to break ties.
            id: format!("{:016x}{:08x}", now_us.max(0), self.ports.ids.random_u64() as u32),
            at: now_us / 1000,
            action: a.action.into(),
            actor_id: a.actor,
            target_id: a.target,
            subject: a.subject,
            ip: origin.ip,
            user_agent: origin.user_agent,
            request_id: origin.request_id,
            detail: a.detail.to_string(),
        };
        if let Err(e) = self.ports.store.append_audit(entry).await {
            tracing::error!(action = a.action, "could not write the audit log: {e}");
        }
    }
}

/// The audit action of a successful admin change, named by route; `None`
/// for routes whose handlers write richer rows themselves (users) or that
/// change nothing (a channel test).
pub(crate) fn admin_action(method: &http::Method, path: &str) -> Option<(&'static str, Option<Id>, String)> {
    use http::Method as M;
    // A user's own keys are audited like an admin's.
    let rest =
        path.strip_prefix("/api/admin/").or_else(|| path.strip_prefix("/api/me/").filter(|r| r.starts_with("keys")))?;
    let rest = rest.strip_prefix("keys").map_or_else(|| rest.to_string(), |k| format!("tokens{k}"));
    let rest = rest.as_str();
    let seg: Vec<&str> = rest.split('/').collect();
    let subject = |kind: &str| seg.get(1).map_or_else(|| kind.to_string(), |id| format!("{kind}:{id}"));
    let action = match (method, seg.as_slice()) {
        (&M::POST, ["users", id, "topup"]) => return Some(("top_up", id.parse().ok(), format!("user:{id}"))),
        (_, ["users", ..]) => return None,
        (&M::POST, ["tokens"]) => "key_create",
        (&M::PATCH, ["tokens", _]) => "key_update",
        (&M::DELETE, ["tokens", _]) => "key_delete",
        (&M::POST, ["tokens", _, "restore"]) => "key_restore",
        (&M::POST, ["channels"]) => "channel_create",
        (&M::PATCH, ["channels", _]) => "channel_update",
        (&M::DELETE, ["channels", _]) => "channel_delete",
        (_, ["channels", ..]) => return None,
        (&M::PUT, ["groups", _]) => "group_put",
        (&M::DELETE, ["groups", _]) => "group_delete",
        (&M::PUT, ["prices", ..]) => "price_put",
        (&M::DELETE, ["prices", ..]) => "price_delete",
        (&M::POST, ["codes"]) => "codes_create",
        (&M::POST, ["invites"]) => "invites_create",
        _ => "admin_change",
    };
    let subject = match seg.first() {
        Some(&"prices") => format!("price:{}", seg[1..].join("/")),
        Some(&"tokens") => subject("token"),
        Some(&"channels") => subject("channel"),
        Some(&"groups") => subject("group"),
        Some(&"codes") => "codes".into(),
        _ => path.to_string(),
    };
    Some((action, None, subject))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn admin_changes_are_named_by_route() {
        let a = |m: Method, p: &str| admin_action(&m, p);
        assert_eq!(a(Method::POST, "/api/admin/users/7/topup"), Some(("top_up", Some(7), "user:7".into())));
        assert_eq!(a(Method::PATCH, "/api/admin/users/7"), None);
        assert_eq!(a(Method::DELETE, "/api/admin/tokens/3"), Some(("key_delete", None, "token:3".into())));
        assert_eq!(
            a(Method::PUT, "/api/admin/prices/openai/gpt-4o"),
            Some(("price_put", None, "price:openai/gpt-4o".into()))
        );
        assert_eq!(a(Method::POST, "/api/admin/channels/2/test"), None);
        assert_eq!(a(Method::POST, "/api/admin/channels"), Some(("channel_create", None, "channel".into())));
        assert_eq!(a(Method::POST, "/api/admin/codes"), Some(("codes_create", None, "codes".into())));
        assert_eq!(a(Method::POST, "/api/me/keys"), Some(("key_create", None, "token".into())));
        assert_eq!(a(Method::DELETE, "/api/me/keys/9"), Some(("key_delete", None, "token:9".into())));
        assert_eq!(a(Method::PATCH, "/api/me"), None);
    }
}
