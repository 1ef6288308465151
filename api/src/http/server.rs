//! The api's accept loop. `axum::serve` has no header-read timeout, so a client trickling its
//! request in one byte at a time (slowloris) could hold a connection, and a task, forever.
//! Here hyper's HTTP/1 server closes a connection whose request headers have not arrived
//! within `header_read_timeout` (idle keep-alive connections included); the router's own
//! timeout bounds the rest of the request. Each request carries its peer address
//! (`ConnectInfo`), which the rate limit keys on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long open connections get to finish their request once shutdown starts; longer than
/// the router's request timeout, so no request that could still succeed is cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Request line plus headers; our requests carry a handful of short headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets each
/// connection finish its current request and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Connection { router: router.clone(), peer, header_read_timeout };
                    connections.spawn(conn.run(stream, stop_rx.clone()));
                }
                Err(e) => {
                    // Aborted handshakes, fd exhaustion: transient, so back off and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
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
        tracing::warn!("closing connections still busy after the shutdown grace period");
        connections.shutdown().await;
    }
    Ok(())
}

struct Connection {
    router: Router,
    peer: SocketAddr,
    header_read_timeout: Duration,
}

impl Connection {
    async fn run(self, stream: tokio::net::TcpStream, mut stop: watch::Receiver<bool>) {
        let Connection {
            router,
            peer,
            header_read_timeout,
        } = self;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready, so oneshot on a clone never waits.
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
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            // A client that sends its request and closes (or half-closes) its side at once
            // still has the request read and carried out; without this hyper drops the request
            // in the middle when it reads the EOF (see crate::http::deadline).
            .half_close(true)
            .max_buf_size(MAX_HEADER_BYTES);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
