//! DingTalk Stream mode (dingtalk.md §7): no public URL; kefu opens a WebSocket to DingTalk's
//! gateway and receives the robot's messages on it.
//!
//! One task per `mode = "stream"` channel:
//!
//! 1. `POST {api_base}/v1.0/gateway/connections/open` → endpoint + single-use ticket;
//! 2. connect `endpoint?ticket=…`;
//! 3. per frame: a robot message is decoded and handed to [`platform::accept`] (the same
//!    dedupe, inbox and per-conversation queue as an HTTP callback), and acked only once it
//!    is on disk: a message that could not be stored gets no ack, so DingTalk delivers it
//!    again; SYSTEM pings are echoed; `disconnect` means reconnect;
//! 4. a connection silent for [`Timing::idle`] gets a WebSocket ping; no answer within
//!    [`Timing::pong_wait`] means it is dead;
//! 5. after any failure: back to 1 with a jittered backoff, 1 s doubling to 60 s;
//! 6. when `stop` turns true: a Close frame, a short wait for the gateway's, exit.
//!
//! Neither the ticket nor the app secret is ever logged.

use std::time::Duration;

use adapters::dingtalk::stream::{self, StreamFrame};
use adapters::dingtalk::{DingTalk, DingTalkParams};
use adapters::Decoded;
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{platform, AppState};
use crate::config::{ChannelConfig, DingTalkMode};

/// The `ua` kefu announces when opening a connection.
const USER_AGENT: &str = concat!("kefu/", env!("CARGO_PKG_VERSION"));
/// Opening a connection (HTTP call, WebSocket handshake) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect waits: 1 s, doubling, at most 60 s (each jittered down by up to half).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lived this long was healthy: the backoff starts over.
const HEALTHY: Duration = Duration::from_secs(30);
/// After our Close frame, wait this long for the gateway's.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Keepalive timing of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Ping the socket after this long without any frame from the gateway.
    pub idle: Duration,
    /// Give up on the connection when nothing arrives this long after the ping.
    pub pong_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            idle: Duration::from_secs(30),
            pong_wait: Duration::from_secs(10),
        }
    }
}

/// What `pump` does with a robot message's `data` before acking it: `true` = stored, ack it;
/// `false` = not stored, no ack (DingTalk delivers it again).
pub type OnRobot<'a> = dyn Fn(String) -> BoxFuture<'a, bool> + Send + Sync + 'a;

