//! What agents watch: `GET /agent/api/events` (server-sent events: a handoff arrives, a
//! customer writes, someone claims / replies / releases / closes, a delivery settles) and
//! `GET /agent/api/stats` (open and claimed counts, handoffs by reason, time to first human
//! reply).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::console::{session_token, Caller};
use super::{ApiError, AppState};

/// A comment line this often keeps proxies and idle timeouts from closing the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a console's stream checks that its session still exists (a logout elsewhere).
const RECHECK: Duration = Duration::from_secs(30);

/// One console's view of the feed, and what ends it.
struct Watch {
    feed: tokio::sync::broadcast::Receiver<crate::events::Event>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The session's expiry.
    until: tokio::time::Instant,
    recheck: tokio::time::Interval,
    /// Does the session still exist? (Automation has none: always.)
    live: Box<dyn Fn() -> bool + Send>,
}

impl Watch {
    /// The next SSE event, or `None` when the stream should end.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            tokio::select! {
                e = self.feed.recv() => return match e {
                    Ok(e) => Some(
                        Event::default()
                            .event(e.kind.as_str())
                            .data(serde_json::to_string(&e).unwrap_or_default()),
                    ),
                    Err(RecvError::Lagged(n)) => Some(
                        Event::default()
                            .event("resync")
                            .data(json!({ "missed": n }).to_string()),
                    ),
                    Err(RecvError::Closed) => None,
                },
                _ = self.closing.changed() => return None,
                _ = tokio::time::sleep_until(self.until) => return None,
                _ = self.recheck.tick() => if !(self.live)() { return None },
            }
        }
    }
}

/// The event stream. It ends when the session expires or ends (a logout in another tab), or
/// the server shuts down; the page's `EventSource` reconnects (and is refused once the
/// session is gone). A reader that fell behind gets `resync` and reloads what it shows.
pub async fn events(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let now = tokio::time::Instant::now();
    let (until, token) = match &caller {
        Caller::Agent { expires_ms, .. } => (
            now + Duration::from_millis(expires_ms.saturating_sub(s.app.clock.now_ms())),
            session_token(&headers),
        ),
        // Automation has no session: a day, then it reconnects.
        Caller::Automation => (now + Duration::from_secs(86_400), None),
    };
    let agents = s.agents.clone();
    let watch = Watch {
        feed: s.app.engine.events().subscribe(),
        closing: s.closing.subscribe(),
        until,
        recheck: tokio::time::interval_at(now + RECHECK, RECHECK),
        live: Box::new(move || {
            token
                .as_deref()
                .is_none_or(|t| matches!(agents.authenticate(t), Ok(Some(_))))
        }),
    };
    let ready =
        stream::once(async { Ok::<_, Infallible>(Event::default().event("ready").data("{}")) });
    let rest = stream::unfold(watch, |mut w| async move {
        let e = w.next().await?;
        Some((Ok(e), w))
    });
    sse(futures::StreamExt::chain(ready, rest))
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Tell nginx-style proxies not to buffer the stream.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

/// `GET /agent/api/stats`. Counts are live; reasons and reply times are since the start.
pub async fn stats(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let open = s.app.store.handed_off()?;
    let owner = |c: &crate::store::Conversation| c.handoff.as_ref().and_then(|h| h.agent.clone());
    let claimed = open.iter().filter(|c| owner(c).is_some()).count();
    let mine = caller.agent().map(|me| {
        open.iter()
            .filter(|c| owner(c).as_deref() == Some(me))
            .count()
    });
    let first_reply = s.app.metrics.first_reply_summary();
    Ok(Json(json!({
        "open": open.len(),
        "claimed": claimed,
        "unclaimed": open.len() - claimed,
        "mine": mine,
        "handoffs_by_reason": s.app.metrics.by_label("kefu_handoffs_total", "reason"),
        "ended_by_how": s.app.metrics.by_label("kefu_handoffs_ended_total", "how"),
        "first_reply": first_reply,
    }))
    .into_response())
}
