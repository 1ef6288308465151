//! The worker's real client (async-stripe) against the simulator: every answer must
//! parse into its types, and errors must surface as `StripeError::Stripe(ApiErrors, status)`.

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use stripe::{
    ApiErrorsCode, ApiErrorsType, Client, ClientBuilder, IdempotencyKey, RequestStrategy,
    StripeError, StripeRequest,
};
use stripe_core::payment_intent::{
    CreatePaymentIntent, RetrievePaymentIntent, SearchPaymentIntent,
};
use stripe_core::{PaymentIntent, PaymentIntentStatus};
use stripe_sim::{Config, Faults, RunningSim, Sim};
use stripe_types::{Currency, Expandable};

const KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

async fn setup() -> (RunningSim, Client) {
    let sim = Sim::spawn(Config::default()).await.unwrap();
    let client = ClientBuilder::new(KEY).url(sim.base_url()).build().unwrap();
    (sim, client)
}

fn create(pm: &str, tx: &str) -> CreatePaymentIntent {
    CreatePaymentIntent::new(2000, Currency::USD)
        .payment_method(pm)
        .confirm(true)
        .metadata(HashMap::from([(
            "transaction_id".to_owned(),
            tx.to_owned(),
        )]))
        .description("order")
}

async fn send_with_key(
    client: &Client,
    req: CreatePaymentIntent,
    key: &str,
) -> Result<PaymentIntent, StripeError> {
    req.customize()
        .request_strategy(RequestStrategy::Idempotent(
            IdempotencyKey::new(key).unwrap(),
        ))
        .send(client)
        .await
}

#[tokio::test]
async fn success_parses_into_payment_intent() {
    let (sim, client) = setup().await;
    let pi = send_with_key(&client, create("pm_card_visa", "tx_1"), "key-client-1")
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    assert_eq!(pi.amount, 2000);
    assert_eq!(pi.amount_received, 2000);
    assert_eq!(pi.currency, Currency::USD);
    assert!(!pi.livemode);
    assert_eq!(
        pi.metadata.get("transaction_id").map(String::as_str),
        Some("tx_1")
    );
    assert!(
        matches!(&pi.latest_charge, Some(Expandable::Id(id)) if id.as_str().starts_with("ch_"))
    );
    assert!(pi.client_secret.is_some());

    // A replay through the client parses the same.
    let again = send_with_key(&client, create("pm_card_visa", "tx_1"), "key-client-1")
        .await
        .unwrap();
    assert_eq!(again.id, pi.id);
    assert_eq!(sim.sim.ledger().charges.len(), 1);

    let got = RetrievePaymentIntent::new(pi.id.clone())
        .send(&client)
        .await
        .unwrap();
    assert_eq!(got.id, pi.id);

    let found = SearchPaymentIntent::new("metadata['transaction_id']:'tx_1'")
        .send(&client)
        .await
        .unwrap();
    assert_eq!(found.data.len(), 1);
    assert!(!found.has_more);
    assert_eq!(found.data[0].id, pi.id);
}

#[tokio::test]
async fn declines_surface_as_stripe_errors_with_the_intent() {
    let (_sim, client) = setup().await;
    let cases = [
        (
            "pm_card_visa_chargeDeclined",
            ApiErrorsCode::CardDeclined,
            Some("generic_decline"),
        ),
        (
            "pm_card_visa_chargeDeclinedInsufficientFunds",
            ApiErrorsCode::CardDeclined,
            Some("insufficient_funds"),
        ),
        (
            "pm_card_chargeDeclinedProcessingError",
            ApiErrorsCode::ProcessingError,
            None,
        ),
    ];
    for (pm, code, decline_code) in cases {
        let err = create(pm, "tx_d").send(&client).await.unwrap_err();
        let StripeError::Stripe(e, status) = err else {
            panic!("{pm}: not a Stripe error: {err:?}")
        };
        assert_eq!(status, 402, "{pm}");
        assert_eq!(e.type_, ApiErrorsType::CardError);
        assert_eq!(e.code, Some(code), "{pm}");
        assert_eq!(e.decline_code.as_deref(), decline_code, "{pm}");
        assert!(e.message.is_some());
        let pi = e
            .payment_intent
            .expect("the error embeds the PaymentIntent");
        assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
        assert!(pi.last_payment_error.is_some());
    }
}

#[tokio::test]
async fn three_ds_next_action_parses() {
    let (sim, client) = setup().await;
    let pi = create("pm_card_threeDSecure2Required", "tx_3ds")
        .send(&client)
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresAction);
    let next = pi.next_action.expect("next_action");
    assert_eq!(next.type_, "redirect_to_url");
    let url = next
        .redirect_to_url
        .and_then(|r| r.url)
        .expect("redirect url");
    assert!(url.starts_with(&format!("{}/sim/3ds/{}", sim.base_url(), pi.id)));

    sim.sim.complete_challenge(&pi.id, false).unwrap();
    let failed = RetrievePaymentIntent::new(pi.id.clone())
        .send(&client)
        .await
        .unwrap();
    assert_eq!(failed.status, PaymentIntentStatus::RequiresPaymentMethod);
    let e = failed.last_payment_error.expect("last_payment_error");
    assert_eq!(
        e.code,
        Some(ApiErrorsCode::PaymentIntentAuthenticationFailure)
    );
}

#[tokio::test]
async fn other_errors_parse_too() {
    let (sim, client) = setup().await;
    // Idempotency error: same key, different params.
    send_with_key(&client, create("pm_card_visa", "tx_a"), "key-x")
        .await
        .unwrap();
    let err = send_with_key(&client, create("pm_card_visa", "tx_b"), "key-x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StripeError::Stripe(e, 400) if e.type_ == ApiErrorsType::IdempotencyError),
        "{err:?}"
    );

    // Unknown PaymentIntent.
    let err = RetrievePaymentIntent::new("pi_missing")
        .send(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StripeError::Stripe(e, 404) if e.code == Some(ApiErrorsCode::ResourceMissing)),
        "{err:?}"
    );

    // Faults: 500, 429, 409.
    for (faults, status) in [
        (
            Faults {
                error_500_before: 1.0,
                ..Faults::default()
            },
            500,
        ),
        (
            Faults {
                rate_limit_429: 1.0,
                ..Faults::default()
            },
            429,
        ),
        (
            Faults {
                conflict_409: 1.0,
                ..Faults::default()
            },
            409,
        ),
    ] {
        sim.sim.set_faults(faults);
        let err = create("pm_card_visa", "tx_f")
            .send(&client)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StripeError::Stripe(_, s) if *s == status),
            "{status}: {err:?}"
        );
    }

    // Bad key.
    let bad = ClientBuilder::new("sk_live_nope")
        .url(sim.base_url())
        .build()
        .unwrap();
    let err = RetrievePaymentIntent::new("pi_1")
        .send(&bad)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StripeError::Stripe(e, 401) if e.type_ == ApiErrorsType::InvalidRequestError),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropped_connection_is_a_client_error_and_the_retry_replays() {
    let (sim, client) = setup().await;
    sim.sim.set_faults(Faults {
        drop_after: 1.0,
        ..Faults::default()
    });
    let err = send_with_key(&client, create("pm_card_visa", "tx_drop"), "key-drop")
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::ClientError(_)), "{err:?}");
    sim.sim.set_faults(Faults::default());
    let pi = send_with_key(&client, create("pm_card_visa", "tx_drop"), "key-drop")
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
    let ledger = sim.sim.ledger();
    assert_eq!(ledger.charges_for("tx_drop").len(), 1);
    assert_eq!(ledger.charges[0].payment_intent, pi.id.as_str());
}
