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
//! payment cost Postgres: `bench/src/fixes.md`).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

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
