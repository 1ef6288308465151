//! Test support (feature `testing`, for the workspace's tests only): a Postgres database and a
//! Redis key prefix of one test's own, so tests run in parallel and leave nothing behind.
//! A test cannot go on without them, so failing to make them panics. [`servers`]: the servers
//! a test runs for itself (a private Postgres with TLS, redis-server with TLS, PgBouncer);
//! [`receiver`]: a merchant's webhook endpoint; [`proxy`]: a TCP hop a test can cut.

#![allow(clippy::expect_used)]

pub mod proxy;
pub mod receiver;
pub mod servers;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The Postgres and Redis every test reaches, from `DATABASE_URL` and `REDIS_URL`.
pub fn base_urls() -> (String, String) {
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    (db, redis)
}

/// [`crate::db::with_database`] for tests, where `DATABASE_URL` must have a path.
pub fn with_database(url: &str, name: &str) -> String {
    crate::db::with_database(url, name).expect("DATABASE_URL has a path")
}

/// A migrated database `test_<uuid>` and a queue namespace `test:<uuid>`. Nothing is removed
/// until [`Scratch::remove`] (or [`Scratch::remove_blocking`] from a `Drop`).
#[derive(Clone, Debug)]
pub struct Scratch {
    pub database_url: String,
    pub redis_url: String,
    pub namespace: String,
}

impl Scratch {
    /// Needs a multi-threaded runtime: the migrations run on a blocking section.
    pub async fn create() -> Self {
        let (db_url, redis_url) = base_urls();
        let admin_url = with_database(&db_url, "postgres");
        let db_name = format!("test_{}", Uuid::new_v4().simple());
        let mut admin = crate::db::connect(&admin_url)
            .await
            .expect("connect to Postgres");
        diesel::sql_query(format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let database_url = with_database(&db_url, &db_name);
        crate::db::run_migrations(&database_url)
            .await
            .expect("migrations");
        Scratch {
            database_url,
            redis_url,
            namespace: format!("test:{}", Uuid::new_v4().simple()),
        }
    }

    pub async fn connect(&self) -> AsyncPgConnection {
        crate::db::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// Drops the database (closing its connections) and deletes every Redis key under the
    /// namespace, with apalis' global registration of the namespace's queue.
    pub async fn remove(&self) {
        let _ = crate::db::drop_database(&self.database_url).await;
        remove_namespace(&self.redis_url, &self.namespace).await;
    }

    /// [`Scratch::remove`] for a `Drop`, which cannot await: runs it on a thread with its own
    /// runtime, after `before` (e.g. waiting for the test's consumers to stop, so none writes a
    /// key after the keys are gone), and waits for it. On a multi-threaded test runtime the
    /// runtime keeps running the test's tasks meanwhile.
    pub fn remove_blocking<F>(&self, before: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for clean-up");
            rt.block_on(async move {
                before.await;
                this.remove().await;
            });
        });
        let join = || {
            let _ = cleanup.join();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(join)
            }
            _ => join(),
        }
    }
}

/// Deletes every Redis key under `namespace` (best effort: a test's clean-up).
pub async fn remove_namespace(redis_url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let _ = crate::queue::cleanup::remove_namespace(&mut conn, namespace).await;
}

/// Owns a [`Scratch`] and removes it when dropped, also when the test panics.
pub struct ScratchGuard(pub Scratch);

impl ScratchGuard {
    pub async fn create() -> Self {
        ScratchGuard(Scratch::create().await)
    }
}

impl std::ops::Deref for ScratchGuard {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.0
    }
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        self.0.remove_blocking(async {});
    }
}