/// Start one Stream client per `mode = "stream"` DingTalk channel, each holding `task` (the
/// intake group) until it has closed its connection.
pub fn spawn_all(s: &AppState, task: crate::lifecycle::TaskHandle) {
    for c in &s.app.config.channels {
        let ChannelConfig::DingTalk(d) = c else {
            continue;
        };
        if d.mode != DingTalkMode::Stream {
            continue;
        }
        let codec = match DingTalk::new(DingTalkParams {
            name: d.name.clone(),
            app_key: d.app_key.clone(),
            app_secret: d.app_secret.clone(),
            robot_code: d.robot_code.clone(),
        }) {
            Ok(codec) => codec,
            Err(e) => {
                tracing::error!(error = %e, "dingtalk stream not started");
                continue;
            }
        };
        // The endpoint comes from DingTalk's answer, not from config: the same host rule
        // as a sessionWebhook, plus the configured api_base's own host.
        let endpoint_hosts =
            adapters::HostAllowlist::new(d.webhook_hosts(&s.app.config.server)).unwrap_or_default();
        let endpoint_hosts = match url::Url::parse(&d.api_base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            Some(h) => endpoint_hosts.with_host(&h),
            None => endpoint_hosts,
        };
        let client = Client {
            state: s.clone(),
            name: d.name.clone(),
            api_base: d.api_base.trim_end_matches('/').to_string(),
            codec,
            endpoint_hosts,
        };
        let task = task.clone();
        tokio::spawn(async move {
            let stop = task.stop.clone();
            client.run(stop).await;
            drop(task);
        });
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `stop` turned true; the socket was closed.
    Stopped,
    /// DingTalk asked us to reconnect (SYSTEM `disconnect`).
    Disconnect,
    /// The connection failed or went silent.
    Lost(String),
}

struct Client {
    state: AppState,
    name: String,
    api_base: String,
    codec: DingTalk,
    /// Hosts the gateway's WebSocket endpoint may be on.
    endpoint_hosts: adapters::HostAllowlist,
}

impl Client {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let started = Instant::now();
            let end = self.connect_once(&mut stop).await;
            let healthy = started.elapsed() >= HEALTHY;
            let wait = match &end {
                Ok(End::Stopped) => {
                    tracing::info!(channel = %self.name, "dingtalk stream closed");
                    return;
                }
                Ok(End::Disconnect) => {
                    tracing::info!(channel = %self.name, "dingtalk stream: gateway asked to reconnect");
                    failures = if healthy { 0 } else { failures + 1 };
                    (failures > 0).then(|| backoff(failures))
                }
                Ok(End::Lost(why)) => {
                    failures = if healthy { 1 } else { failures + 1 };
                    let wait = backoff(failures);
                    tracing::warn!(channel = %self.name, error = %why, retry_in = ?wait, "dingtalk stream connection lost");
                    Some(wait)
                }
                Err(why) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::warn!(channel = %self.name, error = %why, retry_in = ?wait, "dingtalk stream cannot connect");
                    Some(wait)
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Open one connection and pump it until it ends. `Err`: it never opened.
    async fn connect_once(&self, stop: &mut watch::Receiver<bool>) -> Result<End, String> {
        let endpoint = tokio::select! {
            r = self.open() => r?,
            _ = stop.changed() => return Ok(End::Stopped),
        };
        let ws_host = url::Url::parse(&endpoint.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        if !self.endpoint_hosts.allows_host(&ws_host) {
            return Err(format!(
                "connections/open named an endpoint on `{ws_host}`, not on allowed_webhook_hosts or the api_base host"
            ));
        }
        let url = endpoint.websocket_url();
        let connect = tokio_tungstenite::connect_async(url.expose());
        let (mut ws, _) = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r
                .map_err(|_| "websocket handshake timed out".to_string())?
                .map_err(|e| ws_error(&e))?,
            _ = stop.changed() => return Ok(End::Stopped),
        };
        tracing::info!(channel = %self.name, endpoint = %endpoint_host(&endpoint.endpoint), "dingtalk stream connected");
        let on_robot = |data: String| -> BoxFuture<'_, bool> { Box::pin(self.robot_message(data)) };
        Ok(pump(&mut ws, stop, Timing::default(), &on_robot).await)
    }

    /// `POST {api_base}/v1.0/gateway/connections/open`.
    async fn open(&self) -> Result<stream::StreamEndpoint, String> {
        let req = self.codec.open_connection_request(USER_AGENT, "");
        let resp = self
            .state
            .app
            .http
            .post(format!("{}{}", self.api_base, req.path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(req.body.expose().to_string())
            .timeout(CONNECT_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("connections/open: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("connections/open: {}", e.without_url()))?;
        stream::parse_open_connection(status, &body).map_err(|e| format!("connections/open: {e}"))
    }

    /// A robot message: stored and queued like an HTTP callback, before the ack goes out.
    /// False when it could not be stored (then it is not acked).
    async fn robot_message(&self, data: String) -> bool {
        match self.codec.decode_stream(&data, self.state.app.clock.now()) {
            Ok(decoded) => {
                if let Decoded::Message(m) = &decoded {
                    tracing::debug!(channel = %self.name, id = %m.id, "dingtalk stream message");
                }
                super::replay::warn_foreign_webhook(&self.state, &self.name, &decoded);
                let ticket = self.state.app.commit.ticket();
                platform::accept(&self.state, &self.name, decoded, ticket)
                    .await
                    .status()
                    .is_success()
            }
            Err(e) => {
                // Acked anyway: DingTalk would only send the same bytes again.
                self.state.app.metrics.inc(
                    "kefu_callbacks_total",
                    &[("channel", &self.name), ("outcome", "malformed")],
                );
                tracing::warn!(channel = %self.name, error = %e, "dingtalk stream message unreadable");
                true
            }
        }
    }
}

/// Serve one open connection until it ends: answer every frame, keep it alive, close it on
/// `stop`. `on_robot` gets each robot message's `data` before its ack is sent (and may
/// withhold the ack).
pub async fn pump<S>(
    ws: &mut S,
    stop: &mut watch::Receiver<bool>,
    timing: Timing,
    on_robot: &OnRobot<'_>,
) -> End
where
    S: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    if *stop.borrow_and_update() {
        close(ws).await;
        return End::Stopped;
    }
    let mut deadline = Instant::now() + timing.idle;
    let mut pinged = false;
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    close(ws).await;
                    return End::Stopped;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if pinged {
                    return End::Lost(format!("no answer {:?} after a ping", timing.pong_wait));
                }
                if let Err(e) = ws.send(Message::Ping(bytes::Bytes::from_static(b"kefu"))).await {
                    return End::Lost(ws_error(&e));
                }
                pinged = true;
                deadline = Instant::now() + timing.pong_wait;
            }
            next = ws.next() => {
                let msg = match next {
                    None => return End::Lost("closed by the gateway".into()),
                    Some(Err(e)) => return End::Lost(ws_error(&e)),
                    Some(Ok(msg)) => msg,
                };
                // Anything from the gateway proves the connection alive.
                pinged = false;
                deadline = Instant::now() + timing.idle;
                match msg {
                    Message::Text(text) => {
                        let frame = match stream::parse_frame(text.as_str()) {
                            Ok(frame) => frame,
                            Err(e) => {
                                tracing::debug!(error = %e, "dingtalk stream: unreadable frame ignored");
                                continue;
                            }
                        };
                        if let StreamFrame::RobotMessage { data, .. } = &frame {
                            if !on_robot(data.clone()).await {
                                tracing::warn!("dingtalk stream message not stored; not acked, so DingTalk delivers it again");
                                continue;
                            }
                        }
                        if let Err(e) = ws.send(Message::text(frame.response())).await {
                            return End::Lost(ws_error(&e));
                        }
                        if let StreamFrame::Disconnect { .. } = frame {
                            close(ws).await;
                            return End::Disconnect;
                        }
                    }
                    Message::Close(_) => return End::Lost("closed by the gateway".into()),
                    // tungstenite answers WebSocket pings itself; pongs and binary frames
                    // only count as signs of life.
                    _ => {}
                }
            }
        }
    }
}

/// Send a Close frame and wait briefly for the gateway's answer.
async fn close<S>(ws: &mut S)
where
    S: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "kefu stopping".into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Done at the gateway's Close frame (or end of stream); dropping the socket then is fine.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Wait before reconnect attempt `failures` (≥ 1): 1 s doubling to 60 s, jittered down by
/// up to half so many kefus don't reconnect in step.
pub fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(6))
        .min(BACKOFF_MAX);
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// A WebSocket error without the URL (which carries the ticket).
fn ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Url(_) => "websocket: cannot connect to the endpoint".into(),
        tungstenite::Error::Http(resp) => format!("websocket handshake: HTTP {}", resp.status()),
        other => format!("websocket: {other}"),
    }
}

