//! Pacing of connection attempts: full-jitter exponential backoff per connection, and a
//! per-exchange limit on how often any connection may start, so a mass reconnect (every
//! connection of an exchange dropping at once, nautilus_trader #1989) is spread out instead of
//! hammering the exchange's connection-rate limit.
//!
//! Both are a few lines over `rand` and `tokio::time`; the crates that do rate limiting
//! (governor) bring far more than a "next free slot" needs.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Full-jitter exponential backoff (the AWS architecture blog's "full jitter"): the n-th delay
/// is uniform in `[0, min(max, min * 2^n)]`, and the sequence never ends.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// The ceiling the next delay is drawn under.
    pub fn ceiling(&self) -> Duration {
        self.min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// At most one connection attempt per `interval` for one exchange.
#[derive(Debug)]
pub struct AttemptLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl AttemptLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this attempt's slot; false when `stop` fires first.
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep_until(slot) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_growing_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} over {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        // Jitter: a thousand draws under one ceiling are not all equal.
        let draws: std::collections::HashSet<u128> = (0..1000)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
                b.next_delay().as_millis()
            })
            .collect();
        assert!(draws.len() > 100, "{} distinct delays", draws.len());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_spaced_by_the_interval() {
        let l = std::sync::Arc::new(AttemptLimiter::new(Duration::from_millis(500)));
        let stop = CancellationToken::new();
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..5 {
            let (l, stop) = (l.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                l.acquire(&stop).await;
                start.elapsed()
            }));
        }
        let mut at = Vec::new();
        for h in handles {
            at.push(h.await.expect("no panic").as_millis());
        }
        at.sort_unstable();
        assert_eq!(at, [0, 500, 1000, 1500, 2000]);
    }
}
