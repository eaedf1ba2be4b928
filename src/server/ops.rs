//! Operator routes: health, metrics, re-ingest, and the static widget files.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

/// A /healthz write probe is reused for this long: a busy health checker costs one small
/// write and flush a second, not one per request.
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// 200 only when kefu would acknowledge a message now: the store writes and flushes. 503
/// says why not (the store's error, or that kefu is stopping).
pub async fn healthz(State(s): State<AppState>) -> Response {
    if s.lifecycle.intake.is_stopping() {
        return unhealthy("kefu is stopping".into());
    }
    match s.app.probe_store(PROBE_FRESH).await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            let since = s
                .app
                .commit
                .health()
                .failing()
                .map(|(d, _)| format!(" (failing for {} s)", d.as_secs()))
                .unwrap_or_default();
            unhealthy(format!("the store cannot write: {e}{since}"))
        }
    }
}

fn unhealthy(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "unavailable", "reason": reason})),
    )
        .into_response()
}

/// How stale the gauges that scan the store may be (one scan per this, whatever the scrape
/// rate; 20k conversations took 44 ms to scan).
const SCANNED_GAUGES_MAX_AGE: Duration = Duration::from_secs(30);

pub async fn metrics(State(s): State<AppState>) -> Response {
    let store = s.app.store.clone();
    let mut gauges = s
        .app
        .metrics
        .scanned_gauges(SCANNED_GAUGES_MAX_AGE, move || {
            let open = store.handed_off().unwrap_or_default();
            let claimed = open
                .iter()
                .filter(|c| c.handoff.as_ref().is_some_and(|h| h.agent.is_some()))
                .count() as f64;
            let dead = store.dead_letter_count().unwrap_or(0) as f64;
            vec![
                (
                    "kefu_handoffs_active",
                    "Conversations handed to a human now, open handoffs (refreshed every 30 s at most).",
                    open.len() as f64,
                ),
                (
                    "kefu_handoffs_claimed",
                    "Open handoffs an agent has claimed (refreshed every 30 s at most).",
                    claimed,
                ),
                (
                    "kefu_outbox_dead_letters",
                    "Replies given up on, waiting for an agent (GET /agent/api/dead-letters; refreshed every 30 s at most).",
                    dead,
                ),
            ]
        })
        .await;
    gauges.insert(
        0,
        (
            "kefu_knowledge_chunks",
            "Chunks in the knowledge index.",
            s.app.knowledge.chunk_count() as f64,
        ),
    );
    // Counted as they change, so read fresh on every scrape.
    let healthy = if s.app.commit.health().failing().is_none() {
        1.0
    } else {
        0.0
    };
    gauges.extend([
        (
            "kefu_outbox_pending",
            "Deliveries waiting in the outbox.",
            s.app.store.outbox_len().unwrap_or(0) as f64,
        ),
        (
            "kefu_inbox_pending",
            "Platform messages acknowledged and not answered yet.",
            s.app.store.inbox_len().unwrap_or(0) as f64,
        ),
        (
            "kefu_conversation_queue_depth",
            "Platform messages waiting in conversation queues or in hand.",
            s.platforms.queues.waiting() as f64,
        ),
        (
            "kefu_store_writable",
            "1 when the store writes, 0 while writes fail.",
            healthy,
        ),
    ]);
    let mut body = s.app.metrics.render(&gauges);
    let stats = s.app.commit.stats();
    for (name, help, v) in [
        (
            "kefu_store_flushes_total",
            "Flushes of the store (each covers every acknowledgement waiting for it).",
            stats.flushes.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "kefu_store_durable_waits_total",
            "Waits for a flush (acknowledgements, outbox marks, probes).",
            stats.waits.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    body.push_str(
        "# HELP kefu_store_corrupt_records_total Undecodable records skipped and moved to the `corrupt` tree, by tree.\n# TYPE kefu_store_corrupt_records_total counter\n",
    );
    for (tree, n) in s.app.store.corrupt_records() {
        body.push_str(&format!(
            "kefu_store_corrupt_records_total{{tree=\"{tree}\"}} {n}\n"
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Re-read the knowledge files (incremental) and answer with the report.
pub async fn reingest(State(s): State<AppState>) -> Result<Response, ApiError> {
    let report = s
        .app
        .knowledge
        .ingest(&s.app.config.knowledge.paths)
        .await?;
    crate::app::log_report(&report);
    Ok(Json(serde_json::json!({
        "files": report.files_seen,
        "changed": report.files_changed,
        "removed": report.files_removed,
        "chunks": report.chunks,
        "problems": report.problems,
    }))
    .into_response())
}

pub async fn demo_page() -> Html<&'static str> {
    Html(adapters::web::DEMO_HTML)
}

pub async fn widget_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        adapters::web::WIDGET_JS,
    )
        .into_response()
}

pub async fn widget_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        adapters::web::WIDGET_CSS,
    )
        .into_response()
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "no such route"})),
    )
        .into_response()
}
