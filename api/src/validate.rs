//! Checks on a new payment request. Everything here is pure, so it is unit-tested without a
//! server; the handler only wires it to the database and the queue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::merchant_data;
use shared::money::{MAX_AMOUNT, MIN_AMOUNT, Prices, is_supported_currency};

use crate::error::ApiError;

/// The body of `POST /transactions`. Unknown fields are rejected, not ignored: a client that
/// misspells `amount` must hear about it.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransaction {
    /// The receipt address.
    #[schema(max_length = 254, format = Email, example = "you@example.com")]
    pub email: String,
    /// A Stripe PaymentMethod id (`pm_...`) or token (`tok_...`).
    #[schema(
        max_length = 255,
        pattern = "^(pm|tok)_[A-Za-z0-9_]+$",
        example = "pm_card_visa"
    )]
    pub payment_method: String,
    /// A name from `PRICES`; or, with the merchant key, `amount` and `currency` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "basic")]
    pub price: Option<String>,
    /// Minor units; merchant key only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount: Option<i64>,
    /// ISO 4217, e.g. `usd`; merchant key only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Your own id for what is bought (an order id), up to 255 characters: shown with the
    /// merchant key, carried in every event and webhook, and sent to Stripe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255, example = "order-1234")]
    pub reference: Option<String>,
    /// String keys (up to 40 characters, no `[` or `]`; `transaction_id` and `reference` are
    /// ours) and string values (up to 500), at most 49 keys (48 with a `reference`): Stripe's
    /// limits, since they are sent to Stripe as the intent's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPayment {
    pub email: String,
    pub payment_method: String,
    pub price: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub reference: Option<String>,
    /// A JSON object of strings, keys sorted.
    pub metadata: serde_json::Value,
}

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_PAYMENT_METHOD_LEN: usize = 255;

pub fn validate(
    req: &CreateTransaction,
    prices: &Prices,
    merchant: bool,
) -> Result<ValidPayment, ApiError> {
    let email = validate_email(&req.email)?;
    let payment_method = validate_payment_method(&req.payment_method)?;
    let (price, amount, currency) = match (&req.price, req.amount, &req.currency) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::validation(
                "price",
                "give either `price` or `amount` and `currency`, not both",
            ));
        }
        (Some(name), None, None) => {
            let p = prices
                .get(name)
                .ok_or_else(|| ApiError::validation("price", "unknown price"))?;
            (Some(name.clone()), p.amount, p.currency.clone())
        }
        // The amount never comes from an unauthenticated client.
        (None, Some(_), _) | (None, None, Some(_)) if !merchant => {
            return Err(ApiError::Unauthorized);
        }
        (None, Some(amount), Some(currency)) => {
            (None, validate_amount(amount)?, validate_currency(currency)?)
        }
        (None, Some(_), None) => {
            return Err(ApiError::validation(
                "currency",
                "`currency` is required with `amount`",
            ));
        }
        (None, None, Some(_)) => {
            return Err(ApiError::validation(
                "amount",
                "`amount` is required with `currency`",
            ));
        }
        (None, None, None) => return Err(ApiError::validation("price", "`price` is required")),
    };
    // Like an amount, the merchant's own data never comes from an unauthenticated client: a
    // browser naming another order's reference could have the merchant ship it.
    if !merchant && (req.reference.is_some() || req.metadata.is_some()) {
        return Err(ApiError::Unauthorized);
    }
    let invalid = |e: merchant_data::Invalid| ApiError::validation(e.field, e.message);
    let reference = req
        .reference
        .as_deref()
        .map(merchant_data::validate_reference)
        .transpose()
        .map_err(invalid)?;
    let metadata = merchant_data::validate_metadata(
        req.metadata.as_ref().unwrap_or(&BTreeMap::new()),
        reference.is_some(),
    )
    .map_err(invalid)?;
    Ok(ValidPayment {
        email,
        payment_method,
        price,
        amount,
        currency,
        reference,
        metadata,
    })
}

fn validate_amount(amount: i64) -> Result<i64, ApiError> {
    if (MIN_AMOUNT..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(ApiError::validation(
            "amount",
            format!(
                "amount must be an integer number of minor units between {MIN_AMOUNT} and {MAX_AMOUNT}"
            ),
        ))
    }
}

fn validate_currency(currency: &str) -> Result<String, ApiError> {
    let lower = currency.to_ascii_lowercase();
    if lower.len() == 3 && is_supported_currency(&lower) {
        Ok(lower)
    } else {
        Err(ApiError::validation("currency", "unsupported currency"))
    }
}

/// A pragmatic check, not RFC 5322: one `@`, a non-empty local part, a dotted domain, no
/// spaces or control characters, and Stripe's length limit.
pub fn validate_email(email: &str) -> Result<String, ApiError> {
    let bad = || ApiError::validation("email", "email is not a valid address");
    let email = email.trim();
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let valid_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_graphic() && c != '@' && c != '<' && c != '>')
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if local.is_empty() || local.len() > 64 || !valid_chars(local) || !domain_ok {
        return Err(bad());
    }
    Ok(email.to_owned())
}

