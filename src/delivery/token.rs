//! A platform access token shared by all of a sender's calls: kept in memory and in the
//! store (a restart reuses it), refreshed before it expires, fetched once when many calls
//! want it at the same moment, and forgotten when the platform refuses it. The WeCom and
//! DingTalk senders both keep theirs here.

use std::future::Future;
use std::sync::Arc;

use adapters::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SendError;
use crate::store::Store;

/// A token as the platform issued it.
pub struct Fresh {
    pub token: Secret,
    pub expires_at_ms: u64,
    /// From here on a new token is fetched (some minutes before `expires_at_ms`).
    pub refresh_at_ms: u64,
}

/// The persisted form, JSON under the cache's store key.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    token: String,
    #[serde(default)]
    expires_at_ms: u64,
    refresh_at_ms: u64,
    /// A hash of the credentials it was issued for: after a config change to another app,
    /// a stored token is not reused.
    #[serde(default)]
    credentials: String,
}

impl Stored {
    fn usable(&self, now_ms: u64) -> bool {
        !self.token.is_empty() && now_ms < self.refresh_at_ms
    }
}

pub struct TokenCache {
    key: String,
    credentials: String,
    store: Arc<dyn Store>,
    /// An async lock, held across a fetch, so concurrent sends fetch once.
    slot: tokio::sync::Mutex<Option<Stored>>,
}

impl TokenCache {
    /// `key`: the store key; `credentials`: what the token is issued for (hashed, never stored).
    pub fn new(key: String, credentials: &[&str], store: Arc<dyn Store>) -> Self {
        let mut h = Sha256::new();
        for c in credentials {
            h.update(c.as_bytes());
            h.update([0]);
        }
        TokenCache {
            key,
            credentials: hex::encode(&h.finalize()[..8]),
            store,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// A usable token: the one in memory, else the stored one (after a restart), else a new
    /// one from `fetch`, which is then kept in both places.
    pub async fn get<F, Fut>(&self, now_ms: u64, fetch: F) -> Result<Secret, SendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh, SendError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| t.usable(now_ms)) {
            return Ok(Secret::new(t.token.clone()));
        }
        if let Some(t) = self.load().filter(|t| t.usable(now_ms)) {
            tracing::debug!(key = %self.key, "access token reloaded from the store");
            let token = Secret::new(t.token.clone());
            *slot = Some(t);
            return Ok(token);
        }
        let fresh = fetch().await?;
        let stored = Stored {
            token: fresh.token.expose().to_string(),
            expires_at_ms: fresh.expires_at_ms,
            refresh_at_ms: fresh.refresh_at_ms,
            credentials: self.credentials.clone(),
        };
        self.save(&stored);
        *slot = Some(stored);
        Ok(fresh.token)
    }

    /// Forget `rejected` (the platform refused it), in memory and in the store, unless a
    /// newer token has replaced it meanwhile.
    pub async fn forget(&self, rejected: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|t| t.token == rejected.expose()) {
            *slot = None;
        }
        if self.load().is_some_and(|t| t.token == rejected.expose()) {
            if let Err(e) = self.store.kv_put(&self.key, b"") {
                tracing::warn!(key = %self.key, error = %e, "cannot clear the stored token");
            }
        }
    }

    fn load(&self) -> Option<Stored> {
        let bytes = match self.store.kv_get(&self.key) {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "cannot read the stored token");
                return None;
            }
        };
        serde_json::from_slice::<Stored>(&bytes)
            .ok()
            .filter(|t| t.credentials == self.credentials)
    }

    fn save(&self, t: &Stored) {
        let json = serde_json::to_vec(t).unwrap_or_default();
        if let Err(e) = self.store.kv_put(&self.key, &json) {
            // Only a restart pays for this: it fetches a new token.
            tracing::warn!(key = %self.key, error = %e, "cannot store the access token");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn fresh(t: &str, refresh_at_ms: u64) -> Result<Fresh, SendError> {
        Ok(Fresh {
            token: Secret::new(t),
            expires_at_ms: refresh_at_ms + 300_000,
            refresh_at_ms,
        })
    }

    #[tokio::test]
    async fn caches_persists_reloads_refreshes_and_forgets() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = TokenCache::new("t:x".into(), &["app", "secret"], store.clone());
        assert_eq!(
            c.get(0, || async { fresh("a", 100) })
                .await
                .unwrap()
                .expose(),
            "a"
        );
        // Cached: the fetch is not called.
        assert_eq!(
            c.get(50, || async { fresh("never", 0) })
                .await
                .unwrap()
                .expose(),
            "a"
        );
        // A restart reuses the stored token; other credentials don't.
        let again = TokenCache::new("t:x".into(), &["app", "secret"], store.clone());
        assert_eq!(
            again
                .get(60, || async { fresh("never", 0) })
                .await
                .unwrap()
                .expose(),
            "a"
        );
        let other = TokenCache::new("t:x".into(), &["app", "other"], store.clone());
        assert_eq!(
            other
                .get(60, || async { fresh("b", 200) })
                .await
                .unwrap()
                .expose(),
            "b"
        );
        // Past refresh_at: fetched again.
        assert_eq!(
            c.get(100, || async { fresh("c", 300) })
                .await
                .unwrap()
                .expose(),
            "c"
        );
        // Forgotten after a refusal; a failed fetch is the caller's error.
        c.forget(&Secret::new("c")).await;
        let err = c
            .get(110, || async { Err(SendError::Retry("down".into())) })
            .await;
        assert_eq!(err.unwrap_err(), SendError::Retry("down".into()));
        assert!(!String::from_utf8(store.kv_get("t:x").unwrap().unwrap())
            .unwrap()
            .contains("secret"));
    }
}
