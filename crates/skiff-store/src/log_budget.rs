//! When to snapshot and how much Raft log to keep, by bytes.
//!
//! openraft snapshots after a count of entries and keeps a count of entries behind a snapshot:
//! 10,000 and 1,000 entries are kilobytes of small writes but gigabytes of 1 MiB values, and sled
//! holds a log's pages in memory roughly as large as the log itself (measured: 400 appends of
//! 1 MiB, 480 MiB of RSS; with purges behind them, flat). So a member also snapshots once the log
//! since the last snapshot outgrows the larger of `min_bytes` and that snapshot (the cost of a
//! snapshot is then paid back by the log it lets go, as an append-only file is rewritten once it
//! doubles), and purges the log behind a snapshot down to `keep_bytes` of newest entries.
//!
//! Decision logic only: [`crate::store`] runs it against the log's sizes and Raft's metrics.

use std::collections::BTreeMap;

/// How much Raft log a member keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    /// Log since the last snapshot that triggers a new one, however small the snapshot.
    pub min_bytes: u64,
    /// Log kept behind a snapshot, so that followers a little behind catch up without one.
    pub keep_bytes: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self { min_bytes: 64 << 20, keep_bytes: 16 << 20 }
    }
}

/// What the member should do about its log now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    Nothing,
    Snapshot,
    /// Purge the log up to and including this index (all of it is in the snapshot).
    Purge(u64),
}

/// Decides from the log's entry sizes (`index -> bytes`), the last snapshot's index and size, and
/// the index the log is purged up to.
pub fn decide(
    sizes: &BTreeMap<u64, u64>,
    snapshot: Option<u64>,
    snapshot_bytes: u64,
    purged: Option<u64>,
    budget: LogBudget,
) -> LogAction {
    let after_snapshot: u64 = match snapshot {
        Some(s) => sizes.range(s + 1..).map(|(_, b)| b).sum(),
        None => sizes.values().sum(),
    };
    if after_snapshot > budget.min_bytes.max(snapshot_bytes) {
        return LogAction::Snapshot;
    }
    let Some(snapshot) = snapshot else {
        return LogAction::Nothing;
    };
    // Keep the newest entries up to `keep_bytes` (counting those after the snapshot); everything
    // older that the snapshot holds goes.
    let keep = budget.keep_bytes.saturating_sub(after_snapshot);
    let mut kept = 0;
    let mut upto = None;
    for (&index, &bytes) in sizes.range(..=snapshot).rev() {
        if kept + bytes > keep {
            upto = Some(index);
            break;
        }
        kept += bytes;
    }
    match upto {
        Some(upto) if Some(upto) > purged => LogAction::Purge(upto),
        _ => LogAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: LogBudget = LogBudget { min_bytes: 100, keep_bytes: 30 };

    fn log(range: std::ops::RangeInclusive<u64>, bytes: u64) -> BTreeMap<u64, u64> {
        range.map(|i| (i, bytes)).collect()
    }

    #[test]
    fn a_small_log_is_left_alone() {
        assert_eq!(decide(&log(1..=9, 10), None, 0, None, BUDGET), LogAction::Nothing);
    }

    #[test]
    fn snapshots_once_the_log_outgrows_the_minimum_or_the_last_snapshot() {
        assert_eq!(decide(&log(1..=11, 10), None, 0, None, BUDGET), LogAction::Snapshot);
        // A snapshot of 500 bytes: the log since it may grow to 500 before the next one.
        assert_eq!(decide(&log(1..=40, 10), Some(5), 500, Some(5), BUDGET), LogAction::Nothing);
        assert_eq!(decide(&log(1..=60, 10), Some(5), 500, Some(5), BUDGET), LogAction::Snapshot);
    }

    #[test]
    fn purges_behind_the_snapshot_down_to_the_bytes_kept() {
        // Snapshot at 50, nothing after it: keep 30 bytes (entries 48..=50), purge up to 47.
        assert_eq!(decide(&log(1..=50, 10), Some(50), 40, None, BUDGET), LogAction::Purge(47));
        // Already purged that far: nothing to do.
        assert_eq!(decide(&log(48..=50, 10), Some(50), 40, Some(47), BUDGET), LogAction::Nothing);
    }

    #[test]
    fn entries_after_the_snapshot_count_against_the_bytes_kept() {
        // 20 bytes after the snapshot at 50: only 10 more are kept behind it.
        assert_eq!(decide(&log(1..=52, 10), Some(50), 40, None, BUDGET), LogAction::Purge(49));
    }

    #[test]
    fn never_purges_what_the_snapshot_does_not_hold() {
        assert_eq!(decide(&log(1..=5, 10), Some(0), 0, None, BUDGET), LogAction::Nothing);
        let action = decide(&log(1..=10, 50), Some(3), 1000, None, BUDGET);
        assert!(matches!(action, LogAction::Purge(i) if i <= 3), "{action:?}");
    }
}
