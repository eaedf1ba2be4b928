//! Group commit: "is it on disk?" answered for many writers with one flush.
//!
//! A platform's 200 promises the message is durable, so every acknowledgement waits for a
//! flush. Flushing per request would cap throughput at one fsync per message; instead one
//! thread flushes for everyone: it takes every waiter queued at that moment, flushes once
//! and answers them all. A waiter queued after a flush started waits for the next one (its
//! write may have missed the flush that was already running). Alone, a request waits for
//! exactly one flush.
//!
//! Under load a flush also waits a moment for the acknowledgements already on their way
//! (PostgreSQL's `commit_delay` / `commit_siblings`): a callback takes a [`Ticket`] when it
//! starts decoding, and while tickets are out the flush gathers waiters for up to
//! `GATHER_MAX`. Without that, each flush on a busy machine covered little more than one
//! acknowledgement, and flushes (a disk write each) became the cost of every message.
//!
//! [`StoreHealth`] remembers whether writes work: every failed write or flush marks the
//! store failing, and only a successful probe (a write and a flush, see
//! `server::ops`) marks it healthy again, so /healthz tells the truth and a store that stays
//! broken stops the process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Store, StoreError, StoreResult};

/// Someone waiting for a flush (or `None`: flush soon, nobody waits).
type Waiter = Option<oneshot::Sender<Result<(), String>>>;

/// The longest a flush waits for acknowledgements on their way.
const GATHER_MAX: Duration = Duration::from_micros(500);
/// ... looking again this often (a ticket may be dropped without a wait).
const GATHER_SLICE: Duration = Duration::from_micros(100);

pub struct GroupCommit {
    queue: Mutex<mpsc::Sender<Waiter>>,
    health: Arc<StoreHealth>,
    stats: Arc<CommitStats>,
    /// Tickets out: requests that will wait for a flush soon.
    on_the_way: Arc<AtomicUsize>,
}

