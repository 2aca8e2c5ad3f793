//! Exponential backoff with jitter, and a retry loop for calls that must eventually succeed.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;

/// Doubling delays between `min` and `max`. Each delay is jittered by up to ±20 % so that many
/// vehicles cut off together do not hammer a recovering server in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The usual policy for talking to the server: from half a second up to 30 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Calls `op` until it succeeds, retrying transient failures with backoff. Gives up on a
/// failure that retrying cannot fix, and answers `Ok(None)` if cancelled meanwhile.
pub async fn retry<T, F, Fut>(
    what: &str,
    cancel: &CancellationToken,
    mut op: F,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut backoff = Backoff::standard();
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            result = op() => result,
        };
        match result {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!("{what}: succeeded after {failures} failed attempts");
                }
                return Ok(Some(value));
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                let delay = backoff.next_delay();
                // The first failure is news; the rest only matter when debugging.
                if failures == 1 {
                    tracing::warn!("{what}: {e}; retrying");
                } else {
                    tracing::debug!("{what}: {e}; retry {failures} in {delay:?}");
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let within = |d: Duration, nominal: u64| {
            let ms = d.as_secs_f64() * 1000.0;
            let n = nominal as f64;
            ms >= n * 0.8 - 1e-6 && ms <= n * 1.2 + 1e-6
        };
        for (d, nominal) in delays
            .iter()
            .zip([100, 200, 400, 800, 1000, 1000, 1000, 1000])
        {
            assert!(within(*d, nominal), "{d:?} vs {nominal}");
        }
        b.reset();
        assert!(within(b.next_delay(), 100));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_rides_out_transient_failures() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let result = retry("test", &cancel, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(ApiError::Network("refused".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.ok().flatten(), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_on_permanent_failures_and_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let permanent = retry("test", &cancel, || async {
            Err::<(), _>(ApiError::Decode("bad".into()))
        })
        .await;
        assert!(permanent.is_err());

        cancel.cancel();
        let cancelled = retry("test", &cancel, || async {
            Err::<(), _>(ApiError::Network("refused".into()))
        })
        .await;
        assert!(matches!(cancelled, Ok(None)));
    }
}
