//! Dispatch: a job body sent to a node the router reaches over HTTP, signed by the router's key
//! for the client it runs the job for (the node trusts the statement when it lists the router in
//! `network.routers`), and the node's answer sorted into what the gateway does next.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Body as _;
use infernet_identity::{
    Identity,
    dispatch::{self, DispatchKey},
    nip98,
};

use infernet_service::{client_ip::CLIENT_HEADER, http::pool::Pool};
/// Most bytes of a node's answer read when it is not a stream (ids, errors, results).
pub const MAX_ANSWER: usize = 4 << 20;

/// Why an exchange with a node did not give an answer the router can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection, or it broke before the answer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The answer broke off.
    #[error("reading the answer: {0}")]
    Read(String),
    /// The answer is longer than the router reads.
    #[error("the node's answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The answer did not end in time.
    #[error("the answer did not end within {0:?}")]
    Slow(Duration),
    /// A status that is not a success.
    #[error("the node answered HTTP {0}")]
    Status(u16),
    /// Not the JSON expected.
    #[error("the node's answer is not a job result: {0}")]
    NotResult(String),
    /// The node does not know the job.
    #[error("the node no longer has the job (its retention passed?)")]
    Gone,
    /// A stream broke before its first line.
    #[error("the stream broke: {0}")]
    Broken(String),
    /// A stream that does not start with a job id.
    #[error("the node's stream did not start with its job id")]
    NoIdLine,
    /// A stream that did not start in time.
    #[error("the node's stream did not start in time")]
    LateStart,
    /// A job id that is no job id: empty, longer than [`MAX_NODE_JOB_ID`], or not printable ASCII.
    #[error("the node's job id is not 1 to {MAX_NODE_JOB_ID} printable ASCII characters")]
    BadJobId,
}

/// Longest job id the router takes from a node (Ritual's node answers UUIDs, 36 characters).
pub const MAX_NODE_JOB_ID: usize = 128;

/// Whether `id` is a job id the router keeps and asks a node about: 1 to [`MAX_NODE_JOB_ID`]
/// printable ASCII characters (no spaces, no control characters: it goes into URLs and rows).
pub fn is_node_job_id(id: &str) -> bool {
    (1..=MAX_NODE_JOB_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// What a node made of a dispatch.
#[derive(Debug)]
pub enum Outcome {
    /// It took the job: its id there.
    Accepted(String),
    /// It did not take it and is not at fault: busy (429), closed or paused (503), or it does not
    /// trust this router (401). The next node is tried; the node's record is untouched.
    Refused(String),
    /// The job is past the node's own body limit (413, its `server.max_body_size`): the next node
    /// is tried, the node is neither at fault nor busy; when every node says so, the client is
    /// answered 413.
    TooLarge(String),
    /// It failed: unreachable, timed out, 5xx, or an answer that is not a node's. The next node is
    /// tried; the failure counts against its record.
    Failed(String),
    /// It refused the job itself as invalid (400, 405, 422): the client's error, passed on as is.
    Invalid {
        /// The node's status.
        status: u16,
        /// The node's error message.
        message: String,
    },
}

/// A node's stream route.
pub const STREAM: &str = "/api/jobs/stream";

/// Why a streamed answer's body broke, whichever client carried it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A streamed answer's body, whichever client carried it.
pub type StreamBody = UnsyncBoxBody<Bytes, BodyError>;

/// Without the URL, as [`without_url`] says it.
fn reqwest_body_error(e: reqwest::Error) -> BodyError {
    without_url(&e).into()
}

/// reqwest's answer as the lean client's.
fn boxed(response: reqwest::Response) -> hyper::Response<StreamBody> {
    hyper::Response::from(response).map(|b| b.map_err(reqwest_body_error).boxed_unsync())
}

fn hyper_body_error(e: hyper::Error) -> BodyError {
    Box::new(e)
}

/// Nodes' pools at most; past it, the pools start anew (their connections close).
const MAX_POOLS: usize = 65_536;

/// The lean client's connection pools ([`infernet_service::http::pool`]) to the nodes the router
/// reaches over plain `http`, by `host:port`: streams go through them, without reqwest's
/// connection task, URL parsing and redirect layer.
#[derive(Default)]
pub struct Pools(Mutex<super::FastMap<String, Arc<Pool>>>);

impl Pools {
    /// The pool of `authority` (`host:port`).
    fn of(&self, authority: &str) -> Arc<Pool> {
        let mut pools = self.0.lock().expect("pools poisoned");
        if let Some(pool) = pools.get(authority) {
            return pool.clone();
        }
        if pools.len() >= MAX_POOLS {
            pools.clear();
        }
        let pool = Arc::new(Pool::new(authority.to_string()));
        pools.insert(authority.to_string(), pool.clone());
        pool
    }
}

/// `host:port` of a base URL the lean client can carry: plain `http`, an explicit port, no user
/// info and no path.
fn plain_authority(base: &str) -> Option<&str> {
    let authority = base.strip_prefix("http://")?;
    let (host, port) = authority.rsplit_once(':')?;
    let plain = !host.is_empty()
        && !authority.contains(['/', '@', '?', '#'])
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit());
    plain.then_some(authority)
}

/// A signed request to a node.
pub struct Call<'a> {
    /// The client.
    pub http: &'a reqwest::Client,
    /// The lean client's pools (streams to nodes on plain `http`).
    pub pools: &'a Pools,
    /// The router's key.
    pub identity: &'a Identity,
    /// The node's base URL (`http://host:port`, `infernet://npub1…` for a linked node).
    pub base: String,
    /// The node's link, when it is linked to this replica or a peer: the request goes over it.
    pub link: Option<crate::link::Holder>,
    /// The key shared with the node, when the node checks MACs: the request carries one
    /// instead of a NIP-98 signature.
    pub shared: Option<std::sync::Arc<DispatchKey>>,
    /// The stated client.
    pub client: IpAddr,
    /// Deadline of the whole exchange (until the answer's head for streams).
    pub timeout: Duration,
}

