//! The SQL that must spell the states out, and the sweeper's query that needs it.
//!
//! The partial index `transactions_unfinished_idx` (migration 000001) covers the rows with
//! `state IN ('pending', 'processing', 'requires_action')`. The planner uses a partial index only
//! for a query whose predicate implies the index's, which a bound `state = ANY($1)` does not
//! (the planner cannot see into the parameter), so the sweeper writes the same literal list.
//! [`unfinished_sql!`] is that list, once; tests hold it against [`TxState::UNFINISHED`], the
//! index's definition in Postgres, and the sweeper's plan (`shared/tests/state_machine.rs`).

use std::time::Duration;

use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{BigInt, Interval, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[cfg(doc)]
use super::TxState;
use crate::db::{DbResult, interval};
use crate::prepared::{FixedSql, Prepared, no_parameter};

/// `state IN (...)` over [`TxState::UNFINISHED`], as a literal to build SQL text with.
macro_rules! unfinished_sql {
    () => {
        "state IN ('pending', 'processing', 'requires_action')"
    };
}
pub(crate) use unfinished_sql;

/// The unfinished states as [`unfinished_sql!`] writes them, for tests.
pub const UNFINISHED_SQL: &str = unfinished_sql!();

/// Finds unfinished payments (and failed ones with an intent to cancel) whose job looks lost
/// (due for longer than `after`, no live lease) and marks them due now, so that no sweeper takes them again for another `after` while the
/// job the caller enqueues for each id returned runs. Not a state change: only the schedule.
pub async fn sweep(
    conn: &mut AsyncPgConnection,
    after: Duration,
    limit: i64,
) -> DbResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let mut rows: Vec<Row> = Prepared(Sweep {
        after: interval(after),
        limit,
    })
    .load(conn)
    .await?;
    // Failed payments whose intent is still to cancel: their jobs get lost the same ways.
    let cancels: Vec<Row> = Prepared(SweepCancels {
        after: interval(after),
        limit,
    })
    .load(conn)
    .await?;
    rows.extend(cancels);
    Ok(rows.into_iter().map(|r| r.id).collect())
}

struct Sweep {
    after: PgInterval,
    limit: i64,
}

/// The text of the sweeper's query, for the plan test.
pub const SWEEP_SQL: &str = <Sweep as FixedSql>::SQL;

impl FixedSql for Sweep {
    type Id = Sweep;
    const SQL: &'static str = concat!(
        "UPDATE transactions SET next_attempt_at = now()
         WHERE id IN (
             SELECT id FROM transactions
             WHERE ",
        unfinished_sql!(),
        "
               AND next_attempt_at < now() - $1
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_attempt_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id"
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Interval, _>(&self.after),
            2 => out.push_bind_param::<BigInt, _>(&self.limit),
            _ => Err(no_parameter(n)),
        }
    }
}

struct SweepCancels {
    after: PgInterval,
    limit: i64,
}

impl FixedSql for SweepCancels {
    type Id = SweepCancels;
    // The predicate of `transactions_cancel_pending_idx` (migration 000004), spelled the same.
    const SQL: &'static str = "UPDATE transactions SET next_attempt_at = now()
         WHERE id IN (
             SELECT id FROM transactions
             WHERE cancel_requested_at IS NOT NULL AND canceled_at IS NULL
               AND next_attempt_at < now() - $1
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_attempt_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id";

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Interval, _>(&self.after),
            2 => out.push_bind_param::<BigInt, _>(&self.limit),
            _ => Err(no_parameter(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::TxState;
    use super::*;

    #[test]
    fn the_literal_list_is_the_unfinished_set() {
        let inside = UNFINISHED_SQL
            .strip_prefix("state IN (")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_default();
        let named: BTreeSet<_> = inside
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        let set: BTreeSet<_> = TxState::UNFINISHED.iter().map(|s| s.as_str()).collect();
        assert_eq!(named, set);
    }
}
