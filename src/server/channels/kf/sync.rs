//! Pulling a kf account: `kf/sync_msg` in a loop, never losing, never repeating.
//!
//! - One loop task per account (`open_kfid`): one sync at a time. A notification during a
//!   sync leaves one wake-up behind ([`Notify`] keeps a single permit), so exactly one more
//!   sync follows, however many arrived.
//! - Each page is stored before the cursor moves ([`fetched::accept_page`]: every item's
//!   dedupe key and inbox entry, the whole page flushed once), then `next_cursor` saved. A
//!   crash in between fetches the page again; its items are then duplicates by `msgid` and
//!   nothing is answered twice. Dedupe keys live 4 days, longer than the 3 days the API can
//!   return.
//! - A conversation whose queue is full stops the page there: the sync waits for its worker
//!   and offers the same page again (what was stored comes back as duplicates), never
//!   dropping or skipping past it.
//! - `has_more` = 1 → the next page, even when this one was empty.
//! - The callback's `Token` (good for 10 minutes) goes with the request; an invalid one
//!   (95007) is dropped and the call repeated without it.
//! - A cursor the API refuses (expired; the errcode is undocumented) → start again without
//!   one: the last 3 days come back and dedupe skips what was already stored. On such a
//!   cursor-less sync (also the very first), customer messages older than
//!   `backlog_reply_secs` are stored but not answered.
//! - A failed sync (the API, or the store) is tried again with a backoff (1 s doubling to 5
//!   minutes): WeCom does not notify again for messages it already announced.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use adapters::wecom::kf::{
    self, is_account_error, parse_sync_reply, route, sync_request_body, KfItem, Origin, SyncReply,
};
use adapters::{Inbound, KfNotice, Secret};
use tokio::sync::Notify;

use super::{quota_key, KfRuntime};
use crate::lifecycle::TaskHandle;
use crate::server::fetched::{self, NotTaken};
use crate::server::AppState;
use crate::store::Store;

/// A callback's `Token` is valid for 10 minutes; use it a little less.
const TOKEN_LIFE_MS: u64 = 9 * 60 * 1000 + 30_000;
/// Dedupe keys of pulled items: longer than the 3 days `sync_msg` can return.
pub const DEDUPE_TTL_MS: u64 = 4 * 24 * 3600 * 1000;
/// Most messages per page (the API's maximum).
const PAGE_LIMIT: u32 = 1000;
/// Longest wait before a failed sync is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A page that met a full conversation queue is offered again after this (doubling up to
/// `BUSY_WAIT_MAX`): the conversation's worker frees a slot per turn.
const BUSY_WAIT: Duration = Duration::from_millis(50);
const BUSY_WAIT_MAX: Duration = Duration::from_secs(2);

/// The store (kv) key of an account's cursor.
pub fn cursor_key(channel: &str, open_kfid: &str) -> String {
    format!("kf_cursor:{channel}:{open_kfid}")
}

fn accounts_key(channel: &str) -> String {
    format!("kf_accounts:{channel}")
}

/// One account's loop state.
struct Account {
    open_kfid: String,
    wake: Notify,
    /// The newest callback token and when it arrived.
    token: Mutex<Option<(Secret, u64)>>,
    spawned: std::sync::atomic::AtomicBool,
}

impl Account {
    fn token(&self, now_ms: u64) -> Option<Secret> {
        let t = self.token.lock().unwrap_or_else(|p| p.into_inner());
        t.as_ref()
            .filter(|(_, at)| now_ms.saturating_sub(*at) < TOKEN_LIFE_MS)
            .map(|(s, _)| s.clone())
    }

