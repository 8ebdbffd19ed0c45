//! HTTP to containers.
//!
//! Containers on plain `http` (local and managed containers, the usual case) are called through a
//! lean hyper client: a pool of keep-alive connections per endpoint and nothing else, which halves
//! what a call costs the node next to a full-featured client (and finds its connections without
//! hashing a host name, as a general-purpose pool does on every call). `https` services, and URLs that carry
//! credentials, go through reqwest, which brings the platform's TLS verification (its root store,
//! so private CAs work) and basic authentication from the URL. Both give the same answers and
//! errors, so the Orchestrator never knows which one carried a call. An endpoint's URL is a
//! [`SensitiveUrl`]: errors, logs and `Debug` show it as `scheme://host[:port]/…`, never its user
//! info, path or query (where tokens are).
//!
//! The lean client's pool is [`infernet_service::http::pool`] (the router dispatches to its nodes
//! with it too); its redirect follower is here. Why it stays: with every call through reqwest
//! the node spent 106.3k–106.4k instructions per streamed job, with hyper-util's legacy pooled
//! client 77.9k–78.0k, against 63.3k–63.7k with the lean client (`make count`, release builds
//! counted in the same session, 2026-12-03): 68 % and 23 % more.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    body::Body,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, LOCATION},
};
use infernet_service::{
    http::Collected,
    http::pool::{CONNECT_TIMEOUT, POOL_IDLE_PER_HOST, POOL_IDLE_TIMEOUT, Pool, PoolError, Pooled, root_cause},
    secret::SensitiveUrl,
};

use super::budget::{Budget, Held};

/// A container URL, parsed once (parsing per call shows up in profiles).
#[derive(Clone)]
pub(super) struct Endpoint {
    /// Shown redacted in errors.
    url: SensitiveUrl,
    /// Set when the lean client can carry calls to it.
    plain: Option<Plain>,
}

/// What the lean client needs of an endpoint.
#[derive(Debug, Clone)]
struct Plain {
    /// The request target in origin form (path and query), as servers expect it.
    target: Uri,
    /// The `Host` header (the port only when not the default).
    host: HeaderValue,
    pool: Arc<Pool>,
}

/// The origin-form request target of `url`.
fn origin_form(url: &reqwest::Url) -> Option<Uri> {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()).parse().ok(),
        None => url.path().parse().ok(),
    }
}

impl Endpoint {
    /// The endpoint at `url`; `None` when it has no host or port to connect to.
    pub(super) fn new(sensitive: SensitiveUrl) -> Option<Self> {
        let url = sensitive.expose();
        let plain = (url.scheme() == "http" && url.username().is_empty() && url.password().is_none())
            .then(|| {
                // An IPv6 host comes in brackets, as both need it.
                let host = url.host_str()?;
                let authority = format!("{host}:{}", url.port_or_known_default()?);
                let host = match url.port() {
                    Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
                    None => HeaderValue::from_str(host),
                }
                .ok()?;
                Some(Plain {
                    target: origin_form(url)?,
                    host,
                    pool: Arc::new(Pool::new(authority)),
                })
            })
            .flatten();
        Some(Self { url: sensitive, plain })
    }

    /// The same endpoint with `pairs` added to its query (and the same connections).
    pub(super) fn with_query(&self, pairs: &[(&str, &str)]) -> Self {
        let mut url = self.url.expose().clone();
        url.query_pairs_mut().extend_pairs(pairs);
        // Same host: still a URL with one.
        self.beside(SensitiveUrl::new(url).unwrap_or_else(|_| self.url.clone()))
    }

