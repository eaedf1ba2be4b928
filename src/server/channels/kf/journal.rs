//! Where the kf sender's findings go: into the conversation (through the engine, under its
//! lock) and, for replies that never arrived, to the agents' `handoff.notify` robots.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;

use crate::delivery::wecom_kf::{KfJournal, SessionUpdate};
use crate::delivery::{notify_calls, Outbox};
use crate::engine::Engine;

pub struct EngineJournal {
    pub engine: Arc<Engine>,
    pub outbox: Arc<OnceLock<Weak<Outbox>>>,
    pub notify: Vec<String>,
}

impl EngineJournal {
    fn alert(&self, text: &str) {
        let Some(outbox) = self.outbox.get().and_then(Weak::upgrade) else {
            return;
        };
        for t in &self.notify {
            let calls = notify_calls(text)
                .into_iter()
                .map(|c| (c, vec![]))
                .collect();
            if let Err(e) = outbox.enqueue(t, "notify", calls) {
                tracing::error!(error = %e, target = %t, "notify write failed");
            }
        }
    }
}

#[async_trait]
impl KfJournal for EngineJournal {
    async fn update(&self, channel: &str, conversation: &str, update: SessionUpdate) {
        let outcome = match update {
            SessionUpdate::Undelivered { why } => {
                self.alert(&format!(
                    "[kefu] {channel}/{conversation}: a reply did not reach the customer: {why}"
                ));
                self.engine
                    .platform_note(
                        channel,
                        conversation,
                        &format!("reply not delivered: {why}"),
                    )
                    .await
            }
            SessionUpdate::State {
                state,
                servicer,
                why,
            } if state.with_humans() => {
                let who = servicer.as_deref().unwrap_or("the account's queue");
                self.engine
                    .taken_over(
                        channel,
                        conversation,
                        servicer.as_deref(),
                        &format!("{why}: the session is with {who} (state {})", state.code()),
                    )
                    .await
                    .map(|_| ())
            }
            SessionUpdate::State { state, why, .. } => {
                self.engine
                    .platform_note(
                        channel,
                        conversation,
                        &format!("{why}: the session is in state {}", state.code()),
                    )
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(channel, error = %e, "cannot record a kf session update");
        }
    }
}
