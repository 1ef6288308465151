// @generated automatically by Diesel CLI.

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
    }
}

diesel::allow_tables_to_appear_in_same_query!(discrepancies, stripe_events, transactions,);
