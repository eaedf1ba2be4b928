//! The WeCom server API as kefu calls it: `api_base`, the access token (fetched once,
//! cached in memory and in the store, refreshed early, replaced when WeCom refuses it) and
//! reading the JSON answer. The app's `message/send` sender, the kf sender and the kf sync
//! loop of one channel share one of these, so they share one token.
//!
//! Facts: `shared/protocols/wecom.md` §7; gettoken path/91039, errcodes path/90313. Every
//! answer is HTTP 200, errors too: outcomes are decided on `errcode`, never on `errmsg`.
//! Neither the secret nor the token is ever logged: URLs carrying them never reach an error
//! message (`reqwest::Error::without_url`), and tokens live in [`Secret`]s.

use std::sync::Arc;
use std::time::Duration;

use adapters::wecom::api::{gettoken_path, parse_reply, ApiReply, ERR_RATE_LIMIT};
use adapters::Secret;
use bytes::Bytes;

use super::token::{Fresh, TokenCache};
use super::SendError;
use crate::clock::Clock;
use crate::store::Store;

/// Each WeCom request gives up after this long (then `Retry`): the outbox worker must not
/// hang on a dead connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Refresh the access token this long before WeCom says it expires.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// How long to wait after errcode 45009: WeCom blocks the caller for a minute.
pub const RATE_LIMITED_WAIT: Duration = Duration::from_secs(60);
/// gettoken's usual `expires_in` (seconds), used when the answer leaves it out.
const DEFAULT_EXPIRES_IN: u64 = 7200;

/// The store key under which a channel's access token survives a restart.
pub fn token_store_key(channel: &str) -> String {
    format!("wecom_token:{channel}")
}

/// A WeCom answer: the common fields, and the body for call-specific ones.
pub struct Answer {
    pub reply: ApiReply,
    pub body: Bytes,
}

/// One channel's WeCom API client.
pub struct WeComApi {
    name: String,
    corp_id: String,
    secret: Secret,
    api_base: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// The access token, shared by all calls and kept across restarts.
    token: TokenCache,
}

impl WeComApi {
    /// `name`: the channel (the token's store key); `secret`: the app's or the kf Secret.
    pub fn new(
        name: &str,
        corp_id: &str,
        secret: &Secret,
        api_base: &str,
        http: reqwest::Client,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        WeComApi {
            name: name.to_string(),
            corp_id: corp_id.to_string(),
            secret: secret.clone(),
            api_base: api_base.trim_end_matches('/').to_string(),
            token: TokenCache::new(token_store_key(name), &[corp_id, secret.expose()], store),
            http,
            clock,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A usable token: the cached one, else the stored one (after a restart), else a new one.
    pub async fn token(&self) -> Result<Secret, SendError> {
        self.token
            .get(self.clock.now_ms(), || self.fetch_token())
            .await
    }

    /// Forget `used` (WeCom refused it) unless a newer token has replaced it meanwhile.
    pub async fn invalidate(&self, used: &Secret) {
        self.token.forget(used).await;
    }

    /// `GET /cgi-bin/gettoken`. Any failure is `Retry`: a refused gettoken is a configuration
    /// problem the operator fixes with a restart, and what waits in the outbox then goes out;
    /// the outbox backoff (capped at 5 minutes) keeps the rate-limited gettoken from being
    /// hammered meanwhile.
    async fn fetch_token(&self) -> Result<Fresh, SendError> {
        // The URL holds the secret: it goes to reqwest and nowhere else.
        let url = format!(
            "{}{}",
            self.api_base,
            gettoken_path(&self.corp_id, &self.secret)
        );
        let reply = request(self.http.get(url))
            .await
            .map_err(|e| prefix("gettoken", e))?
            .reply;
        let value = reply.access_token.clone().filter(|t| !t.is_empty());
        match (reply.errcode, value) {
            (0, Some(value)) => {
                let now = self.clock.now_ms();
                let life_ms = reply.expires_in.unwrap_or(DEFAULT_EXPIRES_IN) * 1000;
                // A short-lived token (tests, a proxy) is still refreshed before it runs out.
                let margin = (REFRESH_BEFORE.as_millis() as u64).min(life_ms / 2);
                tracing::info!(channel = %self.name, expires_in_s = life_ms / 1000, "wecom access token fetched");
                Ok(Fresh {
                    token: value,
                    expires_at_ms: now + life_ms,
                    refresh_at_ms: now + life_ms - margin,
                })
            }
            (0, None) => Err(SendError::Retry(
                "gettoken: errcode 0 without an access_token".into(),
            )),
            (code, _) => {
                let hint = match code {
                    40001 | 40091 => " (check the channel's `secret`)",
                    40013 => " (check the channel's `corp_id`)",
                    60020 => " (add this server's egress IP to the app's trusted IPs)",
                    _ => "",
                };
                tracing::error!(channel = %self.name, errcode = code, errmsg = %reply.errmsg, "wecom gettoken refused{hint}");
                if code == ERR_RATE_LIMIT {
                    Err(SendError::RetryAfter(
                        RATE_LIMITED_WAIT,
                        format!("gettoken: errcode {code}: {}", reply.errmsg),
                    ))
                } else {
                    Err(SendError::Retry(format!(
                        "gettoken: errcode {code}: {}{hint}",
                        reply.errmsg
                    )))
                }
            }
        }
    }

    /// One attempt of `method path` with `body` (JSON; none when empty) and `token`.
    pub async fn attempt(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&Secret>,
    ) -> Result<Answer, SendError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| SendError::Permanent(format!("bad method {method:?}")))?;
        let mut url = format!("{}{}", self.api_base, path);
        if let Some(token) = token {
            url.push(if path.contains('?') { '&' } else { '?' });
            url.push_str("access_token=");
            url.extend(url::form_urlencoded::byte_serialize(
                token.expose().as_bytes(),
            ));
        }
        let mut req = self.http.request(method, url);
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        request(req).await
    }

