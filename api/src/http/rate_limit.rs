//! A per-client limit on `POST /transactions`, so one client cannot flood the payments table
//! (or brute-force the merchant key). A token bucket per client IP, refilled at
//! `RATE_LIMIT_PER_MINUTE` per minute and holding a minute's worth, kept in this process's
//! memory: with several api processes each counts on its own (docs/security.md). The client is
//! the TCP peer (`ConnectInfo`), never a header it could forge; IPv6 clients are counted per
//! /64, the block a single host usually has. A request with the valid merchant key is not
//! limited: the merchant's backend is one address doing all of the shop's payments.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::secret::Secret;

use crate::error::ApiError;

/// Buckets kept before the full ones (clients quiet for a minute) are forgotten.
const PRUNE_AT: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    per_minute: u32,
    merchant_key: Option<Secret>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` 0 turns the limit off.
    pub fn new(per_minute: u32, merchant_key: Option<Secret>) -> Arc<Self> {
        Arc::new(Self {
            per_minute,
            merchant_key,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token for `client` at `now`; when none is left, how many seconds until one is.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec
                    < capacity
            });
        }
        let bucket = buckets.entry(key(client)).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec);
            Err(wait.as_secs().max(1) + u64::from(wait.subsec_nanos() > 0))
        }
    }

    fn is_merchant(&self, req: &Request) -> bool {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        matches!((&self.merchant_key, presented), (Some(k), Some(p)) if k.matches(p))
    }
}

/// IPv4 addresses as they are; IPv6 by their /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The middleware: 429 `rate_limited` with `Retry-After` once a client's bucket is empty.
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    // Served without our accept loop (a test calling the router directly), every request
    // counts as one anonymous client.
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if !limiter.is_merchant(&req)
        && let Err(retry_after_secs) = limiter.take(client, Instant::now())
    {
        tracing::warn!(%client, "rate limit reached");
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_a_minutes_worth_then_waits() {
        let limiter = RateLimiter::new(3, None);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(a, t0), Ok(()));
        }
        assert_eq!(limiter.take(a, t0), Err(20));
        // Another client has its own bucket.
        assert_eq!(limiter.take(b, t0), Ok(()));
        // One token comes back every 20 s.
        assert_eq!(limiter.take(a, t0 + Duration::from_secs(20)), Ok(()));
        assert!(limiter.take(a, t0 + Duration::from_secs(21)).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::new(0, None);
        for _ in 0..1000 {
            assert_eq!(
                limiter.take(IpAddr::from([10, 0, 0, 1]), Instant::now()),
                Ok(())
            );
        }
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(key(a), key(b));
        let c: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(key(c), IpAddr::from([10, 0, 0, 1]));
    }
}
