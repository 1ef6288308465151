// @generated automatically by Diesel CLI.

diesel::table! {
    checkout_sessions (id) {
        id -> Uuid,
        amount -> Int8,
        currency -> Text,
        price -> Nullable<Text>,
        email -> Nullable<Text>,
        reference -> Nullable<Text>,
        metadata -> Jsonb,
        success_url -> Text,
        cancel_url -> Nullable<Text>,
        expires_at -> Timestamptz,
        request_key -> Nullable<Text>,
        request_fingerprint -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    discrepancies (id) {
        id -> Int8,
        kind -> Text,
        transaction_id -> Nullable<Uuid>,
        stripe_id -> Nullable<Text>,
        related_transaction_id -> Nullable<Uuid>,
        detail -> Text,
        source -> Text,
        found_at -> Timestamptz,
    }
}

diesel::table! {
    stripe_events (id) {
        id -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        transaction_id -> Nullable<Uuid>,
        created -> Int8,
        received_at -> Timestamptz,
        outcome -> Nullable<Text>,
    }
}

diesel::table! {
    transactions (id) {
        id -> Uuid,
        state -> Text,
        amount -> Int8,
        currency -> Text,
        email -> Text,
        price -> Nullable<Text>,
        payment_method -> Text,
        stripe_idempotency_key -> Text,
        stripe_id -> Nullable<Text>,
        client_secret -> Nullable<Text>,
        error_code -> Nullable<Text>,
        error_decline_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        request_key -> Nullable<Text>,
        request_fingerprint -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        refunded_at -> Nullable<Timestamptz>,
        disputed_at -> Nullable<Timestamptz>,
        outcome_unknown_since -> Nullable<Timestamptz>,
        lookups -> Int4,
        requires_action_since -> Nullable<Timestamptz>,
        cancel_requested_at -> Nullable<Timestamptz>,
        canceled_at -> Nullable<Timestamptz>,
        reference -> Nullable<Text>,
        metadata -> Jsonb,
        session_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    payment_events (id) {
        id -> Int8,
        transaction_id -> Uuid,
        #[sql_name = "type"]
        kind -> Text,
        previous_state -> Nullable<Text>,
        new_state -> Text,
        attempt -> Int4,
        snapshot -> Jsonb,
        cause -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Int4,
        url -> Text,
        enabled -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        event_id -> Int8,
        endpoint_id -> Int4,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        last_latency_ms -> Nullable<Int4>,
        delivered_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        attempted_at -> Timestamptz,
        status -> Nullable<Int4>,
        error -> Nullable<Text>,
        latency_ms -> Int4,
    }
}

diesel::joinable!(payment_events -> transactions (transaction_id));
diesel::joinable!(transactions -> checkout_sessions (session_id));
diesel::joinable!(webhook_deliveries -> payment_events (event_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));

diesel::allow_tables_to_appear_in_same_query!(
    checkout_sessions,
    discrepancies,
    payment_events,
    stripe_events,
    transactions,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
);
