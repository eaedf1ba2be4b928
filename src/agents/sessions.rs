//! Console logins as server-side sessions in the store: the browser holds a random token in
//! an HttpOnly cookie; the store holds only its SHA-256 (a copied database opens no
//! sessions), with the agent, the CSRF token the page must echo, and the expiry.

use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::store::{Store, StoreResult};

const PREFIX: &str = "agent_session:";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub agent: String,
    /// Sent back by the page in `X-CSRF-Token` on every state-changing request.
    pub csrf: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// A fingerprint of the agent's password hash at login: a new password ends old sessions.
    pub credential: String,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(token: &str) -> String {
    format!("{PREFIX}{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// What identifies a password hash without revealing it.
pub fn credential_fingerprint(password_hash: &str) -> String {
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..8])
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl_ms: u64) -> Self {
        Sessions {
            store,
            clock,
            ttl_ms,
        }
    }

    /// Start a session for `agent`; returns the cookie token and the record.
    pub fn create(&self, agent: &str, credential: String) -> StoreResult<(String, Session)> {
        self.sweep()?;
        let now = self.clock.now_ms();
        let token = random_token();
        let session = Session {
            agent: agent.to_string(),
            csrf: random_token(),
            created_ms: now,
            expires_ms: now.saturating_add(self.ttl_ms),
            credential,
        };
        let bytes = serde_json::to_vec(&session)
            .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
        self.store.kv_put(&key(&token), &bytes)?;
        Ok((token, session))
    }

    /// The live session for a cookie token; expired and unreadable ones are gone.
    pub fn get(&self, token: &str) -> StoreResult<Option<Session>> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let k = key(token);
        let Some(bytes) = self.store.kv_get(&k)? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Session>(&bytes) {
            Ok(s) if s.expires_ms > self.clock.now_ms() => Ok(Some(s)),
            _ => {
                self.store.kv_remove(&k)?;
                Ok(None)
            }
        }
    }

    pub fn end(&self, token: &str) -> StoreResult<()> {
        self.store.kv_remove(&key(token))
    }

    /// Forget expired sessions (run on each login: logins are rare, sessions few).
    fn sweep(&self) -> StoreResult<()> {
        let now = self.clock.now_ms();
        for (k, v) in self.store.kv_scan(PREFIX)? {
            let live = serde_json::from_slice::<Session>(&v).is_ok_and(|s| s.expires_ms > now);
            if !live {
                self.store.kv_remove(&k)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::FixedClock;
    use crate::store::MemoryStore;

    fn sessions() -> (Sessions, Arc<FixedClock>, Arc<dyn Store>) {
        let clock = Arc::new(FixedClock::at_ms(1_700_000_000_000));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        (
            Sessions::new(store.clone(), clock.clone(), 3_600_000),
            clock,
            store,
        )
    }

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let (s, clock, store) = sessions();
        let (token, rec) = s.create("dana", "fp".into()).unwrap();
        assert_eq!(token.len(), 43);
        assert_eq!(s.get(&token).unwrap(), Some(rec.clone()));
        assert_ne!(rec.csrf, token);
        // Only the token's hash is stored.
        let keys: Vec<String> = store
            .kv_scan(PREFIX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].contains(&token));
        assert_eq!(s.get("not-a-token").unwrap(), None);

        clock.advance(Duration::from_secs(3599));
        assert!(s.get(&token).unwrap().is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.get(&token).unwrap(), None, "expired");
        assert!(store.kv_scan(PREFIX).unwrap().is_empty(), "and removed");

        let (token, _) = s.create("dana", "fp".into()).unwrap();
        s.end(&token).unwrap();
        assert_eq!(s.get(&token).unwrap(), None, "logged out");
    }

    #[test]
    fn logins_sweep_expired_sessions() {
        let (s, clock, store) = sessions();
        s.create("a", "fp".into()).unwrap();
        s.create("b", "fp".into()).unwrap();
        clock.advance(Duration::from_secs(7200));
        let (live, _) = s.create("c", "fp".into()).unwrap();
        assert_eq!(store.kv_scan(PREFIX).unwrap().len(), 1);
        assert_eq!(s.get(&live).unwrap().unwrap().agent, "c");
    }
}
