//! Watches, served from the member's own replica.
//!
//! A watch first catches up from the persisted history, then follows the live changes that apply
//! broadcasts. It subscribes before it reads the history, so no change falls in between, and it
//! delivers each revision once, in order. Idle watches get progress events with the revision up to
//! which everything has been delivered, so a client can resume from it without re-listing.
//!
//! Apply never waits for a watcher: a watcher that falls more than the broadcast buffer behind is
//! dropped with [`WatchError::FellBehind`], which names the revision to resume from.
//!
//! What a watch holds in memory is bounded in bytes: it reads the history a page at a time, keeps
//! only the changes under its prefix, and holds at most [`WATCH_BUFFER_BYTES`] of changes its
//! client has not taken yet (a client that stops reading stops its watch, not the member).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};

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

/// The most bytes (keys and values) of changes one watch holds that its client has not taken;
/// a single larger change still goes through, alone.
pub const WATCH_BUFFER_BYTES: usize = 4 << 20;

/// How much matching history a catching-up watch reads at once.
const PAGE_BYTES: usize = 1 << 20;

/// An item with the share of the watch's byte budget it holds until the client takes it.
type Held = (Result<WatchItem, WatchError>, Option<OwnedSemaphorePermit>);

/// The receiving end of a watch.
#[derive(Debug)]
pub struct WatchReceiver {
    rx: mpsc::Receiver<Held>,
}

impl WatchReceiver {
    /// The next item; `None` once the watch has ended.
    pub async fn recv(&mut self) -> Option<Result<WatchItem, WatchError>> {
        self.rx.recv().await.map(|(item, _)| item)
    }

    /// Items sent and not yet taken.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }
}

impl futures::Stream for WatchReceiver {
    type Item = Result<WatchItem, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|held| held.map(|(item, _)| item))
    }
}

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
    let budget = Arc::new(Semaphore::new(WATCH_BUFFER_BYTES));
    tokio::spawn(async move {
        let mut watcher = Watcher { shared, prefix, seen: start, tx, budget, sent_since_tick: false };
        if let Err(e) = watcher.run(live, progress_every).await {
            // The receiver may be gone already; then nobody needs the error.
            let _ = watcher.tx.send((Err(e), None)).await;
        }
    });
    Ok(WatchReceiver { rx })
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: String,
    /// Every change up to this revision has been delivered (or did not match the prefix).
    seen: u64,
    tx: mpsc::Sender<Held>,
    /// Bytes of changes sent and not yet taken by the client, at most [`WATCH_BUFFER_BYTES`].
    budget: Arc<Semaphore>,
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
                    if !self.sent_since_tick && self.tx.send((Ok(WatchItem::Progress(self.seen)), None)).await.is_err() {
                        return Ok(());
                    }
                    self.sent_since_tick = false;
                }
                _ = self.tx.closed() => return Ok(()),
            }
        }
    }

    /// Delivers the retained history after `seen`, up to the revision applied before the read, a
    /// page at a time. Later changes come from the live broadcast (subscribed before this ran).
    async fn catch_up(&mut self) -> Result<(), Hangup> {
        let upto = self.shared.applied_revision();
        while self.seen < upto {
            let shared = self.shared.clone();
            let (after, prefix) = (self.seen, self.prefix.clone());
            let read = tokio::task::spawn_blocking(move || {
                let page = shared.history_page(after, upto, &prefix, PAGE_BYTES);
                // Read after the page: a floor above `after` means part of it may have been dropped.
                (page, shared.history_floor())
            })
            .await;
            let (events, last) = match read {
                Ok((Ok(page), floor)) if after >= floor => page,
                Ok((Ok(_), floor)) => return self.fail(WatchError::TooOld { start: after, floor }).await,
                Ok((Err(e), _)) => return self.fail(WatchError::Internal(e.to_string())).await,
                Err(e) => return self.fail(WatchError::Internal(e.to_string())).await,
            };
            for event in events {
                self.send_event(event).await?;
            }
            self.seen = self.seen.max(last);
        }
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
        let cost = (event.kv.key.len() + event.kv.value.len()).clamp(1, WATCH_BUFFER_BYTES) as u32;
        let held = tokio::select! {
            held = self.budget.clone().acquire_many_owned(cost) => held.map_err(|_| Hangup)?,
            _ = self.tx.closed() => return Err(Hangup),
        };
        self.tx.send((Ok(WatchItem::Change(event)), Some(held))).await.map_err(|_| Hangup)
    }

    async fn fail(&mut self, e: WatchError) -> Result<(), Hangup> {
        let _ = self.tx.send((Err(e), None)).await;
        Err(Hangup)
    }
}
