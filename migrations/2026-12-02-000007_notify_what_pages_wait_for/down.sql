DROP TRIGGER payment_events_notify ON payment_events;
CREATE TRIGGER payment_events_notify AFTER INSERT ON payment_events
    FOR EACH ROW WHEN (NEW.type <> 'payment.pending') EXECUTE FUNCTION notify_payment_event();
