-- One row per accepted payment. Postgres is the source of truth: Redis only
-- delivers work, and every job can be rebuilt from this table.
CREATE TABLE transactions (
    id                      uuid PRIMARY KEY,
    state                   text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'processing', 'requires_action', 'complete', 'failed')),
    amount                  bigint NOT NULL CHECK (amount > 0),
    currency                text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    email                   text NOT NULL,
    price                   text,
    payment_method          text NOT NULL,
    -- The key every Stripe call for this payment sends; fixed at insert so a
    -- retry can never mint a new one.
    stripe_idempotency_key  text NOT NULL UNIQUE,
    stripe_id               text,
    client_secret           text,
    error_code              text,
    error_decline_code      text,
    error_message           text,
    -- Worker bookkeeping: attempts survive crashes (apalis does not count them).
    attempts                integer NOT NULL DEFAULT 0,
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    lease_owner             text,
    lease_expires_at        timestamptz,
    last_error              text,
    -- The api's Idempotency-Key (scoped by caller) and a hash of the request
    -- it was first used with.
    request_key             text UNIQUE,
    request_fingerprint     text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- The sweeper's scan: unfinished payments ordered by when they are due.
CREATE INDEX transactions_unfinished_idx ON transactions (next_attempt_at)
    WHERE state IN ('pending', 'processing', 'requires_action');
