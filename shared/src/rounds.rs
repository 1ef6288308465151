//! Rounds: the asks that meet go to Postgres together, each still answered on its own. The
//! worker's group commit (`worker/src/batch.rs`: claims, intents, outcomes) and the api's group
//! insert (`api/src/inserts.rs`) both run on this.
//!
//! A caller sends its ask and waits for its own answer. Rounds run side by side, at most
//! `parallel` at once (each holds a pooled connection while it runs); whenever one may start,
//! it takes whatever asks have queued, up to `max`, and runs them as one. Under light load a
//! round holds one ask and starts at once, costing what the single statement did; under load,
//! while every place is taken, asks queue and the next rounds grow, and Postgres runs one
//! statement and one commit where it ran dozens (a statement's fixed cost was most of what a
//! payment cost Postgres: `bench/src/fixes.md`). Few places beat many: each place is one more
//! statement Postgres runs beside the others on the same cores, of fewer rows each. The worker
//! and the api run one round of each kind at a time by default (`WORKER_BATCH_PARALLEL`,
//! `API_INSERT_PARALLEL`).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// What every connection that runs rounds runs when opened: keep one plan per statement.
/// A round's statement takes its rows from array parameters (`id = ANY($1)`, `unnest($1)`),
/// and Postgres estimates those from the array when it plans for the values (3 rows in a round
/// of three) but as 10 or 100 in the plan it would keep; so its plan cache judged every plan for
/// the values cheaper, and planned the statement again on every call. `pg_stat_statements`: the
/// api's insert, 7,804 plans for 7,804 calls in a burst, 0.52 ms each; the worker's claim, 3,044
/// plans for 3,264 calls at 1,000 payments/s, more time planning than running. Rounds run only
/// these statements, by primary key, and the kept plan is the right one for every round; the
/// worker's `ANALYZE` of grown tables (`crate::db::statistics`) makes them plan it again.
pub const SESSION: &str = "SET plan_cache_mode = force_generic_plan";

/// Why an ask got no answer from its round.
pub type RoundError = String;

/// Where a round sends an ask's answer.
pub type Reply<T> = oneshot::Sender<Result<T, RoundError>>;

/// Starts the rounds of one kind of ask: `round` runs each, answering every ask it was given.
/// Each round's size is recorded in the histogram `metric`, labelled `kind`. The rounds end
/// when every sender is dropped.
pub fn start<A, F, Fut>(
    metric: &'static str,
    kind: &'static str,
    max: usize,
    parallel: usize,
    round: F,
) -> mpsc::Sender<A>
where
    A: Send + 'static,
    F: Fn(Vec<A>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = max.max(1);
    let (asks, mut rx) = mpsc::channel(max * 8);
    let places = Arc::new(Semaphore::new(parallel.max(1)));
    let round = Arc::new(round);
    tokio::spawn(async move {
        loop {
            let Ok(place) = places.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::with_capacity(max);
            if rx.recv_many(&mut batch, max).await == 0 {
                return;
            }
            metrics::histogram!(metric, "kind" => kind).record(batch.len() as f64);
            let round = round.clone();
            tokio::spawn(async move {
                round(batch).await;
                drop(place);
            });
        }
    });
    asks
}

/// Sends the ask `make` builds around its reply, and waits for the answer.
pub async fn ask<A, T>(
    to: &mpsc::Sender<A>,
    make: impl FnOnce(Reply<T>) -> A,
) -> Result<T, RoundError> {
    let (reply, answer) = oneshot::channel();
    to.send(make(reply))
        .await
        .map_err(|_| "stopping: no more rounds".to_owned())?;
    answer
        .await
        .map_err(|_| "the round ended without an answer".to_owned())?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    type Ask = (u32, Reply<u32>);

    /// Rounds whose every round records its size, then waits for the gate before answering
    /// each ask with its own number.
    fn gated(parallel: usize) -> (mpsc::Sender<Ask>, Arc<Mutex<Vec<usize>>>, Arc<Semaphore>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (s, g) = (sizes.clone(), gate.clone());
        let to = start(
            "test_round_size",
            "test",
            64,
            parallel,
            move |asks: Vec<Ask>| {
                s.lock().unwrap().push(asks.len());
                let g = g.clone();
                async move {
                    let _open = g.acquire().await.unwrap();
                    for (n, reply) in asks {
                        let _ = reply.send(Ok(n));
                    }
                }
            },
        );
        (to, sizes, gate)
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn ask_for(to: &mpsc::Sender<Ask>, n: u32) -> tokio::task::JoinHandle<Result<u32, String>> {
        let to = to.clone();
        tokio::spawn(async move { ask(&to, |reply| (n, reply)).await })
    }

    #[tokio::test]
    async fn asks_that_come_while_every_place_is_taken_go_together_in_the_next_round() {
        let (to, sizes, gate) = gated(1);
        let first = ask_for(&to, 1);
        until("the first round", || *sizes.lock().unwrap() == [1]).await;
        let rest: Vec<_> = (2..=6).map(|n| ask_for(&to, n)).collect();
        until("five asks queued", || {
            to.capacity() == to.max_capacity() - 5
        })
        .await;
        assert_eq!(
            *sizes.lock().unwrap(),
            [1],
            "no second round while the place is taken"
        );
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Ok(1));
        for (n, answer) in (2..=6).zip(rest) {
            assert_eq!(answer.await.unwrap(), Ok(n), "each ask gets its own answer");
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 5]);
    }

    #[tokio::test]
    async fn with_a_free_place_an_ask_starts_a_round_at_once() {
        let (to, sizes, gate) = gated(2);
        let first = ask_for(&to, 1);
        until("the first round", || *sizes.lock().unwrap() == [1]).await;
        let second = ask_for(&to, 2);
        until("a second round beside it", || {
            *sizes.lock().unwrap() == [1, 1]
        })
        .await;
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
    }
}
