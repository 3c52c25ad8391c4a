//! Crash-loop back-off, as the kubelet does it: the first restart after a crash is immediate, then
//! each restart waits twice as long as the previous one (10 s, 20 s, 40 s... capped at 5 min), and a
//! container that ran for 10 min without crashing starts again from no delay. Pure: the caller says
//! what time it is.

use std::time::Duration;

use tokio::time::Instant;

/// The schedule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The delay before the second restart; it doubles with each further crash.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Running this long without a crash forgets earlier crashes.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { base: Duration::from_secs(10), cap: Duration::from_secs(300), reset_after: Duration::from_secs(600) }
    }
}

/// One container's crash history.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Crashes since the last reset.
    crashes: u32,
    /// When the container last started.
    started: Option<Instant>,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, crashes: 0, started: None }
    }

    /// The container started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// The container exited (and must be restarted) at `now`: how long to wait before starting it
    /// again. Zero for the first crash, or the first after a long healthy run.
    pub fn crashed(&mut self, now: Instant) -> Duration {
        if let Some(started) = self.started {
            if now.saturating_duration_since(started) >= self.config.reset_after {
                self.crashes = 0;
            }
        }
        self.crashes = self.crashes.saturating_add(1);
        self.delay()
    }

    /// The delay after the current number of crashes: 0, base, 2*base, 4*base... up to the cap.
    pub fn delay(&self) -> Duration {
        match self.crashes {
            0 | 1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(30);
                self.config.base.saturating_mul(1 << doublings).min(self.config.cap)
            }
        }
    }

    pub fn crashes(&self) -> u32 {
        self.crashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_restart_is_immediate_then_delays_double_up_to_five_minutes() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut delays = Vec::new();
        for _ in 0..8 {
            b.started(Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
            let d = b.crashed(Instant::now());
            delays.push(d.as_secs());
            tokio::time::advance(d).await;
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_of_running_forgets_the_crashes() {
        let mut b = Backoff::new(BackoffConfig::default());
        for _ in 0..4 {
            b.started(Instant::now());
            b.crashed(Instant::now());
        }
        assert_eq!(b.delay(), Duration::from_secs(40));
        b.started(Instant::now());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(b.clone().crashed(Instant::now()), Duration::from_secs(80), "9:59 is not long enough");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.crashed(Instant::now()), Duration::ZERO, "after 10 min the next restart is immediate again");
    }

    #[test]
    fn a_short_configured_base_scales_the_same_way() {
        let config = BackoffConfig {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
            reset_after: Duration::from_secs(60),
        };
        let mut b = Backoff::new(config);
        let now = Instant::now();
        let delays: Vec<u128> = (0..5).map(|_| b.crashed(now).as_millis()).collect();
        assert_eq!(delays, [0, 200, 400, 800, 1000]);
    }
}
