//! Authentication: key → token and owner, from a cache that the store's
//! revision invalidates (so a warm request never reads the store); on a miss,
//! from hot state shared by every instance when the relay shares its caches
//! (`shared.rs`), else from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use oblivious_core::model::{Token, User};
use oblivious_core::{apikey, authz, ApiError, ErrorKind};
use oblivious_ports::{Clock, Platform, Store};

use crate::shared::Lookup;
use crate::{observe, ClientIp, Relay};

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
    /// The newest store revision a `clear` was for: what shared entries are read and written under.
    revision: AtomicI64,
}

/// Bound on cached keys, so random keys cannot grow memory without limit.
const MAX_CACHED: usize = 200_000;

impl AuthCache {
    /// Drops every entry: the store is at `revision` now.
    pub(crate) fn clear(&self, revision: i64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Never back: a refresh that read an older revision may finish last.
        self.revision.fetch_max(revision, Ordering::SeqCst);
        map.clear();
    }

    /// The generation and revision a lookup starts from, read together (a
    /// `clear` changes both under the write lock).
    fn epoch(&self) -> (u64, i64) {
        let _map = self.map.read().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::SeqCst), self.revision.load(Ordering::SeqCst))
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
            observe::cache("principal", true);
            return Ok(hit);
        }
        observe::cache("principal", false);
        let (generation, revision) = self.auth.epoch();
        let mut share = false;
        if let Some(shared) = &self.shared {
            match shared.principal(&self.ports.hot, revision, &hash).await {
                Lookup::Hit(found) => {
                    observe::cache("shared_principal", true);
                    let found = found.map(Arc::new);
                    self.auth.put(hash, found.clone(), generation);
                    return Ok(found);
                }
                Lookup::Miss => share = true,
                Lookup::Down => {}
            }
            observe::cache("shared_principal", false);
        }
        let store = &self.ports.store;
        let internal = |e: oblivious_ports::StoreError| ApiError::internal(format!("could not check the API key: {e}"));
        let found = match store.token_by_hash(&hash).await.map_err(internal)? {
            None => None,
            Some(token) => {
                store.user(token.user_id).await.map_err(internal)?.map(|user| Arc::new(Principal { token, user }))
            }
        };
        if let Some(shared) = self.shared.as_ref().filter(|_| share) {
            // Read after `revision` was seen, so at least as new as the entry's key says.
            shared.put_principal(&self.ports.hot, revision, &hash, found.as_deref()).await;
        }
        self.auth.put(hash, found.clone(), generation);
        Ok(found)
    }
}
