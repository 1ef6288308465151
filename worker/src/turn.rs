//! Periodic work that one worker of many does per interval (the reconciler, the purge of
//! finished jobs): the first to set the interval's Redis lock takes the turn.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Whether this worker (`owner`) takes this interval's turn at `lock_key`: the lock lives for
/// most of the interval, so the next turn is free again in time.
pub async fn take(
    redis: &ConnectionManager,
    lock_key: &str,
    owner: &str,
    interval: Duration,
) -> bool {
    let mut conn = redis.clone();
    let ttl = (interval.as_millis() as u64).saturating_mul(9) / 10;
    let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(lock_key)
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(ttl.max(1))
        .query_async(&mut conn)
        .await;
    matches!(taken, Ok(Some(_)))
}
