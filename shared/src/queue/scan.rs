//! Walking whole keys safely on a live Redis: SSCAN, ZSCAN, HSCAN and paged LRANGE, a few
//! hundred elements per call, never KEYS or an unbounded SMEMBERS/HGETALL. A walk is not a
//! snapshot: a task that moves while it runs may be seen twice or not at all.

use std::collections::HashMap;

use anyhow::Context;
use uuid::Uuid;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::task::{JobState, Place, parse_payload};

/// Elements asked for per SCAN call (a hint to Redis) and per LRANGE page.
const PAGE: usize = 500;

/// One SSCAN step: the next cursor (0 when the walk is over) and a page of members.
pub async fn set_page(
    conn: &mut impl RedisConn,
    key: &str,
    cursor: u64,
) -> anyhow::Result<(u64, Vec<String>)> {
    redis::cmd("SSCAN")
        .arg(key)
        .arg(cursor)
        .arg("COUNT")
        .arg(PAGE)
        .query_async(conn)
        .await
        .with_context(|| format!("reading {key}"))
}

/// Members of a set, at most `limit` of them (in Redis' order).
pub async fn set_members(
    conn: &mut impl RedisConn,
    key: &str,
    limit: Option<usize>,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch) = set_page(conn, key, cursor).await?;
        out.extend(batch);
        if let Some(limit) = limit.filter(|l| out.len() >= *l) {
            out.truncate(limit);
            return Ok(out);
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Every (member, score) of a sorted set.
async fn zset_all(conn: &mut impl RedisConn, key: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<(String, f64)>) = redis::cmd("ZSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .with_context(|| format!("reading {key}"))?;
        out.extend(batch);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The first `limit` scheduled tasks, soonest due first.
pub async fn scheduled(
    conn: &mut impl RedisConn,
    keys: &Keys,
    limit: usize,
) -> anyhow::Result<Vec<Place>> {
    let key = keys.scheduled();
    let stop = limit as i64 - 1;
    let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(stop)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .with_context(|| format!("reading {key}"))?;
    Ok(rows
        .into_iter()
        .map(|(id, score)| scheduled_place(id, score))
        .collect())
}

fn scheduled_place(id: String, score: f64) -> Place {
    let mut p = Place::new(id, JobState::Scheduled);
    p.run_at = Some(score as i64);
    p
}

/// Up to `limit` tasks of the active list, from its head (the next to be fetched).
pub async fn active(
    conn: &mut impl RedisConn,
    keys: &Keys,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Place>> {
    let key = keys.active();
    let mut out = Vec::new();
    loop {
        let want = limit.map_or(PAGE, |l| (l - out.len()).min(PAGE));
        if want == 0 {
            return Ok(out);
        }
        let start = out.len() as i64;
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(start)
            .arg(start + want as i64 - 1)
            .query_async(conn)
            .await
            .with_context(|| format!("reading {key}"))?;
        let got = ids.len();
        out.extend(ids.into_iter().map(|id| Place::new(id, JobState::Active)));
        if got < want {
            return Ok(out);
        }
    }
}

/// Up to `limit` in-flight tasks across `workers`.
pub async fn inflight(
    conn: &mut impl RedisConn,
    keys: &Keys,
    workers: &[String],
    limit: Option<usize>,
) -> anyhow::Result<Vec<Place>> {
    let mut out = Vec::new();
    for w in workers {
        let left = limit.map(|l| l.saturating_sub(out.len()));
        if left == Some(0) {
            break;
        }
        for id in set_members(conn, &keys.inflight(w), left).await? {
            let mut p = Place::new(id, JobState::Inflight);
            p.worker = Some(w.clone());
            out.push(p);
        }
    }
    Ok(out)
}

/// Up to `limit` task ids of one state.
pub async fn places(
    conn: &mut impl RedisConn,
    keys: &Keys,
    state: JobState,
    workers: &[String],
    limit: usize,
) -> anyhow::Result<Vec<Place>> {
    match state {
        JobState::Scheduled => scheduled(conn, keys, limit).await,
        JobState::Active => active(conn, keys, Some(limit)).await,
        JobState::Inflight => inflight(conn, keys, workers, Some(limit)).await,
        JobState::Done | JobState::Dead => {
            let key = if state == JobState::Done {
                keys.done()
            } else {
                keys.dead()
            };
            let ids = set_members(conn, &key, Some(limit)).await?;
            Ok(ids.into_iter().map(|id| Place::new(id, state)).collect())
        }
        JobState::Nowhere => Ok(Vec::new()),
    }
}

/// Every task that still stands for work on a payment (scheduled, active, in flight, dead),
/// grouped by the transaction its payload names. Done tasks are left out: a done job no
/// longer keeps its payment moving, and the done set is the one that grows large.
pub async fn open_jobs_by_transaction(
    conn: &mut impl RedisConn,
    keys: &Keys,
    workers: &[String],
) -> anyhow::Result<HashMap<Uuid, Vec<Place>>> {
    let mut all: Vec<Place> = zset_all(conn, &keys.scheduled())
        .await?
        .into_iter()
        .map(|(id, score)| scheduled_place(id, score))
        .collect();
    all.extend(active(conn, keys, None).await?);
    all.extend(inflight(conn, keys, workers, None).await?);
    let dead = set_members(conn, &keys.dead(), None).await?;
    all.extend(dead.into_iter().map(|id| Place::new(id, JobState::Dead)));

    let mut by_txn: HashMap<Uuid, Vec<Place>> = HashMap::new();
    let data = keys.data();
    for chunk in all.chunks(PAGE) {
        let ids: Vec<&str> = chunk.iter().map(|p| p.task_id.as_str()).collect();
        let payloads: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&data)
            .arg(&ids)
            .query_async(conn)
            .await
            .with_context(|| format!("reading {data}"))?;
        for (place, payload) in chunk.iter().zip(payloads) {
            if let Ok(txn) = parse_payload(payload.as_deref()) {
                by_txn.entry(txn).or_default().push(place.clone());
            }
        }
    }
    Ok(by_txn)
}

/// Task ids whose payload names `transaction_id`: one HSCAN over the data hash.
pub async fn tasks_for_transaction(
    conn: &mut impl RedisConn,
    keys: &Keys,
    transaction_id: Uuid,
) -> anyhow::Result<Vec<String>> {
    let data = keys.data();
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
            .arg(&data)
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .with_context(|| format!("reading {data}"))?;
        out.extend(
            batch
                .into_iter()
                .filter(|(_, payload)| parse_payload(Some(payload)).ok() == Some(transaction_id))
                .map(|(id, _)| id),
        );
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}