/// A Stripe PaymentMethod id (`pm_...`) or a legacy token (`tok_...`).
pub fn validate_payment_method(pm: &str) -> Result<String, ApiError> {
    let body = pm.strip_prefix("pm_").or_else(|| pm.strip_prefix("tok_"));
    match body {
        Some(rest)
            if !rest.is_empty()
                && pm.len() <= MAX_PAYMENT_METHOD_LEN
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(pm.to_owned())
        }
        _ => Err(ApiError::validation(
            "payment_method",
            "payment_method must be a Stripe PaymentMethod id (pm_...) or token (tok_...)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices::parse("basic=1000:usd").unwrap()
    }

    fn req(price: Option<&str>, amount: Option<i64>, currency: Option<&str>) -> CreateTransaction {
        CreateTransaction {
            reference: None,
            metadata: None,
            email: "a@example.com".into(),
            payment_method: "pm_card_visa".into(),
            price: price.map(Into::into),
            amount,
            currency: currency.map(Into::into),
        }
    }

    #[test]
    fn a_browser_buys_a_listed_price() {
        let v = validate(&req(Some("basic"), None, None), &prices(), false).unwrap();
        assert_eq!((v.amount, v.currency.as_str()), (1000, "usd"));
    }

    #[test]
    fn a_browser_may_not_name_an_amount() {
        let e = validate(&req(None, Some(5), Some("usd")), &prices(), false).unwrap_err();
        assert!(matches!(e, ApiError::Unauthorized));
    }

    #[test]
    fn a_merchant_may_name_an_amount_within_bounds() {
        assert_eq!(
            validate(&req(None, Some(5), Some("EUR")), &prices(), true)
                .unwrap()
                .currency,
            "eur"
        );
        for bad in [0, -1, MAX_AMOUNT + 1, i64::MAX] {
            assert!(
                validate(&req(None, Some(bad), Some("usd")), &prices(), true).is_err(),
                "{bad}"
            );
        }
        assert!(validate(&req(None, Some(5), Some("xyz")), &prices(), true).is_err());
    }

    #[test]
    fn unknown_or_mixed_prices_are_rejected() {
        assert!(validate(&req(Some("gold"), None, None), &prices(), false).is_err());
        assert!(validate(&req(Some("basic"), Some(5), None), &prices(), true).is_err());
        assert!(validate(&req(None, None, None), &prices(), false).is_err());
    }

    #[test]
    fn emails_are_checked() {
        for ok in ["a@b.co", "first.last+tag@example.com"] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a b@c.com",
            "a@b..com",
            "a@-",
            "<a@b.co>",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_email(&format!("{}@b.co", "a".repeat(300))).is_err());
    }

    #[test]
    fn payment_methods_are_checked() {
        for ok in ["pm_card_visa", "tok_visa", "pm_1Abc"] {
            assert!(validate_payment_method(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "pm_",
            "card_123",
            "pm_a b",
            "pm_a;DROP",
            &format!("pm_{}", "a".repeat(300)),
        ] {
            assert!(validate_payment_method(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Arbitrary text, and text close enough to valid to reach the accepting branches.
        fn text(near: &'static str) -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), near.prop_map(|s: String| s)]
        }

        proptest! {
            #[test]
            fn accepted_emails_hold_their_invariants(
                s in text("[ a-zA-Z0-9.+<@_-]{0,20}@[a-z0-9.-]{0,20}[. ]?[a-z]{0,4} ?")
            ) {
                if let Ok(email) = validate_email(&s) {
                    prop_assert!(email.len() <= MAX_EMAIL_LEN);
                    prop_assert_eq!(email.as_str(), s.trim());
                    let (local, domain) = email.split_once('@').unwrap();
                    prop_assert!(!local.is_empty() && local.len() <= 64);
                    prop_assert!(!domain.contains('@'));
                    prop_assert!(domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
                    prop_assert!(email.chars().all(|c| c.is_ascii_graphic() && c != '<' && c != '>'));
                }
            }

            #[test]
            fn accepted_payment_methods_are_stripe_ids(
                s in text("(pm_|tok_|card_)?[a-zA-Z0-9_ ;]{0,300}")
            ) {
                if let Ok(pm) = validate_payment_method(&s) {
                    prop_assert_eq!(&pm, &s);
                    prop_assert!(pm.starts_with("pm_") || pm.starts_with("tok_"));
                    prop_assert!(pm.len() <= MAX_PAYMENT_METHOD_LEN);
                    prop_assert!(pm.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                }
            }

            #[test]
            fn an_accepted_payment_is_within_bounds_and_priced_for_browsers(
                email in text("[a-z]{1,5}@[a-z]{1,5}\\.(com|x)"),
                pm in text("pm_[a-z_]{1,10}"),
                price in proptest::option::of(text("basic|gold")),
                amount in proptest::option::of(any::<i64>()),
                currency in proptest::option::of(text("[a-zA-Z]{3}")),
                merchant in any::<bool>(),
            ) {
                let req = CreateTransaction {
                    reference: None,
                    metadata: None,
                    email, payment_method: pm, price: price.clone(), amount, currency,
                };
                if let Ok(ok) = validate(&req, &prices(), merchant) {
                    prop_assert!((MIN_AMOUNT..=MAX_AMOUNT).contains(&ok.amount));
                    prop_assert!(is_supported_currency(&ok.currency));
                    match price {
                        Some(name) => {
                            let listed = prices().get(&name).cloned().unwrap();
                            prop_assert_eq!((ok.amount, ok.currency), (listed.amount, listed.currency));
                        }
                        // Only a merchant names its own amount.
                        None => prop_assert!(merchant),
                    }
                }
            }
        }
    }
}