impl Call<'_> {
    /// `method base+path` with `body`, signed; the response, whatever its status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, NodeError> {
        let url = format!("{}{path}", self.base);
        let client = self.client.to_string();
        let authorization = self.authorization(method.as_str(), &url, &client, body.as_deref());
        match &self.link {
            Some(holder) => {
                let call = crate::link::peer::Forward {
                    method: method.as_str(),
                    path,
                    authorization: Some(authorization),
                    client: Some(client),
                    body,
                    timeout: self.timeout,
                };
                return holder.send(self.http, self.identity, call).await;
            }
            None if self.base.starts_with("infernet://") => {
                return Err(NodeError::Unreachable("the node's link is closed".into()));
            }
            None => {}
        }
        let mut request = self
            .http
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(CLIENT_HEADER, &client);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if path == STREAM {
            // The node then sends the stream's receipt in a trailer, after the output.
            request = request.header(reqwest::header::TE, "trailers");
        }
        tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
            .map_err(|e| NodeError::Unreachable(without_url(&e)))
    }

    /// The signature of `method url` with `body` for `client`: a MAC when the node shares a key
    /// with this router, NIP-98 otherwise.
    fn authorization(&self, method: &str, url: &str, client: &str, body: Option<&[u8]>) -> String {
        match &self.shared {
            Some(key) => dispatch::authorization(
                key,
                &self.identity.public_key(),
                method,
                url,
                client,
                body.unwrap_or_default(),
            ),
            None => nip98::tagged_authorization(self.identity, method, url, body, &[["client", client]]),
        }
    }

    /// `POST base/api/jobs/stream` with `body`, asking for the receipt in a trailer; the answer
    /// once its head is in, whatever its status. Through the lean client when the node is on
    /// plain `http` and not linked, through [`Call::send`] otherwise.
    pub async fn stream(&self, body: Bytes) -> Result<hyper::Response<StreamBody>, NodeError> {
        let Some(authority) = plain_authority(&self.base).filter(|_| self.link.is_none()) else {
            return Ok(boxed(self.send(reqwest::Method::POST, STREAM, Some(body)).await?));
        };
        let url = format!("{}{STREAM}", self.base);
        let client = self.client.to_string();
        let authorization = self.authorization("POST", &url, &client, Some(&body));
        let header = |v: &str| {
            hyper::header::HeaderValue::from_str(v).map_err(|e| NodeError::Unreachable(format!("a header: {e}")))
        };
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = hyper::Uri::from_static(STREAM);
        let headers = request.headers_mut();
        headers.insert(hyper::header::HOST, header(authority)?);
        headers.insert(hyper::header::AUTHORIZATION, header(&authorization)?);
        headers.insert(CLIENT_HEADER, header(&client)?);
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        // The node then sends the stream's receipt in a trailer, after the output.
        headers.insert(hyper::header::TE, hyper::header::HeaderValue::from_static("trailers"));
        let pool = self.pools.of(authority);
        let response = tokio::time::timeout(self.timeout, pool.send(request))
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
            .map_err(|e| NodeError::Unreachable(e.to_string()))?;
        Ok(response.map(|b| b.map_err(hyper_body_error).boxed_unsync()))
    }

    /// `POST base/api/jobs`: the node's id for the job, or why not.
    pub async fn submit(&self, body: Bytes) -> Outcome {
        let response = match self.send(reqwest::Method::POST, "/api/jobs", Some(body)).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let status = response.status();
        let text = match read(response, self.timeout).await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if status.is_success() {
            return match serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
            {
                Some(id) if is_node_job_id(&id) => Outcome::Accepted(id),
                Some(_) => Outcome::Failed(NodeError::BadJobId.to_string()),
                None => Outcome::Failed("the node's answer has no job id".into()),
            };
        }
        classify(status.as_u16(), &text)
    }
}

