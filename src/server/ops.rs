//! Operator routes: health, metrics, re-ingest, and the static widget files.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
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
            let outbox = store.outbox_len().unwrap_or(0) as f64;
            let open = store.handed_off().unwrap_or_default();
            let claimed = open
                .iter()
                .filter(|c| c.handoff.as_ref().is_some_and(|h| h.agent.is_some()))
                .count() as f64;
            vec![
                (
                    "kefu_outbox_pending",
                    "Deliveries waiting in the outbox (refreshed every 30 s at most).",
                    outbox,
                ),
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
    let body = s.app.metrics.render(&gauges);
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
