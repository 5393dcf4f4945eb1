//! Authentication: key → token and owner, from a cache that the store's
//! revision invalidates (so a warm request never reads the store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use oblivious_core::model::{Token, User};
use oblivious_core::{apikey, authz, ApiError, ErrorKind};
use oblivious_ports::{Clock, Platform, Store};

use crate::{ClientIp, Relay};

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    pub token: Token,
    pub user: User,
}

/// Key hash → principal (or `None`: a key we know is unknown).
#[derive(Default)]
pub(crate) struct AuthCache {
    map: RwLock<HashMap<String, Option<Arc<Principal>>>>,
    /// Bumped by `clear`; a lookup that raced a clear does not fill the cache.
    generation: AtomicU64,
}

/// Bound on cached keys, so random keys cannot grow memory without limit.
const MAX_CACHED: usize = 200_000;

impl AuthCache {
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn get(&self, hash: &str) -> Option<Option<Arc<Principal>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    fn put(&self, hash: String, value: Option<Arc<Principal>>, generation: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(hash, value);
    }
}

impl<P: Platform> Relay<P> {
    /// Finds the caller's key and checks the token's state and the client's address.
    pub async fn authenticate(&self, parts: &http::request::Parts) -> Result<Arc<Principal>, ApiError> {
        let key = apikey::extract(&parts.headers, parts.uri.query()).ok_or_else(|| {
            ApiError::new(
                ErrorKind::InvalidApiKey,
                "missing_api_key",
                "You didn't provide an API key. Send it as `Authorization: Bearer sk-...`.",
            )
        })?;
        let principal = self.principal(key).await?.ok_or_else(|| {
            ApiError::new(
                ErrorKind::InvalidApiKey,
                "invalid_api_key",
                format!("Incorrect API key provided: {}.", apikey::hint(key)),
            )
        })?;
        authz::check_token(&principal.token, &principal.user, self.ports.clock.now_ms())?;
        let ip = parts.extensions.get::<ClientIp>().map(|c| c.0);
        authz::check_ip(&principal.token, ip)?;
        Ok(principal)
    }

    async fn principal(&self, key: &str) -> Result<Option<Arc<Principal>>, ApiError> {
        let hash = apikey::hash(key);
        if let Some(hit) = self.auth.get(&hash) {
            return Ok(hit);
        }
        let generation = self.auth.generation.load(Ordering::SeqCst);
        let store = &self.ports.store;
        let internal = |e: oblivious_ports::StoreError| ApiError::internal(format!("could not check the API key: {e}"));
        let found = match store.token_by_hash(&hash).await.map_err(internal)? {
            None => None,
            Some(token) => {
                store.user(token.user_id).await.map_err(internal)?.map(|user| Arc::new(Principal { token, user }))
            }
        };
        self.auth.put(hash, found.clone(), generation);
        Ok(found)
    }
}
