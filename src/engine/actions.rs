//! Business actions: what runs when a refund or cancellation flow has what it needs.
//! The default hands the request to a human with the collected details; `flows.action =
//! "http"` posts it to the operator's own system.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionRequest {
    /// `refund` or `cancel`.
    pub kind: String,
    pub order: String,
    pub channel: String,
    pub conversation: String,
    pub user: String,
    /// The customer's own words when the flow started.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ActionOutcome {
    /// Done; tell the customer this.
    Done { message: String },
    /// A human finishes it (the summary carries the details).
    Handoff,
    /// The action failed; the customer gets a human.
    Failed { error: String },
}

#[async_trait]
pub trait BusinessActions: Send + Sync {
    async fn run(&self, req: &ActionRequest) -> ActionOutcome;
}

/// The default: every request goes to a human agent with the details collected.
pub struct HandoffActions;

#[async_trait]
impl BusinessActions for HandoffActions {
    async fn run(&self, _req: &ActionRequest) -> ActionOutcome {
        ActionOutcome::Handoff
    }
}

/// POSTs the request as JSON to the operator's endpoint, which answers
/// `{"status": "done" | "handoff", "message": "..."}`.
pub struct HttpActions {
    pub client: reqwest::Client,
    pub url: String,
    pub token: Option<adapters::Secret>,
}

#[derive(Deserialize)]
struct HttpAnswer {
    status: String,
    #[serde(default)]
    message: Option<String>,
}

#[async_trait]
impl BusinessActions for HttpActions {
    async fn run(&self, req: &ActionRequest) -> ActionOutcome {
        let mut call = self
            .client
            .post(&self.url)
            .timeout(Duration::from_secs(10))
            .json(req);
        if let Some(t) = &self.token {
            call = call.bearer_auth(t.expose());
        }
        let resp = match call.send().await {
            Ok(r) => r,
            Err(e) => {
                return ActionOutcome::Failed {
                    error: e.without_url().to_string(),
                }
            }
        };
        if !resp.status().is_success() {
            return ActionOutcome::Failed {
                error: format!("action endpoint answered {}", resp.status()),
            };
        }
        match resp.json::<HttpAnswer>().await {
            Ok(a) if a.status == "done" => ActionOutcome::Done {
                message: a.message.unwrap_or_default(),
            },
            Ok(a) if a.status == "handoff" => ActionOutcome::Handoff,
            Ok(a) => ActionOutcome::Failed {
                error: format!("unknown status `{}`", a.status),
            },
            Err(e) => ActionOutcome::Failed {
                error: format!("bad answer: {e}"),
            },
        }
    }
}
