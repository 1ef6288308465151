DROP TRIGGER payment_events_notify ON payment_events;
DROP FUNCTION notify_payment_event();
DROP INDEX transactions_email_created_idx;
DROP INDEX transactions_created_id_idx;
CREATE INDEX transactions_created_idx ON transactions (created_at);
DROP INDEX transactions_session;
-- The merchant's view as it was before sessions.
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
ALTER TABLE transactions DROP COLUMN session_id;
DROP TABLE checkout_sessions;
