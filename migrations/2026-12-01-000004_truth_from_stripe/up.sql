-- The truth when Stripe is slow, inconsistent or contradicts us (docs/reliability.md).
ALTER TABLE transactions
    -- A confirm was sent and its answer lost: the card may have been charged. Until an answer
    -- from Stripe's consistent reads settles it, the payment stays `processing` and is read
    -- back with backoff; those reads are not charge attempts.
    ADD COLUMN outcome_unknown_since timestamptz,
    -- Reads of the intent while resolving, re-checking 3-D Secure or canceling: their backoff.
    ADD COLUMN lookups integer NOT NULL DEFAULT 0,
    -- When the payment began waiting for the customer's 3-D Secure.
    ADD COLUMN requires_action_since timestamptz,
    -- The payment failed while its intent could still be confirmed: the worker cancels it,
    -- so nobody can charge it later.
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN canceled_at timestamptz;

-- The worker's list of intents to cancel (the sweeper re-queues them like unfinished rows).
CREATE INDEX transactions_cancel_pending_idx ON transactions (next_attempt_at)
    WHERE cancel_requested_at IS NOT NULL AND canceled_at IS NULL;

-- The reconciler's window (and, later, the list API's order).
CREATE INDEX transactions_created_idx ON transactions (created_at);

-- Payments whose outcome is unknown, for the gauge and /ops (few, normally none).
CREATE INDEX transactions_outcome_unknown_idx ON transactions (outcome_unknown_since)
    WHERE outcome_unknown_since IS NOT NULL;

-- Every time Stripe's word contradicted ours, or looked like money taken twice.
CREATE TABLE discrepancies (
    id                      bigserial PRIMARY KEY,
    kind                    text NOT NULL CHECK (kind IN (
        -- a payment recorded failed (or unfinished) that Stripe charged, corrected to complete
        'corrected_to_complete',
        -- a succeeded intent for one of our transactions that is not the transaction's own:
        -- the mark of a double charge
        'other_succeeded_intent',
        -- a complete payment whose intent Stripe does not show succeeded
        'complete_without_charge',
        -- a succeeded intent naming a transaction we do not have
        'unknown_transaction',
        -- corrected to complete after the same customer paid again for the same thing
        'likely_duplicate')),
    transaction_id          uuid,
    stripe_id               text,
    -- For a likely duplicate: the other payment.
    related_transaction_id  uuid,
    detail                  text NOT NULL,
    -- worker, webhook, reconciler
    source                  text NOT NULL,
    found_at                timestamptz NOT NULL DEFAULT now()
);
-- One row per discrepancy however often it is seen (the reconciler passes over it again).
CREATE UNIQUE INDEX discrepancies_once ON discrepancies
    (kind, COALESCE(transaction_id::text, ''), COALESCE(stripe_id, ''));
CREATE INDEX discrepancies_found_idx ON discrepancies (found_at);

-- What became of each Stripe event: applied, or why it was ignored.
ALTER TABLE stripe_events ADD COLUMN outcome text;
