//! The merchant's own data on a payment: `reference` (their order id) and `metadata` (string
//! keys and values, with Stripe's limits, since both go to Stripe as the intent's metadata and
//! show in its Dashboard). Checked here for every way a payment is made.

use std::collections::BTreeMap;

use serde_json::Value;

pub const MAX_REFERENCE_LEN: usize = 255;
/// Stripe's limits on metadata.
pub const STRIPE_MAX_KEYS: usize = 50;
pub const MAX_KEY_LEN: usize = 40;
pub const MAX_VALUE_LEN: usize = 500;
/// Keys we add to the intent's metadata ourselves.
pub const RESERVED_KEYS: [&str; 2] = ["transaction_id", "reference"];

/// Why a field was refused: the field and a message naming what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

pub fn validate_reference(reference: &str) -> Result<String, Invalid> {
    let len = reference.chars().count();
    if !(1..=MAX_REFERENCE_LEN).contains(&len) {
        return Err(invalid(
            "reference",
            format!("must be 1 to {MAX_REFERENCE_LEN} characters"),
        ));
    }
    if reference.chars().any(char::is_control) {
        return Err(invalid("reference", "must not contain control characters"));
    }
    Ok(reference.to_owned())
}

/// The metadata as stored (a JSON object of strings, keys sorted). With a `reference`, one more
/// of Stripe's 50 keys is ours.
pub fn validate_metadata(
    metadata: &BTreeMap<String, Value>,
    has_reference: bool,
) -> Result<Value, Invalid> {
    let ours = 1 + usize::from(has_reference);
    let allowed = STRIPE_MAX_KEYS - ours;
    if metadata.len() > allowed {
        return Err(invalid(
            "metadata",
            format!(
                "at most {allowed} keys (Stripe allows {STRIPE_MAX_KEYS}, {ours} of them ours)"
            ),
        ));
    }
    let mut out = serde_json::Map::new();
    for (key, value) in metadata {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(invalid("metadata", format!("key `{key}` is reserved")));
        }
        let len = key.chars().count();
        if len == 0 || len > MAX_KEY_LEN {
            return Err(invalid(
                "metadata",
                format!("keys must be 1 to {MAX_KEY_LEN} characters"),
            ));
        }
        if key.contains(['[', ']']) || key.chars().any(char::is_control) {
            return Err(invalid(
                "metadata",
                format!("key `{key}` must not contain `[`, `]` or control characters"),
            ));
        }
        let Value::String(text) = value else {
            return Err(invalid(
                "metadata",
                format!("the value of `{key}` must be a string"),
            ));
        };
        if text.chars().count() > MAX_VALUE_LEN {
            return Err(invalid(
                "metadata",
                format!("the value of `{key}` is over {MAX_VALUE_LEN} characters"),
            ));
        }
        out.insert(key.clone(), Value::String(text.clone()));
    }
    Ok(Value::Object(out))
}

/// What the intent's metadata carries: the merchant's, the reference, and our transaction id.
pub fn stripe_metadata(
    transaction_id: uuid::Uuid,
    reference: Option<&str>,
    metadata: &Value,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = metadata
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = reference {
        pairs.push(("reference".into(), r.to_owned()));
    }
    pairs.push(("transaction_id".into(), transaction_id.to_string()));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn good_metadata_is_kept_sorted() {
        let m = validate_metadata(&map(json!({"b": "2", "a": ""})), true).unwrap();
        assert_eq!(m.to_string(), r#"{"a":"","b":"2"}"#);
    }

    #[test]
    fn stripes_limits_hold() {
        let full: BTreeMap<String, Value> =
            (0..49).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(validate_metadata(&full, false).is_ok());
        // With a reference, one key fewer is the merchant's.
        assert!(
            validate_metadata(&full, true)
                .unwrap_err()
                .message
                .contains("at most 48")
        );
        for (bad, says) in [
            (json!({"transaction_id": "x"}), "reserved"),
            (json!({"reference": "x"}), "reserved"),
            (json!({"a[0]": "x"}), "must not contain"),
            (json!({"": "x"}), "1 to 40"),
            (json!({"k".repeat(41): "x"}), "1 to 40"),
            (json!({"n": 5}), "must be a string"),
            (json!({"n": null}), "must be a string"),
            (json!({"v": "x".repeat(501)}), "over 500"),
        ] {
            let e = validate_metadata(&map(bad.clone()), false).unwrap_err();
            assert_eq!(e.field, "metadata");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn references_are_bounded() {
        assert!(validate_reference("order-1234").is_ok());
        assert!(validate_reference(&"r".repeat(255)).is_ok());
        for bad in ["", "a\nb", "a\u{0}b"] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
        assert!(validate_reference(&"r".repeat(256)).is_err());
    }

    #[test]
    fn stripe_gets_the_merchants_keys_and_ours() {
        let id = uuid::Uuid::nil();
        let pairs = stripe_metadata(id, Some("order-1"), &json!({"plan": "pro"}));
        assert_eq!(
            pairs,
            vec![
                ("plan".into(), "pro".into()),
                ("reference".into(), "order-1".into()),
                ("transaction_id".into(), id.to_string())
            ]
        );
    }
}
