//! DingTalk senders (dingtalk.md §3, §6): the app robot's replies ([`DingTalkSender`]) and a
//! custom group robot's notices ([`DingTalkRobotSender`]).
//!
//! The codec (`adapters::dingtalk`) built the calls and reads the answers; this file adds
//! what only exists at send time: the OpenAPI access token, the custom robot's signed URL
//! (its timestamp must be fresh), the clock and the HTTP client. Every answer maps to one
//! [`SendError`]:
//!
//! | answer | outcome |
//! | --- | --- |
//! | sessionWebhook `errcode` ≠ 0 (expired, refused) | `Permanent`: the outbox moves to the OpenAPI fallback |
//! | rate limited (130101, HTTP 429, `QpsLimit`) | `RetryAfter` |
//! | OpenAPI token refused | new token, one more try, then `Retry` |
//! | 5xx, network error, timeout | `Retry` |
//! | other 4xx / permanent errcodes | `Permanent` |
//!
//! Nothing here logs or returns a token, a secret or a signed URL: reqwest errors are
//! stripped of their URL (`without_url`), since a sessionWebhook or robot URL carries one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::dingtalk::api::{self, AnswerError, CredentialRequest, TOKEN_HEADER};
use adapters::dingtalk::{reply, sign};
use adapters::{Call, CallAuth, HostAllowlist, Secret};
use async_trait::async_trait;

use sha2::{Digest, Sha256};

use super::rate::RateLimit;
use super::token::{Fresh, TokenCache};
use super::{SendError, Sender};
use crate::clock::Clock;
use crate::config::{DingTalkChannelConfig, DingTalkRobotConfig};
use crate::store::Store;

/// DingTalk answers in well under a second; a call hanging this long is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A throttled sessionWebhook without `Retry-After`: try again after this.
const WEBHOOK_THROTTLE_WAIT: Duration = Duration::from_secs(60);
/// OpenAPI limits are per second (`QpsLimit`): a short pause is enough.
const OPENAPI_THROTTLE_WAIT: Duration = Duration::from_secs(5);
/// A custom robot over 20 messages/min is blocked for 10 minutes (dingtalk.md §6).
const ROBOT_BLOCKED_WAIT: Duration = Duration::from_secs(600);

/// Store key of a channel's persisted OpenAPI token.
pub fn token_key(channel: &str) -> String {
    format!("dingtalk_token:{channel}")
}

/// Sends a DingTalk channel's calls: sessionWebhook as received, OpenAPI with a token.
pub struct DingTalkSender {
    name: String,
    api_base: String,
    token_request: CredentialRequest,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// The OpenAPI token, shared by all sends and kept across restarts.
    token: TokenCache,
    /// Hosts a sessionWebhook call may go to. The codec already chose the OpenAPI for any
    /// other; this holds for calls queued before a config change too.
    webhook_hosts: HostAllowlist,
    /// For sessionWebhook calls: follows no redirect, so an allowed host cannot bounce the
    /// POST somewhere else.
    webhook_http: reqwest::Client,
}

