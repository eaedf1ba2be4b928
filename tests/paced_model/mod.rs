//! A fake OpenAI-compatible chat model on 127.0.0.1:0 that streams its answer at a set pace
//! (one SSE delta per scripted piece, `pace` apart), and records what it was asked and
//! whether each answer was sent to the end or dropped by the client mid-way. Shared by the
//! streaming tests and the `llm_turn` bench.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// One scripted answer: its pieces, sent `pace` apart (the first after `pace` too).
#[derive(Clone, Debug)]
pub struct Script {
    pub pieces: Vec<String>,
    pub pace: Duration,
}

impl Script {
    pub fn new(pieces: &[&str], pace_ms: u64) -> Self {
        Script {
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
            pace: Duration::from_millis(pace_ms),
        }
    }
}

#[derive(Default)]
pub struct PacedModel {
    script: Mutex<VecDeque<Script>>,
    default: Mutex<Option<Script>>,
    requests: Mutex<Vec<Value>>,
    /// Answers sent to the end (`[DONE]` written).
    pub finished: AtomicUsize,
    /// Answers whose client went away before the end.
    pub dropped: AtomicUsize,
    /// Pieces written, over all answers.
    pub pieces_sent: AtomicUsize,
}

impl PacedModel {
    pub fn cue(&self, s: Script) {
        self.script.lock().unwrap().push_back(s);
    }
    pub fn set_default(&self, s: Script) {
        *self.default.lock().unwrap() = Some(s);
    }
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// Counts the answer as dropped unless it was sent to the end.
struct Sending {
    model: Arc<PacedModel>,
    done: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.done {
            self.model.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.model.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn chat(State(m): State<Arc<PacedModel>>, Json(body): Json<Value>) -> Response {
    m.requests.lock().unwrap().push(body.clone());
    let script = m
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| m.default.lock().unwrap().clone())
        .unwrap_or_else(|| Script::new(&["nothing scripted"], 0));
    if body["stream"] != json!(true) {
        let text: String = script.pieces.concat();
        return Json(
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}),
        )
        .into_response();
    }
    let sending = Sending {
        model: m.clone(),
        done: false,
    };
    let state = (script.pieces.into_iter(), script.pace, sending, false);
    let events =
        futures::stream::unfold(state, |(mut pieces, pace, mut sending, ended)| async move {
            if ended {
                return None;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let chunk = match pieces.next() {
                Some(p) => {
                    sending.model.pieces_sent.fetch_add(1, Ordering::SeqCst);
                    format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": p}}]})
                    )
                }
                None => {
                    sending.done = true;
                    return Some((
                        Ok::<_, std::io::Error>("data: [DONE]\n\n".to_string()),
                        (pieces, pace, sending, true),
                    ));
                }
            };
            Some((Ok(chunk), (pieces, pace, sending, false)))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

/// Start the fake; its base URL (`http://127.0.0.1:PORT/v1`).
pub async fn start() -> (Arc<PacedModel>, String) {
    let model = Arc::new(PacedModel::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(model.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (model, format!("http://{addr}/v1"))
}
