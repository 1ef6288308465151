//! Group commit: the Postgres writes that the worker's jobs make at the same moment go to
//! Postgres together, each still decided per payment.
//!
//! A job asks, and waits for its own answer. Rounds run side by side, a few at a time (half the
//! pool each for claims and for writes); whenever one may start, it takes whatever asks have
//! queued (up to `WORKER_BATCH_MAX`, 128) and sends them at once:
//!
//! - **claims** as one statement ([`change::claim_many`]): one round trip and one commit for
//!   the whole batch apalis handed over;
//! - **writes** (an intent's id stored, an outcome recorded, a canceled intent noted) as one
//!   transaction of their own statements, in id order: one commit (one WAL flush) for all.
//!
//! Under light load a round holds one ask, starts at once and costs what the single statement
//! did; under load, while every round's place is taken, asks queue and the next rounds grow,
//! and Postgres does one commit where it did dozens. Nothing is acknowledged
//! before its commit: a job learns its answer only after the round committed, so a crash
//! loses no more than it did write by write (the guarantees of docs/reliability.md hold as
//! they are: each row's statement is the one it was). A round that fails as a whole (a lost
//! connection, one statement's error aborting the transaction) is run again ask by ask, so
//! one payment's trouble is never its neighbours'.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shared::db::PgPool;
use shared::models::Transaction;
use shared::state_machine::change::{self, Change, NotClaimed, Transition};
use shared::state_machine::outcome::Outcome;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Why an ask got no answer from Postgres.
pub type BatchError = String;

type Reply<T> = oneshot::Sender<Result<T, BatchError>>;

struct ClaimAsk {
    id: Uuid,
    reply: Reply<Result<Transaction, NotClaimed>>,
}

/// A write a job holding the lease makes.
#[derive(Clone, Debug)]
pub enum Write {
    IntentCreated {
        stripe_id: String,
        client_secret: Option<String>,
    },
    Record(Outcome),
    Canceled,
}

struct WriteAsk {
    id: Uuid,
    write: Write,
    reply: Reply<Option<Change>>,
}

/// The handle jobs ask through; cheap to clone. The rounds run as long as one handle lives.
#[derive(Clone)]
pub struct Batches {
    claims: mpsc::Sender<ClaimAsk>,
    writes: mpsc::Sender<WriteAsk>,
}

impl Batches {
    /// Starts the rounds of claims and of writes for `owner` with `lease`: at most `max` asks
    /// a round (1: each alone), at most `parallel` rounds of each kind at once (each holds a
    /// pooled connection while it runs).
    pub fn start(db: PgPool, owner: String, lease: Duration, max: usize, parallel: usize) -> Self {
        let rounds = Rounds {
            db,
            owner: Arc::from(owner),
            lease,
            max: max.max(1),
            parallel: parallel.max(1),
        };
        let (claims, claim_rx) = mpsc::channel(rounds.max * 8);
        let (writes, write_rx) = mpsc::channel(rounds.max * 8);
        tokio::spawn(rounds.clone().claims(claim_rx));
        tokio::spawn(rounds.writes(write_rx));
        Self { claims, writes }
    }

    /// [`change::claim`] of `id`, claimed together with whatever other jobs claim meanwhile.
    pub async fn claim(&self, id: Uuid) -> Result<Result<Transaction, NotClaimed>, BatchError> {
        let (reply, answer) = oneshot::channel();
        ask(&self.claims, ClaimAsk { id, reply }, answer).await
    }

    /// [`change::change`] of `id` by this worker, committed together with the other writes
    /// asked meanwhile.
    pub async fn write(&self, id: Uuid, write: Write) -> Result<Option<Change>, BatchError> {
        let (reply, answer) = oneshot::channel();
        ask(&self.writes, WriteAsk { id, write, reply }, answer).await
    }
}

async fn ask<A, T>(
    to: &mpsc::Sender<A>,
    a: A,
    answer: oneshot::Receiver<Result<T, BatchError>>,
) -> Result<T, BatchError> {
    to.send(a)
        .await
        .map_err(|_| "the worker is stopping".to_owned())?;
    answer
        .await
        .map_err(|_| "the round ended without an answer".to_owned())?
}

/// What every round needs.
#[derive(Clone)]
struct Rounds {
    db: PgPool,
    owner: Arc<str>,
    lease: Duration,
    max: usize,
    parallel: usize,
}

