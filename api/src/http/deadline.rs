//! Work a client cannot cancel, and a request deadline that tells the truth about it.
//!
//! hyper drops a handler's future when its connection closes (a client that sends and goes
//! away, a load generator stopping) and the deadline below drops it after
//! `HTTP_REQUEST_TIMEOUT_MS`. A payment's insert and push must not stop half way: an insert already
//! sent commits anyway, and a push never made leaves the payment to the sweeper, tens of seconds
//! later. So [`enforce`] runs every request that may change something on its own task, which
//! the connection cannot cancel, and [`detached`] runs the work itself on another, which the
//! deadline cannot cancel either; the handler only waits for its result.
//!
//! A request cut by the deadline after its work was handed off must not answer as if nothing
//! happened: the handler marks it [`Accepted`], and the deadline then answers `503
//! outcome_unknown` (resend with the same Idempotency-Key to learn the outcome) instead of
//! `408 request_timeout` (nothing was done).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;

/// Set by a handler once the request's work runs detached: from then on its outcome is not
/// "nothing happened".
#[derive(Clone, Default, Debug)]
pub struct Accepted(Arc<AtomicBool>);

impl Accepted {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Runs `work` to completion on its own task, whatever becomes of the request that started it,
/// and returns its result. A panic in `work` is an internal error (the task is gone, so is the
/// answer).
pub async fn detached<T, F>(accepted: Option<&Accepted>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    // In the request's span: its logs, and its trace when traces are exported.
    let task = tokio::spawn(work.instrument(tracing::Span::current()));
    if let Some(a) = accepted {
        a.mark();
    }
    match task.await {
        Ok(result) => result,
        Err(e) => Err(ApiError::Internal(format!("detached work failed: {e}"))),
    }
}

/// The request deadline (outermost but for tracing and CORS): `408` if nothing was handed off,
/// `503 outcome_unknown` if it was. A request that may change something (any method but GET,
/// HEAD, OPTIONS) runs on its own task, so a client that sends it in full and goes away still
/// has it carried out, and is never left half done.
pub async fn enforce(State(limit): State<Duration>, mut req: Request, next: Next) -> Response {
    let accepted = Accepted::default();
    req.extensions_mut().insert(accepted.clone());
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let run = async move {
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => response,
            Err(_) if accepted.is_marked() => ApiError::OutcomeUnknown.into_response(),
            Err(_) => ApiError::RequestTimeout.into_response(),
        }
    };
    if read_only {
        return run.await;
    }
    match tokio::spawn(run.instrument(tracing::Span::current())).await {
        Ok(response) => response,
        Err(e) => ApiError::Internal(format!("request task failed: {e}")).into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detached_work_finishes_when_its_caller_is_dropped() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let accepted = Accepted::default();
        let caller = {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                detached(Some(&accepted), async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(());
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        caller.abort(); // the client went away
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .expect("the work ran to its end")
            .expect("and sent its signal");
        assert!(accepted.is_marked());
    }

    /// A client that resets its connection while the handler runs (SO_LINGER 0: an RST, the
    /// way a killed load generator leaves): the handler still runs to its end, whatever server
    /// serves the router.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_post_runs_to_its_end_when_the_client_resets_the_connection() {
        use tokio::io::AsyncWriteExt;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let router = axum::Router::new()
            .route(
                "/slow",
                axum::routing::post(move || {
                    let tx = tx.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let _ = tx.send(()).await;
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_secs(5),
                enforce,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Plain axum::serve, not our server (whose half-close setting also keeps the request):
        // this layer alone must carry the request through.
        tokio::spawn(async move { axum::serve(listener, router).await });
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // the handler is running
        socket.set_zero_linger().unwrap();
        drop(socket);
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("the handler ran to its end")
            .expect("and said so");
    }

    #[tokio::test]
    async fn a_panic_in_detached_work_is_an_internal_error() {
        let r: Result<(), ApiError> = detached(None, async { panic!("boom") }).await;
        assert!(matches!(r, Err(ApiError::Internal(_))));
    }
}
