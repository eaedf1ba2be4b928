//! The HTTP face: axum routes that only translate HTTP to and from the engine and adapters.

mod agent;
pub mod channels;
mod chat;
mod cors;
pub mod dingtalk_stream;
mod error;
mod ops;
pub mod platform;

use std::net::SocketAddr;
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
    /// The channel registry, the outbox and per-conversation queues.
    pub platforms: Arc<platform::Platforms>,
}

impl AppState {
    pub fn new(app: App) -> anyhow::Result<Self> {
        let outbox_slot = Arc::new(std::sync::OnceLock::new());
        let registry = channels::Registry::build(&channels::Context {
            config: &app.config,
            http: &app.http,
            store: &app.store,
            clock: &app.clock,
            engine: &app.engine,
            outbox: &outbox_slot,
        })?;
        let mut senders = registry.senders();
        senders.extend(crate::delivery::notify_senders(
            &app.config,
            &app.http,
            &app.clock,
        ));
        let outbox = Arc::new(crate::delivery::Outbox::new(
            app.store.clone(),
            senders,
            app.clock.clone(),
            app.metrics.clone(),
        ));
        let _ = outbox_slot.set(Arc::downgrade(&outbox));
        let platforms = Arc::new(platform::Platforms::new(registry, outbox));
        Ok(AppState {
            app: Arc::new(app),
            platforms,
        })
    }

    /// Send an agent's message to the customer on the conversation's own channel. The web
    /// widget polls the history, so web conversations need nothing more.
    pub async fn deliver_agent_message(&self, conv: &crate::store::Conversation, text: &str) {
        platform::deliver_agent_message(self, conv, text).await;
    }

    /// Start the background work: outbox workers, the inbox replay, and each channel's own
    /// (DingTalk Stream clients, WeCom kf sync loops). Everything stops when `stop` turns true.
    pub fn start_background(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.platforms.outbox.spawn_workers(stop.clone());
        platform::replay_inbox(self);
        for ch in self.platforms.registry.all() {
            ch.driver.start(self, ch, stop.clone());
        }
    }
}

/// The whole router. Tests call it with `oneshot`; `serve` binds it to a socket.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/chat", post(chat::post_chat))
        .route("/api/chat/{session_id}/messages", get(chat::history))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::web_origin,
        ));
    let agent = Router::new()
        .route("/agent/api/conversations", get(agent::queue))
        .route(
            "/agent/api/conversations/{channel}/{conversation}",
            get(agent::conversation),
        )
        .route(
            "/agent/api/conversations/{channel}/{conversation}/reply",
            post(agent::reply),
        )
        .route(
            "/agent/api/conversations/{channel}/{conversation}/release",
            post(agent::release),
        )
        .route("/admin/reingest", post(ops::reingest))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            agent::authorize,
        ));
    Router::new()
        .route("/", get(ops::demo_page))
        .route("/widget.js", get(ops::widget_js))
        .route("/widget.css", get(ops::widget_css))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/wecom/{name}", get(platform::wecom).post(platform::wecom))
        .route("/dingtalk/{name}", post(platform::dingtalk))
        .merge(api)
        .merge(agent)
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
    let store = state.app.store.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    state.start_background(stop_rx);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
mod tests;
