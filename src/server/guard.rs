//! Who may reach the agent and admin routes (`/agent/*`, `/admin/*`) and `/metrics`, beyond
//! the credential checks.
//!
//! Without `server.admin_token` those routes trust the machine they run on (loopback
//! peers), and "a client on this machine" must not include a web page the agent happens to
//! have open, nor an internet request relayed by a reverse proxy on the same host. So a
//! request admitted on that trust ([`check_loopback_trust`], called where the trust is
//! granted) is refused when
//!
//! - its `Host` is not this server: not an IP address, `localhost` or the host of
//!   `server.public_url` (DNS rebinding: `attacker.example` resolved to 127.0.0.1 sends
//!   `Host: attacker.example`; a browser never sends an IP literal or `localhost` for a
//!   foreign site);
//! - its `Origin` is present and not this server's own (`scheme://Host`, or the origin of
//!   `server.public_url`): another site's page, even one that only reads;
//! - it carries `Forwarded`, `X-Forwarded-For`, `X-Real-IP` or `X-Forwarded-Host`: it came
//!   through a proxy, so its loopback peer address says nothing about who sent it;
//! - it changes something (any method but GET/HEAD/OPTIONS) and has a body, or a
//!   `Content-Type`, that is not `application/json`: a page can post `text/plain` or a form
//!   anywhere without asking, but JSON needs a CORS preflight, which these routes never grant.
//!   A POST with no body at all (`curl -X POST …/release`) is no form.
//!
//! Whatever the credentials, a request that changes something and carries a foreign `Origin`
//! is refused ([`agent_routes`], layered over the routes): a script or curl sends no
//! `Origin`, a browser always does on a POST, and an operator does not expect a page on
//! another site to act as an agent even in a browser that holds the token or a session. A
//! page on kefu's own origin (the agent console) passes every rule; requests carrying a
//! token or a session are judged by those, not by the loopback rules.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::ServerConfig;

/// Headers a reverse proxy adds. Their presence means the TCP peer is the proxy.
const PROXY_HEADERS: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
];

/// Middleware for the agent and admin routes, before any credential check: a request that
/// changes something from another site's page is refused.
pub async fn agent_routes(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match check_cross_site(&s.app.config.server, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => refused(&req, e),
    }
}

/// The response to a refused agent/admin request, logged with the reason.
pub fn refused(req: &Request, e: ApiError) -> Response {
    log_refusal(req, &e);
    e.into_response()
}

/// Log why an agent/admin request was refused by these rules.
pub fn log_refusal(req: &Request, e: &ApiError) {
    tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = %e, "agent/admin request refused");
}

