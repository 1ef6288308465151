-- A checkout session: one purchase the merchant sends a customer to pay for, with the page's
-- way back. Several attempts may be made in it (a decline, then another card) but a new one
-- starts only while none is live or complete: `shared::checkout_sessions::start_attempt` locks
-- the session row and looks, so two tabs cannot both start one. (Not a unique index: a failed
-- attempt that Stripe in fact charged must still be corrected to `complete`.)
CREATE TABLE checkout_sessions (
    id                  uuid PRIMARY KEY,
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    price               text,
    email               text,
    reference           text CHECK (length(reference) BETWEEN 1 AND 255),
    metadata            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    success_url         text NOT NULL,
    cancel_url          text,
    expires_at          timestamptz NOT NULL,
    request_key         text UNIQUE,
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE transactions ADD COLUMN session_id uuid REFERENCES checkout_sessions (id);
CREATE INDEX transactions_session ON transactions (session_id) WHERE session_id IS NOT NULL;

-- The list API: newest first, paged by (created_at, id); by customer. (`reference` has its
-- index since the event-log migration; a state filter walks the newest-first index.)
DROP INDEX transactions_created_idx;
CREATE INDEX transactions_created_id_idx ON transactions (created_at, id);
CREATE INDEX transactions_email_created_idx ON transactions (email, created_at, id);

-- The merchant's view gains the session a payment was made in.
CREATE OR REPLACE FUNCTION payment_snapshot(t transactions) RETURNS jsonb
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
        'session_id', t.session_id,
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

-- Live status: every event tells the listening api processes which payment changed, when its
-- transaction commits (NOTIFY is transactional). The payload is the transaction id. Not for
-- `payment.pending`: nobody can be following a payment before its POST has answered (a stream
-- opened later reads the row first), and each NOTIFY serializes its commit with every other
-- notifying commit (make bench measures what it costs).
CREATE FUNCTION notify_payment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payment_events', NEW.transaction_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER payment_events_notify AFTER INSERT ON payment_events
    FOR EACH ROW WHEN (NEW.type <> 'payment.pending') EXECUTE FUNCTION notify_payment_event();
