//! Watches, served from the member's own replica.
//!
//! A watch first catches up from the persisted history, then follows the live changes that apply
//! broadcasts. It subscribes before it reads the history, so no change falls in between, and it
//! delivers each revision once, in order. Idle watches get progress events with the revision up to
//! which everything has been delivered, so a client can resume from it without re-listing.
//!
//! Apply never waits for a watcher: a watcher that falls more than the broadcast buffer behind is
//! dropped with [`WatchError::FellBehind`], which names the revision to resume from.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::state_machine::{Applied, Shared};
use crate::types::Change;

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Change(Change),
    /// Every change up to this revision has been delivered.
    Progress(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("revision {start} is older than the retained watch history (oldest usable start revision is {floor}): list again and watch from the list's revision")]
    TooOld { start: u64, floor: u64 },
    #[error("the watch fell too far behind and was dropped: watch again from revision {last}")]
    FellBehind { last: u64 },
    #[error("the member is shutting down: watch again on another member from revision {last}")]
    Closed { last: u64 },
    #[error("watch failed: {0}")]
    Internal(String),
}

/// The receiving end of a watch.
pub type WatchReceiver = mpsc::Receiver<Result<WatchItem, WatchError>>;

/// Starts a watch of the keys under `prefix`, delivering changes strictly after `start`.
pub fn start(
    shared: Arc<Shared>,
    prefix: String,
    start: u64,
    progress_every: Duration,
) -> Result<WatchReceiver, WatchError> {
    let live = shared.subscribe();
    let floor = shared.history_floor();
    if start < floor {
        return Err(WatchError::TooOld { start, floor });
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut watcher = Watcher { shared, prefix, seen: start, tx, sent_since_tick: false };
        if let Err(e) = watcher.run(live, progress_every).await {
            // The receiver may be gone already; then nobody needs the error.
            let _ = watcher.tx.send(Err(e)).await;
        }
    });
    Ok(rx)
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: String,
    /// Every change up to this revision has been delivered (or did not match the prefix).
    seen: u64,
    tx: mpsc::Sender<Result<WatchItem, WatchError>>,
    sent_since_tick: bool,
}

/// The receiver hung up: the watch ends quietly.
struct Hangup;

impl Watcher {
    async fn run(
        &mut self,
        mut live: broadcast::Receiver<Arc<Applied>>,
        progress_every: Duration,
    ) -> Result<(), WatchError> {
        if self.catch_up().await.is_err() {
            return Ok(());
        }
        let mut ticker = tokio::time::interval(progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut closing = self.shared.closing();
        if *closing.borrow_and_update() {
            return Err(WatchError::Closed { last: self.seen });
        }
        loop {
            tokio::select! {
                changed = closing.changed() => {
                    if changed.is_err() || *closing.borrow() {
                        return Err(WatchError::Closed { last: self.seen });
                    }
                }
                msg = live.recv() => match msg {
                    Ok(applied) => {
                        let sent = if applied.reset { self.catch_up().await } else { self.deliver(&applied).await };
                        if sent.is_err() {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(WatchError::FellBehind { last: self.seen }),
                    Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed { last: self.seen }),
                },
                _ = ticker.tick() => {
                    if !self.sent_since_tick && self.tx.send(Ok(WatchItem::Progress(self.seen))).await.is_err() {
                        return Ok(());
                    }
                    self.sent_since_tick = false;
                }
                _ = self.tx.closed() => return Ok(()),
            }
        }
    }

    /// Delivers the retained history after `seen`, up to the revision applied before the read.
    /// Later changes come from the live broadcast (subscribed before this ran).
    async fn catch_up(&mut self) -> Result<(), Hangup> {
        let upto = self.shared.applied_revision();
        let shared = self.shared.clone();
        let after = self.seen;
        let read = tokio::task::spawn_blocking(move || {
            let events = shared.history_after(after);
            (events, shared.history_floor())
        })
        .await;
        let events = match read {
            Ok((Ok(events), floor)) if after >= floor => events,
            Ok((Ok(_), floor)) => return self.fail(WatchError::TooOld { start: after, floor }).await,
            Ok((Err(e), _)) => return self.fail(WatchError::Internal(e.to_string())).await,
            Err(e) => return self.fail(WatchError::Internal(e.to_string())).await,
        };
        for event in events.into_iter().filter(|e| e.revision <= upto) {
            self.send_event(event).await?;
        }
        self.seen = self.seen.max(upto);
        Ok(())
    }

    async fn deliver(&mut self, applied: &Applied) -> Result<(), Hangup> {
        for event in &applied.changes {
            self.send_event(event.clone()).await?;
        }
        self.seen = self.seen.max(applied.revision);
        Ok(())
    }

    async fn send_event(&mut self, event: Change) -> Result<(), Hangup> {
        if event.revision <= self.seen || !event.kv.key.starts_with(&self.prefix) {
            return Ok(());
        }
        self.sent_since_tick = true;
        self.tx.send(Ok(WatchItem::Change(event))).await.map_err(|_| Hangup)
    }

    async fn fail(&mut self, e: WatchError) -> Result<(), Hangup> {
        let _ = self.tx.send(Err(e)).await;
        Err(Hangup)
    }
}
