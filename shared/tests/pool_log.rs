//! A pool that cannot open connections says why in the log, once per interval rather than at
//! every retry. (Its own test binary: it installs the process' global log subscriber.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::testing::{base_urls, with_database};
use uuid::Uuid;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_cannot_connect_logs_why_once_per_interval() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // The server is up, the database is not: every attempt fails the same way.
    let missing = format!("test_missing_{}", Uuid::new_v4().simple());
    let url = with_database(&base_urls().0, &missing);
    let pool = shared::db::pool(&url, 2).unwrap();

    // A checkout waits its 3 s while the pool retries both connections several times.
    let started = Instant::now();
    assert!(pool.get().await.is_err());
    assert!(started.elapsed() >= Duration::from_secs(3));

    let text = captured.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot open a Postgres connection"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(
        lines[0].contains(&missing),
        "the cause is named: {}",
        lines[0]
    );
    assert!(lines[0].contains("does not exist"), "{}", lines[0]);
}
