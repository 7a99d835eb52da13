//! A pace for Secrets Manager write calls, so one function never takes more than its share of
//! the account's 50 writes per second (`WRITE_RATE_LIMIT`).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces calls at least `1 / rate` seconds apart, plus a 5% margin, across every task of the
/// instance. Evenly spaced calls stay under the rate in any one-second window, also after the
/// network has bunched a few of them up on their way (by up to about 50 ms a second).
#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
}

impl Pace {
    pub fn per_second(rate: u32) -> Pace {
        Pace {
            interval: Duration::from_secs(1) * 21 / (rate.max(1) * 20),
            next_slot: Mutex::new(None),
        }
    }

    /// Waits for this call's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next_slot = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = next_slot.map_or(now, |next| next.max(now));
            *next_slot = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_calls_are_spaced_by_the_rate() {
        let pace = std::sync::Arc::new(Pace::per_second(100));
        let start = Instant::now();
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let pace = pace.clone();
                tokio::spawn(async move {
                    pace.wait().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        // A sleep never ends early, so the k-th call to finish did so no sooner than k
        // intervals after the start, however busy the machine is: only lower bounds are
        // asserted.
        for (k, time) in times.iter().enumerate() {
            let earliest = Duration::from_millis(10) * k as u32;
            assert!(
                *time - start >= earliest,
                "call {k} after {:?}",
                *time - start
            );
        }
    }
}
