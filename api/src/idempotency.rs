//! The request's `Idempotency-Key`: the same key and body make one payment however often a
//! browser or a merchant's backend sends them; the same key with another body is refused.
//!
//! Keys are scoped by caller, so a browser can never replay (or block) a merchant's key, and
//! stored on the row with a fingerprint of the request (the unique index settles two
//! concurrent requests with one key). The other two idempotencies of the system live with
//! what they protect: the Stripe key `txn_<id>` of every charge attempt
//! (`shared::models::NewTransaction::stripe_key_for`) and Stripe's event ids
//! (`shared::stripe_events`).

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::validate::ValidPayment;

/// A request key, scoped to its caller, and the fingerprint of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    pub fingerprint: String,
}

/// Marks `response` as the replay of an earlier request with the same key
/// (`Idempotent-Replayed: true`, as Stripe does).
pub fn mark_replayed(response: &mut Response) {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
}

/// An `Idempotency-Key` header: 1 to 255 visible ASCII characters, like Stripe's.
pub fn validate_idempotency_key(key: &str) -> Result<&str, ApiError> {
    if !key.is_empty() && key.len() <= 255 && key.chars().all(|c| c.is_ascii_graphic()) {
        Ok(key)
    } else {
        Err(ApiError::validation(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))
    }
}

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            let s = v
                .to_str()
                .map_err(|_| ApiError::validation("Idempotency-Key", "not ASCII"))?;
            validate_idempotency_key(s).map(str::to_owned)
        })
        .transpose()
}

/// The key and fingerprint of `payment` under the header's key, if one was sent, scoped to the
/// caller (`public` or `merchant`).
pub fn request_key(
    headers: &HeaderMap,
    scope: &str,
    payment: &ValidPayment,
) -> Result<Option<RequestKey>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    let mut canonical = serde_json::to_vec(&(
        scope,
        &payment.email,
        &payment.payment_method,
        &payment.price,
        payment.amount,
        &payment.currency,
    ))
    .unwrap_or_default();
    // The merchant's data counts when given (metadata keys are sorted); without it the
    // fingerprint is what it was before there was any, so a retry across an upgrade replays.
    let has_metadata = payment.metadata.as_object().is_some_and(|m| !m.is_empty());
    if payment.reference.is_some() || has_metadata {
        let extra =
            serde_json::to_vec(&(&payment.reference, &payment.metadata)).unwrap_or_default();
        canonical.extend_from_slice(&extra);
    }
    Ok(Some(RequestKey {
        key: format!("{scope}:{key}"),
        fingerprint: hex::encode(Sha256::digest(canonical)),
    }))
}

/// The key and fingerprint of a `POST /checkout/sessions` under the header's key, if one was
/// sent (merchant scope; the session table has its own unique index).
pub fn session_key(
    headers: &HeaderMap,
    session: &crate::validate::ValidSession,
) -> Result<Option<RequestKey>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    let canonical = serde_json::to_vec(&(
        &session.price,
        session.amount,
        &session.currency,
        &session.reference,
        &session.metadata,
        &session.email,
        &session.success_url,
        &session.cancel_url,
        session.expires_in,
    ))
    .unwrap_or_default();
    Ok(Some(RequestKey {
        key: format!("merchant:{key}"),
        fingerprint: hex::encode(Sha256::digest(canonical)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(validate_idempotency_key("abc-123").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("a b").is_err());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn idempotency_keys_are_exactly_1_to_255_visible_ascii(
                s in prop_oneof![any::<String>(), "[!-~ ]{0,260}".prop_map(|s: String| s)]
            ) {
                let valid = (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
                prop_assert_eq!(validate_idempotency_key(&s).is_ok(), valid);
            }

        }
    }
}
