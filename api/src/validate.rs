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
    /// The checkout session it is paid in (`POST /checkout/sessions/{id}/pay`).
    pub session_id: Option<uuid::Uuid>,
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
    let (price, amount, currency) =
        validate_price(&req.price, req.amount, &req.currency, prices, merchant)?;
    let (reference, metadata) = validate_merchant_data(&req.reference, &req.metadata, merchant)?;
    Ok(ValidPayment {
        email,
        payment_method,
        price,
        amount,
        currency,
        reference,
        metadata,
        session_id: None,
    })
}

/// A name from `PRICES`, or (the merchant key only) an amount and a currency: what is charged.
pub fn validate_price(
    price: &Option<String>,
    amount: Option<i64>,
    currency: &Option<String>,
    prices: &Prices,
    merchant: bool,
) -> Result<(Option<String>, i64, String), ApiError> {
    match (price, amount, currency) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::validation(
            "price",
            "give either `price` or `amount` and `currency`, not both",
        )),
        (Some(name), None, None) => {
            let p = prices
                .get(name)
                .ok_or_else(|| ApiError::validation("price", "unknown price"))?;
            Ok((Some(name.clone()), p.amount, p.currency.clone()))
        }
        // The amount never comes from an unauthenticated client.
        (None, Some(_), _) | (None, None, Some(_)) if !merchant => Err(ApiError::Unauthorized),
        (None, Some(amount), Some(currency)) => {
            Ok((None, validate_amount(amount)?, validate_currency(currency)?))
        }
        (None, Some(_), None) => Err(ApiError::validation(
            "currency",
            "`currency` is required with `amount`",
        )),
        (None, None, Some(_)) => Err(ApiError::validation(
            "amount",
            "`amount` is required with `currency`",
        )),
        (None, None, None) => Err(ApiError::validation("price", "`price` is required")),
    }
}

/// The merchant's `reference` and `metadata` (the merchant key only), as stored.
pub fn validate_merchant_data(
    reference: &Option<String>,
    metadata: &Option<BTreeMap<String, serde_json::Value>>,
    merchant: bool,
) -> Result<(Option<String>, serde_json::Value), ApiError> {
    // Like an amount, the merchant's own data never comes from an unauthenticated client: a
    // browser naming another order's reference could have the merchant ship it.
    if !merchant && (reference.is_some() || metadata.is_some()) {
        return Err(ApiError::Unauthorized);
    }
    let invalid = |e: merchant_data::Invalid| ApiError::validation(e.field, e.message);
    let reference = reference
        .as_deref()
        .map(merchant_data::validate_reference)
        .transpose()
        .map_err(invalid)?;
    let metadata = merchant_data::validate_metadata(
        metadata.as_ref().unwrap_or(&BTreeMap::new()),
        reference.is_some(),
    )
    .map_err(invalid)?;
    Ok((reference, metadata))
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

/// The body of `POST /checkout/sessions` (the merchant key): one purchase for a customer to pay
/// at the session's URL.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// A name from `PRICES`; or `amount` and `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Carried by every payment made in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255, example = "order-1234")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    /// The customer's address, fixed on the page; asked for when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 254, format = Email)]
    pub email: Option<String>,
    /// Where the customer goes after paying, with `session_id` and `transaction_id` added to
    /// its query: `https` (or `http://localhost`, `http://127.0.0.1`).
    #[schema(example = "https://shop.example.com/thanks")]
    pub success_url: String,
    /// The page's "cancel" link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
    /// Seconds the session can be paid in: 1800 to 86400, default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1800, maximum = 86400)]
    pub expires_in: Option<i64>,
}

/// A session request that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSession {
    pub price: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub reference: Option<String>,
    pub metadata: serde_json::Value,
    pub email: Option<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_in: i64,
}

pub fn validate_session(req: &CreateSession, prices: &Prices) -> Result<ValidSession, ApiError> {
    use shared::checkout_sessions::{
        MAX_EXPIRES_IN_SECS, MIN_EXPIRES_IN_SECS, validate_return_url,
    };
    let (price, amount, currency) =
        validate_price(&req.price, req.amount, &req.currency, prices, true)?;
    let (reference, metadata) = validate_merchant_data(&req.reference, &req.metadata, true)?;
    let email = req.email.as_deref().map(validate_email).transpose()?;
    let invalid = |e: merchant_data::Invalid| ApiError::validation(e.field, e.message);
    let success_url = validate_return_url("success_url", &req.success_url).map_err(invalid)?;
    let cancel_url = req
        .cancel_url
        .as_deref()
        .map(|u| validate_return_url("cancel_url", u))
        .transpose()
        .map_err(invalid)?;
    let expires_in = req.expires_in.unwrap_or(MAX_EXPIRES_IN_SECS);
    if !(MIN_EXPIRES_IN_SECS..=MAX_EXPIRES_IN_SECS).contains(&expires_in) {
        return Err(ApiError::validation(
            "expires_in",
            format!("must be {MIN_EXPIRES_IN_SECS} to {MAX_EXPIRES_IN_SECS} seconds"),
        ));
    }
    Ok(ValidSession {
        price,
        amount,
        currency,
        reference,
        metadata,
        email,
        success_url,
        cancel_url,
        expires_in,
    })
}

