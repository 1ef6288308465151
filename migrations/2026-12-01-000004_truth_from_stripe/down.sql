ALTER TABLE stripe_events DROP COLUMN outcome;
DROP TABLE discrepancies;
DROP INDEX transactions_cancel_pending_idx;
DROP INDEX transactions_outcome_unknown_idx;
DROP INDEX transactions_created_idx;
ALTER TABLE transactions
    DROP COLUMN outcome_unknown_since,
    DROP COLUMN lookups,
    DROP COLUMN requires_action_since,
    DROP COLUMN cancel_requested_at,
    DROP COLUMN canceled_at;
