//! The statements every payment makes are prepared once per connection and then reused: the
//! benchmark found Postgres spending a quarter of its CPU re-parsing them (bench/results.md).
//! Postgres lists a session's named prepared statements in `pg_prepared_statements`; a
//! statement diesel does not cache is prepared, run once and closed again on every call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::models::{NewTransaction, TxError};
use shared::state_machine::TxState;
use shared::state_machine::change::{NotClaimed, Transition, change, claim};
use shared::state_machine::outcome::{IntentAfter, Outcome};
use shared::testing::ScratchGuard;
use shared::transactions::{self as txq, Inserted};
use uuid::Uuid;

#[derive(QueryableByName)]
struct Statement {
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = BigInt)]
    generic_plans: i64,
    #[diesel(sql_type = BigInt)]
    custom_plans: i64,
}

async fn prepared(conn: &mut AsyncPgConnection) -> Vec<Statement> {
    diesel::sql_query(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements
         WHERE statement LIKE '%transactions%' AND statement NOT LIKE '%pg_prepared%'
         ORDER BY statement",
    )
    .load(conn)
    .await
    .unwrap()
}

fn new_transaction(key: &str) -> NewTransaction {
    let id = Uuid::new_v4();
    NewTransaction {
        id,
        amount: 1000,
        currency: "usd".into(),
        email: "a@example.com".into(),
        price: None,
        payment_method: "pm_card_visa".into(),
        stripe_idempotency_key: NewTransaction::stripe_key_for(id),
        request_key: Some(key.into()),
        request_fingerprint: Some("f".into()),
        reference: None,
        metadata: serde_json::json!({}),
        session_id: None,
    }
}

