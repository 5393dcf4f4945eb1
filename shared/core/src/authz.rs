//! Token authorization: the refusal a caller meets, in the order they meet it.

use std::net::IpAddr;

use crate::error::{ApiError, ErrorKind};
use crate::model::{Token, TokenStatus, User, UserStatus};
use crate::pattern;

/// Checks the token's own state and its owner. Model and IP are checked separately
/// because `/v1/models` needs a valid key without a model.
pub fn check_token(token: &Token, user: &User, now_ms: i64) -> Result<(), ApiError> {
    let denied = |code, msg: &str| Err(ApiError::new(ErrorKind::PermissionDenied, code, msg));
    match token.effective_status(now_ms) {
        TokenStatus::Normal => {}
        // A deleted key is as good as unknown to its holder.
        TokenStatus::Deleted => {
            return Err(ApiError::new(
                ErrorKind::InvalidApiKey,
                "invalid_api_key",
                "Incorrect API key provided: this key has been deleted.",
            ))
        }
        TokenStatus::Disabled => return denied("token_disabled", "This API key is disabled."),
        TokenStatus::Expired => return denied("token_expired", "This API key has expired."),
        TokenStatus::Exhausted => {
            return Err(ApiError::new(
                ErrorKind::InsufficientQuota,
                "insufficient_quota",
                "This API key has used up its quota.",
            ))
        }
    }
    if user.status == UserStatus::Disabled {
        return denied("user_disabled", "The account that owns this API key is disabled.");
    }
    Ok(())
}

pub fn check_ip(token: &Token, ip: Option<IpAddr>) -> Result<(), ApiError> {
    if token.ips.is_empty() {
        return Ok(());
    }
    match ip {
        Some(ip) if token.ips.iter().any(|net| net.contains(&ip)) => Ok(()),
        _ => Err(ApiError::new(
            ErrorKind::PermissionDenied,
            "ip_not_allowed",
            format!(
                "This API key may not be used from {}.",
                ip.map(|i| i.to_string()).unwrap_or_else(|| "an unknown address".into())
            ),
        )),
    }
}

pub fn check_model(token: &Token, model: &str) -> Result<(), ApiError> {
    if pattern::allowed(&token.models, model) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::PermissionDenied,
            "model_not_allowed",
            format!("This API key may not use the model `{model}`."),
        )
        .with_param("model"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn pair() -> (Token, User) {
        let token = Token {
            id: 1,
            user_id: 1,
            name: "t".into(),
            key_hash: String::new(),
            key_hint: String::new(),
            status: TokenStatus::Normal,
            unlimited: true,
            remaining_quota: 0,
            used_quota: 0,
            models: vec!["gpt-4o".into(), "text-*".into()],
            ips: vec!["10.0.0.0/8".parse().unwrap()],
            expires_at: None,
            daily_limit: None,
            monthly_limit: None,
            created_at: 0,
        };
        let user = User {
            id: 1,
            name: "u".into(),
            role: Role::User,
            group: "default".into(),
            status: UserStatus::Enabled,
            quota: 0,
            used_quota: 0,
            unlimited: false,
            created_at: 0,
        };
        (token, user)
    }

    #[test]
    fn refusals() {
        let (mut t, mut u) = pair();
        assert!(check_token(&t, &u, 0).is_ok());
        assert!(check_model(&t, "text-embedding-3-small").is_ok());
        assert_eq!(check_model(&t, "gpt-4").unwrap_err().status(), 403);
        assert!(check_ip(&t, Some("10.1.2.3".parse().unwrap())).is_ok());
        assert_eq!(check_ip(&t, Some("127.0.0.1".parse().unwrap())).unwrap_err().code, "ip_not_allowed");
        u.status = UserStatus::Disabled;
        assert_eq!(check_token(&t, &u, 0).unwrap_err().code, "user_disabled");
        t.unlimited = false;
        assert_eq!(check_token(&t, &u, 0).unwrap_err().status(), 429);
        t.status = TokenStatus::Deleted;
        assert_eq!(check_token(&t, &u, 0).unwrap_err().status(), 401);
    }
}