    /// `method path` with the access token. When WeCom refuses the token (it invalidated it
    /// early, or it expired under us) it is replaced and the call made once more; refused
    /// again → `Retry`. Any other answer is returned as is, for the caller to classify.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> Result<Answer, SendError> {
        // Only paths under our own api_base: the token must never go to another host.
        if !path.starts_with('/') {
            return Err(SendError::Permanent(format!(
                "wecom call url is not a path under api_base: {:?}",
                path.split('?').next().unwrap_or_default()
            )));
        }
        let token = self.token().await?;
        let answer = self.attempt(method, path, body, Some(&token)).await?;
        if !answer.reply.is_token_error() {
            return Ok(answer);
        }
        tracing::info!(channel = %self.name, errcode = answer.reply.errcode, "wecom refused the access token; fetching a new one");
        self.invalidate(&token).await;
        let token = self.token().await?;
        let answer = self.attempt(method, path, body, Some(&token)).await?;
        if answer.reply.is_token_error() {
            self.invalidate(&token).await;
            return Err(SendError::Retry(format!(
                "errcode {} with a fresh access token: {}",
                answer.reply.errcode, answer.reply.errmsg
            )));
        }
        Ok(answer)
    }
}

/// Send `req` and read WeCom's JSON answer. Transport trouble is `Retry`.
pub(super) async fn request(req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
    let resp = req
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| SendError::Retry(describe(e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(SendError::RetryAfter(
            RATE_LIMITED_WAIT,
            format!("HTTP {status}"),
        ));
    }
    if status.is_server_error() {
        return Err(SendError::Retry(format!("HTTP {status}")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| SendError::Retry(describe(e)))?;
    // Not an API answer (a proxy's page, a cut-off body): the call may not have arrived.
    let reply = parse_reply(&body).map_err(|e| {
        if status.is_success() {
            SendError::Retry(e.to_string())
        } else {
            SendError::Retry(format!("HTTP {status} without a WeCom answer"))
        }
    })?;
    Ok(Answer { reply, body })
}

/// The outcome of an answer that is not a token error.
pub fn classify(reply: &ApiReply) -> Result<(), SendError> {
    let code = reply.errcode;
    if reply.is_ok() {
        if let Some(who) = reply.invaliduser.as_deref().filter(|u| !u.is_empty()) {
            // errcode 0 with refused recipients: not in the app's visible range.
            tracing::warn!(
                invaliduser = who,
                "wecom did not deliver to some recipients"
            );
        }
        Ok(())
    } else if reply.is_retryable() || reply.is_token_error() {
        Err(SendError::Retry(format!(
            "errcode {code}: {}",
            reply.errmsg
        )))
    } else if code == ERR_RATE_LIMIT {
        Err(SendError::RetryAfter(
            RATE_LIMITED_WAIT,
            format!("errcode {code}: {}", reply.errmsg),
        ))
    } else {
        Err(SendError::Permanent(format!(
            "errcode {code}: {}",
            reply.errmsg
        )))
    }
}

/// A transport error without its URL (which holds a token, a secret or a key).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn prefix(what: &str, e: SendError) -> SendError {
    match e {
        SendError::Retry(m) => SendError::Retry(format!("{what}: {m}")),
        SendError::RetryAfter(d, m) => SendError::RetryAfter(d, format!("{what}: {m}")),
        SendError::Permanent(m) => SendError::Permanent(format!("{what}: {m}")),
    }
}