/// The body of `POST /checkout/sessions/{id}/pay`: what the customer entered. The amount and
/// the merchant's data come from the session.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayInSession {
    /// Required unless the session fixed one (then it may only repeat it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 254, format = Email)]
    pub email: Option<String>,
    #[schema(
        max_length = 255,
        pattern = "^(pm|tok)_[A-Za-z0-9_]+$",
        example = "pm_card_visa"
    )]
    pub payment_method: String,
}

/// The payment an attempt in `session` makes.
pub fn validate_pay_in_session(
    req: &PayInSession,
    session: &shared::checkout_sessions::CheckoutSession,
) -> Result<ValidPayment, ApiError> {
    let entered = req.email.as_deref().map(validate_email).transpose()?;
    let email = match (&session.email, entered) {
        (Some(fixed), Some(e)) if !e.eq_ignore_ascii_case(fixed) => {
            return Err(ApiError::validation(
                "email",
                "this checkout is for another email address",
            ));
        }
        (Some(fixed), _) => fixed.clone(),
        (None, Some(e)) => e,
        (None, None) => return Err(ApiError::validation("email", "`email` is required")),
    };
    Ok(ValidPayment {
        email,
        payment_method: validate_payment_method(&req.payment_method)?,
        price: session.price.clone(),
        amount: session.amount,
        currency: session.currency.clone(),
        reference: session.reference.clone(),
        metadata: session.metadata.clone(),
        session_id: Some(session.id),
    })
}

/// The longest page `GET /transactions` gives, and its default.
pub const MAX_LIST_LIMIT: i64 = 100;
pub const DEFAULT_LIST_LIMIT: i64 = 10;

/// The query string of `GET /transactions`. Every parameter at most once; an unknown one is
/// refused rather than ignored (a misspelt filter must not silently list everything).
pub fn parse_list_query(raw: Option<&str>) -> Result<shared::transactions::ListFilter, ApiError> {
    use shared::state_machine::TxState;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))?;
    let mut f = shared::transactions::ListFilter {
        limit: DEFAULT_LIST_LIMIT,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in &pairs {
        let field: &'static str = match name.as_str() {
            "limit" => "limit",
            "starting_after" => "starting_after",
            "state" => "state",
            "reference" => "reference",
            "email" => "email",
            "session_id" => "session_id",
            "created[gte]" => "created[gte]",
            "created[gt]" => "created[gt]",
            "created[lte]" => "created[lte]",
            "created[lt]" => "created[lt]",
            _ => {
                return Err(ApiError::validation(
                    "query",
                    format!(
                        "unknown parameter `{}`",
                        name.chars().take(40).collect::<String>()
                    ),
                ));
            }
        };
        if !seen.insert(field) {
            return Err(ApiError::validation(field, "given more than once"));
        }
        let uuid =
            || uuid::Uuid::parse_str(value).map_err(|_| ApiError::validation(field, "not an id"));
        let time = || {
            value
                .parse::<i64>()
                .ok()
                .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                .ok_or_else(|| ApiError::validation(field, "must be a time in unix seconds"))
        };
        match field {
            "limit" => {
                f.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::validation("limit", format!("must be 1 to {MAX_LIST_LIMIT}"))
                    })?;
            }
            "starting_after" => f.starting_after = Some(uuid()?),
            "session_id" => f.session_id = Some(uuid()?),
            "state" => {
                let state = TxState::ALL
                    .iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| {
                        let names: Vec<&str> = TxState::ALL.iter().map(|s| s.as_str()).collect();
                        ApiError::validation("state", format!("one of {}", names.join(", ")))
                    })?;
                f.state = Some(*state);
            }
            "reference" => {
                let r = merchant_data::validate_reference(value)
                    .map_err(|e| ApiError::validation(e.field, e.message))?;
                f.reference = Some(r);
            }
            "email" => f.email = Some(validate_email(value)?),
            "created[gte]" => f.created_gte = Some(time()?),
            "created[gt]" => f.created_gt = Some(time()?),
            "created[lte]" => f.created_lte = Some(time()?),
            _ => f.created_lt = Some(time()?),
        }
    }
    Ok(f)
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
    fn list_queries_are_parsed_and_bad_ones_name_their_parameter() {
        let f = parse_list_query(Some(
            "limit=5&state=failed&created%5Bgte%5D=1700000000&email=a%40b.co&reference=o-1",
        ))
        .unwrap();
        assert_eq!(f.limit, 5);
        assert_eq!(f.state, Some(shared::state_machine::TxState::Failed));
        assert_eq!(f.created_gte.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(f.email.as_deref(), Some("a@b.co"));
        assert_eq!(f.reference.as_deref(), Some("o-1"));
        assert_eq!(parse_list_query(None).unwrap().limit, DEFAULT_LIST_LIMIT);
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=x", "limit"),
            ("limit=1&limit=2", "limit"),
            ("state=paid", "state"),
            ("starting_after=nope", "starting_after"),
            ("created[lte]=yesterday", "created[lte]"),
            ("created[gte]=99999999999999999", "created[gte]"),
            ("email=not-an-email", "email"),
            ("reference=", "reference"),
            ("sort=asc", "query"),
            ("created=1", "query"),
        ] {
            match parse_list_query(Some(query)) {
                Err(ApiError::Validation { field: f, .. }) => assert_eq!(f, field, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
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
