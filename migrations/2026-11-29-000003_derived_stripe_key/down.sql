ALTER TABLE transactions DROP CONSTRAINT transactions_stripe_key_is_derived;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_stripe_idempotency_key_key UNIQUE (stripe_idempotency_key);
