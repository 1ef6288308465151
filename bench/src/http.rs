//! The HTTP side of the load: one request of each kind, checked, and the two generators.
//!
//! - [`hold_backlog`]: closed loop, many POSTs in flight, pausing while the backlog of unfinished
//!   payments is at its target, so workers always have work and Postgres is not flooded with
//!   inserts nobody will process within the run.
//! - [`open_loop`]: requests sent on a fixed schedule whatever the responses do, latency taken
//!   from the *scheduled* send time, so a server that falls behind shows its queueing instead of
//!   slowing the generator down (no coordinated omission).
//!
//! Every response is checked; anything else is counted as an error, by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

/// Errors of one run, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    /// Statuses other than the one expected (202 for POST, 200 for GET), by code.
    pub status: BTreeMap<u16, u64>,
    /// Connection refused, reset, or the like.
    pub transport: u64,
    /// No answer within the client timeout.
    pub timeout: u64,
    /// The expected status, but not the expected body.
    pub body: u64,
    /// Not sent: the generator already had [`MAX_IN_FLIGHT`] requests waiting.
    pub not_sent: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.status.values().sum::<u64>()
            + self.transport
            + self.timeout
            + self.body
            + self.not_sent
    }

    fn merge(&mut self, other: &Errors) {
        for (code, n) in &other.status {
            *self.status.entry(*code).or_default() += n;
        }
        self.transport += other.transport;
        self.timeout += other.timeout;
        self.body += other.body;
        self.not_sent += other.not_sent;
    }

    fn add(&mut self, e: RequestError) {
        match e {
            RequestError::Status(code) => *self.status.entry(code).or_default() += 1,
            RequestError::Transport => self.transport += 1,
            RequestError::Timeout => self.timeout += 1,
            RequestError::Body => self.body += 1,
        }
    }
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total() == 0 {
            return f.write_str("0");
        }
        let statuses = self.status.iter().map(|(code, n)| format!("{n}× {code}"));
        let parts: Vec<String> = statuses
            .chain(
                [
                    ("transport", self.transport),
                    ("timeout", self.timeout),
                    ("body", self.body),
                    ("not sent", self.not_sent),
                ]
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}")),
            )
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[derive(Clone, Copy, Debug)]
enum RequestError {
    Status(u16),
    Transport,
    Timeout,
    Body,
}

/// Requests an open-loop run lets wait at once before it stops sending (and counts the rest as
/// errors): far beyond any rate this machine serves, it only keeps a collapsed server from
/// exhausting file descriptors.
pub const MAX_IN_FLIGHT: u64 = 4_000;

/// A client whose pool can hold a connection per request in flight.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT as usize)
        .tcp_nodelay(true)
        .build()?)
}

fn classify(e: &reqwest::Error) -> RequestError {
    if e.is_timeout() {
        RequestError::Timeout
    } else {
        RequestError::Transport
    }
}

/// `POST /transactions` with a fresh `Idempotency-Key`; the new transaction's id.
async fn post(client: &reqwest::Client, api_url: &str, key: &str) -> Result<Uuid, RequestError> {
    post_card(client, api_url, key, "pm_card_visa").await
}

/// [`post`] paying with the test card `card`; `None` if it was not accepted.
pub async fn post_with(
    client: &reqwest::Client,
    api_url: &str,
    key: &str,
    card: &str,
) -> Option<Uuid> {
    post_card(client, api_url, key, card).await.ok()
}

async fn post_card(
    client: &reqwest::Client,
    api_url: &str,
    key: &str,
    card: &str,
) -> Result<Uuid, RequestError> {
    let body = json!({"price": "basic", "email": "bench@example.com", "payment_method": card});
    let res = client
        .post(format!("{api_url}/transactions"))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    if res.status().as_u16() != 202 {
        return Err(RequestError::Status(res.status().as_u16()));
    }
    let v: serde_json::Value = res.json().await.map_err(|e| match classify(&e) {
        RequestError::Timeout => RequestError::Timeout,
        _ => RequestError::Body,
    })?;
    match (
        v["id"].as_str().and_then(|s| s.parse().ok()),
        v["state"].as_str(),
    ) {
        (Some(id), Some("pending")) => Ok(id),
        _ => Err(RequestError::Body),
    }
}

/// `GET /transactions/{id}`: 200 and the same id back.
async fn get(client: &reqwest::Client, api_url: &str, id: Uuid) -> Result<Uuid, RequestError> {
    let res = client
        .get(format!("{api_url}/transactions/{id}"))
        .send()
        .await
        .map_err(|e| classify(&e))?;
    if res.status().as_u16() != 200 {
        return Err(RequestError::Status(res.status().as_u16()));
    }
    let v: serde_json::Value = res.json().await.map_err(|_| RequestError::Body)?;
    let id_back: Option<Uuid> = v["id"].as_str().and_then(|s| s.parse().ok());
    if id_back == Some(id) && v["state"].is_string() {
        Ok(id)
    } else {
        Err(RequestError::Body)
    }
}

/// What the backlog generator did.
#[derive(Debug, Default)]
pub struct BacklogLoad {
    pub accepted: u64,
    pub errors: Errors,
}

/// Shared with the monitor that counts unfinished payments in Postgres.
#[derive(Debug, Default)]
pub struct BacklogGate {
    /// Unfinished payments at the last count...
    pub unfinished: AtomicI64,
    /// ...and how many this generator had accepted at that moment.
    pub accepted_at_count: AtomicI64,
    pub accepted: AtomicI64,
    pub stop: AtomicBool,
}

