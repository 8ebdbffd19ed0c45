//! HTTP to containers.
//!
//! Containers on plain `http` (local and managed containers, the usual case) are called through a
//! lean hyper client: a pool of keep-alive connections and nothing else, which halves what a call
//! costs the node next to a full-featured client. `https` services, and URLs that carry
//! credentials, go through reqwest, which brings the platform's TLS verification (its root store,
//! so private CAs work) and basic authentication from the URL. Both give the same answers and
//! errors, so the Orchestrator never knows which one carried a call.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    body::Incoming,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const POOL_IDLE_PER_HOST: usize = 64;

/// A container URL, parsed once (parsing per call shows up in profiles).
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// As shown in errors.
    url: reqwest::Url,
    /// Set when the lean client can carry calls to it.
    plain: Option<Uri>,
}

impl Endpoint {
    pub(super) fn parse(text: &str) -> Option<Self> {
        let url = reqwest::Url::parse(text).ok()?;
        let plain = (url.scheme() == "http" && url.username().is_empty() && url.password().is_none())
            .then(|| url.as_str().parse::<Uri>().ok())
            .flatten();
        Some(Self { url, plain })
    }

    /// The same endpoint with `pairs` as its query.
    pub(super) fn with_query(&self, pairs: &[(&str, &str)]) -> Self {
        let mut url = self.url.clone();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let plain = self.plain.as_ref().and_then(|_| url.as_str().parse().ok());
        Self { url, plain }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.url.fmt(f)
    }
}

/// Why a call failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// No connection could be made; the root cause.
    Connect(String),
    /// Anything after the connection; the root cause.
    Failed(String),
}

impl CallError {
    /// From either client's error, by its root cause.
    fn new(e: &(dyn std::error::Error + 'static), connect: bool) -> Self {
        let cause = root_cause(e);
        if connect {
            Self::Connect(cause)
        } else {
            Self::Failed(cause)
        }
    }

    fn of_reqwest(e: &reqwest::Error) -> Self {
        Self::new(e, e.is_connect())
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The HTTP clients of the Orchestrator; cheap to share, connections are pooled across jobs.
pub(super) struct ContainerHttp {
    plain: Client<HttpConnector, Full<Bytes>>,
    tls: reqwest::Client,
}

impl ContainerHttp {
    pub(super) fn new() -> Result<Self, reqwest::Error> {
        crate::install_tls_provider();
        let tls = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .tcp_nodelay(true)
            .build()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .build(connector);
        Ok(Self { plain, tls })
    }

    /// Sends a `POST` with a JSON `body`, or a `GET` without one; answers once the head is in.
    /// Redirects are followed, as Ritual's node follows them.
    pub(super) async fn send(
        &self,
        endpoint: &Endpoint,
        bearer: Option<&HeaderValue>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CallError> {
        let method = if body.is_some() { Method::POST } else { Method::GET };
        let json = HeaderValue::from_static("application/json");
        let body = body.map(Bytes::from);
        if let Some(uri) = &endpoint.plain {
            let mut request = Request::builder().method(method.clone()).uri(uri.clone());
            if body.is_some() {
                request = request.header(CONTENT_TYPE, json.clone());
            }
            if let Some(bearer) = bearer {
                request = request.header(AUTHORIZATION, bearer.clone());
            }
            let request = request
                .body(Full::new(body.clone().unwrap_or_default()))
                .map_err(|e| CallError::Failed(e.to_string()))?;
            let response = self
                .plain
                .request(request)
                .await
                .map_err(|e| CallError::new(&e, e.is_connect()))?;
            let (head, answer) = response.into_parts();
            // The lean client does not follow redirects; the full one repeats the call and does.
            if !(head.status.is_redirection() && head.headers.contains_key(LOCATION)) {
                return Ok(Answer {
                    status: head.status,
                    body: AnswerBody::Plain(answer),
                });
            }
        }
        let mut request = self.tls.request(method, endpoint.url.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, json).body(body);
        }
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let response = request.send().await.map_err(|e| CallError::of_reqwest(&e))?;
        Ok(Answer {
            status: response.status(),
            body: AnswerBody::Tls(response),
        })
    }
}

/// A container's answer, its body still to be read.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    body: AnswerBody,
}

enum AnswerBody {
    Plain(Incoming),
    Tls(reqwest::Response),
}

impl Answer {
    /// The whole body.
    pub(super) async fn bytes(self) -> Result<Bytes, CallError> {
        match self.body {
            AnswerBody::Plain(body) => body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| CallError::new(&e, false)),
            AnswerBody::Tls(response) => response.bytes().await.map_err(|e| CallError::of_reqwest(&e)),
        }
    }

    /// The body as it arrives.
    pub(super) fn into_stream(self) -> BodyStream {
        match self.body {
            AnswerBody::Plain(body) => BodyStream::Plain(BodyDataStream::new(body)),
            AnswerBody::Tls(response) => BodyStream::Tls(Box::pin(response.bytes_stream())),
        }
    }
}

/// A container's body as it arrives.
pub(super) enum BodyStream {
    Plain(BodyDataStream<Incoming>),
    Tls(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
}

impl Stream for BodyStream {
    type Item = Result<Bytes, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Plain(body) => body.try_poll_next_unpin(cx).map_err(|e| CallError::new(&e, false)),
            Self::Tls(body) => body.try_poll_next_unpin(cx).map_err(|e| CallError::of_reqwest(&e)),
        }
    }
}