/// Middleware for `/metrics`: behind the admin token when one is set, unless
/// `server.metrics_public`. Without a token it stays open (it names no customer).
pub async fn metrics_access(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let server = &s.app.config.server;
    if server.admin_token.is_some() && !server.metrics_public && !token_ok(server, req.headers()) {
        return ApiError::Unauthorized(
            "/metrics needs `Authorization: Bearer <server.admin_token>` (or server.metrics_public = true)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Any request to the agent and admin routes: refused when it would change something and
/// comes from a page of another origin.
pub fn check_cross_site(
    server: &ServerConfig,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if changes_state(method) {
        own_origin_or_none(server, headers)?;
    }
    Ok(())
}

/// A request about to be admitted because its peer is loopback and no credential is
/// configured: the loopback rules of this module.
pub fn check_loopback_trust(
    server: &ServerConfig,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if let Some(h) = header_str(headers, header::HOST.as_str()) {
        if !is_own_host(server, h) {
            return Err(ApiError::Forbidden(format!(
                "Host `{h}` is not this server; use an IP address or localhost, set server.public_url, or set server.admin_token"
            )));
        }
    }
    if let Some(p) = PROXY_HEADERS.iter().find(|p| headers.contains_key(**p)) {
        return Err(ApiError::Forbidden(format!(
            "the request came through a proxy ({p}); without server.admin_token agent and admin routes answer only clients on this machine"
        )));
    }
    own_origin_or_none(server, headers)?;
    if changes_state(method) && !is_json_or_empty(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "agent and admin requests with a body must send it as `Content-Type: application/json`"
                .into(),
        ));
    }
    Ok(())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn own_origin_or_none(server: &ServerConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = header_str(headers, header::ORIGIN.as_str()) else {
        return Ok(());
    };
    if is_own_origin(server, origin, header_str(headers, header::HOST.as_str())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin `{origin}` is not this server; agent and admin routes refuse other sites' pages"
        )))
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235 §2.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Does the request carry `server.admin_token`? Constant time. False when none is set.
pub fn token_ok(server: &ServerConfig, headers: &HeaderMap) -> bool {
    match (&server.admin_token, bearer(headers)) {
        (Some(want), Some(given)) => bool::from(given.as_bytes().ct_eq(want.expose().as_bytes())),
        _ => false,
    }
}

/// Warnings `serve` logs at start: an agent/admin surface that may be reachable from more
/// than this machine without a token. With `agents` (`[[agents]]` configured) the agent API
/// answers console logins from anywhere, so only `/admin` is left to this machine.
pub fn startup_warnings(server: &ServerConfig, agents: bool, bound: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    // kefu speaks no TLS: an https public_url means a proxy in front.
    let behind_proxy = server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    if behind_proxy && server.client_ip_header.is_none() && server.chat_rate_per_ip.per_minute > 0 {
        out.push(
            "server.public_url is https (a reverse proxy in front) but server.client_ip_header is not set: every customer shares the proxy's /api/chat rate limit (server.chat_rate_per_ip)".into(),
        );
    }
    if server.admin_token.is_some() {
        return out;
    }
    let routes = if agents {
        "/admin (the agent console needs a login)"
    } else {
        "/agent and /admin"
    };
    if !bound.ip().is_loopback() {
        out.push(format!(
            "server.admin_token is not set and kefu listens on {bound}, not only on loopback: {routes} answer direct clients on this machine only; set server.admin_token to use them from elsewhere"
        ));
    }
    if let Some(u) = &server.public_url {
        out.push(format!(
            "server.admin_token is not set but server.public_url ({u}) says kefu is reachable from outside: requests through a proxy are refused on {routes}; set server.admin_token"
        ));
    }
    out
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `host[:port]` → the lowercased host, IPv6 without brackets.
fn host_name(host_header: &str) -> String {
    let h = host_header.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn public_host(server: &ServerConfig) -> Option<String> {
    let u = url::Url::parse(server.public_url.as_deref()?).ok()?;
    Some(u.host_str()?.trim_end_matches('.').to_ascii_lowercase())
}

fn is_own_host(server: &ServerConfig, host_header: &str) -> bool {
    let name = host_name(host_header);
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || public_host(server).is_some_and(|p| p == name)
}

fn is_own_origin(server: &ServerConfig, origin: &str, host: Option<&str>) -> bool {
    let Ok(o) = url::Url::parse(origin) else {
        return false; // `null` (sandboxed frames, file://) and garbage
    };
    if !matches!(o.scheme(), "http" | "https") {
        return false;
    }
    let from_public = server
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|p| p.origin() == o.origin());
    let from_host = host.is_some_and(|h| {
        url::Url::parse(&format!("{}://{h}", o.scheme()))
            .is_ok_and(|own| own.origin() == o.origin())
    });
    from_public || from_host
}

/// A JSON body, or none at all (no `Content-Type`, no length, no chunked encoding).
fn is_json_or_empty(headers: &HeaderMap) -> bool {
    match header_str(headers, header::CONTENT_TYPE.as_str()) {
        Some(ct) => ct
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
        None => {
            !headers.contains_key(header::TRANSFER_ENCODING)
                && header_str(headers, header::CONTENT_LENGTH.as_str())
                    .is_none_or(|n| n.trim() == "0")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn server(token: bool, public_url: Option<&str>) -> ServerConfig {
        ServerConfig {
            admin_token: token.then(|| adapters::Secret::new("s3cret")),
            public_url: public_url.map(str::to_string),
            ..ServerConfig::default()
        }
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        r.map_or_else(|e| e.status().as_u16(), |()| 200)
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn loopback_trust_rules() {
        let s = server(false, Some("https://support.example.com"));
        let get = |h: &[(&str, &str)]| status(check_loopback_trust(&s, &Method::GET, &headers(h)));
        let post =
            |h: &[(&str, &str)]| status(check_loopback_trust(&s, &Method::POST, &headers(h)));
        // This machine, its own pages, the public name.
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "192.168.1.5",
            "support.example.com",
            "kefu.localhost",
        ] {
            assert_eq!(get(&[("host", host)]), 200, "{host}");
        }
        assert_eq!(get(&[]), 200, "no Host: not a browser");
        // DNS rebinding.
        for host in [
            "attacker.example:8080",
            "attacker.example",
            "127.0.0.1.nip.io",
        ] {
            assert_eq!(get(&[("host", host)]), 403, "{host}");
        }
        // Cross-site pages, even reading.
        assert_eq!(
            get(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example")
            ]),
            403
        );
        assert_eq!(get(&[("host", "127.0.0.1:8080"), ("origin", "null")]), 403);
        assert_eq!(
            get(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]),
            200
        );
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://support.example.com"),
                JSON
            ]),
            200,
            "the public origin behind a proxy that rewrites Host"
        );
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9999"),
                JSON
            ]),
            403,
            "another port is another origin"
        );
        // Bodies must be JSON.
        assert_eq!(post(&[("host", "127.0.0.1:8080"), JSON]), 200);
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
        ] {
            assert_eq!(
                post(&[("host", "127.0.0.1:8080"), ("content-type", ct)]),
                415,
                "{ct}"
            );
        }
        assert_eq!(
            post(&[("host", "127.0.0.1:8080"), ("content-length", "12")]),
            415,
            "a body without a content type"
        );
        assert_eq!(
            post(&[("host", "127.0.0.1:8080"), ("transfer-encoding", "chunked")]),
            415
        );
        assert_eq!(post(&[("host", "127.0.0.1:8080")]), 200, "no body at all");
        assert_eq!(
            post(&[("host", "127.0.0.1:8080"), ("content-length", "0")]),
            200
        );
        // Through a proxy.
        for p in PROXY_HEADERS {
            assert_eq!(
                get(&[("host", "127.0.0.1:8080"), (p, "203.0.113.9")]),
                403,
                "{p}"
            );
        }
    }

    #[test]
    fn with_credentials_only_foreign_origins_changing_state_are_refused() {
        let s = server(true, None);
        let run = |m: Method, h: &[(&str, &str)]| status(check_cross_site(&s, &m, &headers(h)));
        assert_eq!(run(Method::GET, &[("host", "kefu.example.com")]), 200);
        assert_eq!(
            run(
                Method::POST,
                &[("host", "kefu.example.com"), ("content-type", "text/plain")]
            ),
            200,
            "scripts: the token decides"
        );
        assert_eq!(
            run(
                Method::POST,
                &[("host", "kefu.example.com"), ("x-forwarded-for", "1.2.3.4")]
            ),
            200
        );
        assert_eq!(
            run(
                Method::POST,
                &[
                    ("host", "kefu.example.com"),
                    ("origin", "https://evil.example")
                ]
            ),
            403
        );
        assert_eq!(
            run(
                Method::POST,
                &[
                    ("host", "kefu.example.com"),
                    ("origin", "https://kefu.example.com")
                ]
            ),
            200
        );
        assert_eq!(
            run(
                Method::GET,
                &[
                    ("host", "kefu.example.com"),
                    ("origin", "https://evil.example")
                ]
            ),
            200,
            "a read: the token (never sent by another site's page) decides"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let s = server(true, None);
        for v in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            "bEaReR s3cret",
        ] {
            assert!(token_ok(&s, &headers(&[("authorization", v)])), "{v}");
        }
        for v in [
            "Bearer s3cre",
            "Basic s3cret",
            "Bearers3cret",
            "Bearer",
            "s3cret",
        ] {
            assert!(!token_ok(&s, &headers(&[("authorization", v)])), "{v}");
        }
        assert!(!token_ok(
            &server(false, None),
            &headers(&[("authorization", "Bearer s3cret")])
        ));
    }

    #[test]
    fn startup_warnings_name_the_exposure() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let all: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(startup_warnings(&server(false, None), false, lo).is_empty());
        let w = startup_warnings(&server(false, None), false, all);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("0.0.0.0:8080") && w[0].contains("admin_token"),
            "{w:?}"
        );
        let w = startup_warnings(&server(false, Some("http://s.example.com")), false, lo);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("public_url"), "{w:?}");
        // https: a proxy in front, and no token: both said.
        assert_eq!(
            startup_warnings(&server(false, Some("https://s.example.com")), false, lo).len(),
            2
        );
        assert_eq!(
            startup_warnings(&server(true, Some("https://s.example.com")), false, all),
            ["server.public_url is https (a reverse proxy in front) but server.client_ip_header is not set: every customer shares the proxy's /api/chat rate limit (server.chat_rate_per_ip)"]
        );
        let mut proxied = server(true, Some("https://s.example.com"));
        proxied.client_ip_header = Some("X-Real-IP".into());
        assert!(startup_warnings(&proxied, false, all).is_empty());
        // With [[agents]] the console logs in from anywhere: only /admin is this machine's.
        let w = startup_warnings(&server(false, None), true, all);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("/admin (the agent console needs a login)")
                && !w[0].contains("/agent and"),
            "{w:?}"
        );
        assert!(startup_warnings(&server(true, None), true, all).is_empty());
    }
}