    /// The endpoint at `url` (same scheme, host and port as this one) on the same connections.
    pub(super) fn beside(&self, url: SensitiveUrl) -> Self {
        let plain = self.plain.as_ref().and_then(|plain| {
            Some(Plain {
                target: origin_form(url.expose())?,
                ..plain.clone()
            })
        });
        Self { url, plain }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The request target holds the query, and with it any token: not shown.
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("lean", &self.plain.is_some())
            .finish()
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
    /// The answer's body is longer than this many bytes, the most the call may read.
    TooLarge(usize),
    /// The answer is larger than the call may buffer freely and the node-wide budget (this many
    /// bytes) is in use.
    OverBudget(u64),
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

    /// From the full client's error, without the URL it names (it may carry credentials).
    fn of_reqwest(e: reqwest::Error) -> Self {
        let connect = e.is_connect();
        Self::new(&e.without_url(), connect)
    }
}

/// The HTTP clients of the Orchestrator; cheap to share, connections are pooled across jobs
/// (the lean client's in each [`Endpoint`]).
pub(super) struct ContainerHttp {
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
        Ok(Self { tls })
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
        // The full client's call: the whole of it, or the rest of a lean one that was redirected.
        let (method, url, body, bearer) = if let Some(Plain { target, host, pool }) = &endpoint.plain {
            // Built in place: the builder moves all of its parts at every step.
            let mut request = Request::new(Full::new(body.clone().unwrap_or_default()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = target.clone();
            let headers = request.headers_mut();
            headers.insert(HOST, host.clone());
            if body.is_some() {
                headers.insert(CONTENT_TYPE, json.clone());
            }
            if let Some(bearer) = bearer {
                headers.insert(AUTHORIZATION, bearer.clone());
            }
            let response = pool.send(request).await.map_err(|e| match e {
                PoolError::Connect(cause) => CallError::Connect(cause),
                PoolError::Failed(cause) => CallError::Failed(cause),
            })?;
            let (head, answer) = response.into_parts();
            let Some(redirect) = Redirect::of(endpoint.url.expose(), &method, head.status, &head.headers) else {
                return Ok(Answer {
                    status: head.status,
                    body: AnswerBody::Plain(answer),
                });
            };
            // Redirects are rare: the rest of the way (further redirects included) goes through
            // the full client, from where this answer points, so the call is never repeated.
            (
                redirect.method,
                redirect.to,
                body.filter(|_| redirect.keeps_body),
                bearer.filter(|_| redirect.same_origin),
            )
        } else {
            (method, endpoint.url.expose().clone(), body, bearer)
        };
        let mut request = self.tls.request(method, url);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, json).body(body);
        }
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let response = request.send().await.map_err(CallError::of_reqwest)?;
        Ok(Answer {
            status: response.status(),
            body: AnswerBody::Tls(response),
        })
    }
}

/// Where a lean-client answer sends the call on, followed as reqwest (and Ritual's aiohttp)
/// follow redirects: 307 and 308 repeat the request there; 301, 302 and 303 turn it into a
/// `GET` without a body. The bearer token goes along only to the same origin.
#[derive(Debug, PartialEq)]
struct Redirect {
    to: reqwest::Url,
    method: Method,
    keeps_body: bool,
    same_origin: bool,
}

impl Redirect {
    /// `None` when the answer is not a redirect to follow (it is then the call's answer).
    fn of(from: &reqwest::Url, method: &Method, status: StatusCode, headers: &hyper::HeaderMap) -> Option<Self> {
        let keeps_body = match status {
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => false,
            _ => return None,
        };
        let to = from.join(headers.get(LOCATION)?.to_str().ok()?).ok()?;
        Some(Self {
            method: if keeps_body { method.clone() } else { Method::GET },
            same_origin: to.origin() == from.origin(),
            to,
            keeps_body,
        })
    }
}

/// A container's answer, its body still to be read.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    body: AnswerBody,
}

enum AnswerBody {
    Plain(Pooled),
    Tls(reqwest::Response),
}

