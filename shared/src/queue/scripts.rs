//! The two edits payctl makes to the queue, each a Lua script so Redis applies it atomically
//! per task: a worker never sees a task half moved. Keys are passed and built exactly as
//! apalis-redis' own scripts do (`{q}:meta` prefix + `:` + task id).

use std::sync::LazyLock;

use anyhow::Context;
use redis::Script;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;

/// Puts one dead task back on the schedule, looking to a worker like a fresh push: the steps
/// apalis has no API for (`SREM dead`, meta `status Pending attempts 0`, `ZADD scheduled`).
/// The lease fields of the run that died are dropped so the task does not look held.
static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] dead set, KEYS[2] scheduled zset, KEYS[3] data hash, KEYS[4] meta key prefix
-- ARGV[1] task id, ARGV[2] due at (unix seconds, apalis' score unit)
-- Returns 1: moved; 0: not in the dead set; -1: its payload is gone.
local id = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], id) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], id) == 0 then return -1 end
local meta = KEYS[4] .. ':' .. id
redis.call('SREM', KEYS[1], id)
redis.call('HSET', meta, 'status', 'Pending', 'attempts', 0)
redis.call('HDEL', meta, 'locked_by', 'locked_at')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), id)
return 1
",
    )
});

/// Deletes done tasks finished before a cutoff: set member, payload and meta hash together.
/// Each candidate is checked again inside the script, so a task retried or re-run since it
/// was read is left alone.
static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] done set, KEYS[2] data hash, KEYS[3] meta key prefix
-- ARGV[1] cutoff (unix seconds), ARGV[2] '1' for a dry run, ARGV[3..] task ids
-- Returns how many tasks were (or, dry, would be) deleted.
local cutoff = tonumber(ARGV[1])
local dry = ARGV[2] == '1'
local n = 0
for i = 3, #ARGV do
    local id = ARGV[i]
    local meta = KEYS[3] .. ':' .. id
    local done_at = tonumber(redis.call('HGET', meta, 'done_at'))
    if done_at and done_at < cutoff and redis.call('SISMEMBER', KEYS[1], id) == 1 then
        if not dry then
            redis.call('SREM', KEYS[1], id)
            redis.call('HDEL', KEYS[2], id)
            redis.call('DEL', meta)
        end
        n = n + 1
    end
end
return n
",
    )
});

#[derive(Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    Moved,
    NotDead,
    NoPayload,
}

pub async fn retry(
    conn: &mut impl RedisConn,
    keys: &Keys,
    task_id: &str,
    due_at: i64,
) -> anyhow::Result<RetryOutcome> {
    let code: i64 = RETRY
        .key(keys.dead())
        .key(keys.scheduled())
        .key(keys.data())
        .key(keys.meta_prefix())
        .arg(task_id)
        .arg(due_at)
        .invoke_async(conn)
        .await
        .with_context(|| format!("moving task {task_id} back to the schedule"))?;
    Ok(match code {
        1 => RetryOutcome::Moved,
        -1 => RetryOutcome::NoPayload,
        _ => RetryOutcome::NotDead,
    })
}

/// Deletes those of `task_ids` that are done and finished before `cutoff`; returns how many.
pub async fn purge_done(
    conn: &mut impl RedisConn,
    keys: &Keys,
    task_ids: &[String],
    cutoff: i64,
    dry_run: bool,
) -> anyhow::Result<u64> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let mut call = PURGE.prepare_invoke();
    call.key(keys.done())
        .key(keys.data())
        .key(keys.meta_prefix())
        .arg(cutoff)
        .arg(if dry_run { "1" } else { "0" })
        .arg(task_ids);
    call.invoke_async(conn).await.context("purging done tasks")
}
