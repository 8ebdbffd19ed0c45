//! The router's service in front of its axum app, plugged into the shared connection loop
//! ([`infernet_service::http::serve`]: timeouts, connection limit): each connection's requests go
//! to the app, except `POST /api/v1/jobs/stream`, the gateway's hot path, which is answered
//! directly — the same admission ([`server::admit`]: API key or address limit), extractor,
//! handler and errors — without the app's route matching and middleware (two routers, two
//! `from_fn` layers, boxed futures and cloned services per request).

use std::{convert::Infallible, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequest, Request, State},
    http::Method,
    response::{IntoResponse, Response},
};
use futures::future::Either;
use infernet_service::http::{RequestBody, RouterService};

use crate::{
    gateway::{self, Posted},
    server::{self, Admitted, RouterState},
};

type Direct = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// One connection's requests.
#[derive(Clone)]
pub struct Front {
    state: Arc<RouterState>,
    app: RouterService,
    peer: SocketAddr,
}

impl Front {
    /// `app` (the router's, [`server::app`]) serving the connection from `peer`, its stream route
    /// answered directly.
    pub fn new(state: Arc<RouterState>, app: Router, peer: SocketAddr) -> Self {
        Self {
            state,
            app: RouterService::new(app, peer),
            peer,
        }
    }
}

impl hyper::service::Service<hyper::Request<RequestBody>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Direct, axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, req: hyper::Request<RequestBody>) -> Self::Future {
        if req.method() == Method::POST && req.uri().path() == server::STREAM_ROUTE {
            let (state, peer) = (self.state.clone(), self.peer);
            return Either::Left(Box::pin(
                async move { Ok(stream(state, peer, req.map(Body::new)).await) },
            ));
        }
        Either::Right(self.app.call(req))
    }
}

/// `POST /api/v1/jobs/stream`, as the app would answer it.
async fn stream(state: Arc<RouterState>, peer: SocketAddr, mut req: Request) -> Response {
    req.extensions_mut().insert(ConnectInfo(peer));
    let admitted = match server::admit(&state, server::JOBS_COUNTER, peer, &mut req).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let response = match Posted::from_request(req, &state).await {
        Ok(posted) => gateway::stream(State(state.clone()), posted).await.into_response(),
        Err(e) => e.into_response(),
    };
    match admitted {
        Admitted::Keyed => response,
        Admitted::Limited(allowed) => allowed.stamp(&state.limiter, response),
    }
}
