-- Stripe webhooks: every event we processed, by Stripe's event id, so a repeated delivery
-- changes nothing; and what happened to a payment after it was charged, for ops.
CREATE TABLE stripe_events (
    -- `evt_...`: Stripe may deliver one event many times; the primary key makes the
    -- second insert a no-op, in the same database transaction as the state change.
    id              text PRIMARY KEY,
    type            text NOT NULL,
    -- The transaction the event was about, when we found one. No foreign key: this is a
    -- log of what Stripe said, kept whatever happens to the rows it names.
    transaction_id  uuid,
    -- The event's `created` (Unix seconds, Stripe's clock).
    created         bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX stripe_events_transaction_idx ON stripe_events (transaction_id);

ALTER TABLE transactions
    ADD COLUMN refunded_at timestamptz,
    ADD COLUMN disputed_at timestamptz;
