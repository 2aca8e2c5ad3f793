//! Rate limits: a token bucket per key (an account, an address, a vehicle). Sign-in buckets are
//! kept in Redis when there is one, shared by every instance, so that a load balancer spreading
//! one guesser over several instances does not multiply the limit; without Redis (or while it
//! does not answer) each instance limits what it sees. Ingest and chat buckets are per instance:
//! they are checked on every request, and a round trip to Redis each time would cost more than
//! the limit is worth there.
use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;

use crate::config::ServeConfig;

/// Token buckets that every instance shares (the Redis fan-out keeps them).
pub trait SharedBuckets {
    /// Takes a token from the bucket `name`: `Some(Ok)` if one was free, `Some(Err(wait))` if
    /// not, none if the shared store does not answer. The bucket refills at `per_second` up to
    /// `burst`.
    fn take_shared_token(
        &self,
        name: &str,
        per_second: f64,
        burst: f64,
    ) -> impl Future<Output = Option<Result<(), Duration>>> + Send;
}

/// Past this many keys, full buckets (clients at rest) are forgotten.
const MAX_KEYS: usize = 100_000;

pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    per_second: f64,
    burst: f64,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` sustained, up to `burst` at once; a rate of 0 never limits.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            per_second,
            burst: f64::from(burst.max(1)),
        }
    }

    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        Self::new(f64::from(per_minute) / 60.0, burst)
    }

    /// Takes one token for `key` from the bucket every instance shares (named `kind:key` in
    /// Redis), or from this instance's own when there is no Redis or it does not answer.
    pub async fn check_shared(
        &self,
        shared: Option<&impl SharedBuckets>,
        kind: &str,
        key: &K,
    ) -> Result<(), Duration>
    where
        K: std::fmt::Display,
    {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        if let Some(shared) = shared {
            let name = format!("{kind}:{key}");
            if let Some(taken) = shared
                .take_shared_token(&name, self.per_second, self.burst)
                .await
            {
                return taken;
            }
        }
        self.check(key)
    }

    /// Takes one token for `key`, or says how long until one is free.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = bucket.refilled(now, self.per_second, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// The limits one instance keeps.
pub struct Limits {
    /// Sign-in attempts per account (lower-cased email).
    pub login_account: RateLimiter<String>,
    /// Sign-in attempts per client address.
    pub login_address: RateLimiter<IpAddr>,
    /// Ingest requests per vehicle, whatever the format.
    pub ingest: RateLimiter<i64>,
    /// Chat messages and reactions per participant.
    pub chat: RateLimiter<String>,
}

impl Limits {
    pub fn new(config: &ServeConfig) -> Limits {
        Limits {
            login_account: RateLimiter::per_minute(config.login_rate_per_account, 10),
            login_address: RateLimiter::per_minute(config.login_rate_per_address, 30),
            ingest: RateLimiter::new(config.ingest_rate, config.ingest_burst),
            chat: RateLimiter::per_minute(config.chat_rate_per_minute, 20),
        }
    }
}

/// The client's address: the peer, or behind a trusted proxy the address it appended last to
/// `X-Forwarded-For` (the earlier entries are the client's own word).
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trust_proxy: bool) -> IpAddr {
    let forwarded = trust_proxy
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok());
    forwarded
        .or(peer.map(|p| p.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.check_at(&1, t0).is_ok());
        }
        let wait = limit.check_at(&1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(limit.check_at(&2, t0).is_ok(), "keys are independent");
        assert!(limit.check_at(&1, t0 + Duration::from_millis(500)).is_ok());
        assert!(limit.check_at(&1, t0 + Duration::from_millis(500)).is_err());
        assert!(
            RateLimiter::new(0.0, 1).check_at(&1, t0).is_ok(),
            "0 is off"
        );
    }

    #[test]
    fn the_address_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        assert_eq!(client_ip(&h, Some(peer), false), peer.ip());
        assert_eq!(
            client_ip(&h, Some(peer), true),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "junk".parse().unwrap());
        assert_eq!(client_ip(&h, Some(peer), true), peer.ip());
    }
}
