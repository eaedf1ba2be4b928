//! The agent console: the page (plain HTML/CSS/JS compiled into the binary, like the widget,
//! no build step, no CDN), the login, and who may use `/agent/api/*`.
//!
//! The page's files live in `server/console/` rather than in the `adapters` crate: they are
//! kefu's own UI over its agent API, not a channel's protocol. They are static (everything
//! else comes from the JSON API), so they can run under a strict Content-Security-Policy
//! with no inline script or style.
//!
//! Who may call the agent API:
//! - `Authorization: Bearer <server.admin_token>`: automation (scripts, other systems).
//! - A console session (HttpOnly, SameSite=Strict cookie). State-changing requests must also
//!   echo the session's CSRF token in `X-CSRF-Token` and come from this server's own origin
//!   (`Origin` / `Sec-Fetch-Site`, when the browser sends them).
//! - Nobody else; except that with no `[[agents]]` and no `admin_token`, loopback clients
//!   still may (kefu's behaviour before the console).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::read_body;
use super::{guard, rate_limit, ApiError, AppState};
use crate::agents::LoginError;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLESHEET: &str = include_str!("console/console.css");

/// The session cookie; scoped to `/agent` so the widget's routes never see it.
const COOKIE: &str = "kefu_agent";
const CSRF_HEADER: &str = "x-csrf-token";
/// Login bodies are tiny; a larger one is not a login.
const MAX_LOGIN_BYTES: usize = 4096;

/// Who is calling the agent API (a request extension set by `authorize_agent`).
#[derive(Clone, Debug)]
pub enum Caller {
    Agent {
        id: String,
        name: String,
        /// When the session ends (the event stream closes then).
        expires_ms: u64,
        /// The session's CSRF token (the page reads it from `/agent/api/session`).
        csrf: String,
    },
    /// The admin token, or a loopback client when nothing is configured.
    Automation,
}

impl Caller {
    pub fn agent(&self) -> Option<&str> {
        match self {
            Caller::Agent { id, .. } => Some(id),
            Caller::Automation => None,
        }
    }
}

/// Headers every console response carries: no framing (clickjacking), no inline code, no
/// third-party anything, nothing cached that holds conversations.
fn hardened(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub async fn page() -> Response {
    hardened(PAGE.into_response(), "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    hardened(
        SCRIPT.into_response(),
        "application/javascript; charset=utf-8",
    )
}

pub async fn stylesheet() -> Response {
    hardened(STYLESHEET.into_response(), "text/css; charset=utf-8")
}

fn token_matches(given: &str, want: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(want.as_bytes()))
}

/// The console session token a request carries (its cookie).
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    session_cookie(headers).map(str::to_string)
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE).then_some(v)
        })
}

/// The TCP peer the accept loop recorded (`listener.rs`); in-process tests have none.
fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(p)| *p)
}

/// Trust granted to a loopback client because nothing else is configured, under the guard's
/// loopback rules (Host, Origin, proxy headers, JSON bodies): a page the agent has open on
/// another site, or a request a local reverse proxy relays, is not "this machine".
fn loopback_trust(s: &AppState, req: &Request) -> Result<bool, ApiError> {
    if !peer(req).is_none_or(|p| p.ip().is_loopback()) {
        return Ok(false);
    }
    guard::check_loopback_trust(&s.app.config.server, req.method(), req.headers())
        .inspect_err(|e| guard::log_refusal(req, e))?;
    Ok(true)
}

