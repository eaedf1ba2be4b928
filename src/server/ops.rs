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

pub async fn metrics(State(s): State<AppState>) -> Response {
    let chunks = s.app.knowledge.chunk_count() as f64;
    let outbox = s.app.store.outbox_len().unwrap_or(0) as f64;
    let inbox = s.app.store.inbox_len().unwrap_or(0) as f64;
    let dead = s.app.store.dead_letter_count().unwrap_or(0) as f64;
    let queued = s.platforms.queues.waiting() as f64;
    let healthy = if s.app.commit.health().failing().is_none() {
        1.0
    } else {
        0.0
    };
    let handoffs = s.app.store.handed_off().map(|v| v.len()).unwrap_or(0) as f64;
    let mut body = s.app.metrics.render(&[
        (
            "kefu_knowledge_chunks",
            "Chunks in the knowledge index.",
            chunks,
        ),
        (
            "kefu_outbox_pending",
            "Deliveries waiting in the outbox.",
            outbox,
        ),
        (
            "kefu_handoffs_active",
            "Conversations a human owns now.",
            handoffs,
        ),
        (
            "kefu_inbox_pending",
            "Platform messages acknowledged and not answered yet.",
            inbox,
        ),
        (
            "kefu_conversation_queue_depth",
            "Platform messages waiting in conversation queues or in hand.",
            queued,
        ),
        (
            "kefu_outbox_dead_letters",
            "Replies given up on, waiting for an agent (GET /agent/api/dead-letters).",
            dead,
        ),
        (
            "kefu_store_writable",
            "1 when the store writes, 0 while writes fail.",
            healthy,
        ),
    ]);
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
