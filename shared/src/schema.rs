// @generated automatically by Diesel CLI.

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
    }
}