/// Refuse a browser request made by a page of another origin. Requests without `Origin`
/// (curl, server-to-server) carry no one else's cookies and pass.
fn same_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|v| !matches!(v, "same-origin" | "none")) {
        return Err(ApiError::Forbidden(
            "cross-site request refused: the agent console only accepts requests from its own pages".into(),
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = !host.is_empty()
        && (origin == format!("http://{host}") || origin == format!("https://{host}"));
    let public = s
        .app
        .config
        .server
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|u| u.origin().ascii_serialization() == origin);
    if own || public {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin {origin} may not act as an agent here (set server.public_url when kefu is behind a proxy)"
        )))
    }
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn authorize_agent(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    match caller(&s, &req) {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn caller(s: &AppState, req: &Request) -> Result<Caller, ApiError> {
    let headers = req.headers();
    if guard::bearer(headers).is_some() {
        return if guard::token_ok(&s.app.config.server, headers) {
            Ok(Caller::Automation)
        } else {
            Err(ApiError::Unauthorized("wrong bearer token".into()))
        };
    }
    if let Some(token) = session_cookie(headers) {
        if let Some(who) = s.agents.authenticate(token)? {
            if !safe(req.method()) {
                same_origin(s, headers)?;
                let given = headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !token_matches(given, &who.session.csrf) {
                    return Err(ApiError::Forbidden(
                        "missing or wrong X-CSRF-Token (reload the console)".into(),
                    ));
                }
            }
            return Ok(Caller::Agent {
                id: who.id,
                name: who.name,
                expires_ms: who.session.expires_ms,
                csrf: who.session.csrf,
            });
        }
    }
    let nothing_configured = !s.agents.any() && s.app.config.server.admin_token.is_none();
    if nothing_configured && loopback_trust(s, req)? {
        return Ok(Caller::Automation);
    }
    Err(ApiError::Unauthorized(
        "log in at /agent, or send `Authorization: Bearer <server.admin_token>`".into(),
    ))
}

/// `/admin/*`: the admin token, or loopback clients when none is set. Console sessions do
/// not reach these.
pub async fn authorize_admin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ok = match &s.app.config.server.admin_token {
        Some(_) => guard::token_ok(&s.app.config.server, req.headers()),
        None => match loopback_trust(&s, &req) {
            Ok(ok) => ok,
            Err(e) => return e.into_response(),
        },
    };
    if !ok {
        return ApiError::Unauthorized(
            "admin routes need `Authorization: Bearer <server.admin_token>` (or a loopback client when no token is set)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    id: String,
    password: String,
}

fn session_cookie_header(s: &AppState, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = s
        .app
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let v = format!(
        "{COOKIE}={value}; Path=/agent; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /agent/api/login` `{"id", "password"}` (JSON only: a cross-site form cannot send
/// it without the browser asking first).
pub async fn login(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if !s.agents.any() {
        return Err(ApiError::NotFound(
            "no agents are configured: add [[agents]] to the config (see `kefu hash-password`)"
                .into(),
        ));
    }
    same_origin(&s, req.headers())?;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "log in with a JSON body: {\"id\": \"...\", \"password\": \"...\"}".into(),
        ));
    }
    // The same client address the /api/chat limits use (server.client_ip_header behind a
    // proxy), IPv6 by its /64.
    let ip = rate_limit::client_ip(&s.app.config.server, &req)
        .map_or_else(|| "local".to_string(), rate_limit::ip_key);
    let bytes = read_body(req.into_body(), MAX_LOGIN_BYTES).await?;
    let b: LoginBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid login body: {e}")))?;
    let metric = |outcome: &str| {
        s.app
            .metrics
            .inc("kefu_agent_logins_total", &[("outcome", outcome)])
    };
    match s.agents.login(b.id.trim(), &b.password, &ip).await {
        Ok(who) => {
            metric("ok");
            tracing::info!(agent = %who.id, "agent logged in");
            // Rounded up: a cookie cut a second short of its session read as flaky under load.
            let max_age = who
                .session
                .expires_ms
                .saturating_sub(s.app.clock.now_ms())
                .div_ceil(1000);
            let mut resp = Json(serde_json::json!({
                "agent": {"id": who.id, "name": who.name},
                "csrf": who.session.csrf,
            }))
            .into_response();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie_header(&s, &who.token, max_age),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err(LoginError::Wrong) => {
            metric("wrong");
            tracing::warn!(id = %b.id.chars().take(64).collect::<String>(), %ip, "wrong agent password");
            Err(ApiError::Unauthorized("wrong agent id or password".into()))
        }
        Err(LoginError::Paused { retry_after_s }) => {
            metric("paused");
            Err(ApiError::TooManyRequests {
                reason: "too many wrong passwords",
                retry_after_s,
            })
        }
        Err(LoginError::Store(e)) => Err(e.into()),
    }
}

/// `POST /agent/api/logout`: end the session, clear the cookie.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_cookie(&headers) {
        s.agents.logout(token)?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&s, "", 0));
    Ok(resp)
}

/// `GET /agent/api/session`: who is logged in, the CSRF token the page must send, and what
/// the console needs to draw itself (channels, agents, canned replies).
pub async fn session(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let cfg = &s.app.config;
    let (me, csrf) = match &caller {
        Caller::Agent {
            id,
            name,
            expires_ms,
            csrf,
        } => (
            serde_json::json!({"id": id, "name": name, "expires_ms": expires_ms}),
            Some(csrf.as_str()),
        ),
        Caller::Automation => (serde_json::Value::Null, None),
    };
    let channels: Vec<serde_json::Value> = cfg
        .channels
        .iter()
        .map(|c| serde_json::json!({"name": c.name(), "kind": c.kind().as_str()}))
        .collect();
    let agents: Vec<serde_json::Value> = cfg
        .agents
        .iter()
        .map(|a| serde_json::json!({"id": a.id, "name": a.name}))
        .collect();
    let mut resp = Json(serde_json::json!({
        "agent": me,
        "csrf": csrf,
        "channels": channels,
        "agents": agents,
        "canned_replies": cfg.canned_replies,
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Read a small JSON body of a console action (`{}` when empty).
pub async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        bytes::Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests;
