//! The HTTP side shared by the OpenAI-compatible chat and embedding providers: URL joining,
//! the auth header (Bearer, or Azure's `api-key`), one overall deadline per call, bounded
//! retries with backoff on 429 / 5xx / network errors (honoring `Retry-After`), and a circuit
//! breaker so a model that is down costs nothing but a fast fallback.
//!
//! The API key lives in a [`Secret`] and is stripped from every error message (some servers
//! echo the key they were given), so it never reaches logs, turns or metrics.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use adapters::Secret;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::ProviderError;

/// First retry delay; doubled per attempt, capped at `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Where and how to call one OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, or Azure's
    /// `https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Azure's `api-version` query parameter.
    pub api_version: Option<String>,
    /// Deadline of one call, retries included.
    pub timeout: Duration,
    pub max_retries: u32,
    /// Failed calls in a row that open the breaker; 0 disables it.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// One OpenAI-compatible server: a connection pool, its auth and its breaker.
pub struct OpenAiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<Secret>,
    azure: bool,
    api_version: Option<String>,
    timeout: Duration,
    max_retries: u32,
    breaker: Breaker,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("azure", &self.azure)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    pub fn new(cfg: EndpointConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kefu/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5).min(cfg.timeout))
            .build()?;
        let azure = cfg.base_url.contains("openai.azure.com") || cfg.api_version.is_some();
        Ok(OpenAiClient {
            http,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            api_key: cfg.api_key.filter(|k| !k.expose().is_empty()),
            azure,
            api_version: cfg.api_version,
            timeout: cfg.timeout,
            max_retries: cfg.max_retries,
            breaker: Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `base_url` + `/path` (+ `?api-version=` for Azure).
    pub fn url(&self, path: &str) -> String {
        let mut u = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        if let Some(v) = &self.api_version {
            u.push_str(if u.contains('?') { "&" } else { "?" });
            u.push_str("api-version=");
            u.push_str(v);
        }
        u
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let (name, value) = if self.azure {
                ("api-key", key.expose().to_string())
            } else {
                ("authorization", format!("Bearer {}", key.expose()))
            };
            if let Ok(mut v) = HeaderValue::from_str(&value) {
                v.set_sensitive(true);
                h.insert(name, v);
            }
        }
        h
    }

    /// Remove the API key from a message that may quote it.
    pub fn redact(&self, msg: &str) -> String {
        match &self.api_key {
            Some(k) if k.expose().len() >= 4 => msg.replace(k.expose(), "***"),
            _ => msg.to_string(),
        }
    }

    /// POST `body` to `path` and hand a 2xx response to `read`, all within the deadline.
    /// 429, 5xx and network errors are retried; other statuses are not. The breaker fails
    /// fast while open and counts unavailability (not bad answers) as failures.
    pub async fn post<T, F, Fut>(
        &self,
        path: &str,
        body: &serde_json::Value,
        read: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut admitted = Admitted {
            breaker: &self.breaker,
            admission: Some(self.breaker.admit()?),
        };
        let result = tokio::time::timeout(self.timeout, self.attempts(path, body, read))
            .await
            .unwrap_or(Err(ProviderError::Timeout));
        let down = matches!(
            result,
            Err(ProviderError::Timeout | ProviderError::Unavailable(_))
        );
        if let Some(probe) = admitted.admission.take() {
            self.breaker.record(probe, !down);
        }
        result.map_err(|e| match e {
            ProviderError::Unavailable(m) => ProviderError::Unavailable(self.redact(&m)),
            ProviderError::BadAnswer(m) => ProviderError::BadAnswer(self.redact(&m)),
            ProviderError::Timeout => ProviderError::Timeout,
        })
    }

    async fn attempts<T, F, Fut>(
        &self,
        path: &str,
        body: &serde_json::Value,
        read: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let url = self.url(path);
        let mut attempt = 0u32;
        loop {
            let sent = self
                .http
                .post(&url)
                .headers(self.headers())
                .json(body)
                .send()
                .await;
            let (error, wait) = match sent {
                Ok(r) if r.status().is_success() => return read(r).await,
                Ok(r) if retryable(r.status()) => (
                    format!("{path}: HTTP {}", r.status()),
                    retry_after(r.headers()).unwrap_or_else(|| backoff(attempt)),
                ),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let snippet: String = text.chars().take(200).collect();
                    return Err(ProviderError::Unavailable(format!(
                        "{path}: HTTP {status}: {snippet}"
                    )));
                }
                Err(e) => (format!("{path}: {}", without_url(&e)), backoff(attempt)),
            };
            if attempt >= self.max_retries {
                return Err(ProviderError::Unavailable(error));
            }
            tracing::debug!(attempt, ?wait, %error, "model call failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// Seconds form only (what model APIs send); an HTTP date falls back to backoff.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: f64 = h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(600.0)))
}

fn backoff(attempt: u32) -> Duration {
    let base = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.min(8))
        .min(MAX_BACKOFF);
    // ±25 % jitter so many kefu instances don't retry in lockstep.
    base.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

/// A reqwest error's message without its URL (query strings may carry tokens elsewhere).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A call the breaker let through. Dropped before it finished (the engine stops a streamed
/// answer when the customer leaves or a sentence fails its check), it counts as neither
/// success nor failure, but a half-open probe must not keep the breaker waiting for it.
struct Admitted<'a> {
    breaker: &'a Breaker,
    admission: Option<Admission>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.abandon(a);
        }
    }
}

