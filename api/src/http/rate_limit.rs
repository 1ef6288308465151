//! Per-client limits on the endpoints that write: `POST /transactions` (so one client cannot
//! flood the payments table or brute-force the merchant key) and the 3-D Secure confirm. One
//! count for every api process, kept in Redis ([`shared::ratelimit::Gcra`]): a minute's worth at
//! once, then the configured rate. The client is [`ClientIp`] (the socket's peer, or behind
//! `TRUSTED_PROXIES` the address they recorded); IPv6 clients are counted per /64, the block a
//! single host usually has. A request with the valid merchant key is not limited: the merchant's
//! backend is one address doing all of the shop's payments.
//!
//! While Redis cannot answer (within [`ASK_WITHIN`]) requests go through, with a warning at most
//! every 10 s: a limit must not take the checkout down with it, and the payment itself needs
//! Redis anyway.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use redis::aio::ConnectionManager;
use shared::ratelimit::{Decision, Gcra};
use shared::secret::Secret;
use shared::telemetry::Throttle;

use crate::error::ApiError;
use crate::http::client_ip::ClientIp;

/// How long a request waits for the limiter before going through unlimited.
pub const ASK_WITHIN: Duration = Duration::from_millis(250);

pub struct RateLimiter {
    /// `None`: no limit.
    gcra: Option<Gcra>,
    /// `{namespace}:client_rate:{scope}:`, followed by the client's address.
    prefix: String,
    merchant_key: Option<Secret>,
    redis: ConnectionManager,
    unavailable: Throttle,
}

impl RateLimiter {
    /// `per_minute` 0 turns the limit off. `scope` names the endpoint: each has its own counts.
    pub fn new(
        scope: &str,
        per_minute: u32,
        merchant_key: Option<Secret>,
        redis: ConnectionManager,
        namespace: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            gcra: (per_minute > 0)
                .then(|| Gcra::new(per_minute, Duration::from_secs(60), per_minute)),
            prefix: format!("{namespace}:client_rate:{scope}:"),
            merchant_key,
            redis,
            unavailable: Throttle::new(Duration::from_secs(10)),
        })
    }

    /// `Err(seconds)` when `client` must wait before its next request.
    pub async fn take(&self, client: IpAddr) -> Result<(), u64> {
        let Some(gcra) = self.gcra else {
            return Ok(());
        };
        let key = format!("{}{}", self.prefix, key(client));
        let mut conn = self.redis.clone();
        let answer = tokio::time::timeout(ASK_WITHIN, gcra.check(&mut conn, &key)).await;
        match answer {
            Ok(Ok(Decision::Allowed)) => Ok(()),
            Ok(Ok(Decision::Wait(wait))) => {
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            Ok(Err(e)) => {
                self.let_through(&e.to_string());
                Ok(())
            }
            Err(_) => {
                self.let_through("no answer within 250 ms");
                Ok(())
            }
        }
    }

    fn let_through(&self, why: &str) {
        metrics::counter!("payments_rate_limit_unavailable_total").increment(1);
        if let Some(left_out) = self.unavailable.ready() {
            tracing::warn!(
                error = why,
                left_out,
                "rate limit unavailable (Redis); letting requests through"
            );
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
    match shared::cidr::canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The middleware: 429 `rate_limited` with `Retry-After` once a client has used its share.
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    if !limiter.is_merchant(&req)
        && let Err(retry_after_secs) = limiter.take(client).await
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
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(key(a), key(b));
        let c: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(key(c), IpAddr::from([10, 0, 0, 1]));
    }
}
