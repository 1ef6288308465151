//! compose.yaml is a production deployment: read here (no Docker engine runs on this machine)
//! and held to its structure. Healthchecks are the binaries' own subcommands (which the
//! binaries test runs); the worker waits for the api, which is healthy only once migrated; the
//! Postgres data is a named volume; one image built with `--locked` holds every binary;
//! stripe-sim only in the `dev` profile; every secret is a file the services read as
//! `NAME_FILE`, and none is a value in the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `environment` as (name, value) pairs, from a map (anchors already resolved by the loader;
/// `<<` merge keys are not used for environments).
fn environment(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (k.as_str().unwrap_or_default().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service's image: merged from `x-image` (`<<: *image`), which the loader leaves as a `<<`
/// key.
fn image_of(service: &Yaml) -> (Option<String>, Option<String>) {
    let merged = &service["<<"];
    let pick = |key: &str| {
        service[key]
            .as_str()
            .or_else(|| merged[key].as_str())
            .map(str::to_owned)
    };
    (pick("image"), pick("build"))
}

#[test]
fn every_service_of_ours_has_a_healthcheck_that_is_its_own_binary() {
    let c = compose();
    for (service, binary) in [
        ("api", "api"),
        ("worker", "worker"),
        ("stripe-sim", "stripe-sim"),
    ] {
        let test = strings(&c["services"][service]["healthcheck"]["test"]);
        assert_eq!(test, ["CMD", binary, "healthcheck"], "{service}");
    }
    for infra in ["postgres", "redis"] {
        assert!(
            !strings(&c["services"][infra]["healthcheck"]["test"]).is_empty(),
            "{infra} has no healthcheck"
        );
    }
}

#[test]
fn the_worker_waits_for_the_migrated_api_and_the_api_for_its_stores() {
    let c = compose();
    let worker = &c["services"]["worker"]["depends_on"];
    assert_eq!(worker["api"]["condition"].as_str(), Some("service_healthy"));
    assert_eq!(
        worker["redis"]["condition"].as_str(),
        Some("service_healthy")
    );
    let api = &c["services"]["api"];
    assert_eq!(
        strings(&api["command"]),
        ["api", "serve"],
        "the api migrates, then serves"
    );
    for store in ["postgres", "redis"] {
        assert_eq!(
            api["depends_on"][store]["condition"].as_str(),
            Some("service_healthy"),
            "{store}"
        );
    }
}

#[test]
fn postgres_keeps_its_data_in_a_named_volume() {
    let c = compose();
    let volumes = strings(&c["services"]["postgres"]["volumes"]);
    assert!(
        volumes.contains(&"pgdata:/var/lib/postgresql/data".to_owned()),
        "{volumes:?}"
    );
    assert!(
        c["volumes"]
            .as_hash()
            .unwrap()
            .contains_key(&Yaml::String("pgdata".into())),
        "pgdata is not declared"
    );
}

#[test]
fn one_image_built_locked_holds_every_binary() {
    let c = compose();
    let images: Vec<_> = ["api", "worker", "stripe-sim"]
        .iter()
        .map(|s| image_of(&c["services"][*s]))
        .collect();
    assert!(images[0].0.is_some() && images[0].1.as_deref() == Some("."));
    assert!(images.iter().all(|i| *i == images[0]), "{images:?}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --locked --release"),
        "{dockerfile}"
    );
    for bin in ["api", "worker", "stripe-sim", "payctl"] {
        assert!(
            dockerfile.contains(&format!("--bin {bin}"))
                && dockerfile.contains(&format!("/src/target/release/{bin}")),
            "{bin} is not in the image"
        );
    }
}

#[test]
fn stripe_sim_runs_only_in_the_development_profile() {
    let c = compose();
    assert_eq!(strings(&c["services"]["stripe-sim"]["profiles"]), ["dev"]);
    for service in ["postgres", "redis", "api", "worker"] {
        assert!(
            c["services"][service]["profiles"].is_badvalue(),
            "{service}"
        );
    }
}

#[test]
fn secrets_are_files_read_as_name_file_and_never_values() {
    let c = compose();
    let declared = c["secrets"].as_hash().unwrap();
    for service in ["api", "worker"] {
        let s = &c["services"][service];
        let env = environment(s);
        let mounted = strings(&s["secrets"]);
        // A secret is never a value; a URL only when it carries no credentials.
        for name in shared::settings::FILE_VARS {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
                assert!(
                    name.ends_with("_URL") && !value.contains('@'),
                    "{service} sets {name} as a value"
                );
            }
        }
        for var in [
            "DATABASE_URL",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "MERCHANT_API_KEY",
            "ADMIN_TOKEN",
        ] {
            let file = format!("{var}_FILE");
            let (_, path) = env
                .iter()
                .find(|(k, _)| *k == file)
                .unwrap_or_else(|| panic!("{service} has no {file}"));
            let secret = path
                .strip_prefix("/run/secrets/")
                .unwrap_or_else(|| panic!("{file}={path} is not a mounted secret"));
            assert!(
                mounted.contains(&secret.to_owned()),
                "{service} does not mount {secret}"
            );
            assert!(
                declared[&Yaml::String(secret.into())]["file"]
                    .as_str()
                    .is_some(),
                "{secret} is not a file secret"
            );
        }
    }
    // Postgres' own password too.
    let pg = environment(&c["services"]["postgres"]);
    assert!(
        pg.iter()
            .any(|(k, v)| k == "POSTGRES_PASSWORD_FILE" && v == "/run/secrets/postgres_password")
    );
    assert!(
        !pg.iter()
            .any(|(k, _)| k == "POSTGRES_PASSWORD" || k == "POSTGRES_HOST_AUTH_METHOD")
    );
}