/// A request that will wait for a flush soon: a platform callback being decoded. Handed to
/// [`GroupCommit::durable_with`]; dropped unused, it just stops being expected.
pub struct Ticket {
    on_the_way: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.on_the_way.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Flushes done and waits answered since start (`kefu_store_flushes_total`,
/// `kefu_store_durable_waits_total`): their ratio is how many acknowledgements a flush covers.
#[derive(Default)]
pub struct CommitStats {
    pub flushes: AtomicU64,
    pub waits: AtomicU64,
}

impl GroupCommit {
    /// Start the flushing thread for `store`. It ends when the `GroupCommit` is dropped.
    pub fn start(store: Arc<dyn Store>, health: Arc<StoreHealth>) -> Arc<Self> {
        // The thread must not keep the database open once everything else let go of it
        // (a restart in the same process opens it again): it holds the store weakly.
        let store = Arc::downgrade(&store);
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread_health = health.clone();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let on_the_way = Arc::new(AtomicUsize::new(0));
        let expected = on_the_way.clone();
        let spawned = std::thread::Builder::new()
            .name("kefu-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    let deadline = Instant::now() + GATHER_MAX;
                    loop {
                        waiting.extend(rx.try_iter());
                        let now = Instant::now();
                        if expected.load(Ordering::Acquire) == 0 || now >= deadline {
                            break;
                        }
                        match rx.recv_timeout((deadline - now).min(GATHER_SLICE)) {
                            Ok(w) => waiting.push(w),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    let result = match store.upgrade() {
                        Some(store) => store.flush().map_err(|e| e.to_string()),
                        None => Err("the store is closed".to_string()),
                    };
                    thread_stats.flushes.fetch_add(1, Ordering::Relaxed);
                    thread_stats
                        .waits
                        .fetch_add(waiting.iter().flatten().count() as u64, Ordering::Relaxed);
                    if let Err(e) = &result {
                        thread_health.failed(e);
                    }
                    for w in waiting.into_iter().flatten() {
                        let _ = w.send(result.clone());
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every `durable` answers an error: loud, never a false ok.
            tracing::error!(error = %e, "cannot start the commit thread");
        }
        Arc::new(GroupCommit {
            queue: Mutex::new(tx),
            health,
            stats,
            on_the_way,
        })
    }

    /// Announce a wait for a flush that is coming soon (see [`Ticket`]).
    pub fn ticket(&self) -> Ticket {
        self.on_the_way.fetch_add(1, Ordering::AcqRel);
        Ticket {
            on_the_way: self.on_the_way.clone(),
        }
    }

    /// `durable` for the holder of `ticket`: it has arrived, the flush need not wait for it.
    pub async fn durable_with(&self, ticket: Ticket) -> StoreResult<()> {
        drop(ticket);
        self.durable().await
    }

    /// Wait until every write made before this call is on disk.
    pub async fn durable(&self) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Some(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(format!("flush failed: {e}"))),
            Err(_) => Err(StoreError::Backend("the commit thread stopped".into())),
        }
    }

    /// Ask for a flush soon without waiting for it (the outbox after a delivery: the delete
    /// should reach the disk quickly, nobody needs to wait for it).
    pub fn soon(&self) {
        let _ = self.enqueue(None);
    }

    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    fn enqueue(&self, w: Waiter) -> StoreResult<()> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(w)
            .map_err(|_| StoreError::Backend("the commit thread stopped".into()))
    }
}

/// Whether the store can write, as last seen.
#[derive(Default)]
pub struct StoreHealth {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    /// When writes started failing, and the latest reason.
    failing: Option<(Instant, String)>,
}

impl StoreHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write or flush failed.
    pub fn failed(&self, reason: &str) {
        let mut s = self.lock();
        match &mut s.failing {
            Some((_, why)) => *why = reason.to_string(),
            None => {
                tracing::error!(error = reason, "store writes are failing");
                s.failing = Some((Instant::now(), reason.to_string()));
            }
        }
    }

    /// A probe wrote and flushed: the store works (again).
    pub fn recovered(&self) {
        if let Some((since, _)) = self.lock().failing.take() {
            tracing::warn!(
                failed_for = ?since.elapsed(),
                "store writes work again"
            );
        }
    }

    /// `Some((for how long, why))` while writes fail.
    pub fn failing(&self) -> Option<(Duration, String)> {
        self.lock()
            .failing
            .as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }
}

/// Record `r`'s failure in `health` and pass it on.
pub fn watch<T>(health: &StoreHealth, r: StoreResult<T>) -> StoreResult<T> {
    if let Err(e) = &r {
        health.failed(&e.to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::testing::FaultyStore;

    /// A store whose flush takes 20 ms, as a busy disk's would.
    fn slow() -> Arc<FaultyStore> {
        let s = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        s.flush_delay_ms.store(20, Ordering::SeqCst);
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_flush_answers_everyone_waiting() {
        let store = slow();
        let commit = GroupCommit::start(store.clone(), StoreHealth::new());
        let waits: Vec<_> = (0..64)
            .map(|_| {
                let c = commit.clone();
                tokio::spawn(async move { c.durable().await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let flushes = store.flushes.load(Ordering::SeqCst);
        assert!(
            (1..=8).contains(&flushes),
            "64 waiters took {flushes} flushes of 20 ms"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_fails_its_waiters_and_marks_the_store() {
        let store = slow();
        let health = StoreHealth::new();
        let commit = GroupCommit::start(store.clone(), health.clone());
        store.fail_flush.store(true, Ordering::SeqCst);
        let err = commit.durable().await.unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        let (_, why) = health.failing().expect("failing");
        assert!(why.contains("No space left"), "{why}");
        store.fail_flush.store(false, Ordering::SeqCst);
        commit.durable().await.unwrap();
        assert!(
            health.failing().is_some(),
            "only a probe declares the store healthy again"
        );
        health.recovered();
        assert!(health.failing().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_waits_briefly_for_acknowledgements_on_their_way() {
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let commit = GroupCommit::start(store.clone(), StoreHealth::new());
        // Eight callbacks decoding; the first to finish asks for a flush at once, the others
        // arrive within the gathering time.
        let tickets: Vec<Ticket> = (0..8).map(|_| commit.ticket()).collect();
        let waits: Vec<_> = tickets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let c = commit.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(20 * i as u64)).await;
                    c.durable_with(t).await
                })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let flushes = store.flushes.load(Ordering::SeqCst);
        assert!(flushes <= 3, "8 acknowledgements took {flushes} flushes");
        // A ticket dropped unused does not hold flushes up.
        let lost = commit.ticket();
        drop(lost);
        let started = Instant::now();
        commit.durable().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(400));
    }
}