impl Answer {
    /// The whole body, at most `limit` bytes, with what it took from `budget`: the first `free`
    /// bytes come freely, each byte past them from the budget. A longer body fails as soon as it
    /// is announced or read past the limit, one the budget cannot hold as soon as it is read past
    /// what it has; either way its connection is dropped rather than read to the end.
    pub(super) async fn bytes(self, limit: usize, budget: &Budget, free: usize) -> Result<(Bytes, Held), CallError> {
        let too_large = |announced: Option<u64>| announced.is_some_and(|n| n > limit as u64);
        let announced = match &self.body {
            AnswerBody::Plain(body) => body.size_hint().exact(),
            AnswerBody::Tls(response) => response.content_length(),
        };
        if too_large(announced) {
            return Err(CallError::TooLarge(limit));
        }
        let mut held = Held::default();
        // Gathered as it comes: never sized by what the container announces, and no piece holds
        // the connection's read buffer past its turn (a container answering a byte at a time).
        let mut body = Collected::default();
        let mut add = |body: &mut Collected, chunk: Bytes| {
            let end = body.len() + chunk.len();
            if end > limit {
                return Err(CallError::TooLarge(limit));
            }
            if !budget.grow(&mut held, free, body.len(), end) {
                return Err(CallError::OverBudget(budget.bytes()));
            }
            body.push(chunk);
            Ok(())
        };
        match self.body {
            AnswerBody::Plain(mut plain) => {
                while let Some(frame) = plain.frame().await {
                    let frame = frame.map_err(|e| CallError::new(&e, false))?;
                    if let Ok(chunk) = frame.into_data() {
                        add(&mut body, chunk)?;
                    }
                }
            }
            AnswerBody::Tls(mut response) => {
                while let Some(chunk) = response.chunk().await.map_err(CallError::of_reqwest)? {
                    add(&mut body, chunk)?;
                }
            }
        }
        Ok((body.join(), held))
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
    Plain(BodyDataStream<Pooled>),
    Tls(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
}

impl Stream for BodyStream {
    type Item = Result<Bytes, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Plain(body) => body.try_poll_next_unpin(cx).map_err(|e| CallError::new(&e, false)),
            Self::Tls(body) => body.try_poll_next_unpin(cx).map_err(CallError::of_reqwest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(e: &Endpoint) -> &Plain {
        e.plain.as_ref().expect("a plain-http endpoint")
    }

    fn url(text: &str) -> SensitiveUrl {
        SensitiveUrl::parse(text).unwrap()
    }

    fn parse(text: &str) -> Endpoint {
        Endpoint::new(url(text)).unwrap()
    }

    #[test]
    fn redirects_are_followed_as_reqwest_and_aiohttp_follow_them() {
        let from = reqwest::Url::parse("http://127.0.0.1:3000/service_output").unwrap();
        let at = |status: u16, location: &str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(LOCATION, HeaderValue::from_str(location).unwrap());
            Redirect::of(&from, &Method::POST, StatusCode::from_u16(status).unwrap(), &headers)
        };
        let kept = at(307, "/v2/service_output").unwrap();
        assert_eq!(kept.to.as_str(), "http://127.0.0.1:3000/v2/service_output");
        assert_eq!(
            (kept.method, kept.keeps_body, kept.same_origin),
            (Method::POST, true, true)
        );
        assert!(at(308, "v2").unwrap().keeps_body);
        for status in [301, 302, 303] {
            let moved = at(status, "http://127.0.0.1:3001/result").unwrap();
            assert_eq!((moved.method, moved.keeps_body), (Method::GET, false), "{status}");
            assert!(!moved.same_origin, "another port is another origin: no bearer there");
        }
        // Not redirects to follow: the answer stands.
        assert_eq!(at(300, "/elsewhere"), None);
        assert_eq!(at(304, "/elsewhere"), None);
        assert_eq!(
            Redirect::of(&from, &Method::POST, StatusCode::FOUND, &hyper::HeaderMap::new()),
            None
        );
    }

    #[test]
    fn endpoints_beside_one_another_share_connections_and_target_their_own_path() {
        let base = url("http://127.0.0.1:3001/prefix");
        let output = Endpoint::new(base.join("service_output")).unwrap();
        let resources = output.beside(base.join("service-resources"));
        let by_model = resources.with_query(&[("model_id", "m 1")]);
        assert_eq!(resources.to_string(), "http://127.0.0.1:3001/…");
        assert_eq!(plain(&resources).target, "/prefix/service-resources");
        assert_eq!(plain(&by_model).target, "/prefix/service-resources?model_id=m+1");
        assert!(Arc::ptr_eq(&plain(&output).pool, &plain(&by_model).pool));
        assert_eq!(plain(&output).host, "127.0.0.1:3001");
        assert_eq!(plain(&output).pool.authority(), "127.0.0.1:3001");
        // The default port is left out of Host but needed to connect; IPv6 keeps its brackets.
        let default = parse("http://svc/service_output");
        assert_eq!(
            (plain(&default).host.to_str().unwrap(), plain(&default).pool.authority()),
            ("svc", "svc:80")
        );
        let v6 = parse("http://[::1]:3000/service_output");
        assert_eq!(plain(&v6).pool.authority(), "[::1]:3000");
        // https and URLs with credentials go through the full client.
        assert!(parse("https://svc/service_output").plain.is_none());
        assert!(parse("http://u:p@svc/service_output").plain.is_none());
    }

    #[test]
    fn a_token_in_the_query_is_sent_but_never_shown() {
        let base = url("http://127.0.0.1:3001/api?token=SECRET");
        let output = Endpoint::new(base.join("service_output")).unwrap();
        assert_eq!(plain(&output).target, "/api/service_output?token=SECRET");
        let by_model = output
            .beside(base.join("service-resources"))
            .with_query(&[("model_id", "m")]);
        assert_eq!(
            plain(&by_model).target,
            "/api/service-resources?token=SECRET&model_id=m"
        );
        for shown in [output.to_string(), format!("{output:?}"), format!("{by_model:?}")] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
