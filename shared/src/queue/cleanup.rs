//! Removing a whole queue namespace: every key under `{namespace}:` (what a Redis restart
//! without persistence leaves behind, and what a test, the chaos run's stack or a benchmark
//! deployment must delete when it ends), and the namespace's queues in apalis' global list.

use crate::queue::RedisConn;

/// apalis' `register_worker.lua` lists every queue's workers key in this one global set.
const APALIS_QUEUES: &str = "core:apalis:queues:list";

/// Deletes every key under `{namespace}:`, a page at a time with SCAN (never KEYS on a live
/// server); returns how many.
pub async fn delete_keys(conn: &mut impl RedisConn, namespace: &str) -> redis::RedisResult<usize> {
    let pattern = format!("{namespace}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
}

/// [`delete_keys`], then the namespace's queues out of apalis' global list: nothing of it
/// is left.
pub async fn remove_namespace(
    conn: &mut impl RedisConn,
    namespace: &str,
) -> redis::RedisResult<usize> {
    let deleted = delete_keys(conn, namespace).await?;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(APALIS_QUEUES)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    let prefix = format!("{namespace}:");
    let ours: Vec<&String> = members.iter().filter(|m| m.starts_with(&prefix)).collect();
    if !ours.is_empty() {
        redis::cmd("ZREM")
            .arg(APALIS_QUEUES)
            .arg(ours)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(deleted)
}