    fn drop_token(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The accounts of one channel.
pub struct Accounts {
    channel: String,
    /// `open_kfids` from config; `None`: every account that notifies.
    allowed: Option<BTreeSet<String>>,
    store: Arc<dyn Store>,
    map: Mutex<HashMap<String, Arc<Account>>>,
    /// Set by `start` (the intake group's handle); loops are spawned only after it, each
    /// holding a clone so that shutdown waits for the page in hand.
    task: OnceLock<TaskHandle>,
}

impl Accounts {
    pub fn new(channel: &str, allowed: Option<Vec<String>>, store: Arc<dyn Store>) -> Self {
        Accounts {
            channel: channel.to_string(),
            allowed: allowed.map(|v| v.into_iter().collect()),
            store,
            map: Mutex::new(HashMap::new()),
            task: OnceLock::new(),
        }
    }

    /// Accounts synced before (kept in the store), so a restart catches up on them too.
    fn known(&self) -> Vec<String> {
        self.store
            .kv_get(&accounts_key(&self.channel))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Rare (a new account). The notification that brought it is answered after the next
    /// flush (`platform::accept`), so a crash before the first sync still leaves the
    /// account to catch up on at start.
    fn remember(&self, ids: &[String]) {
        let Ok(json) = serde_json::to_vec(ids) else {
            return;
        };
        if let Err(e) = self.store.kv_put(&accounts_key(&self.channel), &json) {
            tracing::warn!(channel = %self.channel, error = %e, "cannot store the kf account list");
        }
    }

    /// The account's state, created on first sight (and remembered). `None`: not one of the
    /// configured `open_kfids`.
    fn account(&self, open_kfid: &str) -> Option<(Arc<Account>, bool)> {
        if self
            .allowed
            .as_ref()
            .is_some_and(|a| !a.contains(open_kfid))
        {
            tracing::debug!(channel = %self.channel, open_kfid, "kf account not configured; ignored");
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get(open_kfid) {
            return Some((a.clone(), false));
        }
        let a = Arc::new(Account {
            open_kfid: open_kfid.to_string(),
            wake: Notify::new(),
            token: Mutex::new(None),
            spawned: false.into(),
        });
        map.insert(open_kfid.to_string(), a.clone());
        let mut ids: Vec<String> = map.keys().cloned().collect();
        ids.sort();
        drop(map);
        self.remember(&ids);
        Some((a, true))
    }

    fn all(&self) -> Vec<Arc<Account>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Start a loop per configured and known account; each first catches up.
pub fn start(rt: &Arc<KfRuntime>, s: &AppState, task: TaskHandle) {
    let accounts = &rt.sync;
    let _ = accounts.task.set(task);
    let mut ids: BTreeSet<String> = accounts.known().into_iter().collect();
    if let Some(allowed) = &accounts.allowed {
        ids.extend(allowed.iter().cloned());
    }
    for id in ids {
        if let Some((a, _)) = accounts.account(&id) {
            a.wake.notify_one();
        }
    }
    for a in accounts.all() {
        spawn(rt, s, a);
    }
}

/// Record the notice's token and wake the account(s) it is about.
pub fn notice(rt: &Arc<KfRuntime>, s: &AppState, n: KfNotice) {
    let now = s.app.clock.now_ms();
    let targets: Vec<Arc<Account>> = match &n.open_kfid {
        Some(id) => rt.sync.account(id).map(|(a, _)| a).into_iter().collect(),
        None => {
            let mut all = rt.sync.all();
            if let Some(allowed) = &rt.sync.allowed {
                for id in allowed {
                    if let Some((a, _)) = rt.sync.account(id) {
                        if !all.iter().any(|x| Arc::ptr_eq(x, &a)) {
                            all.push(a);
                        }
                    }
                }
            }
            all
        }
    };
    for a in targets {
        if let (Some(token), Some(_)) = (&n.token, &n.open_kfid) {
            // A token belongs to the account it came with.
            *a.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), now));
        }
        a.wake.notify_one();
        spawn(rt, s, a);
    }
}

/// Spawn the account's loop once, after `start`.
fn spawn(rt: &Arc<KfRuntime>, s: &AppState, a: Arc<Account>) {
    let Some(task) = rt.sync.task.get().cloned() else {
        return;
    };
    if task.stopping() || a.spawned.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    tokio::spawn(run(rt.clone(), s.clone(), a, task));
}

async fn run(rt: Arc<KfRuntime>, s: AppState, a: Arc<Account>, task: TaskHandle) {
    let mut stop = task.clone();
    let poll = (rt.settings.poll_secs > 0).then(|| Duration::from_secs(rt.settings.poll_secs));
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = a.wake.notified() => {}
            _ = async {
                match poll {
                    Some(p) => tokio::time::sleep(p).await,
                    None => std::future::pending::<()>().await,
                }
            } => {}
            _ = stop.stopped() => return,
        }
        if task.stopping() {
            return;
        }
        match sync_account(&rt, &s, &a, &task).await {
            Ok(stored) => {
                failures = 0;
                s.app.metrics.inc(
                    "kefu_kf_syncs_total",
                    &[("channel", rt.channel()), ("outcome", "ok")],
                );
                tracing::debug!(channel = rt.channel(), open_kfid = %a.open_kfid, stored, "kf sync done");
            }
            Err(e) => {
                failures += 1;
                let wait = crate::delivery::backoff(failures).min(MAX_BACKOFF);
                s.app.metrics.inc(
                    "kefu_kf_syncs_total",
                    &[("channel", rt.channel()), ("outcome", "failed")],
                );
                tracing::warn!(channel = rt.channel(), open_kfid = %a.open_kfid, error = %e, retry_in = ?wait, "kf sync failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.stopped() => return,
                }
                a.wake.notify_one();
            }
        }
    }
}

