//! Waiting for a condition with a deadline: every benchmark's one way to wait.

use std::time::{Duration, Instant};

/// Polls `check` every `poll` until it answers `Some`, at most `limit`; an error is retried until
/// the deadline, then returned with `what` and the limit.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, poll: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) | Err(_) if Instant::now() < deadline => tokio::time::sleep(poll).await,
            Ok(None) => anyhow::bail!("{what}: not within {} s", limit.as_secs()),
            Err(e) => return Err(e.context(format!("{what}: not within {} s", limit.as_secs()))),
        }
    }
}