impl Rounds {
    /// Takes the asks of a round whenever one of `parallel` places is free, and runs it.
    async fn run<A: Send + 'static, F, Fut>(
        &self,
        mut rx: mpsc::Receiver<A>,
        kind: &'static str,
        round: F,
    ) where
        F: Fn(Rounds, Vec<A>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let places = Arc::new(Semaphore::new(self.parallel));
        let round = Arc::new(round);
        loop {
            let Ok(place) = places.clone().acquire_owned().await else {
                return;
            };
            let mut asks = Vec::with_capacity(self.max);
            if rx.recv_many(&mut asks, self.max).await == 0 {
                return;
            }
            metrics::histogram!("payments_worker_batch_size", "kind" => kind)
                .record(asks.len() as f64);
            let (me, round) = (self.clone(), round.clone());
            tokio::spawn(async move {
                round(me, asks).await;
                drop(place);
            });
        }
    }

    async fn claims(self, rx: mpsc::Receiver<ClaimAsk>) {
        self.run(
            rx,
            "claim",
            |me, asks| async move { me.claim_round(asks).await },
        )
        .await;
    }

    async fn writes(self, rx: mpsc::Receiver<WriteAsk>) {
        self.run(
            rx,
            "write",
            |me, asks| async move { me.write_round(asks).await },
        )
        .await;
    }

    async fn claim_round(&self, round: Vec<ClaimAsk>) {
        // Two deliveries of one job in a round: the first is claimed with the others, the
        // second finds it leased, as it would have a moment later.
        let mut seen = HashSet::with_capacity(round.len());
        let (first, repeats): (Vec<_>, Vec<_>) = round.into_iter().partition(|a| seen.insert(a.id));
        let ids: Vec<Uuid> = first.iter().map(|a| a.id).collect();
        let answers = async {
            let mut conn = self.db.get().await.map_err(|e| format!("postgres: {e}"))?;
            change::claim_many(&mut conn, &ids, &self.owner, self.lease)
                .await
                .map_err(|e| format!("postgres: {e}"))
        }
        .await;
        match answers {
            Ok(answers) => {
                for (a, answer) in first.into_iter().zip(answers) {
                    let _ = a.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                for a in first {
                    let _ = a.reply.send(Err(e.clone()));
                }
            }
        }
        for a in repeats {
            let _ = a.reply.send(Ok(Err(NotClaimed::Leased {
                owner: Some(self.owner.to_string()),
                until: chrono::Utc::now()
                    + chrono::TimeDelta::from_std(self.lease).unwrap_or_default(),
            })));
        }
    }

    async fn write_round(&self, mut round: Vec<WriteAsk>) {
        // The order every statement locks rows in (see `statements.rs`).
        round.sort_by_key(|a| a.id);
        if round.len() > 1
            && let Ok(changes) = write_together(&self.db, &self.owner, &round).await
        {
            for (a, c) in round.into_iter().zip(changes) {
                let _ = a.reply.send(Ok(c));
            }
            return;
        }
        // Alone; or again, each alone, after the round failed as a whole.
        for a in round {
            let answer = write_alone(&self.db, &self.owner, a.id, &a.write).await;
            let _ = a.reply.send(answer);
        }
    }
}

async fn write_together(
    db: &PgPool,
    owner: &str,
    round: &[WriteAsk],
) -> Result<Vec<Option<Change>>, BatchError> {
    let mut conn = db.get().await.map_err(|e| format!("postgres: {e}"))?;
    let changes: Vec<_> = round
        .iter()
        .map(|a| (a.id, transition(owner, &a.write)))
        .collect();
    change::change_all(&mut conn, &changes, needs_disk(round.iter().map(|a| &a.write)))
        .await
        .map_err(|e| {
        tracing::warn!(error = %e, asks = round.len(), "a round of writes failed; each is tried alone");
        format!("postgres: {e}")
    })
}

async fn write_alone(
    db: &PgPool,
    owner: &str,
    id: Uuid,
    write: &Write,
) -> Result<Option<Change>, BatchError> {
    let mut conn = db.get().await.map_err(|e| format!("postgres: {e}"))?;
    let one = [(id, transition(owner, write))];
    change::change_all(&mut conn, &one, needs_disk([write]))
        .await
        .map(|mut c| c.pop().flatten())
        .map_err(|e| format!("postgres: {e}"))
}

/// Whether a commit must wait for its WAL flush even when the worker's others do not
/// (`WORKER_SYNCHRONOUS_COMMIT=off`): an intent's id, which must be on disk before the intent is
/// confirmed (money moves only on a confirm of an intent whose id the row holds).
fn needs_disk<'a>(writes: impl IntoIterator<Item = &'a Write>) -> bool {
    writes
        .into_iter()
        .any(|w| matches!(w, Write::IntentCreated { .. }))
}

fn transition<'a>(owner: &'a str, write: &'a Write) -> Transition<'a> {
    match write {
        Write::IntentCreated {
            stripe_id,
            client_secret,
        } => Transition::IntentCreated {
            owner,
            stripe_id,
            client_secret: client_secret.as_deref(),
        },
        Write::Record(outcome) => Transition::Record { owner, outcome },
        Write::Canceled => Transition::Canceled { owner },
    }
}
