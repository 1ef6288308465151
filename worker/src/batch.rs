//! Group commit: the Postgres writes that the worker's jobs make at the same moment go to
//! Postgres together, each still decided per payment.
//!
//! A job asks and waits for its own answer; rounds (`shared::rounds`) take whatever asks have
//! queued, up to `WORKER_BATCH_MAX` (128), and send them at once:
//!
//! - **claims** as one statement ([`change::claim_many`]): one round trip and one commit for
//!   the whole batch apalis handed over;
//! - **writes** by kind: the intents' ids stored as one statement
//!   ([`change::intents_created`], its commit waiting for its WAL flush), the outcomes recorded
//!   as another ([`change::record_many`]); a canceled intent, rare, is noted alone. One
//!   statement, one round trip and one commit for a kind's whole round, where each write alone
//!   cost Postgres a statement's fixed cost, most of what a payment cost it
//!   (`bench/src/fixes.md`).
//!
//! Nothing is acknowledged before its commit: a job learns its answer only after the round
//! committed, so a crash loses no more than it did write by write (the guarantees of docs/reliability.md hold as
//! they are: each row is written by the same guarded update, with its own values, and one
//! write alone is that statement over one row). A round that fails as a whole (a lost
//! connection, one row's value refused) is run again ask by ask, so one payment's trouble is
//! never its neighbours'.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shared::db::PgPool;
use shared::models::Transaction;
use shared::rounds::{self, Reply};
use shared::state_machine::change::{self, Change, NotClaimed, Transition};
use shared::state_machine::outcome::Outcome;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Why an ask got no answer from Postgres.
pub type BatchError = rounds::RoundError;

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

const METRIC: &str = "payments_worker_batch_size";

impl Batches {
    /// Starts the rounds of claims and of writes for `owner` with `lease`: at most `max` asks
    /// a round (1: each alone), at most `parallel` rounds of each kind at once (each holds a
    /// pooled connection while it runs).
    pub fn start(db: PgPool, owner: String, lease: Duration, max: usize, parallel: usize) -> Self {
        let me = Rounds {
            db,
            owner: Arc::from(owner),
            lease,
        };
        let claims = {
            let me = me.clone();
            rounds::start(METRIC, "claim", max, parallel, move |asks| {
                let me = me.clone();
                async move { me.claim_round(asks).await }
            })
        };
        let writes = rounds::start(METRIC, "write", max, parallel, move |asks| {
            let me = me.clone();
            async move { me.write_round(asks).await }
        });
        Self { claims, writes }
    }

    /// [`change::claim`] of `id`, claimed together with whatever other jobs claim meanwhile.
    pub async fn claim(&self, id: Uuid) -> Result<Result<Transaction, NotClaimed>, BatchError> {
        rounds::ask(&self.claims, |reply| ClaimAsk { id, reply }).await
    }

    /// [`change::change`] of `id` by this worker, committed together with the other writes
    /// asked meanwhile.
    pub async fn write(&self, id: Uuid, write: Write) -> Result<Option<Change>, BatchError> {
        rounds::ask(&self.writes, |reply| WriteAsk { id, write, reply }).await
    }
}

/// What every round needs.
#[derive(Clone)]
struct Rounds {
    db: PgPool,
    owner: Arc<str>,
    lease: Duration,
}

impl Rounds {
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

    async fn write_round(&self, round: Vec<WriteAsk>) {
        // A payment has one write in flight (its job waits for each answer); should a round
        // hold two, the second goes alone, after the first.
        let mut seen = HashSet::with_capacity(round.len());
        let (first, repeats): (Vec<_>, Vec<_>) = round.into_iter().partition(|a| seen.insert(a.id));
        let (intents, rest): (Vec<_>, Vec<_>) = first
            .into_iter()
            .partition(|a| matches!(a.write, Write::IntentCreated { .. }));
        let (records, alone): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|a| matches!(a.write, Write::Record(_)));
        // Intents first: their jobs confirm next. Each kind is one statement of its own, so
        // each locks its rows in one pass, in id order (see `statements.rs`).
        for kind in [intents, records] {
            if kind.is_empty() {
                continue;
            }
            let kind = match write_together(&self.db, &self.owner, &kind).await {
                Ok(changes) => {
                    for (a, c) in kind.into_iter().zip(changes) {
                        let _ = a.reply.send(Ok(c));
                    }
                    continue;
                }
                Err(_) => kind,
            };
            self.each_alone(kind).await;
        }
        self.each_alone(alone).await;
        self.each_alone(repeats).await;
    }

    /// Alone; or again, each alone, after its round failed as a whole.
    async fn each_alone(&self, asks: Vec<WriteAsk>) {
        for a in asks {
            let answer = write_alone(&self.db, &self.owner, a.id, &a.write).await;
            let _ = a.reply.send(answer);
        }
    }
}

/// The writes of one kind (intents or outcomes), for different payments, as one statement (one
/// write alone is that statement over one row).
async fn write_together(
    db: &PgPool,
    owner: &str,
    round: &[WriteAsk],
) -> Result<Vec<Option<Change>>, BatchError> {
    let mut conn = db.get().await.map_err(|e| format!("postgres: {e}"))?;
    let intents: Vec<_> = round
        .iter()
        .filter_map(|a| match &a.write {
            Write::IntentCreated {
                stripe_id,
                client_secret,
            } => Some((a.id, stripe_id.as_str(), client_secret.as_deref())),
            _ => None,
        })
        .collect();
    let outcomes: Vec<_> = round
        .iter()
        .filter_map(|a| match &a.write {
            Write::Record(outcome) => Some((a.id, outcome)),
            _ => None,
        })
        .collect();
    let written = if intents.len() == round.len() {
        change::intents_created(&mut conn, owner, &intents).await
    } else if outcomes.len() == round.len() {
        change::record_many(&mut conn, owner, &outcomes).await
    } else {
        return Err("a round of writes mixes kinds".to_owned());
    };
    written.map_err(|e| {
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
