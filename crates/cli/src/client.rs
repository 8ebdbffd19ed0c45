//! Clients of the node's REST API (`NodeClient`), the router's (`RouterClient`), and the router's
//! gateway, which runs jobs on the network for a client known by an API key or a Nostr key
//! (`GatewayClient`).
//!
//! Every call is one HTTP request; errors say what to do next (start the server, fix the request,
//! fetch the result later).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use infernet_types::JobResult;
use reqwest::{RequestBuilder, Response, Url};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// What went wrong talking to a node or router.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL cannot be parsed.
    #[error("invalid URL {url:?}: {reason}; pass something like http://127.0.0.1:4000")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No answer: connection refused, DNS failure, connection reset.
    #[error("could not reach {url}: {reason}; is the server running there? (point at it with --node/--router)")]
    Unreachable {
        /// The URL that was requested.
        url: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL that was requested.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The server's `error` message (and `params`, if any), or the raw body.
        message: String,
    },
    /// The answer is not the JSON this client expects.
    #[error("{url} answered with unexpected content: {reason}; is it an Infernet node or router?")]
    BadJson {
        /// The URL that was requested.
        url: String,
        /// What did not match.
        reason: String,
    },
    /// A job did not finish in time.
    #[error("job {id} still running after {waited:?}; fetch it later with `infernet results {id}`")]
    Timeout {
        /// Job id.
        id: String,
        /// How long the client waited.
        waited: Duration,
    },
}

impl ClientError {
    /// Whether the server could not be reached at all (as opposed to answering an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// The HTTP status of an error answer, if the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Adds `http://` to a base URL without a scheme and checks that it parses.
fn base_url(raw: &str) -> Result<Url, ClientError> {
    let trimmed = raw.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| ClientError::InvalidUrl {
        url: raw.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl {
            url: raw.to_string(),
            reason: format!("scheme must be http or https, not {}", url.scheme()),
        });
    }
    Ok(url)
}

/// A transport error's causes: reqwest's own message only repeats the URL.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// HTTP plumbing shared by both clients.
#[derive(Debug, Clone)]
struct Http {
    base: Url,
    client: reqwest::Client,
}

impl Http {
    fn new(raw: &str) -> Result<Self, ClientError> {
        let base = base_url(raw)?;
        infernet_contracts::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: raw.to_string(),
                reason: format!("cannot build an HTTP client: {}", chain(&e)),
            })?;
        Ok(Self { base, client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// Sends the request; an error status becomes `ClientError::Status` with the server's message.
    async fn send(&self, url: &str, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            reason: chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        let mut message = match serde_json::from_str::<Value>(&body) {
            Ok(v) => match v.get("error") {
                Some(Value::String(error)) => match v.get("params") {
                    Some(params) if params.as_object().is_some_and(|p| !p.is_empty()) => format!("{error} {params}"),
                    _ => error.clone(),
                },
                _ => body.trim().to_string(),
            },
            Err(_) => body.trim().to_string(),
        };
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("error").to_string();
        }
        if let Some(secs) = retry_after {
            message.push_str(&format!(" (retry after {secs} s)"));
        }
        Err(ClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, url: &str, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(url, request).await?;
        let body = response.bytes().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            reason: chain(&e),
        })?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadJson {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let url = self.url(path);
        let request = self.client.get(&url).query(query);
        self.json(&url, request).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        let url = self.url(path);
        let request = self.client.post(&url).json(body);
        self.json(&url, request).await
    }

    /// Sends `method path` with `body`, signed by `signer` (NIP-98) for the URL it is sent to.
    async fn signed(
        &self,
        signer: &infernet_identity::Identity,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let body = body.map(Value::to_string);
        let header =
            infernet_identity::nip98::authorization(signer, method.as_str(), &url, body.as_deref().map(str::as_bytes));
        let mut request = self
            .client
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, header);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        self.json(&url, request).await
    }

    /// POSTs a JSON body given as text (for numbers `serde_json::Value` cannot hold, like uint256).
    async fn post_text<T: DeserializeOwned>(&self, path: &str, body: String) -> Result<T, ClientError> {
        let url = self.url(path);
        let request = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.json(&url, request).await
    }
}

