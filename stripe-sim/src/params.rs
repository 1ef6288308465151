//! Parsing and validation of form-encoded Stripe parameters (`metadata[key]=value`).

use std::collections::BTreeMap;

use axum::http::StatusCode;

use crate::errors::ApiError;

/// Stripe's metadata limits.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

/// Decodes an `application/x-www-form-urlencoded` body or query string into pairs, in
/// order, keeping repeated keys (`expand[]=a&expand[]=b`).
pub fn parse_form(raw: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw).map_err(|_| {
        ApiError::invalid_request(
            StatusCode::BAD_REQUEST,
            None,
            "Invalid request body: expected application/x-www-form-urlencoded parameters.",
        )
    })
}

/// The parameters of `POST /v1/payment_intents` the simulator acts on. Others
/// (`expand[]`, `automatic_payment_methods[...]`, `payment_method_types[]`, ...) are
/// accepted and ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateParams {
    pub amount: i64,
    pub currency: String,
    pub payment_method: Option<String>,
    pub confirm: bool,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub return_url: Option<String>,
}

fn last<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn non_empty(params: &[(String, String)], name: &str) -> Option<String> {
    last(params, name)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn invalid(param: &str, code: Option<&str>, message: String) -> ApiError {
    ApiError::invalid_request(StatusCode::BAD_REQUEST, code, message).param(param)
}

impl CreateParams {
    pub fn parse(params: &[(String, String)]) -> Result<Self, ApiError> {
        let amount = match last(params, "amount") {
            None | Some("") => return Err(ApiError::missing_param("amount")),
            Some(raw) => raw.parse::<i64>().map_err(|_| {
                invalid(
                    "amount",
                    Some("parameter_invalid_integer"),
                    format!("Invalid integer: {raw}"),
                )
            })?,
        };
        if amount < 1 {
            return Err(invalid(
                "amount",
                Some("amount_too_small"),
                "This value must be greater than or equal to 1.".to_owned(),
            ));
        }
        if amount > 99_999_999 {
            return Err(invalid(
                "amount",
                Some("amount_too_large"),
                "Amount must be no more than 99999999 in the smallest currency unit.".to_owned(),
            ));
        }

        let currency = match last(params, "currency") {
            None | Some("") => return Err(ApiError::missing_param("currency")),
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                // Stripe accepts any case and always answers in lowercase.
                c.to_ascii_lowercase()
            }
            Some(c) => {
                return Err(invalid(
                    "currency",
                    None,
                    format!(
                        "Invalid currency: {c}. Stripe currently supports three-letter ISO codes such as usd or eur."
                    ),
                ));
            }
        };

        let confirm = match last(params, "confirm") {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(
                    "confirm",
                    None,
                    format!("Invalid boolean: {other}"),
                ));
            }
        };

        let mut metadata = BTreeMap::new();
        for (k, v) in params {
            let Some(key) = k
                .strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
            else {
                continue;
            };
            if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN {
                return Err(invalid(
                    k,
                    None,
                    format!("Metadata keys must be 1 to {MAX_METADATA_KEY_LEN} characters long."),
                ));
            }
            if v.len() > MAX_METADATA_VALUE_LEN {
                return Err(invalid(
                    k,
                    None,
                    format!("Metadata values can have up to {MAX_METADATA_VALUE_LEN} characters."),
                ));
            }
            // An empty value unsets the key, as in Stripe.
            if v.is_empty() {
                metadata.remove(key);
            } else {
                metadata.insert(key.to_owned(), v.clone());
            }
        }
        if metadata.len() > MAX_METADATA_KEYS {
            return Err(invalid(
                "metadata",
                None,
                format!("Metadata can have up to {MAX_METADATA_KEYS} keys."),
            ));
        }

        let payment_method = non_empty(params, "payment_method");
        if confirm && payment_method.is_none() {
            return Err(ApiError::invalid_request(
                StatusCode::BAD_REQUEST,
                Some("payment_intent_unexpected_state"),
                "You cannot confirm this PaymentIntent because it's missing a payment method. \
                 To confirm the PaymentIntent, provide a `payment_method`.",
            ));
        }

        Ok(Self {
            amount,
            currency,
            payment_method,
            confirm,
            metadata,
            description: non_empty(params, "description"),
            receipt_email: non_empty(params, "receipt_email"),
            return_url: non_empty(params, "return_url"),
        })
    }
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_form(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_what_async_stripe_sends() {
        let p = CreateParams::parse(&pairs(
            "amount=2000&currency=usd&confirm=true&payment_method=pm_card_visa\
             &metadata%5Btransaction_id%5D=tx_1&expand%5B0%5D=latest_charge\
             &automatic_payment_methods%5Benabled%5D=true",
        ))
        .unwrap();
        assert_eq!(p.amount, 2000);
        assert_eq!(p.currency, "usd");
        assert!(p.confirm);
        assert_eq!(
            p.metadata.get("transaction_id").map(String::as_str),
            Some("tx_1")
        );
    }

    #[test]
    fn rejects_bad_amounts_and_currencies() {
        let err = |s: &str| CreateParams::parse(&pairs(s)).unwrap_err().error;
        assert_eq!(err("currency=usd").param.as_deref(), Some("amount"));
        assert_eq!(
            err("amount=abc&currency=usd").code.as_deref(),
            Some("parameter_invalid_integer")
        );
        assert_eq!(
            err("amount=0&currency=usd").param.as_deref(),
            Some("amount")
        );
        assert_eq!(
            err("amount=-5&currency=usd").param.as_deref(),
            Some("amount")
        );
        assert_eq!(err("amount=100").param.as_deref(), Some("currency"));
        assert_eq!(
            err("amount=100&currency=dollars").param.as_deref(),
            Some("currency")
        );
        assert_eq!(
            err("amount=100&currency=usd&confirm=yes").param.as_deref(),
            Some("confirm")
        );
    }
}