/// `scheme://host:port` of an endpoint, for logs.
fn endpoint_host(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .ok()
        .map(|u| {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}", u.scheme(), u.host_str().unwrap_or(""))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    // In-memory sockets (`tokio::io::duplex`) and short real timings: tokio's paused time
    // needs the `test-util` feature, which the workspace does not enable.
    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (
            WebSocketStream::from_raw_socket(a, Role::Client, None).await,
            WebSocketStream::from_raw_socket(b, Role::Server, None).await,
        )
    }

    fn timing() -> Timing {
        Timing {
            idle: Duration::from_millis(150),
            pong_wait: Duration::from_millis(100),
        }
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("done within 10 s")
    }

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        for (n, max) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            for _ in 0..50 {
                let d = backoff(n);
                let max = Duration::from_secs(max);
                assert!(d <= max && d >= max / 2, "{n}: {d:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_pinged_then_dropped() {
        let (mut client, mut gateway) = pair().await;
        let (_tx, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let end = pump(&mut client, &mut stop, timing(), &|_| {
                Box::pin(async { true })
            })
            .await;
            (end, started.elapsed())
        });
        // The gateway reads the ping but is otherwise dead: never polled again, it never
        // sends the pong.
        let first = within(gateway.next()).await.expect("frame").expect("ok");
        assert!(matches!(first, Message::Ping(_)), "{first:?}");
        let (end, took) = within(task).await.expect("join");
        assert!(matches!(end, End::Lost(_)), "{end:?}");
        assert!(took >= Duration::from_millis(250), "{took:?}");
    }

    #[tokio::test]
    async fn frames_are_answered_pings_keep_it_alive_and_stop_closes() {
        let (mut client, mut gateway) = pair().await;
        let (tx, mut stop) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let on_robot = move |d: String| -> BoxFuture<'static, bool> {
                seen2.lock().unwrap().push(d);
                Box::pin(async { true })
            };
            pump(&mut client, &mut stop, timing(), &on_robot).await
        });
        let ping = r#"{"specVersion":"1.0","type":"SYSTEM","headers":{"messageId":"p1","topic":"ping"},"data":"{\"opaque\":\"x\"}"}"#;
        gateway.send(Message::text(ping)).await.unwrap();
        let pong = within(gateway.next()).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(pong.to_text().unwrap()).unwrap();
        assert_eq!(v["headers"]["messageId"], "p1");
        assert_eq!(v["data"], r#"{"opaque":"x"}"#);

        let cb = serde_json::json!({
            "specVersion": "1.0", "type": "CALLBACK",
            "headers": {"messageId": "m1", "topic": stream::ROBOT_TOPIC},
            "data": "{\"msgId\":\"x\"}",
        });
        gateway.send(Message::text(cb.to_string())).await.unwrap();
        let ack = within(gateway.next()).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
        assert_eq!(v["headers"]["messageId"], "m1");
        assert_eq!(v["code"], 200);
        assert_eq!(*seen.lock().unwrap(), ["{\"msgId\":\"x\"}"]);

        // A gateway that keeps reading answers pings (tungstenite sends the pongs): the
        // connection outlives several idle periods.
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let mut close_tx = Some(close_tx);
            while let Some(Ok(m)) = gateway.next().await {
                match m {
                    Message::Ping(_) => {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    Message::Close(f) => {
                        if let Some(tx) = close_tx.take() {
                            let _ = tx.send(f);
                        }
                    }
                    _ => {}
                }
            }
        });
        within(async {
            while pings.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(!task.is_finished());

        tx.send(true).unwrap();
        let close = within(close_rx).await.unwrap();
        assert!(
            matches!(close, Some(ref f) if f.code == CloseCode::Normal),
            "{close:?}"
        );
        assert_eq!(within(task).await.unwrap(), End::Stopped);
        within(reader).await.unwrap();
    }

    #[tokio::test]
    async fn disconnect_is_acked_then_closed() {
        let (mut client, mut gateway) = pair().await;
        let (_tx, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            pump(&mut client, &mut stop, timing(), &|_| {
                Box::pin(async { true })
            })
            .await
        });
        let disc =
            r#"{"type":"SYSTEM","headers":{"messageId":"d1","topic":"disconnect"},"data":"{}"}"#;
        gateway.send(Message::text(disc)).await.unwrap();
        let ack = within(gateway.next()).await.unwrap().unwrap();
        assert!(ack.to_text().unwrap().contains("\"d1\""));
        let close = within(gateway.next()).await.unwrap().unwrap();
        assert!(matches!(close, Message::Close(_)));
        // Reading on sends the gateway's Close back.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = gateway.next().await {} });
        let started = Instant::now();
        assert_eq!(within(task).await.unwrap(), End::Disconnect);
        assert!(
            started.elapsed() < CLOSE_WAIT,
            "done at the gateway's Close"
        );
        reader.abort();
    }

    #[tokio::test]
    async fn a_message_that_was_not_stored_is_not_acked() {
        let (mut client, mut gateway) = pair().await;
        let (tx, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            // The store refuses the first message, takes the second.
            let calls = AtomicUsize::new(0);
            let on_robot = move |_: String| -> BoxFuture<'static, bool> {
                let stored = calls.fetch_add(1, Ordering::SeqCst) > 0;
                Box::pin(async move { stored })
            };
            pump(&mut client, &mut stop, timing(), &on_robot).await
        });
        for id in ["refused", "stored"] {
            let cb = serde_json::json!({
                "specVersion": "1.0", "type": "CALLBACK",
                "headers": {"messageId": id, "topic": stream::ROBOT_TOPIC},
                "data": "{}",
            });
            gateway.send(Message::text(cb.to_string())).await.unwrap();
        }
        let ack = within(gateway.next()).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
        assert_eq!(
            v["headers"]["messageId"], "stored",
            "no ack for the refused one: DingTalk delivers it again"
        );
        tx.send(true).unwrap();
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = gateway.next().await {} });
        assert_eq!(within(task).await.unwrap(), End::Stopped);
        reader.abort();
    }

    #[test]
    fn endpoint_host_drops_path_and_query() {
        assert_eq!(
            endpoint_host("wss://wss-open-connection.dingtalk.com:443/connect?x=1"),
            "wss://wss-open-connection.dingtalk.com"
        );
        assert_eq!(endpoint_host("ws://127.0.0.1:9/c"), "ws://127.0.0.1:9");
    }
}