impl DingTalkSender {
    pub fn new(
        c: &DingTalkChannelConfig,
        http: reqwest::Client,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        DingTalkSender {
            name: c.name.clone(),
            api_base: c.api_base.trim_end_matches('/').to_string(),
            token_request: api::access_token_request(&c.app_key, &c.app_secret),
            token: TokenCache::new(token_key(&c.name), &[c.app_key.expose()], store),
            webhook_hosts: c
                .allowed_webhook_hosts
                .as_deref()
                .and_then(|h| HostAllowlist::new(h).ok())
                .unwrap_or_else(HostAllowlist::dingtalk),
            webhook_http: reqwest::Client::builder()
                .user_agent(concat!("kefu/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|_| http.clone()),
            http,
            clock,
        }
    }

    /// Replace the sessionWebhook host allowlist (the channel's own list, else the server's).
    pub fn with_webhook_hosts(mut self, hosts: HostAllowlist) -> Self {
        self.webhook_hosts = hosts;
        self
    }

    /// A valid token: from memory, else from the store (a restart), else fetched.
    async fn token(&self) -> Result<Secret, SendError> {
        let now = self.clock.now_ms();
        self.token
            .get(now, || async move {
                let t = self.fetch_token().await?;
                Ok(Fresh {
                    expires_at_ms: now.saturating_add(t.expire_in_s.saturating_mul(1000)),
                    refresh_at_ms: t.refresh_at_ms(now),
                    token: t.token,
                })
            })
            .await
    }

    /// Forget `rejected` unless a newer token already replaced it.
    async fn drop_token(&self, rejected: &Secret) {
        self.token.forget(rejected).await;
    }

    async fn fetch_token(&self) -> Result<api::AccessToken, SendError> {
        let url = format!("{}{}", self.api_base, self.token_request.path);
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.token_request.body.expose().to_string())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("dingtalk token: {}", e.without_url())))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SendError::Retry(format!("dingtalk token: {}", e.without_url())))?;
        api::parse_access_token(status, &body).map_err(|e| {
            // Wrong credentials are a config problem: keep the reply queued (Retry) so it
            // goes out once the operator fixes them, and say so loudly.
            tracing::error!(channel = %self.name, error = %e, "dingtalk access token refused; check app_key / app_secret");
            SendError::Retry(format!("dingtalk token: {e}"))
        })
    }

    /// POST to the sessionWebhook exactly as received (dingtalk.md §3.1).
    async fn send_webhook(&self, call: &Call) -> Result<(), SendError> {
        if call.url.is_empty() {
            return Err(SendError::Permanent("dingtalk: call without a URL".into()));
        }
        if let Err(why) = self.webhook_hosts.check_url(&call.url) {
            // A URL from a request: never called off the allowlist (SSRF). Permanent: the
            // outbox moves to the OpenAPI fallback.
            tracing::warn!(channel = %self.name, reason = %why, "sessionWebhook refused");
            return Err(SendError::Permanent(format!(
                "sessionWebhook refused: {why}"
            )));
        }
        let (status, retry_after, body) =
            post(&self.webhook_http, &call.url, &call.body, None).await?;
        if status >= 500 {
            return Err(SendError::Retry(format!("sessionWebhook: HTTP {status}")));
        }
        match api::check_answer(call, status, &body) {
            Ok(()) => Ok(()),
            Err(e) if e.is_rate_limited() => Err(SendError::RetryAfter(
                retry_after.unwrap_or(WEBHOOK_THROTTLE_WAIT),
                format!("sessionWebhook: {e}"),
            )),
            // Any other failure: the webhook is taken as expired (it dies early, dingtalk.md
            // §3.1) and the outbox moves to the OpenAPI fallback.
            Err(e) => Err(SendError::Permanent(format!("sessionWebhook: {e}"))),
        }
    }

    /// POST `{api_base}{path}` with the token header; a refused token is renewed once.
    async fn send_openapi(&self, call: &Call) -> Result<(), SendError> {
        let url = format!("{}{}", self.api_base, call.url);
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let (status, retry_after, body) =
                post(&self.http, &url, &call.body, Some(&token)).await?;
            let e = match api::check_answer(call, status, &body) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if e.is_token_rejected() {
                self.drop_token(&token).await;
                if !renewed {
                    renewed = true;
                    continue;
                }
                return Err(SendError::Retry(format!("dingtalk openapi: {e}")));
            }
            return Err(openapi_error(e, status, retry_after));
        }
    }
}

fn openapi_error(e: AnswerError, status: u16, retry_after: Option<Duration>) -> SendError {
    if e.is_rate_limited() {
        SendError::RetryAfter(
            retry_after.unwrap_or(OPENAPI_THROTTLE_WAIT),
            format!("dingtalk openapi: {e}"),
        )
    } else if status < 500 && e.is_permanent() {
        SendError::Permanent(format!("dingtalk openapi: {e}"))
    } else {
        SendError::Retry(format!("dingtalk openapi: {e}"))
    }
}

