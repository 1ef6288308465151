//! The charge policy's decisions, one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::stripe::http::ErrorObject;
use shared::settings::RetrySettings;

fn settings() -> RetrySettings {
    RetrySettings {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    }
}

fn api(status: u16, type_: &str, code: Option<&str>) -> CallError {
    CallError::Api {
        status,
        error: Box::new(ErrorObject {
            type_: type_.into(),
            code: code.map(Into::into),
            ..Default::default()
        }),
        retry_after: None,
        should_retry: None,
    }
}

fn unknown(v: &Verdict) -> Option<bool> {
    match v {
        Verdict::Transient {
            outcome_unknown, ..
        } => Some(*outcome_unknown),
        _ => None,
    }
}

#[test]
fn backoff_grows_and_is_capped() {
    for _ in 0..100 {
        let first = backoff(&settings(), 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
        let fourth = backoff(&settings(), 4);
        assert!(fourth >= Duration::from_millis(400) && fourth <= Duration::from_millis(801));
        let late = backoff(&settings(), 30);
        assert!(late >= Duration::from_secs(1) && late <= Duration::from_millis(2001));
    }
}

/// Only a confirm moves money: an ambiguous create leaves nothing unknown, an ambiguous
/// confirm does, and no answer to a read settles it.
#[test]
fn only_an_ambiguous_confirm_makes_the_outcome_unknown() {
    for e in [
        api(500, "api_error", None),
        api(409, "idempotency_error", None),
    ] {
        let e2 = api(500, "api_error", None);
        assert_eq!(unknown(&classify(Call::Create, Err(e), false)), Some(false));
        assert_eq!(
            unknown(&classify(Call::Confirm, Err(e2), false)),
            Some(true)
        );
    }
    assert_eq!(
        unknown(&classify(Call::Confirm, Err(CallError::Timeout), false)),
        Some(true)
    );
    assert_eq!(
        unknown(&classify(Call::Create, Err(CallError::Timeout), false)),
        Some(false)
    );
    // Refused before running: a rate limit, a connection never made.
    assert_eq!(
        unknown(&classify(
            Call::Confirm,
            Err(api(429, "rate_limit_error", None)),
            false
        )),
        Some(false)
    );
    assert_eq!(
        unknown(&classify(
            Call::Confirm,
            Err(CallError::Connect("x".into())),
            false
        )),
        Some(false)
    );
    // A failed read keeps what was unknown unknown.
    assert_eq!(
        unknown(&classify(Call::Retrieve, Err(CallError::Timeout), true)),
        Some(true)
    );
}

#[test]
fn a_refused_create_fails_but_a_refused_confirm_is_read_back() {
    let refused = || api(400, "invalid_request_error", Some("parameter_invalid"));
    assert!(matches!(
        classify(Call::Create, Err(refused()), false),
        Verdict::Declined {
            intent: IntentAfter::Nothing,
            ..
        }
    ));
    assert!(matches!(
        classify(Call::Confirm, Err(refused()), false),
        Verdict::ReadBack
    ));
    assert!(matches!(
        classify(Call::Cancel, Err(refused()), false),
        Verdict::ReadBack
    ));
}

#[test]
fn a_decline_fails_and_cancels_the_intent() {
    let e = api(402, "card_error", Some("card_declined"));
    assert!(matches!(
        classify(Call::Confirm, Err(e), false),
        Verdict::Declined {
            intent: IntentAfter::Cancel,
            ..
        }
    ));
}

#[test]
fn configuration_errors_are_alarms_not_verdicts() {
    assert_eq!(
        is_alarm(Call::Retrieve, &api(401, "invalid_request_error", None)),
        Some("authentication")
    );
    assert_eq!(
        is_alarm(Call::Confirm, &api(403, "invalid_request_error", None)),
        Some("permission")
    );
    let missing = api(404, "invalid_request_error", Some("resource_missing"));
    assert_eq!(is_alarm(Call::Retrieve, &missing), Some("intent_missing"));
    assert_eq!(is_alarm(Call::Create, &missing), None);
    assert!(matches!(
        classify(Call::Retrieve, Err(missing), false),
        Verdict::Alarm { .. }
    ));
}

#[test]
fn statuses_mean_one_thing() {
    let facts = |status: &str| IntentFacts {
        id: "pi_1".into(),
        status: Some(status.into()),
        client_secret: Some("s".into()),
        ..Default::default()
    };
    assert!(matches!(
        verdict_for_intent(facts("succeeded")),
        Verdict::Succeeded { .. }
    ));
    assert!(matches!(
        verdict_for_intent(facts("requires_confirmation")),
        Verdict::AwaitingConfirm { .. }
    ));
    assert!(matches!(
        verdict_for_intent(facts("canceled")),
        Verdict::Canceled { .. }
    ));
    assert!(matches!(
        verdict_for_intent(facts("requires_payment_method")),
        Verdict::Declined {
            intent: IntentAfter::Cancel,
            ..
        }
    ));
    assert_eq!(
        unknown(&verdict_for_intent(facts("processing"))),
        Some(true)
    );
}
