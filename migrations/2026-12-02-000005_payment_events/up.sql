-- The merchant's own data on a payment: their order id and Stripe-style metadata.
ALTER TABLE transactions
    ADD COLUMN reference text CHECK (length(reference) BETWEEN 1 AND 255),
    ADD COLUMN metadata  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object');
CREATE INDEX transactions_reference ON transactions (reference) WHERE reference IS NOT NULL;

-- A payment as the merchant sees it (the merchant-keyed GET, every event's snapshot, every
-- webhook's `data.transaction`): the one definition, so the three never differ.
CREATE FUNCTION payment_snapshot(t transactions) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id,
        'state', t.state,
        'amount', t.amount,
        'currency', t.currency,
        'price', t.price,
        'email', t.email,
        'reference', t.reference,
        'metadata', t.metadata,
        'stripe_id', t.stripe_id,
        'error', CASE WHEN t.error_code IS NULL THEN NULL ELSE jsonb_build_object(
            'code', t.error_code,
            'decline_code', t.error_decline_code,
            'message', COALESCE(t.error_message, '')) END,
        'refunded_at', to_char(t.refunded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'disputed_at', to_char(t.disputed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'updated_at', to_char(t.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

-- The event log: one row per state change, correction, discrepancy, refund or dispute, written
-- by the same statement (or transaction) as the change itself. The audit trail, and the outbox
-- the merchant's webhooks are sent from.
CREATE TABLE payment_events (
    id              bigserial PRIMARY KEY,
    transaction_id  uuid NOT NULL REFERENCES transactions (id),
    type            text NOT NULL CHECK (type IN (
        'payment.pending', 'payment.processing', 'payment.requires_action',
        'payment.complete', 'payment.failed', 'payment.refunded', 'payment.disputed',
        'payment.discrepancy')),
    previous_state  text,
    new_state       text NOT NULL,
    -- The attempt count when it happened (what a worker attempt it was).
    attempt         integer NOT NULL,
    snapshot        jsonb NOT NULL,
    -- Who: `api`, `worker <name>`, `webhook <Stripe event id>`, `reconciler`, `customer`, `ops`.
    cause           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_transaction ON payment_events (transaction_id, id);

-- Where the merchant's webhooks go: MERCHANT_WEBHOOK_URL, written by the services at start.
CREATE TABLE webhook_endpoints (
    id          serial PRIMARY KEY,
    url         text NOT NULL UNIQUE,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, endpoint), created with the event: what drives sending. `pending` rows
-- due now are claimed by pushing `next_attempt_at` past the attempt's timeout, so a worker that
-- dies mid-delivery leaves the row to be sent again.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES payment_events (id),
    endpoint_id     integer NOT NULL REFERENCES webhook_endpoints (id),
    state           text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    last_latency_ms integer,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';

-- Every attempt: when, what came back (or why nothing did), how long it took.
CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status       integer,
    error        text,
    latency_ms   integer NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
