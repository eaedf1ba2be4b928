//! The HTTP face: axum routes that only translate HTTP to and from the engine and adapters.

mod agent;
mod agent_feed;
mod chat;
mod console;
mod cors;
mod dead_letters;
pub mod dingtalk_stream;
mod error;
pub mod fetched;
pub mod guard;
pub mod listener;
mod ops;
pub mod platform;
mod queues;
mod rate_limit;
mod replay;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::app::App;
use crate::lifecycle::TaskGroup;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    /// WeCom / DingTalk codecs, the outbox and per-conversation queues.
    pub platforms: Arc<platform::Platforms>,
    /// The background tasks, in the order they stop.
    pub lifecycle: Arc<Lifecycle>,
    /// Console logins: accounts, sessions, the wrong-password limiter.
    pub agents: Arc<crate::agents::Agents>,
    /// Turns true when the server starts shutting down: endless responses (the agents'
    /// event stream) end then, so the graceful shutdown does not wait on them forever.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The background tasks by the order they stop in (see `lifecycle`).
#[derive(Default)]
pub struct Lifecycle {
    /// What takes messages in besides HTTP: DingTalk Stream connections.
    pub intake: TaskGroup,
    /// One worker per conversation with platform messages queued.
    pub conversations: TaskGroup,
    /// One outbox worker per delivery target.
    pub delivery: TaskGroup,
    /// The store watchdog and the checkpoints.
    pub upkeep: TaskGroup,
}

/// How often a running `serve` records a checkpoint in the data directory's marker.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// How often the store watchdog looks (and, while writes fail, probes).
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);

