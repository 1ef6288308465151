//! Renders the checkout page: what is bought and for how much, an email field, card entry
//! (Stripe's Payment Element with a publishable key, else a choice of stripe-sim's test
//! PaymentMethods) and the views the script switches between. The script reads its settings
//! from a JSON block, which browsers never execute, so the CSP needs no inline-script allowance.

use serde::Serialize;
use uuid::Uuid;

use super::format::{decimals, format_amount};
use super::{assets, escape, fill};

/// The test PaymentMethods offered without a publishable key: (id, title, what happens).
pub const TEST_CARDS: &[(&str, &str, &str)] = &[
    ("pm_card_visa", "Visa", "Payment succeeds"),
    (
        "pm_card_visa_chargeDeclined",
        "Declined card",
        "The bank declines the payment",
    ),
    (
        "pm_card_visa_chargeDeclinedInsufficientFunds",
        "Insufficient funds",
        "Declined: not enough money on the card",
    ),
    (
        "pm_card_chargeDeclinedProcessingError",
        "Processing error",
        "The card network reports an error",
    ),
    (
        "pm_card_authenticationRequired",
        "Authentication required",
        "Your bank asks you to confirm (3-D Secure)",
    ),
    (
        "pm_card_threeDSecure2Required",
        "3-D Secure 2",
        "A 3-D Secure 2 challenge, then the payment",
    ),
    (
        "pm_card_threeDSecureRequiredChargeDeclined",
        "3-D Secure, then declined",
        "The challenge passes, then the bank declines",
    ),
];

pub struct CheckoutPage<'a> {
    /// What is bought, as the customer reads it.
    pub product: String,
    /// The `PRICES` name the page pays (`/checkout?price=`); `None` in a checkout session.
    pub price_name: Option<&'a str>,
    pub amount: i64,
    pub currency: &'a str,
    /// With it, card entry is Stripe's Payment Element.
    pub publishable_key: Option<&'a str>,
    /// stripe-sim's base URL, for its 3-D Secure page; only used without a publishable key.
    pub sim_base: &'a str,
    /// The page opens on a payment's status, not on the form: the URL names one (`txn`), or
    /// the session has one in flight or complete (`resume`).
    pub resuming: bool,
    pub resume: Option<Uuid>,
    /// Paying in a checkout session.
    pub session: Option<SessionPage<'a>>,
}

/// A checkout session, as its page needs it.
pub struct SessionPage<'a> {
    pub id: Uuid,
    /// Fixed by the merchant: shown, not asked for.
    pub email: Option<&'a str>,
    pub success_url: &'a str,
    pub cancel_url: Option<&'a str>,
}

/// What the script needs, as JSON in the page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Config<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<&'a str>,
    amount: i64,
    currency: &'a str,
    decimals: u32,
    amount_display: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    publishable_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_base: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionConfig<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionConfig<'a> {
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    success_url: &'a str,
}

