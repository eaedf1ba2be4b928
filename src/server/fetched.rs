//! Messages a channel fetches itself (a pull API such as WeCom 微信客服's `sync_msg`, which
//! a callback only announces): taken in a page at a time, with one flush for the page.
//!
//! The platform's cursor is the acknowledgement here. The caller moves it past a page only
//! after [`accept_fetched`] returned `Ok` for that page: then every message of it is on
//! disk (dedupe key and inbox entry), exactly as a callback's is before its 200. On `Err`
//! the cursor stays; the same page is fetched again later, and what was stored already is
//! a duplicate, skipped. A crash between the flush and the cursor write costs the same
//! refetch, nothing more.

use adapters::Inbound;

use super::error::STORE_UNAVAILABLE;
use super::platform::{refusal, spawn_worker, DEDUPE_TTL_MS};
use super::queues::Queued;
use super::{ApiError, AppState};

/// How a fetched page went in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Stored and queued for a turn.
    pub accepted: usize,
    /// Already stored (an earlier fetch of the same page): skipped.
    pub duplicates: usize,
}

/// Store `messages` of channel `name` in order (dedupe key `name:id` + inbox entry each),
/// flush once, then queue them. `Ok` only when every message is durable: move the cursor
/// then. `Err` is a 503-like refusal (the store failed, kefu is stopping, or a
/// conversation's queue is full): keep the cursor and fetch the page again later; the
/// messages before the refused one are stored and come back as duplicates.
pub async fn accept_fetched(
    s: &AppState,
    name: &str,
    messages: Vec<Inbound>,
) -> Result<Fetched, ApiError> {
    let count = |outcome: &str, n: usize| {
        for _ in 0..n {
            s.app.metrics.inc(
                "kefu_callbacks_total",
                &[("channel", name), ("outcome", outcome)],
            );
        }
    };
    if s.lifecycle.conversations.is_stopping() {
        return Err(ApiError::Unavailable("kefu is stopping".into()));
    }
    let health = s.app.commit.health();
    let mut ready = Vec::with_capacity(messages.len());
    let mut done = Fetched::default();
    let mut refused = None;
    for m in messages {
        let conv = (m.channel.clone(), m.conversation.clone());
        // Room first, as for a callback: a full queue stops the page before a write.
        let slot = match s
            .platforms
            .queues
            .reserve(&conv, true, |parts| spawn_worker(s, parts))
        {
            Ok(slot) => slot,
            Err(r) => {
                let (outcome, e) = refusal(s, r);
                count(outcome, 1);
                refused = Some(e);
                break;
            }
        };
        let key = format!("{name}:{}", m.id);
        let now = s.app.clock.now_ms();
        match crate::store::watch(
            health,
            s.app.store.inbox_accept(&key, &m, now, DEDUPE_TTL_MS),
        ) {
            Ok(Some(inbox_id)) => ready.push((
                slot,
                Queued {
                    inbox_id,
                    message: m,
                    replayed: false,
                },
            )),
            Ok(None) => done.duplicates += 1,
            Err(e) => {
                count("unavailable", 1);
                refused = Some(e.into());
                break;
            }
        }
    }
    // One flush for the page, waited for even when nothing new was written: a duplicate's
    // first copy may not be on disk yet.
    let durable = s.app.commit.durable().await;
    done.accepted = ready.len();
    // Queued even if the flush failed: they are written, and the refetch finds them stored.
    for (slot, q) in ready {
        slot.send(q);
    }
    count("accepted", done.accepted);
    count("duplicate", done.duplicates);
    if let Err(e) = durable {
        tracing::error!(error = %e, channel = name, "flush failed; the page will be fetched again");
        return Err(ApiError::Unavailable(STORE_UNAVAILABLE.into()));
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
