//! The people behind the handoff: agent accounts from `[[agents]]`, their console logins
//! (server-side sessions with a CSRF token) and the wrong-password limiter. The HTTP side
//! (cookies, headers) is in `server::console`; nothing here knows about requests.

pub mod limiter;
pub mod password;
pub mod sessions;

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{AgentConfig, Config};
use crate::store::{Store, StoreError, StoreResult};

pub use sessions::Session;

/// Argon2 verifications running at once: each takes ~19 MiB and a CPU for tens of ms, so a
/// flood of logins queues here instead of starving the bot.
const CONCURRENT_VERIFICATIONS: usize = 2;

pub struct Agents {
    accounts: HashMap<String, AgentConfig>,
    sessions: sessions::Sessions,
    limiter: limiter::LoginLimiter,
    verifying: tokio::sync::Semaphore,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong agent id or password")]
    Wrong,
    #[error("too many wrong passwords; try again in {retry_after_s} s")]
    Paused { retry_after_s: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A logged-in agent: the session and the account it belongs to.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub token: String,
    pub session: Session,
    pub id: String,
    pub name: String,
}

impl Agents {
    pub fn new(config: &Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let c = &config.console;
        Agents {
            accounts: config
                .agents
                .iter()
                .map(|a| (a.id.clone(), a.clone()))
                .collect(),
            sessions: sessions::Sessions::new(
                store,
                clock.clone(),
                u64::from(c.session_hours) * 3_600_000,
            ),
            limiter: limiter::LoginLimiter::new(
                c.login_failures,
                c.login_failures_per_ip,
                u64::from(c.login_window_minutes) * 60_000,
            ),
            verifying: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
            clock,
        }
    }

    /// Are any agents configured? Without them the console has no one to log in.
    pub fn any(&self) -> bool {
        !self.accounts.is_empty()
    }

    pub fn name(&self, id: &str) -> Option<&str> {
        self.accounts.get(id).map(|a| a.name.as_str())
    }

    /// Check `password` for `id` (from `ip`) and start a session.
    pub async fn login(&self, id: &str, password: &str, ip: &str) -> Result<LoggedIn, LoginError> {
        let now = self.clock.now_ms();
        if let Some(wait_ms) = self.limiter.paused(id, ip, now) {
            return Err(LoginError::Paused {
                retry_after_s: wait_ms.div_ceil(1000),
            });
        }
        let account = self.accounts.get(id);
        let phc = account.map(|a| a.password_hash.expose().to_string());
        let given = password.to_string();
        let ok = {
            let _permit = self.verifying.acquire().await.ok();
            tokio::task::spawn_blocking(move || match phc {
                Some(phc) => password::verify(&phc, &given),
                None => {
                    password::verify_nobody(&given);
                    false
                }
            })
            .await
            .unwrap_or(false)
        };
        let Some(account) = account.filter(|_| ok) else {
            self.limiter.failed(id, ip, self.clock.now_ms());
            return Err(LoginError::Wrong);
        };
        self.limiter.succeeded(id);
        let credential = sessions::credential_fingerprint(account.password_hash.expose());
        let (token, session) = self.sessions.create(&account.id, credential)?;
        Ok(LoggedIn {
            token,
            session,
            id: account.id.clone(),
            name: account.name.clone(),
        })
    }

    /// The agent a session cookie belongs to, while the session lives, the account still
    /// exists and its password has not changed.
    pub fn authenticate(&self, token: &str) -> StoreResult<Option<LoggedIn>> {
        let Some(session) = self.sessions.get(token)? else {
            return Ok(None);
        };
        let current = self.accounts.get(&session.agent).filter(|a| {
            sessions::credential_fingerprint(a.password_hash.expose()) == session.credential
        });
        match current {
            Some(a) => Ok(Some(LoggedIn {
                token: token.to_string(),
                id: a.id.clone(),
                name: a.name.clone(),
                session,
            })),
            None => {
                self.sessions.end(token)?;
                Ok(None)
            }
        }
    }

    pub fn logout(&self, token: &str) -> StoreResult<()> {
        self.sessions.end(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::config::AgentConfig;
    use crate::store::MemoryStore;
    use adapters::Secret;

    fn agents(hash: &str) -> Agents {
        let mut cfg = Config::default();
        cfg.console.login_failures = 2;
        cfg.agents.push(AgentConfig {
            id: "dana".into(),
            name: "Dana".into(),
            password_hash: Secret::new(hash),
        });
        Agents::new(
            &cfg,
            Arc::new(MemoryStore::new()),
            Arc::new(FixedClock::at_ms(1_700_000_000_000)),
        )
    }

    #[tokio::test]
    async fn login_checks_the_password_and_pauses_after_failures() {
        let hash = password::hash("s3cret!").unwrap();
        let a = agents(&hash);
        assert!(matches!(
            a.login("dana", "nope", "ip").await,
            Err(LoginError::Wrong)
        ));
        assert!(matches!(
            a.login("nobody", "s3cret!", "ip").await,
            Err(LoginError::Wrong)
        ));
        let ok = a.login("dana", "s3cret!", "ip").await.unwrap();
        assert_eq!((ok.id.as_str(), ok.name.as_str()), ("dana", "Dana"));
        let again = a.authenticate(&ok.token).unwrap().unwrap();
        assert_eq!(again.session.csrf, ok.session.csrf);

        for _ in 0..2 {
            let _ = a.login("dana", "wrong", "ip").await;
        }
        match a.login("dana", "s3cret!", "ip").await {
            Err(LoginError::Paused { retry_after_s }) => assert_eq!(retry_after_s, 900),
            other => panic!("expected a pause, got {other:?}"),
        }

        a.logout(&ok.token).unwrap();
        assert!(a.authenticate(&ok.token).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_changed_password_ends_old_sessions() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(FixedClock::at_ms(1_700_000_000_000));
        let with = |hash: &str| {
            let mut cfg = Config::default();
            cfg.agents.push(AgentConfig {
                id: "dana".into(),
                name: "Dana".into(),
                password_hash: Secret::new(hash),
            });
            Agents::new(&cfg, store.clone(), clock.clone())
        };
        let before = with(&password::hash("old").unwrap());
        let token = before.login("dana", "old", "ip").await.unwrap().token;
        assert!(before.authenticate(&token).unwrap().is_some());
        let after = with(&password::hash("new").unwrap());
        assert!(after.authenticate(&token).unwrap().is_none());
    }
}