/// `basic` → `Basic`, `pro_annual` → `Pro annual`.
pub fn product_name(price_name: &str) -> String {
    let spaced = price_name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// JSON that can sit inside `<script>`: `<`, `>` and `&` only ever occur inside JSON strings,
/// where their `\u` escapes mean the same, and `</script>` can then never close the block.
fn script_safe_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn test_card_picker() -> String {
    let mut options = String::new();
    for (i, (pm, title, outcome)) in TEST_CARDS.iter().enumerate() {
        let checked = if i == 0 { " checked" } else { "" };
        options.push_str(&format!(
            "<label class=\"option\"><input type=\"radio\" name=\"payment_method\" \
             value=\"{pm}\"{checked}><span class=\"option-text\"><span class=\"option-title\">\
             {title}</span><span class=\"option-detail\">{outcome}</span>\
             <code class=\"option-code\">{pm}</code></span></label>\n",
            pm = escape(pm),
            title = escape(title),
            outcome = escape(outcome),
        ));
    }
    format!(
        "<fieldset class=\"cards\" id=\"payment_method\" \
         aria-describedby=\"card-hint payment_method-error\">\n\
         <legend>Test card</legend>\n\
         <p class=\"hint\" id=\"card-hint\">Development mode: payments go to stripe-sim and no \
         real card is charged. Pick the outcome to try.</p>\n\
         <div class=\"options\">\n{options}</div>\n\
         <p class=\"field-error\" id=\"payment_method-error\" aria-live=\"polite\"></p>\n\
         </fieldset>"
    )
}

const PAYMENT_ELEMENT: &str = "<div class=\"field\">\n\
     <span class=\"label\" id=\"card-label\">Card</span>\n\
     <div id=\"payment_method\" class=\"payment-element\" role=\"group\" \
     aria-labelledby=\"card-label\" aria-describedby=\"payment_method-error\"></div>\n\
     <p class=\"field-error\" id=\"payment_method-error\" aria-live=\"polite\"></p>\n\
     </div>";

const STRIPE_SCRIPT: &str = "<script src=\"https://js.stripe.com/v3/\"></script>";

pub fn render(page: &CheckoutPage<'_>) -> String {
    let amount = format_amount(page.amount, page.currency);
    let config = Config {
        price: page.price_name,
        amount: page.amount,
        currency: page.currency,
        decimals: decimals(page.currency),
        amount_display: &amount,
        publishable_key: page.publishable_key,
        sim_base: page
            .publishable_key
            .is_none()
            .then(|| page.sim_base.trim_end_matches('/')),
        resume: page.resume,
        session: page.session.as_ref().map(|s| SessionConfig {
            id: s.id,
            email: s.email,
            success_url: s.success_url,
        }),
    };
    let (card_entry, stripe_script) = match page.publishable_key {
        Some(_) => (PAYMENT_ELEMENT.to_owned(), STRIPE_SCRIPT),
        None => (test_card_picker(), ""),
    };
    let (pay_hidden, status_hidden) = if page.resuming || page.resume.is_some() {
        ("hidden", "")
    } else {
        ("", "hidden")
    };
    let cancel_link = page
        .session
        .as_ref()
        .and_then(|s| s.cancel_url)
        .map_or_else(String::new, |url| {
            format!(
                "<p class=\"cancel\"><a id=\"cancel-link\" href=\"{}\">Cancel and return to the shop</a></p>",
                escape(url)
            )
        });
    let fixed_email = page
        .session
        .as_ref()
        .and_then(|s| s.email)
        .map_or_else(String::new, |e| {
            format!(" value=\"{}\" readonly", escape(e))
        });
    fill(
        include_str!("../../static/checkout.html"),
        &[
            ("title", &escape(&format!("Checkout · {}", page.product))),
            ("product", &escape(&page.product)),
            ("amount", &escape(&amount)),
            ("currency", &escape(&page.currency.to_ascii_uppercase())),
            ("config", &script_safe_json(&config)),
            ("version", assets::version()),
            ("stripe_script", stripe_script),
            ("card_entry", &card_entry),
            ("pay_hidden", pay_hidden),
            ("status_hidden", status_hidden),
            ("cancel_link", &cancel_link),
            ("email_value", &fixed_email),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(name: &str, (amount, currency): (i64, &str), pk: Option<&str>) -> String {
        render(&CheckoutPage {
            product: product_name(name),
            price_name: Some(name),
            amount,
            currency,
            publishable_key: pk,
            sim_base: "http://127.0.0.1:12111/",
            resuming: false,
            resume: None,
            session: None,
        })
    }

    #[test]
    fn a_session_page_pays_the_session_and_offers_its_way_back() {
        let id = Uuid::new_v4();
        let html = render(&CheckoutPage {
            product: "Order 42".into(),
            price_name: None,
            amount: 1234,
            currency: "usd",
            publishable_key: None,
            sim_base: "http://127.0.0.1:12111/",
            resuming: false,
            resume: None,
            session: Some(SessionPage {
                id,
                email: Some("a\"b@example.com"),
                success_url: "https://shop.example/ok?x=1",
                cancel_url: Some("https://shop.example/cart?a=1&b=2"),
            }),
        });
        assert!(
            html.contains(&format!("\"session\":{{\"id\":\"{id}\"")),
            "{html}"
        );
        assert!(!html.contains("\"price\":"));
        assert!(html.contains("href=\"https://shop.example/cart?a=1&amp;b=2\""));
        assert!(html.contains("value=\"a&quot;b@example.com\" readonly"));
        assert!(html.contains("Pay $12.34"));
        assert!(!html.contains("{{"), "a placeholder was left unfilled");
    }

    #[test]
    fn without_a_key_every_test_card_is_offered_and_no_stripe_js_is_loaded() {
        let html = page("basic", (1000, "usd"), None);
        for (pm, _, _) in TEST_CARDS {
            assert!(html.contains(&format!("value=\"{pm}\"")), "{pm}");
        }
        assert!(html.contains("<legend>Test card</legend>"));
        assert!(!html.contains("js.stripe.com"));
        assert!(html.contains("\"simBase\":\"http://127.0.0.1:12111\""));
        assert!(html.contains("Pay $10.00"));
        assert!(!html.contains("{{"), "a placeholder was left unfilled");
    }

    #[test]
    fn with_a_key_the_payment_element_replaces_the_picker() {
        let html = page("pro", (2500, "eur"), Some("pk_test_123"));
        assert!(html.contains("<script src=\"https://js.stripe.com/v3/\"></script>"));
        assert!(html.contains("\"publishableKey\":\"pk_test_123\""));
        assert!(!html.contains("simBase"));
        assert!(!html.contains("pm_card_visa"));
        assert!(html.contains("€25.00"));
    }

    #[test]
    fn names_cannot_break_out_of_the_markup_or_the_config_block() {
        let html = page("x</script><b>", (1000, "jpy"), None);
        assert!(!html.contains("</script><b>"));
        assert!(html.contains("X&lt;/script&gt;&lt;b&gt;"));
        assert!(html.contains("\\u003c/script\\u003e"));
        assert!(html.contains("¥1,000"));
    }

    #[test]
    fn product_names_read_as_words() {
        assert_eq!(product_name("basic"), "Basic");
        assert_eq!(product_name("pro_annual"), "Pro annual");
    }
}
