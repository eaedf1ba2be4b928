//! Token buckets for `POST /api/chat`: one per client IP, one per widget session. Each turn
//! costs retrieval and maybe a paid model call; a script looping on the endpoint must not
//! drown real customers. Over the limit: 429 with `Retry-After` (whole seconds).
//!
//! The client IP is the TCP peer, or, behind a reverse proxy, the address it writes into
//! `server.client_ip_header` (the last entry of `X-Forwarded-For`: the one the closest proxy
//! added). IPv6 clients are bucketed by /64, what one host usually owns.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::read_body;
use super::ApiError;
use crate::clock::Clock;
use crate::config::{RateLimitConfig, ServerConfig};

/// Buckets kept at most; past it, full (idle) buckets are dropped first.
const MAX_KEYS: usize = 100_000;

/// Token buckets by key.
pub struct TokenBuckets {
    per_ms: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl TokenBuckets {
    /// `None` when the limit is off (`per_minute = 0`).
    pub fn new(c: RateLimitConfig) -> Option<Self> {
        (c.per_minute > 0).then(|| TokenBuckets {
            per_ms: f64::from(c.per_minute) / 60_000.0,
            burst: f64::from(c.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Take one token of `key` at `now_ms`, or say how long until one is there.
    pub fn take(&self, key: &str, now_ms: u64) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| self.refilled(*b, now_ms).tokens < self.burst);
            if map.len() >= MAX_KEYS {
                // Every bucket is in use: forget them rather than grow without bound.
                map.clear();
            }
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        *b = self.refilled(*b, now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let ms = ((1.0 - b.tokens) / self.per_ms).ceil().max(1.0);
            Err(Duration::from_millis(ms as u64))
        }
    }

    fn refilled(&self, b: Bucket, now_ms: u64) -> Bucket {
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64;
        Bucket {
            tokens: (b.tokens + elapsed * self.per_ms).min(self.burst),
            at_ms: b.at_ms.max(now_ms),
        }
    }
}

/// The `/api/chat` limits of `[server]`.
pub struct ChatLimiter {
    per_ip: Option<TokenBuckets>,
    per_session: Option<TokenBuckets>,
    ip_header: Option<HeaderName>,
    max_body_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl ChatLimiter {
    pub fn new(s: &ServerConfig, clock: Arc<dyn Clock>) -> Self {
        ChatLimiter {
            per_ip: TokenBuckets::new(s.chat_rate_per_ip),
            per_session: TokenBuckets::new(s.chat_rate_per_session),
            ip_header: s
                .client_ip_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            max_body_bytes: s.max_body_bytes,
            clock,
        }
    }

    fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        client_ip_by(self.ip_header.as_ref(), req)
    }
}

/// The client's address as `[server]` says to read it: `server.client_ip_header` when set
/// and readable, else the TCP peer. The console's login limits use it too.
pub fn client_ip(s: &ServerConfig, req: &Request) -> Option<IpAddr> {
    let header = s
        .client_ip_header
        .as_deref()
        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
    client_ip_by(header.as_ref(), req)
}

/// The proxy's header when given and readable (its last entry: the one the closest proxy
/// added), else the peer the accept loop recorded.
fn client_ip_by(ip_header: Option<&HeaderName>, req: &Request) -> Option<IpAddr> {
    let from_header = ip_header.and_then(|h| {
        let v = req.headers().get(h)?.to_str().ok()?;
        parse_ip(v.rsplit(',').next()?.trim())
    });
    from_header.or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
    })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The bucket key of an address: IPv4 whole, IPv6 by its /64.
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Deserialize)]
struct SessionPeek {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    channel: Option<String>,
}

fn too_many(wait: Duration) -> Response {
    ApiError::TooManyRequests {
        reason: "too many requests",
        retry_after_s: wait.as_millis().div_ceil(1000).max(1) as u64,
    }
    .into_response()
}

/// Middleware for `POST /api/chat`: the IP bucket, then the session bucket (read from the
/// JSON body, which is handed on unchanged; a body the handler will refuse passes here).
pub async fn chat(State(l): State<Arc<ChatLimiter>>, req: Request, next: Next) -> Response {
    let now = l.clock.now_ms();
    if let (Some(buckets), Some(ip)) = (&l.per_ip, l.client_ip(&req)) {
        if let Err(wait) = buckets.take(&ip_key(ip), now) {
            tracing::debug!(%ip, "chat rate limit (ip)");
            return too_many(wait);
        }
    }
    let Some(buckets) = &l.per_session else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, l.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Ok(SessionPeek {
        session_id: Some(id),
        channel,
    }) = serde_json::from_slice::<SessionPeek>(&bytes)
    {
        let key = format!("{}\u{0}{id}", channel.unwrap_or_default());
        if let Err(wait) = buckets.take(&key, now) {
            tracing::debug!("chat rate limit (session)");
            return too_many(wait);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(per_minute: u32, burst: u32) -> TokenBuckets {
        TokenBuckets::new(RateLimitConfig { per_minute, burst }).unwrap()
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let b = buckets(60, 3); // one a second
        for _ in 0..3 {
            assert!(b.take("a", 1_000).is_ok());
        }
        assert_eq!(b.take("a", 1_000), Err(Duration::from_millis(1000)));
        assert_eq!(b.take("a", 1_400), Err(Duration::from_millis(600)));
        assert!(b.take("a", 2_000).is_ok());
        assert!(b.take("a", 2_000).is_err());
        // Others have their own bucket.
        assert!(b.take("b", 2_000).is_ok());
        // Refill never exceeds the burst.
        for _ in 0..3 {
            assert!(b.take("a", 1_000_000).is_ok());
        }
        assert!(b.take("a", 1_000_000).is_err());
        // A clock that steps back does not mint tokens.
        assert!(b.take("a", 10).is_err());
    }

    #[test]
    fn off_when_per_minute_is_zero() {
        assert!(TokenBuckets::new(RateLimitConfig {
            per_minute: 0,
            burst: 5
        })
        .is_none());
    }

    #[test]
    fn keys_stay_bounded() {
        let b = buckets(60, 1);
        for i in 0..(MAX_KEYS + 10) {
            let _ = b.take(&i.to_string(), 0);
        }
        assert!(b.buckets.lock().unwrap().len() <= MAX_KEYS);
    }

    #[test]
    fn ip_keys() {
        assert_eq!(ip_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(
            ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            ip_key("2001:db8:1:2:ffff::1".parse().unwrap()),
            "one /64"
        );
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(parse_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("10.1.2.3:9"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_ip("unknown"), None);
    }
}
