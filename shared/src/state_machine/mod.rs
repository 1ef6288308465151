//! The state machine of a payment: its states, the moves between them, the state sets the
//! queries need, and the one way to change a payment's state ([`change`]).
//!
//! The moves, one line per state (`docs/architecture.md` draws the same, and a test holds both
//! drawings against [`TxState::predecessors`]):
//!
//! ```text
//! pending         ──▶ processing | requires_action | complete | failed
//! processing      ──▶ requires_action | complete | failed
//! requires_action ──▶ complete | failed
//! failed          ──▶ complete
//! complete        (final)
//! ```
//! A state only moves forward. Every change is guarded in SQL by the states it may leave from,
//! so a job delivered twice or a late answer can never move a payment back. A worker that
//! re-reads a `requires_action` payment (a 3-D Secure re-check) claims it without moving it.
//! The one move out of `failed` is the correction to `complete`: Stripe's `succeeded` always
//! wins (a webhook, a read of the intent, the reconciler), and the correction is recorded as a
//! discrepancy.
//!
//! - [`change`]: every state change (claim, record, Stripe's webhook, the 3-D Secure re-check,
//!   an operator's retry), through one function that returns the previous and the new state.
//! - [`outcome`]: what Stripe decided, and the guarded update each decision makes.
//! - [`sweep`]: the sweeper's query, which must spell the unfinished states out as the partial
//!   index `transactions_unfinished_idx` does for the planner to use the index.

pub mod change;
pub mod outcome;
mod statements;
pub mod sweep;

use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

/// A payment's state, stored as its name (`transactions.state`, a CHECK constraint lists them).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, AsExpression, FromSqlRow,
)]
#[serde(rename_all = "snake_case")]
#[diesel(sql_type = Text)]
pub enum TxState {
    /// Recorded, waiting for a worker.
    Pending,
    /// A worker has called (or is calling) Stripe, or Stripe reported `processing`; the outcome
    /// is not known yet.
    Processing,
    /// The bank wants 3-D Secure; the customer's browser must act.
    RequiresAction,
    /// Stripe charged the card.
    Complete,
    /// Stripe did not charge the card, and never will for this transaction.
    Failed,
}

impl TxState {
    pub const ALL: [TxState; 5] = [
        TxState::Pending,
        TxState::Processing,
        TxState::RequiresAction,
        TxState::Complete,
        TxState::Failed,
    ];

    /// The states a worker still has work in: what the sweeper, `payctl stuck` and the claim
    /// look at. [`sweep::unfinished_sql!`] spells the same set in SQL.
    pub const UNFINISHED: [TxState; 3] = [
        TxState::Pending,
        TxState::Processing,
        TxState::RequiresAction,
    ];

    /// The states a payment ends in (`failed` can still be corrected to `complete`).
    pub const FINAL: [TxState; 2] = [TxState::Complete, TxState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Processing => "processing",
            TxState::RequiresAction => "requires_action",
            TxState::Complete => "complete",
            TxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// The states a transaction may move to `self` from: those before it, and for `complete`
    /// also `failed` (the correction, when Stripe reports the payment charged after all).
    pub fn predecessors(self) -> &'static [TxState] {
        use TxState::*;
        match self {
            Pending => &[],
            Processing => &[Pending],
            RequiresAction => &[Pending, Processing],
            Complete => &[Pending, Processing, RequiresAction, Failed],
            Failed => &[Pending, Processing, RequiresAction],
        }
    }

    /// [`Self::predecessors`] by name, as the guarded updates bind them.
    pub fn predecessor_names(self) -> Vec<&'static str> {
        self.predecessors().iter().map(|s| s.as_str()).collect()
    }
}

impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So a state compares with its name: `assert_eq!(row.state, "complete")`.
impl PartialEq<&str> for TxState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for TxState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl ToSql<Text, Pg> for TxState {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

impl FromSql<Text, Pg> for TxState {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let name = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        TxState::parse(&name).ok_or_else(|| format!("unknown transaction state `{name}`").into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for st in TxState::ALL {
            assert_eq!(TxState::parse(st.as_str()), Some(st));
        }
        assert_eq!(TxState::parse("bogus"), None);
    }

    #[test]
    fn the_only_move_out_of_a_final_state_is_the_correction_to_complete() {
        for st in TxState::ALL {
            for next in TxState::ALL {
                if next.predecessors().contains(&st) && st.is_final() {
                    assert_eq!(
                        (st, next),
                        (TxState::Failed, TxState::Complete),
                        "{st} is final but may move to {next}"
                    );
                }
            }
        }
        assert!(
            !TxState::Complete
                .predecessors()
                .contains(&TxState::Complete)
        );
    }

    #[test]
    fn the_sets_partition_the_states() {
        let unfinished: BTreeSet<_> = TxState::UNFINISHED.iter().map(|s| s.as_str()).collect();
        let finals: BTreeSet<_> = TxState::FINAL.iter().map(|s| s.as_str()).collect();
        let all: BTreeSet<_> = TxState::ALL.iter().map(|s| s.as_str()).collect();
        assert!(unfinished.is_disjoint(&finals));
        assert_eq!(&unfinished | &finals, all);
    }

    /// The moves a drawing shows: each line `<state> ──▶ <state> | <state>`, as (from, to)
    /// pairs; a state drawn `(final)` has none. Lines that do not start with a state are prose.
    fn drawn_moves(text: &str) -> BTreeSet<(String, String)> {
        let mut moves = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim_start_matches("//!").trim();
            let Some((from, to)) = line.split_once("──▶") else {
                continue;
            };
            if TxState::parse(from.trim()).is_none() {
                continue;
            }
            for next in to.split('|').map(str::trim) {
                assert!(
                    TxState::parse(next).is_some(),
                    "unknown state `{next}` in: {line}"
                );
                moves.insert((from.trim().to_owned(), next.to_owned()));
            }
        }
        moves
    }

    fn allowed_moves() -> BTreeSet<(String, String)> {
        TxState::ALL
            .iter()
            .flat_map(|to| {
                to.predecessors()
                    .iter()
                    .map(|from| (from.as_str().to_owned(), to.as_str().to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_drawings_show_exactly_the_moves_the_code_allows() {
        let here = drawn_moves(include_str!("mod.rs"));
        let docs = drawn_moves(include_str!("../../../docs/architecture.md"));
        assert_eq!(here, allowed_moves(), "the diagram in state_machine/mod.rs");
        assert_eq!(docs, allowed_moves(), "the diagram in docs/architecture.md");
    }
}
