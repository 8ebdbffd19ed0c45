//! The node's service in front of the router, plugged into the shared connection loop
//! ([`infernet_service::http::serve`]: timeouts, connection limit): each connection's requests go
//! to the axum router, except `POST /api/jobs/stream`, the hot path, which is answered directly
//! (same handler, same rate limit, same body limit and errors) without the router's per-request
//! layers (route matching, extensions, middleware boxing), a tenth of the node's work per
//! streamed job.

use std::{convert::Infallible, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::ConnectInfo,
    http::Method,
    response::{IntoResponse, Response},
};
use futures::future::Either;
use hyper::Request;
use infernet_service::http::{Limits, RequestBody};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{AppState, ClientIp, jobs, routed};

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

impl hyper::service::Service<Request<RequestBody>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Direct, axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, mut req: Request<RequestBody>) -> Self::Future {
        if req.method() == Method::POST && req.uri().path() == STREAM {
            let (state, peer) = (self.state.clone(), self.peer);
            return Either::Left(Box::pin(async move {
                if routed::names_client(req.headers()) {
                    let (parts, body) = req.into_parts();
                    let trailers = jobs::takes_trailers(&parts.headers);
                    let from = ClientIp::resolve(peer.ip(), &parts.headers, &state.trusted_proxies);
                    let head = (&parts.method, &parts.uri, &parts.headers);
                    return Ok(match routed::verify(&state, from, head, body).await {
                        Ok(routed::Routed { client, bytes, router }) => {
                            match state.limiter.admit(STREAM_BUCKET, client) {
                                Ok(allowed) => {
                                    let trailers = trailers.then(|| jobs::Trailers::to(&state, router));
                                    let body = http_body_util::Full::new(bytes);
                                    allowed.stamp(&state.limiter, jobs::stream(&state, client, body, trailers).await)
                                }
                                Err(refused) => refused.into_response(),
                            }
                        }
                        Err(e) => e.into_response(),
                    });
                }
                let client = ClientIp::resolve(peer.ip(), req.headers(), &state.trusted_proxies);
                Ok(match state.limiter.admit(STREAM_BUCKET, client) {
                    Ok(allowed) => allowed.stamp(
                        &state.limiter,
                        jobs::stream(&state, client, req.into_body(), None).await,
                    ),
                    Err(refused) => refused.into_response(),
                })
            }));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The router is always ready; a clone is a reference count.
        Either::Right(self.router.clone().call(req))
    }
}

/// Serves the REST API on `listener` (over TLS with `tls`) within `limits` until `shutdown`; then
/// stops accepting, lets requests in flight finish (for at most `drain`: a stream can last long)
/// and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let router = super::router(state.clone());
    let front = |peer| Front {
        state: state.clone(),
        router: router.clone(),
        peer,
    };
    match tls {
        Some(acceptor) => infernet_service::http::serve_tls(listener, acceptor, limits, shutdown, drain, front).await,
        None => infernet_service::http::serve(listener, limits, shutdown, drain, front).await,
    }
}
