//! The one retry policy of the workspace: capped exponential backoff with full jitter
//! (`base_delay`, `max_delay`, `max_attempts`), and a [`Sleeper`] that tests replace so that
//! retries take no time.
//!
//! Full jitter: the delay before retry `n` (0-based) is uniform in
//! `[0, min(max_delay, base_delay * 2^n)]`, so clients that failed together do not retry together.
//! Draws come from `rand`'s thread-local generator; a retry path is not hot enough for a
//! hand-written generator to earn its place.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use rand::Rng;

/// How an operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay bound of the first retry.
    pub base_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// Attempts in all, the first included (`u32::MAX`: retry for as long as it takes).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The bound of the delay before retry number `retry` (0-based):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay)
    }

    /// The delay before retry number `retry` for a uniform draw `unit` in `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before retry number `retry`, with a fresh random draw.
    pub fn jittered_delay(&self, retry: u32) -> Duration {
        self.delay(retry, rand::rng().random::<f64>())
    }

    /// Whether attempt number `attempt` (1-based) may be made.
    pub fn allows(&self, attempt: u32) -> bool {
        attempt <= self.max_attempts
    }

    /// A fresh backoff sequence of this policy, sleeping with `sleeper`.
    pub fn backoff(&self, sleeper: Sleeper) -> Backoff {
        Backoff {
            policy: *self,
            retries: 0,
            sleeper,
        }
    }
}

/// A future that sleeps.
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How retries wait: tokio's timer in production, anything (a recorder that returns at once) in
/// tests.
#[derive(Clone)]
pub struct Sleeper(Arc<dyn Fn(Duration) -> SleepFuture + Send + Sync>);

impl Sleeper {
    /// A sleeper that calls `sleep` for each wait.
    pub fn new(sleep: impl Fn(Duration) -> SleepFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(sleep))
    }

    /// Waits `delay`.
    pub fn sleep(&self, delay: Duration) -> SleepFuture {
        (self.0)(delay)
    }
}

impl Default for Sleeper {
    /// tokio's timer.
    fn default() -> Self {
        Self::new(|delay| Box::pin(tokio::time::sleep(delay)))
    }
}

impl std::fmt::Debug for Sleeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sleeper")
    }
}

/// One run of retries of a [`RetryPolicy`]: each [`Self::next_delay`] is the next jittered delay;
/// [`Self::reset`] starts over (after a success that lasted).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    sleeper: Sleeper,
}

impl Backoff {
    /// The delay before the next retry, or `None` when the policy allows no more attempts.
    pub fn next_delay(&mut self) -> Option<Duration> {
        // The first attempt is not a retry: retry n is attempt n + 2.
        if !self.policy.allows(self.retries.saturating_add(2)) {
            return None;
        }
        let delay = self.policy.jittered_delay(self.retries);
        self.retries = self.retries.saturating_add(1);
        Some(delay)
    }

    /// Sleeps `delay` with this backoff's sleeper.
    pub fn sleep(&self, delay: Duration) -> SleepFuture {
        self.sleeper.sleep(delay)
    }

    /// Starts over from `base_delay`.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` refuses, or the policy allows no
/// more attempts (then the last error is returned).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    sleeper: Sleeper,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = policy.backoff(sleeper);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => match backoff.next_delay() {
                Some(delay) => backoff.sleep(delay).await,
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts,
        }
    }

    /// A sleeper that returns at once and records what it was asked to wait.
    fn recorder() -> (Sleeper, Arc<Mutex<Vec<Duration>>>) {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let seen = waits.clone();
        let sleeper = Sleeper::new(move |d| {
            seen.lock().unwrap().push(d);
            Box::pin(async {})
        });
        (sleeper, waits)
    }

    #[test]
    fn delays_double_up_to_the_cap_with_full_jitter() {
        let p = policy(10);
        assert_eq!(p.delay(0, 0.999_999), Duration::from_millis(100).mul_f64(0.999_999));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(5, 0.0), Duration::ZERO);
        let draws: Vec<Duration> = (0..100).map(|_| p.jittered_delay(4)).collect();
        assert!(draws.iter().all(|d| *d <= p.ceiling(4)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "jitter varies");
    }

    #[tokio::test]
    async fn retries_until_success_without_waiting_in_tests() {
        let (sleeper, waits) = recorder();
        let mut calls = 0;
        let result: Result<u32, &str> = retry(
            &policy(5),
            sleeper,
            |_| true,
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("busy") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        let waits = waits.lock().unwrap();
        assert_eq!(waits.len(), 2);
        assert!(waits[0] <= Duration::from_millis(100) && waits[1] <= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let (sleeper, waits) = recorder();
        let mut calls = 0;
        let result: Result<(), u32> = retry(
            &policy(4),
            sleeper,
            |_| true,
            || {
                calls += 1;
                let n = calls;
                async move { Err(n) }
            },
        )
        .await;
        assert_eq!(result, Err(4));
        assert_eq!(waits.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn an_error_that_is_not_retryable_ends_at_once() {
        let (sleeper, waits) = recorder();
        let result: Result<(), &str> = retry(&policy(4), sleeper, |e| *e != "revert", || async { Err("revert") }).await;
        assert_eq!(result, Err("revert"));
        assert!(waits.lock().unwrap().is_empty());
    }

    #[test]
    fn a_backoff_starts_over_after_reset() {
        let mut backoff = policy(u32::MAX).backoff(Sleeper::default());
        for _ in 0..10 {
            assert!(backoff.next_delay().unwrap() <= Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay().unwrap() <= Duration::from_millis(100));
        let mut once = policy(2).backoff(Sleeper::default());
        assert!(once.next_delay().is_some());
        assert_eq!(once.next_delay(), None);
    }
}
