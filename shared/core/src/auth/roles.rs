//! The role table: which caller may call which route. One table for session
//! and API-key callers alike, enforced in one place (the relay's `gate`).

use crate::model::Role;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-up, sign-in, links from mail, OIDC redirects).
    Public,
    /// A signed-in user or their API key (balance, usage, redemption).
    User,
    /// A signed-in user, not an API key: account security (password, 2FA,
    /// sessions, keys, deletion) must not be reachable with a leaked key.
    Session,
    /// An admin or root, by session or key.
    Admin,
}

impl Access {
    /// Whether a caller with `role` may pass (`by_session`: signed in, not a key).
    pub fn allows(self, role: Role, by_session: bool) -> bool {
        match self {
            Access::Public | Access::User => true,
            Access::Session => by_session,
            Access::Admin => role.covers(Role::Admin),
        }
    }
}

/// Path patterns, first match wins: a trailing `/*` matches the prefix and
/// anything below it.
pub const TABLE: &[(&str, Access)] = &[
    ("/api/auth/*", Access::Public),
    ("/api/me/*", Access::Session),
    ("/api/admin/*", Access::Admin),
    ("/api/account", Access::User),
    ("/api/usage/*", Access::User),
    ("/api/usage.csv", Access::User),
    ("/api/redeem", Access::User),
];

/// What `path` needs; `None` for a path the table does not cover (not an
/// account route: the relay's own API-key auth applies).
pub fn access(path: &str) -> Option<Access> {
    TABLE.iter().find(|(pattern, _)| matches(pattern, path)).map(|(_, a)| *a)
}

fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')),
        None => path == pattern,
    }
}

/// Whether `actor` may give `target_role` to someone who has `current`:
/// never above one's own role, and never to change a role above one's own.
pub fn may_grant(actor: Role, current: Role, target_role: Role) -> bool {
    actor.covers(target_role) && actor.covers(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_prefixes_on_segment_boundaries() {
        assert_eq!(access("/api/auth/signin"), Some(Access::Public));
        assert_eq!(access("/api/me"), Some(Access::Session));
        assert_eq!(access("/api/me/keys/3"), Some(Access::Session));
        assert_eq!(access("/api/mex"), None);
        assert_eq!(access("/api/admin/users"), Some(Access::Admin));
        assert_eq!(access("/api/usage"), Some(Access::User));
        assert_eq!(access("/api/usage/stats"), Some(Access::User));
        assert_eq!(access("/v1/chat/completions"), None);
    }

    #[test]
    fn who_passes() {
        assert!(Access::Admin.allows(Role::Root, false));
        assert!(Access::Admin.allows(Role::Admin, true));
        assert!(!Access::Admin.allows(Role::User, true));
        assert!(Access::Session.allows(Role::User, true));
        assert!(!Access::Session.allows(Role::Root, false), "no key reaches account security");
        assert!(may_grant(Role::Admin, Role::User, Role::Admin));
        assert!(!may_grant(Role::Admin, Role::User, Role::Root));
        assert!(!may_grant(Role::Admin, Role::Root, Role::User), "an admin cannot demote root");
        assert!(may_grant(Role::Root, Role::Root, Role::Admin));
    }
}