/// Pull until `has_more` is 0; returns how many new items were stored. The cursor moves
/// past a page only once the page is on disk.
async fn sync_account(
    rt: &KfRuntime,
    s: &AppState,
    a: &Account,
    task: &TaskHandle,
) -> Result<usize, String> {
    let store = &s.app.store;
    let health = s.app.commit.health();
    let key = cursor_key(rt.channel(), &a.open_kfid);
    let mut cursor = store
        .kv_get(&key)
        .map_err(|e| format!("cursor unreadable: {e}"))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    // A sync that starts without a cursor re-reads up to 3 days: its old messages are kept,
    // not answered.
    let mut backlog = cursor.is_none();
    let mut cursor_reset = false;
    let mut stored = 0;
    loop {
        if task.stopping() {
            return Err("kefu is stopping".into());
        }
        let token = a.token(s.app.clock.now_ms());
        let body = sync_request_body(
            cursor.as_deref(),
            token.as_ref().map(Secret::expose),
            PAGE_LIMIT,
            &a.open_kfid,
        );
        let answer = rt
            .api()
            .call("POST", kf::SYNC_MSG_PATH, &body)
            .await
            .map_err(|e| format!("sync_msg: {e}"))?;
        let page = match parse_sync_reply(&answer.body, rt.channel(), &a.open_kfid)
            .map_err(|e| format!("sync_msg: {e}"))?
        {
            SyncReply::Page(p) => p,
            SyncReply::Refused { errcode, errmsg }
                if errcode == kf::ERR_INVALID_MSGTOKEN && token.is_some() =>
            {
                tracing::info!(channel = rt.channel(), errmsg = %errmsg, "kf callback token refused; pulling without it");
                a.drop_token();
                continue;
            }
            SyncReply::Refused { errcode, errmsg }
                if cursor.is_some() && !cursor_reset && !is_account_error(errcode) =>
            {
                tracing::warn!(channel = rt.channel(), open_kfid = %a.open_kfid, errcode, errmsg = %errmsg, "kf cursor refused; pulling the last 3 days again (stored messages are skipped)");
                cursor = None;
                cursor_reset = true;
                backlog = true;
                continue;
            }
            SyncReply::Refused { errcode, errmsg } => {
                return Err(format!("sync_msg: errcode {errcode}: {errmsg}"));
            }
        };
        let messages = page_messages(rt, s, page.items, backlog);
        stored += take_page(rt, s, messages, task).await?;
        if !page.next_cursor.is_empty() {
            // Only now: the page is on disk. The cursor itself is flushed soon, not waited
            // for: lost in a crash, it costs a refetch of pages that are all duplicates.
            crate::store::watch(health, store.kv_put(&key, page.next_cursor.as_bytes()))
                .map_err(|e| format!("cursor not saved: {e}"))?;
            s.app.commit.soon();
            cursor = Some(page.next_cursor);
        }
        if !page.has_more {
            return Ok(stored);
        }
    }
}

