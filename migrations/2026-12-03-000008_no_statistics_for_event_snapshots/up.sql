-- No query filters, joins or sorts on an event's snapshot (the payment as the merchant saw it,
-- jsonb), so the planner never reads its statistics; gathering them was half of every ANALYZE
-- of payment_events (180,000 events: 135-153 ms, without the column 66 ms), which the worker
-- runs each time the table doubles (shared::db::statistics) and autovacuum after it.
ALTER TABLE payment_events ALTER COLUMN snapshot SET STATISTICS 0;
