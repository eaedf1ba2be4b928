//! Streaming a turn's answer while the model writes it: the text is cut into sentences
//! (clauses for Chinese), each piece checked on its own (grounding against the retrieved
//! sources, sensitive words, forbidden promises, personal data) before it is released to the
//! listener; a piece that fails stops the stream with a `Retract`. The engine knows nothing of
//! the transport: the web channel turns these events into server-sent events.
//!
//! A streamed turn is also cancellable: the listener going away (the widget closed the
//! connection) or a newer message in the same conversation stops the model call.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::handoff::Reason;
use super::quality::Verdict;
use super::{Draft, Engine, Route};
use crate::knowledge::Hit;
use crate::providers::{grounding, Answer, GenerateRequest, Generator, ProviderError};

/// What a listener of a streamed turn receives before the turn itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Checked text to show, appended to what was shown since the last `Retract`.
    Delta(String),
    /// Everything shown so far is withdrawn (`reason`: `ungrounded`, `compliance`, …); what
    /// follows replaces it.
    Retract { reason: String },
}

/// The engine's end of a streamed turn (or a stand-in for an unstreamed one).
#[derive(Default)]
pub struct Outlet {
    tx: Option<mpsc::UnboundedSender<StreamEvent>>,
    cancel: Option<watch::Receiver<bool>>,
    /// Released since the last retract.
    shown: String,
}

impl Outlet {
    /// An unstreamed turn: nothing is released, nothing cancels it.
    pub fn none() -> Self {
        Outlet::default()
    }

    pub fn new(tx: mpsc::UnboundedSender<StreamEvent>, cancel: watch::Receiver<bool>) -> Self {
        Outlet {
            tx: Some(tx),
            cancel: Some(cancel),
            shown: String::new(),
        }
    }

    pub fn is_streaming(&self) -> bool {
        self.tx.is_some()
    }

    /// What the listener has been shown since the last retract.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Release checked text. A listener that went away is noticed by `cancelled`.
    pub fn release(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            self.shown.push_str(text);
            let _ = tx.send(StreamEvent::Delta(text.to_string()));
        }
    }

    /// Withdraw what was shown (nothing to do when nothing was).
    pub fn retract(&mut self, reason: &str) {
        if self.shown.is_empty() {
            return;
        }
        self.shown.clear();
        if let Some(tx) = &self.tx {
            let _ = tx.send(StreamEvent::Retract {
                reason: reason.to_string(),
            });
        }
    }

    /// Resolves when the turn should stop generating: the listener is gone or a newer message
    /// of the conversation arrived. Never resolves for an unstreamed turn.
    pub async fn cancelled(&mut self) {
        let gone = async {
            match &self.tx {
                Some(tx) => tx.closed().await,
                None => std::future::pending().await,
            }
        };
        let superseded = async {
            match &mut self.cancel {
                // An error means the registry dropped the sender: the turn is over anyway.
                Some(rx) => {
                    if rx.wait_for(|c| *c).await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = gone => {}
            _ = superseded => {}
        }
    }
}

/// Streamed turns in progress, by conversation, so a newer message can stop the older one.
#[derive(Default)]
pub struct InFlight {
    turns: Mutex<Turns>,
}

#[derive(Default)]
struct Turns {
    last_id: u64,
    /// (channel, conversation) → the turn's id and its stop signal.
    by_conversation: HashMap<(String, String), (u64, watch::Sender<bool>)>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop the streamed turn of this conversation in progress, if any.
    pub fn cancel(&self, channel: &str, conversation: &str) {
        let key = (channel.to_string(), conversation.to_string());
        if let Some((_, tx)) = self.lock().by_conversation.remove(&key) {
            let _ = tx.send(true);
        }
    }

    /// Stop the conversation's streamed turn in progress and register this one.
    pub fn start(&self, channel: &str, conversation: &str) -> (u64, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let mut g = self.lock();
        g.last_id += 1;
        let id = g.last_id;
        let key = (channel.to_string(), conversation.to_string());
        if let Some((_, old)) = g.by_conversation.insert(key, (id, tx)) {
            let _ = old.send(true);
        }
        (id, rx)
    }

    /// The turn `id` is over (a newer one may have replaced it already).
    pub fn finish(&self, channel: &str, conversation: &str, id: u64) {
        let mut g = self.lock();
        let key = (channel.to_string(), conversation.to_string());
        if g.by_conversation.get(&key).is_some_and(|(i, _)| *i == id) {
            g.by_conversation.remove(&key);
        }
    }
}

/// Cuts streamed text into pieces that can be checked on their own: sentences (after `. ! ?`
/// and a space, or a line break), and for Chinese clauses too (after `。！？；，`).
pub struct Splitter {
    buf: String,
    zh: bool,
}

impl Splitter {
    pub fn new(zh: bool) -> Self {
        Splitter {
            buf: String::new(),
            zh,
        }
    }

    /// Add text; the pieces it completed.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let rest = self.buf.split_off(end);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
        out
    }

    /// What is left once the model has finished.
    pub fn finish(self) -> Option<String> {
        (!self.buf.is_empty()).then_some(self.buf)
    }

    /// The byte offset just after the first complete piece, its trailing spaces included.
    fn boundary(&self) -> Option<usize> {
        let b = &self.buf;
        let mut chars = b.char_indices().peekable();
        let mut depth = 0i32;
        while let Some((i, c)) = chars.next() {
            match c {
                // Not inside a citation marker or a link label.
                '[' | '【' | '［' => depth += 1,
                ']' | '】' | '］' => depth -= 1,
                _ => {}
            }
            let ends = match c {
                '\n' | '。' | '！' | '？' | '；' => true,
                '，' | '：' => self.zh,
                '.' | '!' | '?' | ';' => {
                    // Only before a space: `3.5`, `example.com`, `1.` of a list do not end one.
                    let next = chars.peek().map(|&(_, n)| n);
                    next.is_some_and(char::is_whitespace) && !list_number(&b[..i])
                }
                _ => false,
            };
            if !ends || depth > 0 {
                continue;
            }
            let mut end = i + c.len_utf8();
            // Keep the spaces after the piece with it (so the pieces join up as written).
            let mut saw_next = false;
            for (j, n) in b[end..].char_indices() {
                if n == ' ' || n == '\n' {
                    continue;
                }
                end += j;
                saw_next = true;
                break;
            }
            if !saw_next {
                // Whitespace may still be arriving; the piece is complete only once something
                // follows (or the stream ends).
                if b[i + c.len_utf8()..].is_empty() && matches!(c, '.' | '!' | '?' | ';') {
                    return None;
                }
                end = b.len();
            }
            return Some(end);
        }
        None
    }
}