/// Offer a page to the inbox until it is taken whole: a full conversation queue is waited
/// for (the same page again; what was stored comes back as duplicates); a store failure or
/// a stop ends the sync with the cursor where it was. Returns how many were new.
async fn take_page(
    rt: &KfRuntime,
    s: &AppState,
    messages: Vec<Inbound>,
    task: &TaskHandle,
) -> Result<usize, String> {
    let count = |outcome: &str, n: usize| {
        for _ in 0..n {
            s.app.metrics.inc(
                "kefu_kf_pulled_total",
                &[("channel", rt.channel()), ("outcome", outcome)],
            );
        }
    };
    let mut accepted = 0;
    let mut wait = BUSY_WAIT;
    loop {
        let taken = fetched::accept_page(s, rt.channel(), messages.clone(), DEDUPE_TTL_MS, |m| {
            open_quota(rt, s, m)
        });
        match taken.await {
            Ok(f) => {
                accepted += f.accepted;
                count("accepted", f.accepted);
                // Duplicates of this sync's own earlier offers were accepted then.
                return Ok(accepted);
            }
            Err(NotTaken::Busy(e)) => {
                tracing::debug!(channel = rt.channel(), reason = %e, retry_in = ?wait, "kf page waits for a full conversation queue");
                let mut stop = task.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.stopped() => return Err("kefu is stopping".into()),
                }
                wait = (wait * 2).min(BUSY_WAIT_MAX);
            }
            Err(NotTaken::Unavailable(e)) => return Err(format!("page not stored: {e}")),
        }
    }
}

/// A customer message was stored: WeCom allows 5 more messages within 48 h from it, and
/// counts from when it received it (before kefu answers the earlier ones), so the
/// allowance opens here, once per message (not again for a refetched duplicate).
fn open_quota(rt: &KfRuntime, s: &AppState, m: &Inbound) {
    if Origin::of(&m.route) != Some(Origin::Customer) {
        return;
    }
    let at = if m.sent_at_ms > 0 {
        m.sent_at_ms
    } else {
        s.app.clock.now_ms()
    };
    if let Err(e) = s
        .app
        .store
        .quota_open(&quota_key(rt.channel(), &m.conversation), at)
    {
        // Not fatal: the platform enforces the limit anyway (95001 is reported).
        tracing::error!(error = %e, "kf send allowance not opened");
    }
}

/// A page's items as messages to store, in order. Customer messages older than
/// `backlog_reply_secs` on a cursor-less sync are marked stale (kept, not answered);
/// account events and unreadable items are logged and counted, not stored.
fn page_messages(rt: &KfRuntime, s: &AppState, items: Vec<KfItem>, backlog: bool) -> Vec<Inbound> {
    let now = s.app.clock.now_ms();
    let count = |outcome: &str| {
        s.app.metrics.inc(
            "kefu_kf_pulled_total",
            &[("channel", rt.channel()), ("outcome", outcome)],
        )
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            KfItem::Message(m) => {
                let mut m = *m;
                let customer = Origin::of(&m.route) == Some(Origin::Customer);
                if customer
                    && backlog
                    && now.saturating_sub(m.sent_at_ms) > rt.settings.backlog_reply_secs * 1000
                {
                    m.route.insert(route::STALE.to_string(), "1".into());
                }
                out.push(m);
            }
            KfItem::AccountEvent {
                open_kfid,
                event_type,
                fields,
                ..
            } => {
                count("account_event");
                tracing::info!(channel = rt.channel(), %open_kfid, %event_type, servicer = fields.get("servicer_userid").map(String::as_str).unwrap_or(""), status = fields.get("status").map(String::as_str).unwrap_or(""), "kf account event");
            }
            KfItem::Unreadable { msgid, why } => {
                count("unreadable");
                tracing::warn!(channel = rt.channel(), msgid = msgid.as_deref().unwrap_or(""), %why, "kf item skipped");
            }
        }
    }
    out
}