/// `{"id": "..."}`, the answer to a job submission.
#[derive(Deserialize)]
struct Submitted {
    id: String,
}

/// The job id and the output of a streaming job, as the container produces it.
pub type JobStream = (String, BoxStream<'static, Result<Bytes, ClientError>>);

/// A client of one node's REST API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: Http,
}

impl NodeClient {
    /// A client of the node at `base_url` (`http://host:port`; `host:port` gets `http://`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(base_url)?,
        })
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        self.http.base.as_str()
    }

    /// An admin request (`/admin/…`) signed by the operator's key.
    pub async fn admin(
        &self,
        operator: &infernet_identity::Identity,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.http.signed(operator, method, path, body).await
    }

    /// `GET /health`: `{"status": "healthy"}` when the node is up.
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.http.get("/health", &[]).await
    }

    /// `GET /info`: containers and their states, pending jobs, chain status, version.
    pub async fn info(&self) -> Result<Value, ClientError> {
        self.http.get("/info", &[]).await
    }

    /// `GET /resources[?model_id=]`: what each container reports it can run.
    pub async fn resources(&self, model_id: Option<&str>) -> Result<Value, ClientError> {
        let query: Vec<(&str, String)> = model_id.map(|m| ("model_id", m.to_string())).into_iter().collect();
        self.http.get("/resources", &query).await
    }

    /// `POST /api/jobs`: starts an off-chain job through `containers` and returns its id.
    pub async fn submit(
        &self,
        containers: &[String],
        data: &Value,
        requires_proof: bool,
    ) -> Result<String, ClientError> {
        let body = json!({"containers": containers, "data": data, "requires_proof": requires_proof});
        let submitted: Submitted = self.http.post("/api/jobs", &body).await?;
        Ok(submitted.id)
    }

    /// `POST /api/jobs` with a delegated subscription. `signature_json` is the `{nonce, expiry, v, r,
    /// s}` object as JSON text: `r` and `s` are 256-bit integers, which Ritual's nodes expect as
    /// JSON numbers. The node answers `{}`: the result is delivered on chain.
    pub async fn submit_delegated(
        &self,
        subscription: &Value,
        signature_json: &str,
        data: &Value,
    ) -> Result<(), ClientError> {
        let body = format!(r#"{{"subscription":{subscription},"signature":{signature_json},"data":{data}}}"#);
        let _: Value = self.http.post_text("/api/jobs", body).await?;
        Ok(())
    }

    /// `GET /api/jobs?id=…`: the jobs' results, in the order the node knows them.
    pub async fn results(&self, ids: &[String], intermediate: bool) -> Result<Vec<JobResult>, ClientError> {
        let mut query: Vec<(&str, String)> = ids.iter().map(|id| ("id", id.clone())).collect();
        if intermediate {
            query.push(("intermediate", "true".into()));
        }
        self.http.get("/api/jobs", &query).await
    }

    /// `GET /api/jobs[?pending=]`: ids of this client's jobs; `Some(true)` only running ones,
    /// `Some(false)` only finished ones.
    pub async fn ids(&self, pending: Option<bool>) -> Result<Vec<String>, ClientError> {
        let query: Vec<(&str, String)> = pending.map(|p| ("pending", p.to_string())).into_iter().collect();
        self.http.get("/api/jobs", &query).await
    }

    /// Polls the job until it is no longer running, for at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<JobResult, ClientError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let url = self.http.url("/api/jobs");
            let jobs = self.results(&[id.to_string()], false).await?;
            match jobs.into_iter().find(|j| j.id == id) {
                Some(job) if job.status.is_final() => return Ok(job),
                Some(_) => {}
                None => {
                    return Err(ClientError::Status {
                        url,
                        status: 404,
                        message: format!("the node does not know job {id}"),
                    });
                }
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    id: id.to_string(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// `POST /api/jobs/stream`: starts a streaming job; returns its id and the output bytes.
    pub async fn stream(&self, containers: &[String], data: &Value) -> Result<JobStream, ClientError> {
        let url = self.http.url("/api/jobs/stream");
        let request = self
            .http
            .client
            .post(&url)
            .json(&json!({"containers": containers, "data": data}));
        let response = self.http.send(&url, request).await?;
        split_stream(url, response).await
    }
}

/// Longest first line (the job id) of a streaming answer.
const MAX_ID_LINE: usize = 4096;

/// A streaming answer: its first line is the job id, the rest the output.
async fn split_stream(url: String, response: Response) -> Result<JobStream, ClientError> {
    let failed_url = url.clone();
    let mut body: BoxStream<'static, Result<Bytes, ClientError>> = response
        .bytes_stream()
        .map(move |chunk| {
            chunk.map_err(|e| ClientError::Unreachable {
                url: failed_url.clone(),
                reason: format!("stream broke: {}", chain(&e)),
            })
        })
        .boxed();
    // The first line is the job id; the rest of that chunk is already output.
    let mut head = Vec::new();
    loop {
        let Some(chunk) = body.next().await else {
            return Err(ClientError::BadJson {
                url,
                reason: "the stream ended before the job id line".into(),
            });
        };
        head.extend_from_slice(&chunk?);
        if let Some(newline) = head.iter().position(|&b| b == b'\n') {
            let id = String::from_utf8_lossy(&head[..newline]).trim().to_string();
            let rest = Bytes::copy_from_slice(&head[newline + 1..]);
            let first = futures::stream::iter((!rest.is_empty()).then_some(Ok(rest)));
            return Ok((id, first.chain(body).boxed()));
        }
        if head.len() > MAX_ID_LINE {
            return Err(ClientError::BadJson {
                url,
                reason: format!("no job id line in the first {MAX_ID_LINE} bytes of the stream"),
            });
        }
    }
}

/// How a gateway client is known to the router.
#[derive(Clone, Default)]
pub enum GatewayAuth {
    /// By its address (the router's per-address rate limit applies).
    #[default]
    Anonymous,
    /// By an API key the router's operator issued (`Authorization: Bearer ik_…`); its quotas apply.
    ApiKey(infernet_service::secret::Secret),
    /// By a Nostr key: every request is signed with NIP-98.
    Nostr(infernet_identity::Identity),
}

impl std::fmt::Debug for GatewayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::ApiKey(_) => f.write_str("ApiKey(***)"),
            Self::Nostr(id) => write!(f, "Nostr({})", id.npub()),
        }
    }
}

