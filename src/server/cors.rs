//! Cross-site embedding of the widget: `/api/*` answers pages on the web channels'
//! `allowed_origins` (and its own origin); any other page is refused with a clear 403.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::ChannelConfig;

pub async fn web_origin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string)
    else {
        // Not a browser cross-origin call (curl, server-to-server, same-origin GET).
        return next.run(req).await;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let same_origin = origin == format!("http://{host}") || origin == format!("https://{host}");
    let allowed = same_origin
        || s.app.config.channels.iter().any(|c| match c {
            ChannelConfig::Web(w) => w.allowed_origins.iter().any(|a| a == "*" || *a == origin),
            _ => false,
        });
    if !allowed {
        let mut resp = ApiError::Forbidden(format!(
            "origin {origin} is not allowed to call this API; add it to allowed_origins of a web channel"
        ))
        .into_response();
        // Let the refused page read the reason (the widget shows it) — it still gets nothing else.
        if let Ok(v) = HeaderValue::from_str(&origin) {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        return resp;
    }
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, accept"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}