impl BacklogGate {
    /// The backlog now: the last count plus what was accepted since.
    pub fn estimate(&self) -> i64 {
        self.unfinished.load(Ordering::Relaxed) + self.accepted.load(Ordering::Relaxed)
            - self.accepted_at_count.load(Ordering::Relaxed)
    }
}

/// Keeps up to `in_flight` POSTs going while the backlog is below `target`, until told to stop.
pub async fn hold_backlog(
    client: reqwest::Client,
    api_url: String,
    in_flight: usize,
    target: i64,
    gate: Arc<BacklogGate>,
) -> BacklogLoad {
    let run = Uuid::new_v4().simple().to_string();
    let errors = Arc::new(Mutex::new(Errors::default()));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (client, api_url, run, gate, errors, seq) = (
            client.clone(),
            api_url.clone(),
            run.clone(),
            gate.clone(),
            errors.clone(),
            seq.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !gate.stop.load(Ordering::Relaxed) {
                if gate.estimate() >= target {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let key = format!("bench-{run}-{}", seq.fetch_add(1, Ordering::Relaxed));
                match post(&client, &api_url, &key).await {
                    Ok(_) => {
                        gate.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut errs) = errors.lock() {
                            errs.add(e);
                        }
                        // Do not spin on a server that refuses everything.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    BacklogLoad {
        accepted: gate.accepted.load(Ordering::Relaxed) as u64,
        errors,
    }
}

/// Which request an open-loop run sends.
#[derive(Clone)]
pub enum Request {
    Post,
    /// GETs cycle through these ids.
    Get(Arc<Vec<Uuid>>),
}

/// The result of one open-loop run.
#[derive(Debug, Default)]
pub struct OpenLoopRun {
    pub offered: u64,
    /// Latency from the scheduled send time to the full, checked response.
    pub latencies: Vec<Duration>,
    pub errors: Errors,
    /// Ids of the transactions the POSTs created.
    pub created: Vec<Uuid>,
    /// From the first scheduled send to the last response.
    pub elapsed: Duration,
}

#[derive(Default)]
struct Recorder {
    latencies: Vec<Duration>,
    errors: Errors,
    created: Vec<Uuid>,
}

/// Sends `rate` requests per second for `run_for`, on schedule.
pub async fn open_loop(
    client: &reqwest::Client,
    api_url: &str,
    request: Request,
    rate: f64,
    run_for: Duration,
) -> OpenLoopRun {
    let total = (rate * run_for.as_secs_f64()).round() as u64;
    let run = Uuid::new_v4().simple().to_string();
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(total as usize);
    let mut not_sent = 0;
    let mut i = 0u64;
    while i < total {
        let now = Instant::now();
        // Everything due by now goes out at once; then sleep to the next slot. A generator
        // that wakes late still stamps each request with its own scheduled time.
        while i < total {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if at > now {
                break;
            }
            i += 1;
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                not_sent += 1;
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, api_url, request, rec, in_flight, key) = (
                client.clone(),
                api_url.to_owned(),
                request.clone(),
                rec.clone(),
                in_flight.clone(),
                format!("bench-{run}-{i}"),
            );
            handles.push(tokio::spawn(async move {
                let result = match &request {
                    Request::Post => post(&client, &api_url, &key).await,
                    Request::Get(ids) => match ids.get(i as usize % ids.len().max(1)) {
                        Some(&id) => get(&client, &api_url, id).await,
                        None => Err(RequestError::Body),
                    },
                };
                let latency = at.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                if let Ok(mut r) = rec.lock() {
                    match result {
                        Ok(id) => {
                            r.latencies.push(latency);
                            if matches!(request, Request::Post) {
                                r.created.push(id);
                            }
                        }
                        Err(e) => r.errors.add(e),
                    }
                }
            }));
        }
        if i < total {
            let next = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = start.elapsed();
    let mut rec = std::mem::take(&mut *rec.lock().unwrap_or_else(|e| e.into_inner()));
    rec.errors.not_sent = not_sent;
    OpenLoopRun {
        offered: total,
        latencies: rec.latencies,
        errors: rec.errors,
        created: rec.created,
        elapsed,
    }
}

/// POSTs for `run_for` as fast as `connections` loops go (closed loop: each sends its next
/// request when the last one answered), as a burst of customers would.
pub async fn closed_loop(
    client: &reqwest::Client,
    api_url: &str,
    connections: usize,
    run_for: Duration,
) -> OpenLoopRun {
    let run = Uuid::new_v4().simple().to_string();
    let start = Instant::now();
    let until = start + run_for;
    let loops: Vec<_> = (0..connections)
        .map(|c| {
            let (client, api_url, run) = (client.clone(), api_url.to_owned(), run.clone());
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let sent = Instant::now();
                    match post(&client, &api_url, &format!("burst-{run}-{c}-{n}")).await {
                        Ok(id) => {
                            rec.latencies.push(sent.elapsed());
                            rec.created.push(id);
                        }
                        Err(e) => rec.errors.add(e),
                    }
                }
                (n, rec)
            })
        })
        .collect();
    let mut out = OpenLoopRun::default();
    for h in loops {
        let Ok((n, mut rec)) = h.await else { continue };
        out.offered += n;
        out.latencies.append(&mut rec.latencies);
        out.created.append(&mut rec.created);
        out.errors.merge(&rec.errors);
    }
    out.elapsed = start.elapsed();
    out
}