/// `text` ends in a list number (`1`, `12`) at the start of a line: its `.` starts an item.
fn list_number(text: &str) -> bool {
    let line = text.rsplit('\n').next().unwrap_or(text).trim_start();
    !line.is_empty() && line.len() <= 3 && line.chars().all(|c| c.is_ascii_digit())
}

/// How generating an answer ended.
pub(super) enum Generated {
    Answer(Answer),
    /// The generator failed or its answer failed the grounding check (the reason).
    Failed(String),
    /// A streamed piece failed the quality check (sensitive words, forbidden promise).
    Blocked(String),
    /// The listener left or a newer message arrived; nothing more is generated.
    Cancelled(String),
}

impl Generated {
    /// The draft of a turn whose answer was blocked or cancelled mid-stream.
    pub(super) fn into_draft(self, out: &mut Outlet) -> Draft {
        match self {
            Generated::Blocked(reason) => {
                warn!(%reason, "a streamed piece failed the quality check");
                out.retract("compliance");
                let mut d = Draft::say(String::new(), Route::Knowledge, false);
                d.handoff = Some(Reason::Compliance);
                d.checked = true;
                d
            }
            Generated::Cancelled(shown) => {
                debug!("streamed answer cancelled");
                Draft::say(shown.trim().to_string(), Route::Cancelled, false)
            }
            Generated::Answer(a) => Draft::say(a.text, Route::Knowledge, true),
            Generated::Failed(_) => {
                let mut d = Draft::say(String::new(), Route::Handoff, false);
                d.handoff = Some(Reason::UpstreamFailure);
                d
            }
        }
    }
}

impl Engine {
    /// One answer from `gen`: whole (unstreamed turn), or streamed through `out`, each piece
    /// checked before release: grounding against every retrieved source (for a model's free
    /// text; the transfer sentence is exempt), then the outbound quality check. The model
    /// call is dropped as soon as a piece fails or the turn is cancelled.
    pub(super) async fn generate(
        &self,
        gen: &dyn Generator,
        req: &GenerateRequest<'_>,
        out: &mut Outlet,
    ) -> Generated {
        if !out.is_streaming() {
            return match gen.generate(req).await {
                Ok(a) => Generated::Answer(a),
                Err(e) => Generated::Failed(e.to_string()),
            };
        }
        let all: Vec<&Hit> = req.hits.iter().collect();
        let facts = gen.writes_free_text().then(|| grounding::Facts::of(&all));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut split = Splitter::new(req.zh);
        let generation = gen.generate_streaming(req, tx);
        tokio::pin!(generation);
        let mut result: Option<Result<Answer, ProviderError>> = None;
        let mut open = true;
        while open || result.is_none() {
            tokio::select! {
                _ = out.cancelled() => return Generated::Cancelled(out.shown().to_string()),
                t = rx.recv(), if open => match t {
                    Some(t) => {
                        for piece in split.push(&t) {
                            if let Err(stop) = self.release_piece(&piece, facts.as_ref(), req, out) {
                                return stop;
                            }
                        }
                    }
                    None => open = false,
                },
                r = &mut generation, if result.is_none() => result = Some(r),
            }
        }
        match result {
            Some(Ok(answer)) => {
                if let Some(rest) = split.finish() {
                    if let Err(stop) = self.release_piece(&rest, facts.as_ref(), req, out) {
                        return stop;
                    }
                }
                Generated::Answer(answer)
            }
            Some(Err(e)) => Generated::Failed(e.to_string()),
            None => Generated::Failed("no answer".into()),
        }
    }

