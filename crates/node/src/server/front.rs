//! The node's own connection loop in front of the router: each connection's requests go to the
//! axum router, except `POST /api/jobs/stream`, the hot path, which is answered directly (same
//! handler, same rate limit, same body limit and errors) without the router's per-request
//! layers (route matching, extensions, middleware boxing), a tenth of the node's work per
//! streamed job.

use std::{convert::Infallible, io::ErrorKind, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::ConnectInfo,
    http::Method,
    response::{IntoResponse, Response},
};
use futures::future::Either;
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{AppState, ClientIp, jobs};

/// The route the front answers itself, and its rate-limit bucket (the router's, were it to
/// answer it).
pub(super) const STREAM: &str = "/api/jobs/stream";
pub(super) const STREAM_BUCKET: &str = "POST /api/jobs/stream";

type Direct = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// One connection's requests.
#[derive(Clone)]
struct Front {
    state: Arc<AppState>,
    router: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Direct, axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if req.method() == Method::POST && req.uri().path() == STREAM {
            let (state, peer) = (self.state.clone(), self.peer);
            return Either::Left(Box::pin(async move {
                let client = ClientIp::resolve(peer.ip(), req.headers(), &state.trusted_proxies);
                Ok(match state.limiter.admit(STREAM_BUCKET, client) {
                    Ok(allowed) => allowed.stamp(&state.limiter, jobs::stream(&state, client, req.into_body()).await),
                    Err(refused) => refused.into_response(),
                })
            }));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The router is always ready; a clone is a reference count.
        Either::Right(self.router.clone().call(req))
    }
}

/// Serves the REST API on `listener` until `shutdown`; then stops accepting, lets requests in
/// flight finish (for at most `drain`: a stream can last long) and closes idle connections.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken, drain: Duration) {
    let router = super::router(state.clone());
    let mut builder = Builder::new(TokioExecutor::new());
    // Makes hyper's header read timeout (30 s) effective: a client that sends half a request
    // head and stalls is closed.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A client that gave up before its connection was accepted.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to be released rather
                    // than spin.
                    tracing::error!(error = %e, "cannot accept a connection; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs add ~40 ms to each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let front = Front {
            state: state.clone(),
            router: router.clone(),
            peer,
        };
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), front)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}