impl AppState {
    pub fn new(app: App) -> anyhow::Result<Self> {
        let senders =
            crate::delivery::build_senders(&app.config, &app.http, &app.store, &app.clock)?;
        let outbox = Arc::new(
            crate::delivery::Outbox::new(
                app.store.clone(),
                app.commit.clone(),
                senders,
                app.clock.clone(),
                app.metrics.clone(),
                app.config.delivery.clone(),
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
            lifecycle: Arc::new(Lifecycle::default()),
            agents,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// Send an agent's message to the customer on the conversation's own channel: through
    /// the outbox for platforms; the web widget fetches it from the history. `Err`: the
    /// outbox could not store it.
    pub fn deliver_agent_message(
        &self,
        conv: &crate::store::Conversation,
        msg: &crate::store::Message,
    ) -> crate::store::StoreResult<()> {
        platform::deliver_agent_message(self, conv, msg)
    }

    /// Start the background work: outbox workers (after dead-lettering the sends a crash cut
    /// off), the inbox replay, DingTalk Stream clients.
    pub fn start_background(&self) {
        let interrupted = self.platforms.outbox.recover();
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "replies cut off mid-send by the last stop are dead letters now (GET /agent/api/dead-letters)"
            );
        }
        self.platforms
            .outbox
            .spawn_workers(&self.lifecycle.delivery);
        platform::replay_inbox(self);
        if let Some(task) = self.lifecycle.intake.handle() {
            dingtalk_stream::spawn_all(self, task);
        }
    }

    /// Tell every background task to stop, without waiting (tests that just drop kefu).
    pub fn stop_background(&self) {
        let l = &self.lifecycle;
        for g in [&l.intake, &l.conversations, &l.delivery, &l.upkeep] {
            g.stop();
        }
    }

    /// Stop in order, each group given at most `limit`: intake, then the conversation
    /// workers (the turn in hand is finished, the rest stays in the inbox), then delivery
    /// (the call in hand is finished, the rest stays in the outbox), then upkeep; then
    /// flush and record a checkpoint. True when every group finished in time.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        let mut in_time = true;
        let l = &self.lifecycle;
        for (name, group) in [
            ("intake", &l.intake),
            ("conversation workers", &l.conversations),
            ("delivery workers", &l.delivery),
            ("upkeep", &l.upkeep),
        ] {
            if !group.stop_and_wait(limit).await {
                in_time = false;
                tracing::warn!(
                    group = name,
                    ?limit,
                    "did not finish in time; its work stays stored for the next start"
                );
            }
        }
        let app = self.app.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            app.store.flush()?;
            app.checkpoint()
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
            Err(e) => tracing::error!(error = %e, "final flush failed"),
        }
        in_time
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
        .route("/agent/api/dead-letters", get(dead_letters::list))
        .route(
            "/agent/api/dead-letters/{id}/retry",
            post(dead_letters::retry),
        )
        .route(
            "/agent/api/dead-letters/{id}/discard",
            post(dead_letters::discard),
        )
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

/// Bind and serve until Ctrl-C / SIGTERM, then stop in order (`AppState::shutdown`). Prints
/// `kefu listening on http://ADDR` once the socket accepts connections (tests and scripts
/// read it to learn a port-0 address). Returns an error, for a non-zero exit, when the store
/// failed for good (`server.store_failure_exit_secs`).
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
    let limits = listener::Limits::from_config(&state.app.config.server);
    state.start_background();
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
    spawn_upkeep(&state, fatal_tx);
    let (why_tx, why_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    let closing = state.closing.clone();
    let lifecycle = state.lifecycle.clone();
    // Intake stops first: the listener stops accepting, the agents' endless event streams
    // end (`closing`), open requests finish (their acknowledgements are flushed), Stream
    // clients close.
    let shutdown = async move {
        let fatal = tokio::select! {
            _ = shutdown_signal() => None,
            why = fatal_rx.recv() => why,
        };
        tracing::info!("stopping: no new messages; finishing the work in hand");
        let _ = closing.send(true);
        lifecycle.intake.stop();
        let _ = why_tx.send(fatal);
    };
    let mut serving = pin!(listener::serve(
        listener,
        router(state.clone()),
        limits,
        shutdown
    ));
    let mut stopping = state.lifecycle.intake.signal();
    // The listener may finish before the stop signal is seen (the shutdown future stops
    // intake and the listener in one go): then it must not be polled again.
    let served = tokio::select! {
        r = &mut serving => {
            r?;
            true
        }
        _ = stopping.wait_for(|stop| *stop) => false,
    };
    let limit = Duration::from_secs(state.app.config.server.shutdown_timeout_secs);
    if !served && tokio::time::timeout(limit, &mut serving).await.is_err() {
        tracing::warn!(
            ?limit,
            "open HTTP requests did not finish in time; closing them"
        );
    }
    state.shutdown(limit).await;
    match why_rx.await.ok().flatten() {
        Some(why) => {
            tracing::error!("stopped: the store failed");
            Err(anyhow::anyhow!(
                "the store could not write for {} s ({why}); exiting so a supervisor restarts kefu",
                state.app.config.server.store_failure_exit_secs
            ))
        }
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// The store watchdog (a store failing longer than `store_failure_exit_secs` sends its
/// reason on `fatal`) and the periodic checkpoints of the data directory's marker.
fn spawn_upkeep(state: &AppState, fatal: tokio::sync::mpsc::Sender<String>) {
    if let Some(mut task) = state.lifecycle.upkeep.handle() {
        let app = state.app.clone();
        tokio::spawn(async move {
            let limit = Duration::from_secs(app.config.server.store_failure_exit_secs);
            loop {
                tokio::select! {
                    _ = task.stopped() => return,
                    _ = tokio::time::sleep(WATCHDOG_EVERY) => {}
                }
                let Some((failing_for, why)) = app.commit.health().failing() else {
                    continue;
                };
                // Writes failed lately: does the store write now?
                if app.probe_store(Duration::ZERO).await.is_ok() {
                    continue;
                }
                if failing_for >= limit {
                    tracing::error!(error = %why, ?failing_for, "the store keeps failing; stopping");
                    let _ = fatal.send(why).await;
                    return;
                }
            }
        });
    }
    if let Some(mut task) = state.lifecycle.upkeep.handle() {
        let app = state.app.clone();
        tokio::spawn(async move {
            loop {
                if app.commit.health().failing().is_none() {
                    let a = app.clone();
                    match tokio::task::spawn_blocking(move || a.checkpoint()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "checkpoint failed");
                            app.commit.health().failed(&e.to_string());
                        }
                        Err(e) => tracing::error!(error = %e, "checkpoint failed"),
                    }
                }
                tokio::select! {
                    _ = task.stopped() => return,
                    _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
                }
            }
        });
    }
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
mod durability_tests;
#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
