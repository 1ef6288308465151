//! What a task in the charge queue looks like to an operator: where it is, its payload and the
//! meta hash apalis keeps for it. Reads here are per task id and pipelined; the iteration over
//! whole keys lives in [`crate::queue::scan`].

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::queue::keys::Keys;
use crate::queue::{RedisConn, StripeCharge};

/// Task ids per pipelined round trip: big enough to be quick, small enough not to hold Redis.
const BATCH: usize = 200;

/// Where a task id sits in the queue's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// In `{q}:scheduled`, due at its score.
    Scheduled,
    /// In `{q}:active`, due and waiting for a worker.
    Active,
    /// In a worker's `{q}:inflight:{worker}` set.
    Inflight,
    Done,
    Dead,
    /// Its data or meta exist but it is in none of the sets (or was just moving).
    Nowhere,
}

impl JobState {
    /// The places a task can be listed from (every one but `Nowhere`).
    pub const LISTABLE: [JobState; 5] = [
        JobState::Scheduled,
        JobState::Active,
        JobState::Inflight,
        JobState::Done,
        JobState::Dead,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::LISTABLE.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Active => "active",
            JobState::Inflight => "inflight",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Nowhere => "nowhere",
        }
    }
}

/// A task id and where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub task_id: String,
    pub state: JobState,
    /// When a scheduled task becomes due (unix seconds, apalis' score unit).
    pub run_at: Option<i64>,
    /// The worker holding an in-flight task.
    pub worker: Option<String>,
}

impl Place {
    pub fn new(task_id: impl Into<String>, state: JobState) -> Self {
        Self {
            task_id: task_id.into(),
            state,
            run_at: None,
            worker: None,
        }
    }
}

/// One task, as `list`, `dead` and `show` print it.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub task_id: String,
    pub state: JobState,
    pub run_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub transaction_id: Option<Uuid>,
    /// Why the payload gave no transaction id (missing, or not a `StripeCharge`).
    pub payload_error: Option<String>,
    pub status: Option<String>,
    pub attempts: Option<u32>,
    pub max_attempts: Option<u32>,
    pub locked_by: Option<String>,
    pub locked_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    /// The last run's result as apalis stored it: `{"Ok": ..}` or `{"Err": "message"}`.
    pub result: Option<serde_json::Value>,
    /// The message of an `Err` result.
    pub error: Option<String>,
    /// The transaction's state in Postgres, filled in by the command.
    pub transaction_state: Option<String>,
}

pub fn timestamp(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

fn meta_time(meta: &HashMap<String, String>, field: &str) -> Option<DateTime<Utc>> {
    meta.get(field)?.parse().ok().and_then(timestamp)
}

/// The transaction id a payload names, or why it names none.
pub fn parse_payload(raw: Option<&[u8]>) -> Result<Uuid, String> {
    let bytes = raw.ok_or("no payload in the data hash")?;
    serde_json::from_slice::<StripeCharge>(bytes)
        .map(|job| job.transaction_id)
        .map_err(|e| {
            let text: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
            format!("payload is not a StripeCharge job ({e}): {text}")
        })
}

/// apalis stores `Result<T, String>` as JSON; a non-JSON value is kept as a string.
pub fn parse_result(raw: Option<&String>) -> (Option<serde_json::Value>, Option<String>) {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return (None, None);
    };
    let value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.clone()));
    let error = value
        .get("Err")
        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned));
    (Some(value), error)
}

impl Job {
    pub fn build(place: Place, payload: Option<&[u8]>, meta: &HashMap<String, String>) -> Self {
        let (transaction_id, payload_error) = match parse_payload(payload) {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e)),
        };
        let (result, error) = parse_result(meta.get("result"));
        Job {
            task_id: place.task_id,
            state: place.state,
            run_at: place.run_at.and_then(timestamp),
            worker: place.worker,
            transaction_id,
            payload_error,
            status: meta.get("status").cloned(),
            attempts: meta.get("attempts").and_then(|a| a.parse().ok()),
            max_attempts: meta.get("max_attempts").and_then(|a| a.parse().ok()),
            locked_by: meta.get("locked_by").filter(|w| !w.is_empty()).cloned(),
            locked_at: meta_time(meta, "locked_at"),
            done_at: meta_time(meta, "done_at"),
            result,
            error,
            transaction_state: None,
        }
    }

    /// The last outcome in a few words: the error, `ok`, or nothing yet.
    pub fn outcome(&self) -> String {
        match (&self.error, &self.result, &self.payload_error) {
            (_, _, Some(p)) => p.clone(),
            (Some(e), _, _) => e.clone(),
            (None, Some(_), _) => "ok".into(),
            (None, None, None) => String::new(),
        }
    }
}

