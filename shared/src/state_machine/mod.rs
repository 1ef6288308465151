//! The state machine of a payment: its states, the moves between them, and the state sets the
//! queries need.
//!
//! ```text
//! pending ──▶ processing ──▶ complete
//!    │            │   ▲  ╲──▶ failed
//!    │            ▼   │
//!    └──────▶ requires_action ──▶ complete | failed
//! ```
//! A state only moves forward: every update is guarded in SQL by the states it may leave from,
//! so a job delivered twice or a late answer can never move a payment back.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        matches!(self, TxState::Complete | TxState::Failed)
    }

    /// The states a transaction may move to `self` from: exactly those before it.
    pub fn predecessors(self) -> &'static [&'static str] {
        match self {
            TxState::Pending => &[],
            TxState::Processing => &["pending"],
            TxState::RequiresAction => &["pending", "processing"],
            TxState::Complete | TxState::Failed => &["pending", "processing", "requires_action"],
        }
    }
}

impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for st in TxState::ALL {
            assert_eq!(TxState::parse(st.as_str()), Some(st));
        }
        assert_eq!(TxState::parse("bogus"), None);
    }

    #[test]
    fn final_states_have_no_successor() {
        for st in TxState::ALL {
            for next in TxState::ALL {
                if next.predecessors().contains(&st.as_str()) {
                    assert!(!st.is_final(), "{st} is final but may move to {next}");
                }
            }
        }
    }
}