/// POST a JSON body; network errors and timeouts are `Retry`. Returns status, `Retry-After`
/// and body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    token: Option<&Secret>,
) -> Result<(u16, Option<Duration>, bytes::Bytes), SendError> {
    let mut req = http
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_string())
        .timeout(REQUEST_TIMEOUT);
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t.expose());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SendError::Retry(format!("dingtalk: {}", e.without_url())))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp
        .bytes()
        .await
        .map_err(|e| SendError::Retry(format!("dingtalk: {}", e.without_url())))?;
    Ok((status, retry_after, body))
}

#[async_trait]
impl Sender for DingTalkSender {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        match call.auth {
            CallAuth::None => self.send_webhook(call).await,
            CallAuth::DingTalkToken => self.send_openapi(call).await,
            CallAuth::WeComToken => Err(SendError::Permanent(
                "dingtalk: a WeCom call in a DingTalk queue".into(),
            )),
        }
    }
}

/// Sends `[[notify]]` notices through a DingTalk custom group robot (自定义机器人,
/// dingtalk.md §6). A call's body is the plain notice text.
pub struct DingTalkRobotSender {
    name: String,
    api_base: String,
    access_token: Secret,
    secret: Option<Secret>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// 20 messages a minute, or the robot is blocked for 10 (queue, don't drop).
    rate: RateLimit,
    /// Parts of a long notice already delivered, by hash of the notice: a retry after a
    /// partial send resumes instead of repeating them.
    progress: Mutex<HashMap<[u8; 32], usize>>,
}

impl DingTalkRobotSender {
    pub fn new(c: &DingTalkRobotConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        DingTalkRobotSender {
            name: c.name.clone(),
            api_base: c.api_base.clone(),
            access_token: c.access_token.clone(),
            secret: c.secret.clone(),
            http,
            clock,
            rate: RateLimit::per_minute(api::CUSTOM_ROBOT_PER_MINUTE as usize),
            progress: Mutex::new(HashMap::new()),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], usize>> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send_part(&self, body: &str) -> Result<(), SendError> {
        let now = self.clock.now_ms();
        if let Err(wait) = self.rate.acquire(now) {
            return Err(SendError::RetryAfter(
                wait,
                format!("dingtalk robot {}: 20 messages a minute", self.name),
            ));
        }
        // Signed now: DingTalk accepts the timestamp for an hour only.
        let url = sign::custom_robot_url(
            &self.api_base,
            &self.access_token,
            self.secret.as_ref(),
            now,
        );
        let (status, retry_after, answer) = post(&self.http, url.expose(), body, None).await?;
        if status >= 500 {
            return Err(SendError::Retry(format!("dingtalk robot: HTTP {status}")));
        }
        match api::parse_robot_answer(status, &answer) {
            Ok(()) => Ok(()),
            Err(e) if e.is_rate_limited() => Err(SendError::RetryAfter(
                retry_after.unwrap_or(ROBOT_BLOCKED_WAIT),
                format!("dingtalk robot: {e}"),
            )),
            Err(e) if e.is_permanent() => {
                tracing::error!(target = %self.name, error = %e, "dingtalk robot refused the notice; check access_token / secret / keywords");
                Err(SendError::Permanent(format!("dingtalk robot: {e}")))
            }
            Err(e) => Err(SendError::Retry(format!("dingtalk robot: {e}"))),
        }
    }
}

#[async_trait]
impl Sender for DingTalkRobotSender {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        let text = call.body.trim();
        if text.is_empty() {
            return Ok(());
        }
        let bodies = reply::fit_bodies(text, false, &|_, part| reply::text(part, None));
        let key: [u8; 32] = Sha256::digest(call.body.as_bytes()).into();
        let start = self.progress().get(&key).copied().unwrap_or(0);
        for (i, body) in bodies.iter().enumerate().skip(start) {
            if let Err(e) = self.send_part(body).await {
                if i > 0 && !matches!(e, SendError::Permanent(_)) {
                    self.progress().insert(key, i);
                } else {
                    self.progress().remove(&key);
                }
                return Err(e);
            }
        }
        self.progress().remove(&key);
        Ok(())
    }
}
