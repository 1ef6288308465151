//! The api's group insert: the payments POSTed at the same moment are inserted together
//! ([`txq::insert_many`]: one statement, one commit, one WAL flush for the round), each still
//! answered on its own, as if alone (a new row, or the one its Idempotency-Key made). The rounds
//! are `shared::rounds`, as the worker's group commit; `API_INSERT_BATCH_MAX` bounds one (1:
//! each alone). A POST is answered only after the round committed, so an accepted payment is on
//! disk exactly as before.
//!
//! A round that Postgres refused (a value one row holds) is run again payment by payment, so
//! each gets its own answer; a round whose answer was lost (a connection broken after the
//! statement was sent) may have committed, and every payment in it is an outcome unknown.

use shared::db::PgPool;
use shared::models::NewTransaction;
use shared::rounds::{self, Reply};
use shared::transactions::{self as txq, Inserted};
use tokio::sync::mpsc;

use crate::error::ApiError;

struct InsertAsk {
    new: NewTransaction,
    reply: Reply<Result<Inserted, ApiError>>,
}

/// The handle handlers insert through; cheap to clone.
#[derive(Clone)]
pub struct Inserts {
    asks: mpsc::Sender<InsertAsk>,
}

impl Inserts {
    /// Rounds of at most `max` inserts, at most `parallel` at once (each holds one of `db`'s
    /// connections while it runs). `db`'s connections run [`rounds::SESSION`] when opened.
    pub fn start(db: PgPool, max: usize, parallel: usize) -> Self {
        let asks = rounds::start(
            "payments_api_insert_batch_size",
            "insert",
            max,
            parallel,
            move |asks| round(db.clone(), asks),
        );
        Self { asks }
    }

    /// [`txq::insert`] of `new`, inserted together with the payments POSTed meanwhile.
    /// `ApiError::OutcomeUnknown`: the statement was sent and its answer lost.
    pub async fn insert(&self, new: NewTransaction) -> Result<Inserted, ApiError> {
        rounds::ask(&self.asks, |reply| InsertAsk { new, reply })
            .await
            .map_err(ApiError::Unavailable)?
    }
}

async fn round(db: PgPool, asks: Vec<InsertAsk>) {
    let mut conn = match db.get().await {
        Ok(conn) => conn,
        Err(e) => {
            let detail = format!("postgres pool: {e}");
            for a in asks {
                let _ = a.reply.send(Ok(Err(ApiError::Unavailable(detail.clone()))));
            }
            return;
        }
    };
    let (news, replies): (Vec<_>, Vec<_>) = asks.into_iter().map(|a| (a.new, a.reply)).unzip();
    let answers = if news.len() == 1 {
        vec![txq::insert(&mut conn, &news[0]).await.map_err(sent)]
    } else {
        match txq::insert_many(&mut conn, &news).await {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(e) if refused(&e) => {
                tracing::warn!(error = %e, payments = news.len(),
                    "a round of inserts was refused; each is tried alone");
                let mut each = Vec::with_capacity(news.len());
                for new in &news {
                    each.push(txq::insert(&mut conn, new).await.map_err(sent));
                }
                each
            }
            Err(e) => {
                let first = sent(e);
                let each = |_| match &first {
                    ApiError::OutcomeUnknown => ApiError::OutcomeUnknown,
                    other => ApiError::Internal(other.to_string()),
                };
                news.iter().map(|n| Err(each(n))).collect()
            }
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(Ok(answer));
    }
}

/// Postgres answered with an error: the statement did nothing.
fn refused(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as E};
    matches!(e, E::DatabaseError(kind, _) if !matches!(kind, DatabaseErrorKind::ClosedConnection))
}

/// The error of an insert that was sent: one whose answer was lost may have committed.
pub(crate) fn sent(e: diesel::result::Error) -> ApiError {
    match ApiError::from(e) {
        ApiError::Unavailable(detail) => {
            tracing::warn!(%detail, "insert sent but unanswered: outcome unknown");
            ApiError::OutcomeUnknown
        }
        other => other,
    }
}
