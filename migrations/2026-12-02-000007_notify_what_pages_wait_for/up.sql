-- Live status notifies only the changes a page waits for. Each NOTIFY holds one lock, shared by
-- every notifying commit in the cluster, through its commit's WAL flush: notifying commits run
-- one at a time (make bench measured it: payments charged one WAL flush at a time). A claim
-- (`payment.processing`) lasts as long as a Stripe call, and nobody acts on it, so it no longer
-- notifies; a page still shows `processing` whenever it reads the row (on connect, on resync).
DROP TRIGGER payment_events_notify ON payment_events;
CREATE TRIGGER payment_events_notify AFTER INSERT ON payment_events
    FOR EACH ROW WHEN (NEW.type NOT IN ('payment.pending', 'payment.processing'))
    EXECUTE FUNCTION notify_payment_event();
