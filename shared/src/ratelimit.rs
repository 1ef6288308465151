//! Rate limits that every process shares through Redis, so that N api or worker processes allow
//! the limit once, not N times. Each decision is one atomic script on Redis' own clock (`TIME`),
//! so processes on different hosts agree on what "now" is.
//!
//! - [`Gcra`] (the generic cell rate algorithm): a steady rate with a burst allowance, kept as
//!   one timestamp per key. The api's per-client limits (a minute's worth at once, then the
//!   rate).
//! - [`SlidingWindow`]: at most `limit` in *any* window of the given length, kept as the
//!   timestamps of the calls in the last window. The worker's limit toward Stripe, which counts
//!   per second: a fixed window would let twice the budget through across a window's edge.
//!
//! Both answer [`Decision::Wait`] with how long until a call would be allowed. When Redis
//! cannot be asked, the caller decides (both of ours let the call through and warn).

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Wait(Duration),
}

/// KEYS[1]: the key's theoretical arrival time (µs); ARGV: emission interval and burst
/// tolerance (µs). Returns 0 when allowed, otherwise the µs to wait.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - tolerance > now then return math.ceil(tat - tolerance - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0",
    )
});

/// KEYS[1]: a sorted set of this window's calls (score: µs); ARGV: window (µs), the limit for
/// this caller, a unique member. Returns 0 when allowed, otherwise the µs to wait.
static SLIDING: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return math.max(1, math.ceil(tonumber(oldest[2]) + window - now))",
    )
});

fn decision(wait_us: u64) -> Decision {
    if wait_us == 0 {
        Decision::Allowed
    } else {
        Decision::Wait(Duration::from_micros(wait_us))
    }
}

/// `limit` calls per `period` for each key, `burst` of them at once.
#[derive(Clone, Copy, Debug)]
pub struct Gcra {
    interval_us: u64,
    tolerance_us: u64,
}

impl Gcra {
    /// `limit` must be at least 1; `burst` is at least 1.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Self {
        let interval_us = (period.as_micros() / u128::from(limit.max(1))).max(1) as u64;
        Self {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    pub async fn check(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        key: &str,
    ) -> redis::RedisResult<Decision> {
        let wait: u64 = GCRA
            .key(key)
            .arg(self.interval_us)
            .arg(self.tolerance_us)
            .invoke_async(conn)
            .await?;
        Ok(decision(wait))
    }
}

/// At most a given number of calls in any `window`.
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindow {
    pub window: Duration,
}

impl SlidingWindow {
    /// Takes a place among the last window's calls on `key` if fewer than `limit` are there.
    /// Callers with a smaller `limit` on the same key yield to those with a larger one.
    pub async fn take(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        key: &str,
        limit: u64,
    ) -> redis::RedisResult<Decision> {
        let wait: u64 = SLIDING
            .key(key)
            .arg(self.window.as_micros() as u64)
            .arg(limit)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .invoke_async(conn)
            .await?;
        Ok(decision(wait))
    }
}