/// A client of a router's gateway: jobs submitted once, run on a node the router chooses.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: Http,
    auth: GatewayAuth,
}

impl GatewayClient {
    /// A client of the router at `base_url`, known by `auth`.
    pub fn new(base_url: &str, auth: GatewayAuth) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(base_url)?,
            auth,
        })
    }

    /// A request to `path` (with its query) carrying the client's credentials; a NIP-98 signature
    /// covers the URL and `body`.
    fn request(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (String, RequestBuilder) {
        let url = self.http.url(path);
        let mut request = self.http.client.request(method.clone(), &url);
        match &self.auth {
            GatewayAuth::Anonymous => {}
            GatewayAuth::ApiKey(key) => request = request.bearer_auth(key.expose()),
            GatewayAuth::Nostr(id) => {
                let header = infernet_identity::nip98::authorization(
                    id,
                    method.as_str(),
                    &url,
                    body.as_deref().map(str::as_bytes),
                );
                request = request.header(reqwest::header::AUTHORIZATION, header);
            }
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        (url, request)
    }

    /// `POST /api/v1/jobs`: the job's id on the router (`id`) and the node it went to (`node`).
    pub async fn submit(
        &self,
        containers: &[String],
        data: &Value,
        requires_proof: bool,
    ) -> Result<Value, ClientError> {
        let body = json!({"containers": containers, "data": data, "requires_proof": requires_proof});
        let (url, request) = self.request(reqwest::Method::POST, "/api/v1/jobs", Some(body.to_string()));
        self.http.json(&url, request).await
    }

    /// `GET /api/v1/jobs/{id}`: how the job stands, with its result once it ended.
    pub async fn job(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!(
            "/api/v1/jobs/{}",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        );
        let (url, request) = self.request(reqwest::Method::GET, &path, None);
        self.http.json(&url, request).await
    }

    /// Polls the job until it is no longer running, for at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Value, ClientError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let job = self.job(id).await?;
            if job.get("status").and_then(Value::as_str) != Some("running") {
                return Ok(job);
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    id: id.to_string(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// `GET /api/v1/jobs`: this client's jobs, newest first, one page (`next` is the `after` of
    /// the next one).
    pub async fn jobs(&self, status: Option<&str>, limit: u32, after: Option<&str>) -> Result<Value, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = status {
            query.append_pair("status", s);
        }
        query.append_pair("limit", &limit.to_string());
        if let Some(a) = after {
            query.append_pair("after", a);
        }
        let (url, request) = self.request(reqwest::Method::GET, &format!("/api/v1/jobs?{}", query.finish()), None);
        self.http.json(&url, request).await
    }

    /// `POST /api/v1/jobs/stream`: the job's id and the output bytes as the node produces them.
    pub async fn stream(&self, containers: &[String], data: &Value) -> Result<JobStream, ClientError> {
        let body = json!({"containers": containers, "data": data});
        let (url, request) = self.request(reqwest::Method::POST, "/api/v1/jobs/stream", Some(body.to_string()));
        let response = self.http.send(&url, request).await?;
        split_stream(url, response).await
    }
}

/// One container offered by the router's nodes (`GET /api/v1/containers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterContainer {
    /// Container id.
    pub id: String,
    /// How many available nodes run it.
    pub count: u64,
    /// The container's description.
    #[serde(default)]
    pub description: String,
}

/// A client of a router's REST API.
#[derive(Debug, Clone)]
pub struct RouterClient {
    http: Http,
}

impl RouterClient {
    /// A client of the router at `base_url` (`http://host:port`; `host:port` gets `http://`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(base_url)?,
        })
    }

    /// The router's base URL.
    pub fn base_url(&self) -> &str {
        self.http.base.as_str()
    }

    /// `GET /api/v1/ips`: up to `n` nodes (`host:port`) running every one of `containers`, least
    /// loaded first, skipping the first `offset`.
    pub async fn ips(&self, containers: &[String], n: usize, offset: usize) -> Result<Vec<String>, ClientError> {
        let mut query: Vec<(&str, String)> = containers.iter().map(|c| ("container", c.clone())).collect();
        query.push(("n", n.to_string()));
        query.push(("offset", offset.to_string()));
        self.http.get("/api/v1/ips", &query).await
    }

    /// `GET /api/v1/containers`: the containers on available nodes, with how many nodes run each.
    pub async fn containers(&self) -> Result<Vec<RouterContainer>, ClientError> {
        self.http.get("/api/v1/containers", &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_without_scheme_gets_http() {
        assert_eq!(base_url("localhost:4000").unwrap().as_str(), "http://localhost:4000/");
        assert_eq!(base_url("https://n.example/").unwrap().as_str(), "https://n.example/");
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn paths_join_the_base_without_double_slashes() {
        let http = Http::new("127.0.0.1:4000/").unwrap();
        assert_eq!(http.url("/health"), "http://127.0.0.1:4000/health");
    }
}