/// What a non-success answer means for the gateway.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let message = error_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        401 | 403 | 429 | 503 => Outcome::Refused(format!("HTTP {status}: {message}")),
        413 => Outcome::TooLarge(format!("HTTP 413: {message}")),
        400 | 405 | 422 => Outcome::Invalid { status, message },
        _ => Outcome::Failed(format!("HTTP {status}: {message}")),
    }
}

/// The `error` of a node's JSON error body (at most 500 characters).
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
    Some(text.chars().take(500).collect())
}

/// The whole body, at most [`MAX_ANSWER`] bytes, within `timeout`.
pub async fn read(response: reqwest::Response, timeout: Duration) -> Result<Vec<u8>, NodeError> {
    read_body(boxed(response).into_body(), timeout).await
}

/// A body (a node's answer, whichever client carried it), at most [`MAX_ANSWER`] bytes, within
/// `timeout`.
pub async fn read_body(mut body: StreamBody, timeout: Duration) -> Result<Vec<u8>, NodeError> {
    // The length the node declares is its word: refused above the bound, never reserved beyond.
    if body.size_hint().lower() > MAX_ANSWER as u64 {
        return Err(NodeError::TooLarge);
    }
    let read = async {
        let mut out = Vec::with_capacity((body.size_hint().lower() as usize).min(MAX_ANSWER));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| NodeError::Read(e.to_string()))?;
            if let Ok(chunk) = frame.into_data() {
                if out.len() + chunk.len() > MAX_ANSWER {
                    return Err(NodeError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| NodeError::Slow(timeout))?
}

/// A reqwest error without the URL (the node's address is said next to it anyway).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_job_id_is_printable_ascii_of_a_bounded_length() {
        assert!(is_node_job_id("3f0c9e2a-1b7d-4c55-9a0e-2d8f6b1c7e44"));
        assert!(is_node_job_id(&"a".repeat(MAX_NODE_JOB_ID)));
        for bad in ["", "a b", "a\0b", "é", "a\n"] {
            assert!(!is_node_job_id(bad), "{bad:?}");
        }
        assert!(!is_node_job_id(&"a".repeat(MAX_NODE_JOB_ID + 1)));
    }

    #[test]
    fn only_plain_http_with_a_port_and_nothing_else_takes_the_lean_client() {
        assert_eq!(plain_authority("http://127.0.0.1:4000"), Some("127.0.0.1:4000"));
        assert_eq!(plain_authority("http://[::1]:4000"), Some("[::1]:4000"));
        assert_eq!(plain_authority("http://node.example:80"), Some("node.example:80"));
        for other in [
            "https://127.0.0.1:4000",
            "http://node.example",
            "http://u:p@node.example:4000",
            "http://node.example:4000/prefix",
            "http://[::1]",
            "http://:4000",
            "infernet://npub1xyz",
        ] {
            assert_eq!(plain_authority(other), None, "{other}");
        }
    }

    #[test]
    fn answers_sort_into_refusals_failures_and_the_clients_errors() {
        assert!(matches!(classify(429, br#"{"error": "busy"}"#), Outcome::Refused(m) if m.contains("busy")));
        assert!(matches!(classify(503, b"closed"), Outcome::Refused(_)));
        // A node's own body limit: another node may take the job.
        assert!(matches!(classify(413, b"too large"), Outcome::TooLarge(_)));
        assert!(matches!(classify(500, b"oops"), Outcome::Failed(_)));
        assert!(matches!(classify(502, b""), Outcome::Failed(_)));
        assert!(matches!(
            classify(400, br#"{"error": "bad data"}"#),
            Outcome::Invalid { status: 400, message } if message == "bad data"
        ));
    }
}