/// One payment's statements as the api and the worker issue them; returns the final state.
async fn one_payment(conn: &mut AsyncPgConnection, n: usize, outcome: &Outcome) -> TxState {
    let new = new_transaction(&format!("public:k{n}"));
    let Inserted::Created(row) = txq::insert(conn, &new).await.unwrap() else {
        panic!("a fresh key made a row");
    };
    let claimed = claim(conn, row.id, "w1", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(claimed.state, "processing");
    assert_eq!(claimed.attempts, 1);
    let record = Transition::Record {
        owner: "w1",
        outcome,
    };
    let recorded = change(conn, row.id, record)
        .await
        .unwrap()
        .and_then(|c| c.applied_row())
        .expect("recorded");
    assert!(recorded.lease_owner.is_none());
    recorded.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_payment_statement_is_prepared_once_per_connection_and_reused() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let before: Vec<String> = prepared(&mut conn)
        .await
        .into_iter()
        .map(|s| s.statement)
        .collect();
    assert!(before.is_empty(), "{before:#?}");

    let outcomes = [
        Outcome::Complete {
            stripe_id: "pi_1".into(),
        },
        Outcome::Failed {
            stripe_id: Some("pi_2".into()),
            error: TxError {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
            },
            intent: IntentAfter::Cancel,
        },
        Outcome::Failed {
            stripe_id: None,
            error: TxError {
                code: "card_declined".into(),
                decline_code: None,
                message: "Declined.".into(),
            },
            intent: IntentAfter::Nothing,
        },
    ];
    let mut states = Vec::new();
    for (n, outcome) in outcomes.iter().cycle().take(9).enumerate() {
        states.push(one_payment(&mut conn, n, outcome).await);
    }
    assert_eq!(states.iter().filter(|s| *s == "complete").count(), 3);
    assert_eq!(states.iter().filter(|s| *s == "failed").count(), 6);

    let statements = prepared(&mut conn).await;
    let texts: Vec<&str> = statements.iter().map(|s| s.statement.as_str()).collect();
    // insert, claim, record: one prepared statement each, whatever the outcome's values.
    assert_eq!(statements.len(), 3, "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("INSERT INTO transactions")));
    assert!(
        texts
            .iter()
            .any(|t| t.contains("attempts = t.attempts + CASE"))
    );
    assert!(texts.iter().any(|t| t.contains("state = COALESCE(")));
    for s in &statements {
        // Nine executions each, all of the same prepared statement.
        assert_eq!(s.generic_plans + s.custom_plans, 9, "{}", s.statement);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_binds_its_delay_twice_and_keeps_the_state() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let new = new_transaction("public:retry");
    let Inserted::Created(row) = txq::insert(&mut conn, &new).await.unwrap() else {
        panic!("a fresh key made a row");
    };
    claim(&mut conn, row.id, "w1", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("claimed");
    let retry = Outcome::Retry {
        stripe_id: None,
        reason: "stripe 500".into(),
        delay: Duration::from_secs(3600),
        outcome_unknown: false,
        attempt_given_back: false,
    };
    // Somebody else's retry is not written: only the lease holder schedules.
    let by = |owner| Transition::Record {
        owner,
        outcome: &retry,
    };
    assert!(
        change(&mut conn, row.id, by("w2"))
            .await
            .unwrap()
            .and_then(|c| c.applied_row())
            .is_none()
    );
    let after = change(&mut conn, row.id, by("w1"))
        .await
        .unwrap()
        .and_then(|c| c.applied_row())
        .expect("the holder's retry is written");
    assert_eq!(after.state, TxState::Processing);
    assert_eq!(after.last_error.as_deref(), Some("stripe 500"));
    let due_in = after.next_attempt_at - after.updated_at;
    assert!(
        (3599..=3601).contains(&due_in.num_seconds()),
        "due in {due_in}"
    );
    // Not due for an hour: nobody can claim it before.
    assert!(matches!(
        claim(&mut conn, row.id, "w1", Duration::from_secs(30))
            .await
            .unwrap(),
        Err(NotClaimed::NotDue(_))
    ));
    // The same key again returns the row it made.
    assert!(matches!(
        txq::insert(&mut conn, &new).await.unwrap(),
        Inserted::Existing(r) if r.id == row.id
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_key_not_derived_from_the_id_is_refused() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let mut new = new_transaction("public:other-key");
    new.stripe_idempotency_key = NewTransaction::stripe_key_for(Uuid::new_v4());
    let err = txq::insert(&mut conn, &new)
        .await
        .err()
        .expect("a key that is not txn_<id> is refused");
    assert!(
        err.to_string()
            .contains("transactions_stripe_key_is_derived"),
        "{err}"
    );
    let rows: Vec<(TxState, i64)> = txq::count_by_state(&mut conn).await.unwrap();
    assert!(rows.iter().all(|(_, n)| *n == 0), "{rows:?}");
}

/// The worker claims the jobs it was handed in one statement: each row is claimed, or not, as
/// if alone, the answers come back in the order asked, and each claim writes its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_many_at_once_answers_each_as_if_alone() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let lease = Duration::from_secs(30);
    let mut ids = Vec::new();
    for n in 0..4 {
        let Inserted::Created(row) =
            txq::insert(&mut conn, &new_transaction(&format!("public:m{n}")))
                .await
                .unwrap()
        else {
            panic!("a fresh key made a row");
        };
        ids.push(row.id);
    }
    let (free, leased, done) = (ids[0], ids[1], ids[2]);
    // One leased by another worker, one finished.
    claim(&mut conn, leased, "w2", lease)
        .await
        .unwrap()
        .unwrap();
    claim(&mut conn, done, "w1", lease).await.unwrap().unwrap();
    let complete = Outcome::Complete {
        stripe_id: "pi_done".into(),
    };
    let recorded = shared::state_machine::change::change_all(
        &mut conn,
        &[(
            done,
            Transition::Record {
                owner: "w1",
                outcome: &complete,
            },
        )],
        false,
    )
    .await
    .unwrap();
    assert!(recorded[0].as_ref().unwrap().applied);

    let missing = Uuid::new_v4();
    let asked = [done, missing, free, leased, ids[3]];
    let answers = shared::state_machine::change::claim_many(&mut conn, &asked, "w1", lease)
        .await
        .unwrap();
    assert_eq!(answers.len(), asked.len());
    assert_eq!(
        answers[0].as_ref().err(),
        Some(&NotClaimed::Finished(TxState::Complete))
    );
    assert_eq!(answers[1].as_ref().err(), Some(&NotClaimed::Missing));
    for i in [2, 4] {
        let row = answers[i].as_ref().expect("claimed");
        assert_eq!(row.id, asked[i]);
        assert_eq!(row.state, TxState::Processing);
        assert_eq!(row.lease_owner.as_deref(), Some("w1"));
        assert_eq!(row.attempts, 1);
    }
    assert!(
        matches!(&answers[3], Err(NotClaimed::Leased { owner: Some(o), .. }) if o == "w2"),
        "{:?}",
        answers[3]
    );
    // Each claim that moved a payment wrote its own event.
    for id in [free, ids[3]] {
        let kinds: Vec<String> = shared::events::history(&mut conn, id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["payment.pending", "payment.processing"], "{id}");
    }
    scratch.remove().await;
}

async fn claimed_payments(conn: &mut AsyncPgConnection, prefix: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let Inserted::Created(row) = txq::insert(conn, &new_transaction(&format!("{prefix}{i}")))
            .await
            .unwrap()
        else {
            panic!("a fresh key made a row");
        };
        claim(conn, row.id, "w1", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("claimed");
        ids.push(row.id);
    }
    ids
}

async fn kinds(conn: &mut AsyncPgConnection, id: Uuid) -> Vec<String> {
    shared::events::history(conn, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// The worker records a round's outcomes in one statement: each payment is written with its own
/// values, or not, exactly as alone (only the lease holder writes; a `complete` that finds the
/// payment `failed` is the correction), the answers come back in the order asked, and each
/// change of state writes its own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_many_at_once_answers_each_as_if_alone() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let ids = claimed_payments(&mut conn, "public:r", 5).await;
    let (done, declined, retried, taken, corrected) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    // `taken`: its lease ran out and w2 holds it now; `corrected`: recorded failed before.
    diesel::sql_query("UPDATE transactions SET lease_owner = 'w2' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(taken)
        .execute(&mut conn)
        .await
        .unwrap();
    let declined_error = TxError {
        code: "card_declined".into(),
        decline_code: Some("insufficient_funds".into()),
        message: "Your card has insufficient funds.".into(),
    };
    let failed = Outcome::Failed {
        stripe_id: Some("pi_failed".into()),
        error: declined_error.clone(),
        intent: IntentAfter::Cancel,
    };
    let first = change(
        &mut conn,
        corrected,
        Transition::Record {
            owner: "w1",
            outcome: &failed,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.row.state, TxState::Failed);

    let complete = |id: &str| Outcome::Complete {
        stripe_id: id.into(),
    };
    let retry = Outcome::Retry {
        stripe_id: Some("pi_retry".into()),
        reason: "stripe 500".into(),
        delay: Duration::from_secs(60),
        outcome_unknown: true,
        attempt_given_back: false,
    };
    let (c_done, c_taken, c_corrected) = (
        complete("pi_done"),
        complete("pi_taken"),
        complete("pi_late"),
    );
    let missing = Uuid::new_v4();
    let asked: Vec<(Uuid, &Outcome)> = vec![
        (retried, &retry),
        (done, &c_done),
        (missing, &c_done),
        (declined, &failed),
        (taken, &c_taken),
        (corrected, &c_corrected),
    ];
    let answers = shared::state_machine::change::record_many(&mut conn, "w1", &asked)
        .await
        .unwrap();
    assert_eq!(answers.len(), asked.len());

    let retried_now = answers[0].as_ref().unwrap();
    assert!(retried_now.applied);
    assert_eq!(retried_now.row.state, TxState::Processing);
    assert_eq!(retried_now.row.last_error.as_deref(), Some("stripe 500"));
    assert!(retried_now.row.outcome_unknown_since.is_some());
    let due_in = retried_now.row.next_attempt_at - retried_now.row.updated_at;
    assert!((59..=61).contains(&due_in.num_seconds()), "due in {due_in}");

    let done_now = answers[1].as_ref().unwrap();
    assert!(done_now.applied);
    assert_eq!(done_now.previous, TxState::Processing);
    assert_eq!(done_now.row.state, TxState::Complete);
    assert_eq!(done_now.row.stripe_id.as_deref(), Some("pi_done"));
    assert!(done_now.row.lease_owner.is_none());

    assert!(answers[2].is_none(), "no such payment");

    let declined_now = answers[3].as_ref().unwrap();
    assert_eq!(declined_now.row.state, TxState::Failed);
    assert_eq!(
        declined_now.row.error_code.as_deref(),
        Some("card_declined")
    );
    assert_eq!(
        declined_now.row.error_decline_code.as_deref(),
        Some("insufficient_funds")
    );
    assert!(declined_now.row.cancel_requested_at.is_some());

    let taken_now = answers[4].as_ref().unwrap();
    assert!(!taken_now.applied, "only the lease holder records");
    assert_eq!(taken_now.row.state, TxState::Processing);
    assert_eq!(taken_now.row.lease_owner.as_deref(), Some("w2"));

    let corrected_now = answers[5].as_ref().unwrap();
    assert!(corrected_now.is_correction(), "{corrected_now:?}");
    assert_eq!(corrected_now.row.stripe_id.as_deref(), Some("pi_failed"));

    assert_eq!(
        kinds(&mut conn, done).await,
        ["payment.pending", "payment.processing", "payment.complete"]
    );
    assert_eq!(
        kinds(&mut conn, declined).await,
        ["payment.pending", "payment.processing", "payment.failed"]
    );
    assert_eq!(
        kinds(&mut conn, retried).await,
        ["payment.pending", "payment.processing"]
    );
    assert_eq!(
        kinds(&mut conn, taken).await,
        ["payment.pending", "payment.processing"]
    );
    assert_eq!(
        kinds(&mut conn, corrected).await,
        [
            "payment.pending",
            "payment.processing",
            "payment.failed",
            "payment.complete"
        ]
    );
    scratch.remove().await;
}

/// The worker stores a round's intent ids in one statement: each only while it holds the lease,
/// an id already stored stays, and the answers come back in the order asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_many_intents_at_once_answers_each_as_if_alone() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let ids = claimed_payments(&mut conn, "public:i", 3).await;
    let (fresh, stored, taken) = (ids[0], ids[1], ids[2]);
    let first = shared::state_machine::change::intents_created(
        &mut conn,
        "w1",
        &[(stored, "pi_first", Some("pi_first_secret"))],
    )
    .await
    .unwrap();
    assert_eq!(
        first[0].as_ref().unwrap().row.stripe_id.as_deref(),
        Some("pi_first")
    );
    diesel::sql_query("UPDATE transactions SET lease_owner = 'w2' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(taken)
        .execute(&mut conn)
        .await
        .unwrap();

    let asked = [
        (taken, "pi_taken", None),
        (fresh, "pi_fresh", Some("pi_fresh_secret")),
        (stored, "pi_second", Some("pi_second_secret")),
    ];
    let answers = shared::state_machine::change::intents_created(&mut conn, "w1", &asked)
        .await
        .unwrap();
    let [taken_now, fresh_now, stored_now] = [0, 1, 2].map(|i| answers[i].clone().unwrap());
    assert!(!taken_now.applied);
    assert!(taken_now.row.stripe_id.is_none());
    assert!(fresh_now.applied);
    assert_eq!(fresh_now.row.stripe_id.as_deref(), Some("pi_fresh"));
    assert_eq!(
        fresh_now.row.client_secret.as_deref(),
        Some("pi_fresh_secret")
    );
    assert_eq!(
        fresh_now.row.lease_owner.as_deref(),
        Some("w1"),
        "the lease is kept"
    );
    assert_eq!(
        stored_now.row.stripe_id.as_deref(),
        Some("pi_first"),
        "the first id stays"
    );
    assert_eq!(
        stored_now.row.client_secret.as_deref(),
        Some("pi_first_secret")
    );
    // No change of state, no event.
    assert_eq!(
        kinds(&mut conn, fresh).await,
        ["payment.pending", "payment.processing"]
    );
    scratch.remove().await;
}

/// The api inserts the payments POSTed together in one statement: each is a new row, or the
/// one its key made (before, or earlier in the same statement), in the order given; only new
/// rows write their `payment.pending` event; a value one row holds refuses them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserting_many_at_once_answers_each_as_if_alone() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let Inserted::Created(before) = txq::insert(&mut conn, &new_transaction("public:k0"))
        .await
        .unwrap()
    else {
        panic!("a fresh key made a row");
    };
    let mut keyless = new_transaction("unused");
    keyless.request_key = None;
    keyless.request_fingerprint = None;
    let news = [
        new_transaction("public:k1"),
        new_transaction("public:k2"),
        new_transaction("public:k1"),
        new_transaction("public:k0"),
        keyless,
    ];
    let answers = txq::insert_many(&mut conn, &news).await.unwrap();
    let (created, existing): (Vec<_>, Vec<_>) = answers
        .iter()
        .enumerate()
        .partition(|(_, a)| matches!(a, Inserted::Created(_)));
    let created: Vec<usize> = created.into_iter().map(|(i, _)| i).collect();
    assert_eq!(created, [0, 1, 4]);
    assert_eq!(existing.len(), 2);
    let row = |a: &Inserted| match a {
        Inserted::Created(r) | Inserted::Existing(r) => r.clone(),
    };
    for i in [0, 1, 4] {
        assert_eq!(row(&answers[i]).id, news[i].id);
        assert_eq!(kinds(&mut conn, news[i].id).await, ["payment.pending"]);
    }
    assert_eq!(
        row(&answers[2]).id,
        news[0].id,
        "the same key, earlier in the round"
    );
    assert_eq!(row(&answers[3]).id, before.id, "the same key, before");
    assert!(kinds(&mut conn, news[2].id).await.is_empty());

    // One row's key is not derived from its id: the statement, and so every row, is refused.
    let mut bad = new_transaction("public:bad");
    bad.stripe_idempotency_key = NewTransaction::stripe_key_for(Uuid::new_v4());
    let good = new_transaction("public:good");
    assert!(
        txq::insert_many(&mut conn, &[good.clone(), bad])
            .await
            .is_err()
    );
    assert!(txq::find(&mut conn, good.id).await.unwrap().is_none());
    scratch.remove().await;
}

/// A group commit of writes is all or nothing: when one of them fails, none is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_committed_together_roll_back_together() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let lease = Duration::from_secs(30);
    let Inserted::Created(row) = txq::insert(&mut conn, &new_transaction("public:g1"))
        .await
        .unwrap()
    else {
        panic!("a fresh key made a row");
    };
    claim(&mut conn, row.id, "w1", lease)
        .await
        .unwrap()
        .unwrap();
    let complete = Outcome::Complete {
        stripe_id: "pi_g1".into(),
    };
    // Postgres refuses a NUL byte in text: the second statement fails.
    let writes = [
        (
            row.id,
            Transition::Record {
                owner: "w1",
                outcome: &complete,
            },
        ),
        (
            row.id,
            Transition::IntentCreated {
                owner: "w1",
                stripe_id: "pi_g1",
                client_secret: Some("\0"),
            },
        ),
    ];
    let result = shared::state_machine::change::change_all(&mut conn, &writes, true).await;
    assert!(result.is_err(), "{result:?}");
    let now = txq::find(&mut conn, row.id).await.unwrap().unwrap();
    assert_eq!(now.state, TxState::Processing, "the record was rolled back");
    assert_eq!(now.lease_owner.as_deref(), Some("w1"));
    scratch.remove().await;
}

/// On a connection that runs rounds (`shared::rounds::SESSION`), each of the worker's round
/// statements is planned once and its plan kept, whatever the size of the round. Postgres'
/// default plans the first five calls for their values, and then kept doing so for the claim
/// (its plan for three ids looked cheaper than the plan it would keep): 3,044 plans for 3,264
/// calls at 1,000 payments/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rounds_statements_keep_one_plan_on_a_rounds_connection() {
    use diesel_async::SimpleAsyncConnection;
    use shared::state_machine::change::{claim_many, intents_created, record_many};

    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    conn.batch_execute(shared::rounds::SESSION).await.unwrap();
    let complete = Outcome::Complete {
        stripe_id: "pi_round".into(),
    };
    for round in 0..8 {
        // Rounds of one to three payments, as under light load.
        let mut ids = Vec::new();
        for i in 0..=(round % 3) {
            let new = new_transaction(&format!("public:plan{round}-{i}"));
            let Inserted::Created(row) = txq::insert(&mut conn, &new).await.unwrap() else {
                panic!("a fresh key made a row");
            };
            ids.push(row.id);
        }
        ids.sort();
        let claimed = claim_many(&mut conn, &ids, "w1", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            claimed.iter().all(Result::is_ok),
            "round {round}: all claimed"
        );
        let intents: Vec<_> = ids.iter().map(|id| (*id, "pi_round", None)).collect();
        let stored = intents_created(&mut conn, "w1", &intents).await.unwrap();
        assert!(stored.iter().all(|c| c.as_ref().is_some_and(|c| c.applied)));
        let outcomes: Vec<_> = ids.iter().map(|id| (*id, &complete)).collect();
        let recorded = record_many(&mut conn, "w1", &outcomes).await.unwrap();
        assert!(
            recorded
                .iter()
                .all(|c| c.as_ref().is_some_and(|c| c.row.state == TxState::Complete)),
            "round {round}: all complete"
        );
    }
    let statements = prepared(&mut conn).await;
    let rounds: Vec<&Statement> = statements
        .iter()
        .filter(|s| s.statement.contains("FOR UPDATE"))
        .collect();
    // The claim, the intent ids and the outcomes.
    assert_eq!(
        rounds.len(),
        3,
        "{:#?}",
        statements.iter().map(|s| &s.statement).collect::<Vec<_>>()
    );
    for s in rounds {
        assert_eq!(
            (s.generic_plans, s.custom_plans),
            (8, 0),
            "one kept plan for every call: {}",
            s.statement
        );
    }
    scratch.remove().await;
}
