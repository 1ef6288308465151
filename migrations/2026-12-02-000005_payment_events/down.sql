DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
DROP TABLE payment_events;
DROP FUNCTION payment_snapshot(transactions);
DROP INDEX transactions_reference;
ALTER TABLE transactions DROP COLUMN metadata, DROP COLUMN reference;