/// Circuit breaker: closed (count failures in a row) → open after `threshold` (fail fast for
/// `cooldown`) → half-open (one probe call; success closes, failure opens again).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Whether an admitted call is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    probe: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go out now?
    pub fn admit(&self) -> Result<Admission, ProviderError> {
        if self.threshold == 0 {
            return Ok(Admission { probe: false });
        }
        let mut s = self.lock();
        match *s {
            BreakerState::Closed { .. } => Ok(Admission { probe: false }),
            BreakerState::Open { until } if Instant::now() >= until => {
                *s = BreakerState::HalfOpen;
                Ok(Admission { probe: true })
            }
            BreakerState::Open { until } => Err(ProviderError::Unavailable(format!(
                "circuit breaker open for another {} ms after repeated failures",
                until.saturating_duration_since(Instant::now()).as_millis()
            ))),
            BreakerState::HalfOpen => Err(ProviderError::Unavailable(
                "circuit breaker half-open: a probe call is in flight".into(),
            )),
        }
    }

    /// The call was dropped unfinished: a probe's slot opens again (the next call probes).
    pub fn abandon(&self, a: Admission) {
        if self.threshold == 0 || !a.probe {
            return;
        }
        let mut s = self.lock();
        if *s == BreakerState::HalfOpen {
            *s = BreakerState::Open {
                until: Instant::now(),
            };
        }
    }

    pub fn record(&self, a: Admission, ok: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut s = self.lock();
        let open = BreakerState::Open {
            until: Instant::now() + self.cooldown,
        };
        *s = match (*s, ok) {
            (_, true) if a.probe || matches!(*s, BreakerState::Closed { .. }) => {
                BreakerState::Closed { failures: 0 }
            }
            (BreakerState::HalfOpen, false) if a.probe => {
                tracing::warn!("model still failing; circuit breaker open again");
                open
            }
            (BreakerState::Closed { failures }, false) => {
                if failures + 1 >= self.threshold {
                    tracing::warn!(
                        failures = failures + 1,
                        cooldown_ms = self.cooldown.as_millis() as u64,
                        "model failing; circuit breaker open"
                    );
                    open
                } else {
                    BreakerState::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // A call admitted before the breaker opened finished late: leave the state.
            (other, _) => other,
        };
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), BreakerState::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str, version: Option<&str>) -> OpenAiClient {
        OpenAiClient::new(EndpointConfig {
            base_url: base.into(),
            api_key: Some(Secret::new("sk-secret-123")),
            api_version: version.map(String::from),
            timeout: Duration::from_millis(500),
            max_retries: 1,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(30),
        })
        .unwrap()
    }

    #[test]
    fn urls_join_and_azure_gets_api_version() {
        let c = client("http://127.0.0.1:1/v1/", None);
        assert_eq!(
            c.url("/chat/completions"),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        assert!(!c.azure);
        let a = client(
            "https://x.openai.azure.com/openai/deployments/gpt4o",
            Some("2024-06-01"),
        );
        assert_eq!(
            a.url("embeddings"),
            "https://x.openai.azure.com/openai/deployments/gpt4o/embeddings?api-version=2024-06-01"
        );
        assert!(a.azure);
    }

    #[test]
    fn auth_header_is_bearer_or_api_key_and_sensitive() {
        let c = client("http://127.0.0.1:1/v1", None);
        let h = c.headers();
        assert_eq!(h["authorization"], "Bearer sk-secret-123");
        assert!(h["authorization"].is_sensitive());
        let a = client("https://x.openai.azure.com/openai/deployments/d", None);
        let h = a.headers();
        assert_eq!(h["api-key"], "sk-secret-123");
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn debug_and_redact_hide_the_key() {
        let c = client("http://127.0.0.1:1/v1", None);
        assert!(!format!("{c:?}").contains("sk-secret-123"));
        assert_eq!(c.redact("bad key sk-secret-123 given"), "bad key *** given");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        assert!(backoff(0) < Duration::from_millis(320));
        assert!(backoff(20) <= MAX_BACKOFF.mul_f64(1.25));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_then_half_opens() {
        let b = Breaker::new(2, Duration::from_secs(10));
        for _ in 0..2 {
            let a = b.admit().unwrap();
            b.record(a, false);
        }
        assert!(b.is_open());
        assert!(b.admit().is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().unwrap();
        // One probe at a time.
        assert!(b.admit().is_err());
        b.record(probe, false);
        assert!(b.is_open());
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().unwrap();
        b.record(probe, true);
        assert!(!b.is_open());
        let a = b.admit().unwrap();
        b.record(a, false);
        assert!(!b.is_open(), "one failure after closing is not enough");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let a = b.admit().unwrap();
        b.record(a, false);
        tokio::time::advance(Duration::from_secs(11)).await;
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err());
        b.abandon(probe);
        let probe = b.admit().expect("the slot is free again");
        b.record(probe, true);
        assert!(!b.is_open());
        // A non-probe call dropped changes nothing.
        let a = b.admit().unwrap();
        b.abandon(a);
        assert!(!b.is_open());
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(10));
        let a = b.admit().unwrap();
        b.record(a, false);
        let a = b.admit().unwrap();
        b.record(a, true);
        let a = b.admit().unwrap();
        b.record(a, false);
        assert!(!b.is_open());
    }
}
