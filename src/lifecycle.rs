//! Stopping in order, mini-redis style (`src/server.rs`, `src/shutdown.rs` there): each group
//! of background tasks gets a stop signal (a `watch`) and a completion channel; every task
//! holds a clone of the completion `Sender` and drops it when it returns, so `wait` ends
//! exactly when the last task of the group is gone.
//!
//! `serve` stops the groups one after the other (see `server::AppState::shutdown`): intake first
//! (no new messages), then the conversation workers (each finishes the turn in hand; what
//! is still queued stays in the inbox for the next start), then the delivery workers (each
//! finishes the call in hand; the outbox keeps the rest), then one last flush.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// One group of tasks that stop together.
pub struct TaskGroup {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// Cloned into every task; `None` once `wait` started (no new tasks then).
    done_tx: Mutex<Option<mpsc::Sender<()>>>,
    done_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// What a task of a group holds: the stop signal to watch, and (by being alive) the group's
/// "not done yet".
#[derive(Clone)]
pub struct TaskHandle {
    pub stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl TaskHandle {
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the group is told to stop.
    pub async fn stopped(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Default for TaskGroup {
    fn default() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        TaskGroup {
            stop_tx,
            stop_rx,
            done_tx: Mutex::new(Some(done_tx)),
            done_rx: tokio::sync::Mutex::new(done_rx),
        }
    }
}

impl TaskGroup {
    /// A handle for a new task; `None` when the group is already stopping.
    pub fn handle(&self) -> Option<TaskHandle> {
        if *self.stop_rx.borrow() {
            return None;
        }
        let done = self
            .done_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(TaskHandle {
            stop: self.stop_rx.clone(),
            _done: done,
        })
    }

    /// The stop signal alone (for tasks that are not awaited, e.g. the HTTP listener).
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop_rx.borrow()
    }

    /// Tell the group to stop and wait until every task has returned, at most `limit`.
    /// True when all returned in time.
    pub async fn stop_and_wait(&self, limit: Duration) -> bool {
        self.stop();
        self.done_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut rx = self.done_rx.lock().await;
        // `recv` gives `None` once every `Sender` (one per live task) is dropped.
        tokio::time::timeout(limit, async { while rx.recv().await.is_some() {} })
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn waits_for_every_task_to_finish_its_work() {
        let group = TaskGroup::default();
        let finished = Arc::new(AtomicUsize::new(0));
        for i in 0..3u64 {
            let mut h = group.handle().unwrap();
            let finished = finished.clone();
            tokio::spawn(async move {
                h.stopped().await;
                // Work in hand when the stop came: finished, not abandoned.
                tokio::time::sleep(Duration::from_millis(20 * i)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert!(group.stop_and_wait(Duration::from_secs(5)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        assert!(group.handle().is_none(), "no new tasks after the stop");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_limit() {
        let group = TaskGroup::default();
        let h = group.handle().unwrap();
        tokio::spawn(async move {
            let _h = h;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(!group.stop_and_wait(Duration::from_secs(2)).await);
    }
}