/// Reads payload and meta of every task in `places`, in pipelined batches.
pub async fn load_jobs(
    conn: &mut impl RedisConn,
    keys: &Keys,
    places: Vec<Place>,
) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::with_capacity(places.len());
    let data = keys.data();
    for chunk in places.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for p in chunk {
            pipe.hget(&data, &p.task_id).hgetall(keys.meta(&p.task_id));
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.context("reading tasks")?;
        let mut replies = replies.into_iter();
        for p in chunk {
            let payload: Option<Vec<u8>> = next_reply(&mut replies)?;
            let meta: HashMap<String, String> = next_reply(&mut replies)?;
            jobs.push(Job::build(p.clone(), payload.as_deref(), &meta));
        }
    }
    Ok(jobs)
}

fn next_reply<T: redis::FromRedisValue>(
    replies: &mut impl Iterator<Item = redis::Value>,
) -> anyhow::Result<T> {
    let value = replies
        .next()
        .context("Redis answered fewer replies than asked")?;
    redis::from_redis_value(value).context("unexpected reply from Redis")
}

/// Finds where one task id is. Cheap for one id: a pipeline of membership checks.
pub async fn locate(
    conn: &mut impl RedisConn,
    keys: &Keys,
    task_id: &str,
    workers: &[String],
) -> anyhow::Result<Option<Place>> {
    let mut pipe = redis::pipe();
    pipe.zscore(keys.scheduled(), task_id)
        .cmd("LPOS")
        .arg(keys.active())
        .arg(task_id)
        .sismember(keys.done(), task_id)
        .sismember(keys.dead(), task_id)
        .hexists(keys.data(), task_id)
        .exists(keys.meta(task_id));
    for w in workers {
        pipe.sismember(keys.inflight(w), task_id);
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await.context("locating the task")?;
    let mut r = replies.into_iter();
    let score: Option<f64> = next_reply(&mut r)?;
    let in_active: Option<i64> = next_reply(&mut r)?;
    let (done, dead, has_data, has_meta): (bool, bool, bool, bool) = (
        next_reply(&mut r)?,
        next_reply(&mut r)?,
        next_reply(&mut r)?,
        next_reply(&mut r)?,
    );
    let mut place = Place::new(task_id, JobState::Nowhere);
    for w in workers {
        if next_reply::<bool>(&mut r)? {
            place.state = JobState::Inflight;
            place.worker = Some(w.clone());
        }
    }
    if let Some(score) = score {
        place.state = JobState::Scheduled;
        place.run_at = Some(score as i64);
    } else if in_active.is_some() {
        place.state = JobState::Active;
    } else if dead {
        place.state = JobState::Dead;
    } else if done {
        place.state = JobState::Done;
    }
    let known = has_data || has_meta || place.state != JobState::Nowhere;
    Ok(known.then_some(place))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_transaction_or_say_why_not() {
        let id = Uuid::new_v4();
        let json = format!(r#"{{"transaction_id":"{id}"}}"#);
        assert_eq!(parse_payload(Some(json.as_bytes())), Ok(id));
        assert!(parse_payload(None).unwrap_err().contains("no payload"));
        assert!(
            parse_payload(Some(b"{}"))
                .unwrap_err()
                .contains("not a StripeCharge")
        );
    }

    #[test]
    fn results_keep_their_error_message() {
        let (v, e) = parse_result(Some(&r#"{"Err":"postgres: timeout"}"#.to_owned()));
        assert_eq!(e.as_deref(), Some("postgres: timeout"));
        assert!(v.is_some());
        let (v, e) = parse_result(Some(&r#"{"Ok":null}"#.to_owned()));
        assert_eq!((v.is_some(), e), (true, None));
        assert_eq!(parse_result(None), (None, None));
    }

    #[test]
    fn a_job_reads_its_meta() {
        let meta: HashMap<String, String> = [
            ("status", "Killed"),
            ("attempts", "3"),
            ("max_attempts", "25"),
            ("done_at", "1764420000"),
            ("result", r#"{"Err":"boom"}"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let job = Job::build(Place::new("01J", JobState::Dead), None, &meta);
        assert_eq!(job.attempts, Some(3));
        assert_eq!(job.status.as_deref(), Some("Killed"));
        assert_eq!(job.done_at.map(|t| t.timestamp()), Some(1_764_420_000));
        assert_eq!(job.outcome(), "no payload in the data hash");
        assert_eq!(job.error.as_deref(), Some("boom"));
    }
}