    /// Check one streamed piece and release it (masked), or say why the stream stops.
    fn release_piece(
        &self,
        piece: &str,
        facts: Option<&grounding::Facts>,
        req: &GenerateRequest<'_>,
        out: &mut Outlet,
    ) -> Result<(), Generated> {
        let text = match facts {
            Some(facts) if !part_of(piece, req.transfer_message) => {
                grounding::check_piece(piece, facts).map_err(Generated::Failed)?
            }
            _ => grounding::strip_citations_in_piece(piece),
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        match self.quality.check_outbound(&text) {
            Verdict::Pass { text, .. } => {
                out.release(&text);
                Ok(())
            }
            Verdict::Block { reason } => Err(Generated::Blocked(reason)),
        }
    }
}

/// `piece` (letters and digits only, any case) is part of the transfer sentence: a model that
/// declines may say it in pieces, and the operator's sentence needs no sources.
fn part_of(piece: &str, transfer: &str) -> bool {
    let squash = |s: &str| -> String {
        grounding::strip_citations(s)
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let p = squash(piece);
    !p.is_empty() && squash(transfer).contains(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, zh: bool, step: usize) -> Vec<String> {
        let mut s = Splitter::new(zh);
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(step) {
            out.extend(s.push(&chunk.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_whatever_the_token_split() {
        let text = "Pro costs ¥1,299.50 a year [1]. See https://shop.example.com/pro. Refunds: 30 days [2]!";
        for step in [1, 2, 3, 5, 100] {
            let p = split(text, false, step);
            assert_eq!(
                p,
                vec![
                    "Pro costs ¥1,299.50 a year [1]. ",
                    "See https://shop.example.com/pro. ",
                    "Refunds: 30 days [2]!"
                ],
                "step {step}"
            );
            assert_eq!(p.concat(), text);
        }
    }

    #[test]
    fn chinese_clauses_and_list_items() {
        let p = split("退款在30天内【1】，运费由我们承担。请登录后申请！", true, 2);
        assert_eq!(
            p,
            vec!["退款在30天内【1】，", "运费由我们承担。", "请登录后申请！"]
        );
        let p = split("Steps:\n1. Open Settings.\n2. Click Reset.", false, 1);
        assert_eq!(
            p,
            vec!["Steps:\n", "1. Open Settings.\n", "2. Click Reset."]
        );
    }

    #[tokio::test]
    async fn a_newer_turn_cancels_the_older_one() {
        let f = InFlight::default();
        let (id1, mut rx1) = f.start("site", "c");
        let (tx, _keep) = mpsc::unbounded_channel();
        let mut first = Outlet::new(tx, rx1.clone());
        let (id2, rx2) = f.start("site", "c");
        assert!(*rx1.borrow_and_update());
        tokio::time::timeout(std::time::Duration::from_secs(1), first.cancelled())
            .await
            .expect("cancelled");
        f.finish("site", "c", id1);
        assert!(
            !*rx2.borrow(),
            "the old turn's finish leaves the new one alone"
        );
        f.cancel("site", "c");
        assert!(*rx2.borrow());
        f.finish("site", "c", id2);
    }

    #[tokio::test]
    async fn a_listener_that_leaves_cancels_and_retract_needs_shown_text() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_ctl, cancel) = watch::channel(false);
        let mut o = Outlet::new(tx, cancel);
        o.retract("x");
        o.release("Hello. ");
        o.retract("ungrounded");
        assert_eq!(o.shown(), "");
        assert_eq!(rx.recv().await, Some(StreamEvent::Delta("Hello. ".into())));
        assert_eq!(
            rx.recv().await,
            Some(StreamEvent::Retract {
                reason: "ungrounded".into()
            })
        );
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(1), o.cancelled())
            .await
            .expect("cancelled");
    }
}
