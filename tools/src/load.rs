//! Submitting payments like a careful client: one `Idempotency-Key` per payment, and on a 5xx
//! or a connection error the same request again with the same key, until it is accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

/// Payment methods and how often each is used.
pub const MIX: &[(&str, u32)] = &[
    ("pm_card_visa", 78),
    ("pm_card_visa_chargeDeclined", 10),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", 10),
    // 3-D Secure that nobody completes: abandoned after REQUIRES_ACTION_TIMEOUT_MS.
    ("pm_card_threeDSecure2Required", 2),
];

#[derive(Clone, Debug)]
pub struct Accepted {
    pub id: Uuid,
    pub payment_method: String,
}

#[derive(Debug, Default)]
pub struct LoadStats {
    pub accepted: usize,
    /// Requests repeated with the same key after a 5xx or a connection error.
    pub resent: usize,
    /// Payments never accepted before the deadline.
    pub gave_up: usize,
    /// Clients that sent their request and closed the connection at once (then sent it again
    /// with the same key later, to learn the payment).
    pub disconnected: usize,
}

pub fn pick_method(i: usize) -> &'static str {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut x = (i as u32).wrapping_mul(2_654_435_761) % total;
    for (pm, w) in MIX {
        if x < *w {
            return pm;
        }
        x -= w;
    }
    MIX[0].0
}

/// Sends the request over a raw connection and closes it without reading the answer.
async fn send_and_disconnect(api_url: &str, key: &str, body: &serde_json::Value) {
    use tokio::io::AsyncWriteExt;
    let body = body.to_string();
    let request = format!(
        "POST /transactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         idempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let addr = api_url.trim_start_matches("http://");
    if let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await {
        let _ = socket.write_all(request.as_bytes()).await;
    }
}

/// Submits `count` payments with `concurrency` in flight; `progress` counts accepted ones.
/// Every `disconnect_every`-th client (0: none) first sends and disconnects.
pub async fn submit(
    api_url: &str,
    count: usize,
    concurrency: usize,
    progress: Arc<AtomicUsize>,
    give_up_after: Duration,
    disconnect_every: usize,
) -> (Vec<Accepted>, LoadStats) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let run = Uuid::new_v4().simple().to_string();
    let resent = Arc::new(AtomicUsize::new(0));
    let disconnected = Arc::new(AtomicUsize::new(0));
    let results: Vec<Option<Accepted>> = futures::stream::iter(0..count)
        .map(|i| {
            let (client, run, progress, resent) = (client.clone(), run.clone(), progress.clone(), resent.clone());
            let disconnected = disconnected.clone();
            async move {
                let pm = pick_method(i);
                let body = json!({"price": "basic", "email": format!("c{i}@example.com"), "payment_method": pm});
                let key = format!("load-{run}-{i}");
                if disconnect_every > 0 && i % disconnect_every == 0 {
                    send_and_disconnect(api_url, &key, &body).await;
                    disconnected.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let deadline = Instant::now() + give_up_after;
                loop {
                    let res = client
                        .post(format!("{api_url}/transactions"))
                        .header("idempotency-key", &key)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = res {
                        if r.status().as_u16() == 202 {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if let Some(id) = v["id"].as_str().and_then(|s| s.parse().ok()) {
                                progress.fetch_add(1, Ordering::Relaxed);
                                return Some(Accepted { id, payment_method: pm.to_owned() });
                            }
                        } else if r.status().is_client_error() {
                            // A 4xx is a bug in this generator, not an outage: never resend it.
                            eprintln!("payment {i} refused: {}", r.text().await.unwrap_or_default());
                            return None;
                        }
                    }
                    if Instant::now() > deadline {
                        return None;
                    }
                    resent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let gave_up = results.iter().filter(|r| r.is_none()).count();
    let accepted: Vec<Accepted> = results.into_iter().flatten().collect();
    let stats = LoadStats {
        accepted: accepted.len(),
        resent: resent.load(Ordering::Relaxed),
        gave_up,
        disconnected: disconnected.load(Ordering::Relaxed),
    };
    (accepted, stats)
}
