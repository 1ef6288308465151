ALTER TABLE transactions
    DROP COLUMN disputed_at,
    DROP COLUMN refunded_at;

DROP TABLE stripe_events;
