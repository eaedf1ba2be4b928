//! What agents watch: `GET /agent/api/events` (server-sent events: a handoff arrives, a
//! customer writes, someone claims / replies / releases / closes, a delivery settles) and
//! `GET /agent/api/stats` (open and claimed counts, handoffs by reason, time to first human
//! reply).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::console::Caller;
use super::{ApiError, AppState};

/// A comment line this often keeps proxies and idle timeouts from closing the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream. It ends when the session expires or the server shuts down; the page's
/// `EventSource` reconnects (and is refused once the session is gone). A reader that fell
/// behind gets `resync` and reloads what it shows.
pub async fn events(State(s): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let feed = s.app.engine.events().subscribe();
    let closing = s.closing.subscribe();
    let until = match &caller {
        Caller::Agent { expires_ms, .. } => {
            let left = expires_ms.saturating_sub(s.app.clock.now_ms());
            tokio::time::Instant::now() + Duration::from_millis(left)
        }
        // Automation has no session: a day, then it reconnects.
        Caller::Automation => tokio::time::Instant::now() + Duration::from_secs(86_400),
    };
    let ready =
        stream::once(async { Ok::<_, Infallible>(Event::default().event("ready").data("{}")) });
    let rest = stream::unfold(
        (feed, closing, until, false),
        |(mut feed, mut closing, until, done)| async move {
            if done || *closing.borrow() {
                return None;
            }
            let next = tokio::select! {
                e = feed.recv() => e,
                _ = closing.changed() => return None,
                _ = tokio::time::sleep_until(until) => return None,
            };
            let (event, done) = match next {
                Ok(e) => (
                    Event::default()
                        .event(e.kind.as_str())
                        .data(serde_json::to_string(&e).unwrap_or_default()),
                    false,
                ),
                Err(RecvError::Lagged(n)) => (
                    Event::default()
                        .event("resync")
                        .data(json!({ "missed": n }).to_string()),
                    false,
                ),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (feed, closing, until, done)))
        },
    );
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
