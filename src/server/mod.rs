//! The HTTP face: axum routes that only translate HTTP to and from the engine and adapters.

mod agent;
mod agent_feed;
mod chat;
mod console;
mod cors;
pub mod dingtalk_stream;
mod error;
pub mod guard;
pub mod listener;
mod ops;
pub mod platform;
mod rate_limit;
mod replay;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::app::App;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    /// WeCom / DingTalk codecs, the outbox and per-conversation queues.
    pub platforms: Arc<platform::Platforms>,
    /// Console logins: accounts, sessions, the wrong-password limiter.
    pub agents: Arc<crate::agents::Agents>,
    /// Turns true when the server starts shutting down: endless responses (the agents'
    /// event stream) end then, so the graceful shutdown does not wait on them forever.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    pub fn new(app: App) -> anyhow::Result<Self> {
        let senders =
            crate::delivery::build_senders(&app.config, &app.http, &app.store, &app.clock)?;
        let outbox = Arc::new(
            crate::delivery::Outbox::new(
                app.store.clone(),
                senders,
                app.clock.clone(),
                app.metrics.clone(),
            )
            .with_events(app.engine.events().clone()),
        );
        let platforms = Arc::new(platform::Platforms::new(&app.config, outbox)?);
        let agents = Arc::new(crate::agents::Agents::new(
            &app.config,
            app.store.clone(),
            app.clock.clone(),
        ));
        Ok(AppState {
            app: Arc::new(app),
            platforms,
            agents,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// Send an agent's message to the customer on the conversation's own channel: through
    /// the outbox for platforms; the web widget fetches it from the history.
    pub fn deliver_agent_message(
        &self,
        conv: &crate::store::Conversation,
        msg: &crate::store::Message,
    ) {
        platform::deliver_agent_message(self, conv, msg);
    }

    /// Start the background work: outbox workers, the inbox replay, DingTalk Stream clients.
    /// Everything stops when `stop` turns true.
    pub fn start_background(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.platforms.outbox.spawn_workers(stop.clone());
        platform::replay_inbox(self);
        dingtalk_stream::spawn_all(self, stop);
    }
}

/// The whole router. Tests call it with `oneshot`; `serve` binds it to a socket.
pub fn router(state: AppState) -> Router {
    let chat_limits = Arc::new(rate_limit::ChatLimiter::new(
        &state.app.config.server,
        state.app.clock.clone(),
    ));
    let api = Router::new()
        .route(
            "/api/chat",
            post(chat::post_chat).layer(axum::middleware::from_fn_with_state(
                chat_limits,
                rate_limit::chat,
            )),
        )
        .route("/api/chat/{session_id}/messages", get(chat::history))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::web_origin,
        ));
    // The console page and its login: open to anyone (the login checks its own requests).
    let console = Router::new()
        .route("/agent", get(console::page))
        .route("/agent/", get(console::page))
        .route("/agent/console.js", get(console::script))
        .route("/agent/console.css", get(console::stylesheet))
        .route("/agent/api/login", post(console::login));
    const CONV: &str = "/agent/api/conversations/{channel}/{conversation}";
    let agent = Router::new()
        .route("/agent/api/session", get(console::session))
        .route("/agent/api/logout", post(console::logout))
        .route("/agent/api/events", get(agent_feed::events))
        .route("/agent/api/stats", get(agent_feed::stats))
        .route("/agent/api/conversations", get(agent::queue))
        .route(CONV, get(agent::conversation))
        .route(&format!("{CONV}/claim"), post(agent::claim))
        .route(&format!("{CONV}/reply"), post(agent::reply))
        .route(&format!("{CONV}/release"), post(agent::release))
        .route(&format!("{CONV}/close"), post(agent::close))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::authorize_agent,
        ));
    let admin = Router::new()
        .route("/admin/reingest", post(ops::reingest))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::authorize_admin,
        ));
    // Before any credential check, over the agent API and the admin routes: another site's
    // page changing something is refused (guard.rs). The loopback rules run where
    // `console::caller` / `authorize_admin` grant loopback trust. The console page and its
    // login are outside: the page is static, and the login checks its own requests.
    let guarded = agent
        .merge(admin)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::agent_routes,
        ));
    Router::new()
        .route("/", get(ops::demo_page))
        .route("/widget.js", get(ops::widget_js))
        .route("/widget.css", get(ops::widget_css))
        .route("/healthz", get(ops::healthz))
        .route(
            "/metrics",
            get(ops::metrics).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                guard::metrics_access,
            )),
        )
        .route("/wecom/{name}", get(platform::wecom).post(platform::wecom))
        .route("/dingtalk/{name}", post(platform::dingtalk))
        .merge(api)
        .merge(console)
        .merge(guarded)
        .fallback(ops::not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Bind and serve until Ctrl-C / SIGTERM. Prints `kefu listening on http://ADDR` once the
/// socket accepts connections (tests and scripts read it to learn a port-0 address).
pub async fn serve(state: AppState, listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen: cannot bind {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    println!("kefu listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let config = &state.app.config;
    for w in guard::startup_warnings(&config.server, !config.agents.is_empty(), addr) {
        tracing::warn!("{w}");
    }
    let store = state.app.store.clone();
    let closing = state.closing.clone();
    let limits = listener::Limits::from_config(&state.app.config.server);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    state.start_background(stop_rx);
    // The listener stops accepting and waits for every connection to finish its request:
    // `closing` ends the endless ones (the agents' event streams) first.
    let shutdown = async move {
        shutdown_signal().await;
        let _ = closing.send(true);
    };
    listener::serve(listener, router(state), limits, shutdown).await?;
    let _ = stop_tx.send(true);
    store.flush().ok();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
