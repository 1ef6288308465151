//! A hand-rolled HTTP/1 accept loop. axum::serve cannot close a connection without
//! answering, which the `drop_after` fault needs: here every connection carries a kill
//! switch in its requests' extensions, and its task drops the connection when pulled.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long open connections get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Pulling it closes the request's connection without sending anything.
#[derive(Clone, Debug)]
pub struct KillSwitch(Arc<Notify>);

impl KillSwitch {
    pub fn pull(&self) {
        // notify_one keeps a permit if the connection task is not waiting yet.
        self.0.notify_one();
    }
}

pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    sim: crate::Sim,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    sim.shared.lock().stats.connections += 1;
                    // Small JSON answers: don't let Nagle hold them back.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(router.clone(), stream, stop_rx.clone()));
                }
                Err(e) => {
                    // Per-connection failures (aborted handshakes, fd exhaustion) are
                    // transient: back off briefly instead of stopping the server.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("closing connections still busy after the shutdown grace period");
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(
    router: Router,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
) {
    let kill = KillSwitch(Arc::new(Notify::new()));
    let switch = kill.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(switch.clone());
        // Router is always ready, so oneshot on a clone is cheap and never waits.
        let router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper needs a timer for its header-read timeout.
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // Returning drops the connection future, which closes the socket unanswered.
            () = kill.0.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                // Either way (signal or server gone) finish the current request and close.
                let _ = changed;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Config, Sim};

    #[tokio::test]
    async fn accepted_connections_are_counted_not_requests() {
        let running = Sim::spawn(Config::default()).await.unwrap();
        let url = format!("{}/sim/stats", running.base_url());
        // Three requests on one keep-alive connection, one on another.
        let pooled = reqwest::Client::new();
        for _ in 0..3 {
            pooled.get(&url).send().await.unwrap();
        }
        reqwest::Client::new().get(&url).send().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while running.sim.stats().connections < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(running.sim.stats().connections, 2);
        running.shutdown().await;
    }
}
