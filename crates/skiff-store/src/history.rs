//! Which revisions of watch history a replica keeps: the last `revisions` revisions, and no more
//! bytes than the larger of `min_bytes` and the live state itself.
//!
//! The history holds every change with its full value, so a count alone lets it cost any multiple
//! of the live state: 100,000 revisions of 1 MiB values are 100 GB. Bounding it by bytes relative
//! to the live state keeps a snapshot (objects plus history) within about twice the live state plus
//! `min_bytes`, while a small cluster still keeps `min_bytes` of history for watches that resume.
//!
//! This is decision logic only: the state machine feeds it what apply recorded and removes the
//! revisions it names, in the same atomic batch.

use std::collections::VecDeque;

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Revisions kept behind the newest applied one.
    pub revisions: u64,
    /// Bytes kept however small the live state is.
    pub min_bytes: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { revisions: 100_000, min_bytes: 64 << 20 }
    }
}

/// The revisions the history holds, with the stored size of each, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryWindow {
    sizes: VecDeque<(u64, u64)>,
    bytes: u64,
    /// Every revision at or below it has been dropped from the history (0: none).
    floor: u64,
}

/// What one apply call does to the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trim {
    /// History revisions to remove.
    pub removed: Vec<u64>,
    /// The new floor: every revision at or below it is gone.
    pub floor: u64,
}

impl HistoryWindow {
    /// A window over existing history (`sizes` in revision order) whose floor is `floor`.
    pub fn new(sizes: impl IntoIterator<Item = (u64, u64)>, floor: u64) -> Self {
        let sizes: VecDeque<(u64, u64)> = sizes.into_iter().collect();
        let bytes = sizes.iter().map(|(_, b)| b).sum();
        Self { sizes, bytes, floor }
    }

    /// Every revision at or below the floor has been dropped; every later one is in the history.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Bytes the history holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Revisions the history holds (revisions without changes hold nothing).
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// What to drop once `recorded` (this call's revisions, with their sizes) is added, when the
    /// newest applied revision is `applied` and the live state holds `live_bytes`. The revisions
    /// recorded by this call are never dropped: a watcher told to read them from the history
    /// (a batch too large to broadcast) finds them there.
    pub fn plan(&self, recorded: &[(u64, u64)], applied: u64, live_bytes: u64, limits: HistoryLimits) -> Trim {
        let budget = limits.min_bytes.max(live_bytes);
        let by_revision = applied.saturating_sub(limits.revisions);
        let mut bytes = self.bytes + recorded.iter().map(|(_, b)| b).sum::<u64>();
        let mut floor = self.floor.max(by_revision);
        let mut removed = Vec::new();
        for &(revision, size) in &self.sizes {
            if revision > by_revision && bytes <= budget {
                break;
            }
            removed.push(revision);
            bytes -= size;
            floor = floor.max(revision);
        }
        // Recorded revisions are all newer than any held one (apply goes in log order); a recorded
        // revision at or below the revision floor is dropped at once, as before bytes counted.
        for &(revision, _) in recorded {
            if revision <= by_revision {
                removed.push(revision);
            }
        }
        Trim { removed, floor }
    }

    /// Applies `trim` and adds `recorded`, once the batch that carries both is written.
    pub fn commit(&mut self, recorded: &[(u64, u64)], trim: &Trim) {
        for &(revision, size) in recorded {
            self.sizes.push_back((revision, size));
            self.bytes += size;
        }
        let gone = |r: u64| trim.removed.binary_search(&r).is_ok() || r <= trim.floor;
        while let Some(&(revision, size)) = self.sizes.front() {
            if !gone(revision) {
                break;
            }
            self.sizes.pop_front();
            self.bytes -= size;
        }
        self.floor = self.floor.max(trim.floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits { revisions: 100, min_bytes: 1000 };

    fn apply(window: &mut HistoryWindow, recorded: &[(u64, u64)], applied: u64, live: u64) -> Trim {
        let trim = window.plan(recorded, applied, live, LIMITS);
        window.commit(recorded, &trim);
        trim
    }

    #[test]
    fn keeps_everything_within_both_limits() {
        let mut w = HistoryWindow::default();
        for r in 1..=10 {
            let trim = apply(&mut w, &[(r, 50)], r, 0);
            assert!(trim.removed.is_empty());
            assert_eq!(trim.floor, 0);
        }
        assert_eq!((w.len(), w.bytes(), w.floor()), (10, 500, 0));
    }

    #[test]
    fn drops_the_oldest_revisions_past_the_byte_budget() {
        let mut w = HistoryWindow::default();
        for r in 1..=10 {
            apply(&mut w, &[(r, 300)], r, 0);
        }
        // 1000 bytes at most while the live state is smaller: three revisions of 300.
        assert_eq!((w.len(), w.bytes(), w.floor()), (3, 900, 7));
    }

    #[test]
    fn a_live_state_larger_than_the_minimum_is_the_budget() {
        let mut w = HistoryWindow::default();
        for r in 1..=10 {
            apply(&mut w, &[(r, 300)], r, 2000);
        }
        assert_eq!((w.len(), w.bytes(), w.floor()), (6, 1800, 4));
    }

    #[test]
    fn drops_revisions_older_than_the_revision_limit() {
        let mut w = HistoryWindow::default();
        apply(&mut w, &[(5, 1), (50, 1)], 50, 0);
        let trim = apply(&mut w, &[(120, 1)], 120, 0);
        assert_eq!(trim.removed, [5]);
        assert_eq!(trim.floor, 20);
        assert_eq!(w.floor(), 20);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn never_drops_what_this_call_recorded() {
        let mut w = HistoryWindow::default();
        apply(&mut w, &[(1, 600)], 1, 0);
        let trim = apply(&mut w, &[(2, 5000)], 2, 0);
        assert_eq!(trim.removed, [1], "the older one goes, the new one stays although over budget");
        assert_eq!((w.len(), w.bytes(), w.floor()), (1, 5000, 1));
    }

    #[test]
    fn the_floor_never_goes_back() {
        let mut w = HistoryWindow::new([(30, 1)], 29);
        let trim = apply(&mut w, &[(31, 1)], 31, 0);
        assert_eq!(trim.floor, 29);
        assert_eq!(w.floor(), 29);
    }
}
