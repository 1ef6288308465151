-- The Stripe idempotency key is `txn_<id>`, so it is unique because the id is. The UNIQUE index
-- on it could never be violated, yet every insert and every update (none is a HOT update: each
-- changes `state`) wrote an entry into it. A CHECK states the rule itself, the key can still
-- never differ from the one every attempt must send, and it costs no index.
ALTER TABLE transactions DROP CONSTRAINT transactions_stripe_idempotency_key_key;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_stripe_key_is_derived
    CHECK (stripe_idempotency_key = 'txn_' || id::text);
