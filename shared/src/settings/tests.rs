use super::*;

fn from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let table: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::from_vars(&move |name| {
        table
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

fn error(pairs: &[(&str, &str)]) -> String {
    match from(pairs) {
        Ok(_) => panic!("{pairs:?} was accepted"),
        Err(e) => e.0,
    }
}

#[test]
fn nothing_set_gives_the_documented_defaults() {
    let s = from(&[]).unwrap();
    assert_eq!(s.database_pool_size, None);
    assert_eq!(s.worker.concurrency, 10);
    assert_eq!(s.stripe.timeout, Duration::from_secs(10));
    assert_eq!(s.worker.lease, Duration::from_secs(15));
    assert_eq!(s.queue_namespace, "payments");
}

#[test]
fn a_blank_value_counts_as_unset() {
    let s = from(&[("DATABASE_POOL_SIZE", "  "), ("WORKER_CONCURRENCY", "")]).unwrap();
    assert_eq!(s.database_pool_size, None);
    assert_eq!(s.worker.concurrency, 10);
}

#[test]
fn the_pool_size_is_read_and_bounded() {
    let s = from(&[("DATABASE_POOL_SIZE", " 8 ")]).unwrap();
    assert_eq!(s.database_pool_size, Some(8));
    for bad in ["0", "1001"] {
        assert_eq!(
            error(&[("DATABASE_POOL_SIZE", bad)]),
            "DATABASE_POOL_SIZE must be between 1 and 1000"
        );
    }
    for bad in ["-1", "eight", "8.5"] {
        assert_eq!(
            error(&[("DATABASE_POOL_SIZE", bad)]),
            format!("DATABASE_POOL_SIZE=`{bad}` is not a valid value")
        );
    }
}

#[test]
fn contradictory_timeouts_are_refused() {
    assert_eq!(
        error(&[("STRIPE_TIMEOUT_MS", "5000"), ("WORKER_LEASE_MS", "5000")]),
        "WORKER_LEASE_MS must be longer than STRIPE_TIMEOUT_MS"
    );
    // The lease follows the Stripe timeout unless set.
    let s = from(&[("STRIPE_TIMEOUT_MS", "2000")]).unwrap();
    assert_eq!(s.worker.lease, Duration::from_millis(7000));
}

#[test]
fn a_rejected_secret_is_not_echoed() {
    let e = error(&[("ADMIN_TOKEN", "short-secret")]);
    assert!(!e.contains("short-secret"), "{e}");
}

#[test]
fn migrations_use_the_direct_url_which_defaults_to_the_pooled_one() {
    let s = from(&[("DATABASE_URL", "postgres://u@pooler:6432/p")]).unwrap();
    assert_eq!(s.database_direct_url, "postgres://u@pooler:6432/p");
    let s = from(&[
        ("DATABASE_URL", "postgres://u@pooler:6432/p"),
        ("DATABASE_DIRECT_URL", "postgres://u@db:5432/p"),
    ])
    .unwrap();
    assert_eq!(s.database_direct_url, "postgres://u@db:5432/p");
}

#[test]
fn the_database_ca_file_goes_into_both_urls() {
    let s = from(&[
        ("DATABASE_URL", "postgres://u@db/p?sslmode=verify-full"),
        (
            "DATABASE_DIRECT_URL",
            "postgres://u@db/p?sslmode=verify-full&sslrootcert=/own.pem",
        ),
        ("DATABASE_CA_FILE", "/etc/rds-ca.pem"),
    ])
    .unwrap();
    assert_eq!(
        s.database_url,
        "postgres://u@db/p?sslmode=verify-full&sslrootcert=/etc/rds-ca.pem"
    );
    // A URL that names its own root certificate keeps it.
    assert!(s.database_direct_url.ends_with("sslrootcert=/own.pem"));
}

#[test]
fn trusted_proxies_are_address_blocks() {
    let s = from(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1,,2001:db8::/32")]).unwrap();
    assert_eq!(s.http.trusted_proxies.len(), 3);
    assert!(from(&[]).unwrap().http.trusted_proxies.is_empty());
    let e = error(&[("TRUSTED_PROXIES", "10.0.0.0/8,loadbalancer")]);
    assert!(e.starts_with("TRUSTED_PROXIES: `loadbalancer`"), "{e}");
}

#[test]
fn merchant_webhooks_need_a_secret_and_read_durations() {
    let none = from(&[]).unwrap();
    assert!(none.merchant_webhooks.urls.is_empty());
    assert_eq!(
        none.merchant_webhooks.max_age,
        Duration::from_secs(3 * 86_400)
    );
    let e = error(&[("MERCHANT_WEBHOOK_URL", "https://shop.example/hooks")]);
    assert!(e.starts_with("MERCHANT_WEBHOOK_SECRET"), "{e}");
    let s = from(&[
        (
            "MERCHANT_WEBHOOK_URL",
            "https://a.example/h, http://localhost:3000/h",
        ),
        ("MERCHANT_WEBHOOK_SECRET", "whsec_merchant_0123456789"),
        ("MERCHANT_WEBHOOK_MAX_AGE", "90m"),
    ])
    .unwrap();
    assert_eq!(s.merchant_webhooks.urls.len(), 2);
    assert_eq!(s.merchant_webhooks.max_age, Duration::from_secs(5_400));
    for (text, secs) in [("3d", 259_200), ("72h", 259_200), ("45", 45), ("30s", 30)] {
        assert_eq!(
            super::webhooks::parse_duration("X", text).unwrap(),
            Duration::from_secs(secs)
        );
    }
    assert!(super::webhooks::parse_duration("X", "3 days").is_err());
    let e = error(&[
        ("MERCHANT_WEBHOOK_URL", "ftp://x"),
        ("MERCHANT_WEBHOOK_SECRET", "whsec_merchant_0123456789"),
    ]);
    assert!(e.contains("not an http(s) URL"), "{e}");
}

#[test]
fn secrets_and_urls_can_be_read_from_files() {
    let dir = std::env::temp_dir().join(format!("settings-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("stripe_key");
    std::fs::write(&key, "sk_test_from_a_file\n").unwrap();
    let url = dir.join("database_url");
    std::fs::write(&url, "postgres://app:s3cret@db:5432/payments\r\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (key_path, url_path) = (key.to_str().unwrap(), url.to_str().unwrap());

    let s = from(&[
        ("STRIPE_SECRET_KEY_FILE", key_path),
        ("DATABASE_URL_FILE", url_path),
    ])
    .unwrap();
    assert_eq!(
        s.stripe.secret_key.as_ref().map(|k| k.expose().to_owned()),
        Some("sk_test_from_a_file".to_owned())
    );
    assert_eq!(s.database_url, "postgres://app:s3cret@db:5432/payments");
    // The direct URL follows the pooled one when it is not given, from a file or not.
    assert_eq!(s.database_direct_url, s.database_url);

    let both = error(&[
        ("MERCHANT_API_KEY", "mk_live_0123456789abcdef"),
        ("MERCHANT_API_KEY_FILE", key_path),
    ]);
    assert_eq!(
        both,
        "MERCHANT_API_KEY and MERCHANT_API_KEY_FILE are both set: give one"
    );
    let missing = error(&[("ADMIN_TOKEN_FILE", "/nonexistent/admin_token")]);
    assert!(
        missing.starts_with("ADMIN_TOKEN_FILE=/nonexistent/admin_token: cannot read it"),
        "{missing}"
    );
    let blank = error(&[("STRIPE_WEBHOOK_SECRET_FILE", empty.to_str().unwrap())]);
    assert!(blank.ends_with("the file is empty"), "{blank}");
    // What a file holds never appears in an error.
    let bad_url = dir.join("bad_url");
    std::fs::write(&bad_url, "notaurl-with-s3cret").unwrap();
    if let Err(e) = from(&[("REDIS_URL_FILE", bad_url.to_str().unwrap())]) {
        assert!(!e.0.contains("s3cret"), "{}", e.0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_workers_group_commit_and_commit_durability_are_read() {
    let s = from(&[]).unwrap();
    assert_eq!(s.worker.batch_max, 128);
    assert_eq!(s.worker.batch_parallel, 1);
    assert!(!s.worker.synchronous_commit);
    let s = from(&[
        ("WORKER_BATCH_MAX", "1"),
        ("WORKER_BATCH_PARALLEL", "4"),
        ("WORKER_SYNCHRONOUS_COMMIT", "on"),
    ])
    .unwrap();
    assert_eq!(s.worker.batch_max, 1);
    assert_eq!(s.worker.batch_parallel, 4);
    assert!(s.worker.synchronous_commit);
    assert_eq!(
        error(&[("WORKER_BATCH_MAX", "0")]),
        "WORKER_BATCH_MAX must be at least 1"
    );
    assert_eq!(
        error(&[("WORKER_BATCH_PARALLEL", "0")]),
        "WORKER_BATCH_PARALLEL must be at least 1"
    );
    assert_eq!(
        error(&[("WORKER_SYNCHRONOUS_COMMIT", "yes")]),
        "WORKER_SYNCHRONOUS_COMMIT=`yes`: use on or off"
    );
}

#[test]
fn the_apis_group_insert_is_read() {
    let s = from(&[]).unwrap();
    assert_eq!(s.http.insert_batch_max, 64);
    assert_eq!(s.http.insert_parallel, 1);
    let s = from(&[("API_INSERT_BATCH_MAX", "1"), ("API_INSERT_PARALLEL", "3")]).unwrap();
    assert_eq!(s.http.insert_batch_max, 1);
    assert_eq!(s.http.insert_parallel, 3);
    assert_eq!(
        error(&[("API_INSERT_BATCH_MAX", "0")]),
        "API_INSERT_BATCH_MAX must be at least 1"
    );
    assert_eq!(
        error(&[("API_INSERT_PARALLEL", "0")]),
        "API_INSERT_PARALLEL must be at least 1"
    );
    assert_eq!(
        error(&[("API_INSERT_PARALLEL", "many")]),
        "API_INSERT_PARALLEL=`many` is not a valid value"
    );
}

#[test]
fn the_bound_on_open_stripe_requests_is_read() {
    assert_eq!(from(&[]).unwrap().stripe.max_concurrent_requests, 512);
    let s = from(&[("STRIPE_MAX_CONCURRENT_REQUESTS", "8")]).unwrap();
    assert_eq!(s.stripe.max_concurrent_requests, 8);
    assert_eq!(
        error(&[("STRIPE_MAX_CONCURRENT_REQUESTS", "0")]),
        "STRIPE_MAX_CONCURRENT_REQUESTS must be at least 1"
    );
    assert!(
        error(&[("STRIPE_MAX_CONCURRENT_REQUESTS", "many")])
            .contains("STRIPE_MAX_CONCURRENT_REQUESTS")
    );
}

#[test]
fn how_often_the_worker_analyzes_grown_tables_is_read() {
    let default = from(&[]).unwrap().worker.analyze_interval;
    assert_eq!(default, Duration::from_secs(1));
    let s = from(&[("WORKER_ANALYZE_INTERVAL_MS", "0")]).unwrap();
    assert_eq!(s.worker.analyze_interval, Duration::ZERO);
    assert!(
        error(&[("WORKER_ANALYZE_INTERVAL_MS", "soon")]).contains("WORKER_ANALYZE_INTERVAL_MS")
    );
}
