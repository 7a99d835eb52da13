//! Retries of transient failures with exponential backoff and full jitter, so that many apps
//! throttled at once do not all come back at the same moment.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::error::Result;

/// Attempts in all, the first included.
pub const ATTEMPTS: u32 = 6;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `operation` until it succeeds, fails permanently, or has failed `ATTEMPTS` times.
/// The operation must be safe to repeat (staging is: a version id names its content).
pub async fn with_backoff<T, F, Fut>(mut operation: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut ceiling = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(jitter(ceiling)).await;
                ceiling = (ceiling * 2).min(MAX_DELAY);
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A random delay between zero and `ceiling`.
fn jitter(ceiling: Duration) -> Duration {
    // Each RandomState is seeded afresh by the standard library: enough randomness to spread
    // retries, without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(random % (millis + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = with_backoff(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Error::Transient("throttled".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<()> = with_backoff(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Permanent("too large".into()))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jitter_stays_under_its_ceiling() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
