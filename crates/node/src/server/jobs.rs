//! `/api/jobs`, `/api/jobs/batch`, `/api/jobs/stream` and `/api/status`.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{ConnectInfo, FromRequest, RawQuery, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{
    Stream, StreamExt,
    task::{ArcWake, AtomicWaker},
};
use infernet_types::{ContainerResult, DelegatedBody, JobRequest, JobResult, JobStatus, ParsedJobRequest, kind_of};
use serde_json::{Value, json, value::RawValue};

use super::{ApiError, AppState, ClientIp};
use crate::{
    chain::delegated::IntakeError,
    containers::ContainerState,
    stats::metrics::{Metrics, Source},
    store::{JobStore, ListFilter},
};

/// A request body as text, whatever its content type (Ritual's clients do not always set one);
/// an oversized body is a 413, a body that is not UTF-8 a 400, never a 500. Parsing is left to
/// the handler so that delegated subscriptions keep their 256-bit integers exact.
pub(super) struct JsonText(pub(super) String);

impl FromRequest<Arc<AppState>> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.max_body)
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?;
        text(bytes).map(Self)
    }
}

/// A body as text: not UTF-8 is a 400.
fn text(bytes: Bytes) -> Result<String, ApiError> {
    // Takes the buffer over when nothing else holds it, copies it otherwise.
    String::from_utf8(Vec::from(bytes))
        .map_err(|_| ApiError::BadRequest("request body is not valid JSON: not UTF-8 text".into()))
}

/// A body read straight from the connection, at most `max_body` bytes, as [`JsonText`] reads it.
async fn read_text(body: infernet_service::http::RequestBody, max_body: usize) -> Result<String, ApiError> {
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge(max_body)
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?;
    text(collected.to_bytes())
}

fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks a delegated subscription and hands it to the chain side. The Guardian's first checks
/// (chain enabled, signature expiry) come before the full parse, in Ritual's order.
async fn accept_delegated(state: &AppState, body: DelegatedBody) -> Result<(), ApiError> {
    state
        .guardian
        .check_delegated_precondition(&body.subscription, body.expiry, crate::store::unix_now())
        .map_err(ApiError::Rejected)?;
    let request = body.parse().map_err(ApiError::BadRequest)?;
    let Some(intake) = &state.delegated else {
        return Err(ApiError::Unavailable("the chain side is not running".into()));
    };
    intake.accept(request).await.map_err(|e| match e {
        IntakeError::Rejected(r) => ApiError::Rejected(r),
        IntakeError::Signature(message) => ApiError::Forbidden(message),
        e @ (IntakeError::Chain(_) | IntakeError::Stopping) => ApiError::Unavailable(e.to_string()),
    })
}

/// Guardian checks, then whether every container of the pipeline is serving.
fn admit(state: &AppState, client: IpAddr, request: &JobRequest) -> Result<(), ApiError> {
    state
        .guardian
        .check_offchain(&request.containers, request.requires_proof.unwrap_or(false), client)
        .map_err(ApiError::Rejected)?;
    let states = state.states.read().expect("container states poisoned");
    for id in &request.containers {
        match states.get(id) {
            Some(ContainerState::Running) | None => {}
            Some(other) => {
                return Err(ApiError::Unavailable(format!(
                    "container {id} is not serving right now ({other}); retry shortly"
                )));
            }
        }
    }
    Ok(())
}

/// Accepts one off-chain job: admission, then a stored running record, then the pipeline in the
/// background. Returns the job id.
async fn accept(state: &Arc<AppState>, client: IpAddr, request: JobRequest) -> Result<String, ApiError> {
    admit(state, client, &request)?;
    let id = new_job_id();
    state.store.put(client, &JobResult::running(&id)).await?;
    let orchestrator = state.orchestrator.clone();
    let job_id = id.clone();
    state.jobs.spawn(async move {
        orchestrator
            .run_offchain(
                job_id,
                client,
                request.containers,
                request.data,
                request.requires_proof.unwrap_or(false),
            )
            .await;
    });
    Ok(id)
}

/// `POST /api/jobs`: an off-chain job (answers its id) or a delegated subscription.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 200, description = "Job accepted: `{\"id\": \"<uuid>\"}`; a delegated subscription: `{}`"),
        (status = 400, description = "Malformed request (the failing field is named)"),
        (status = 403, description = "Delegated subscription whose signature is not the owner's signer's"),
        (status = 405, description = "Rejected by the Guardian: `{\"error\", \"params\"}`"),
        (status = 413, description = "Body too large"),
        (status = 429, description = "Rate limited"),
        (status = 503, description = "A container is restarting, or the chain cannot be reached"),
    ))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    JsonText(body): JsonText,
) -> Result<Json<Value>, ApiError> {
    match ParsedJobRequest::from_json(&body).map_err(ApiError::BadRequest)? {
        ParsedJobRequest::Offchain(request) => Ok(Json(json!({"id": accept(&state, client, request).await?}))),
        ParsedJobRequest::Delegated(request) => {
            accept_delegated(&state, request).await?;
            Ok(Json(json!({})))
        }
    }
}

/// `POST /api/jobs/batch`: a list of jobs; each item is answered on its own, in order.
#[utoipa::path(post, path = "/api/jobs/batch", tag = "jobs",
    request_body = Vec<JobRequest>,
    responses(
        (status = 200, description = "One answer per item: `{\"id\"}` or `{\"error\", \"params\"?}`"),
        (status = 400, description = "Body is not a JSON list"),
    ))]
pub(super) async fn batch(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    JsonText(body): JsonText,
) -> Result<Json<Vec<Value>>, ApiError> {
    let items: Vec<&RawValue> =
        serde_json::from_str(&body).map_err(|e| match serde_json::from_str::<Value>(&body) {
            Ok(other) => ApiError::BadRequest(format!("Expected a list, found {}", kind_of(&other))),
            Err(_) => ApiError::BadRequest(format!("request body is not valid JSON: {e}")),
        })?;
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let answer = match ParsedJobRequest::from_json(item.get()) {
            Err(e) => ApiError::BadRequest(e).body(),
            Ok(ParsedJobRequest::Offchain(request)) => match accept(&state, client, request).await {
                Ok(id) => json!({"id": id}),
                Err(e) => e.body(),
            },
            Ok(ParsedJobRequest::Delegated(request)) => match accept_delegated(&state, request).await {
                Ok(()) => json!({}),
                Err(e) => e.body(),
            },
        };
        answers.push(answer);
    }
    Ok(Json(answers))
}

/// Most output held back to be joined with what follows it.
const BURST_BYTES: usize = 64 * 1024;
/// Most scheduler passes output is held back for while more keeps arriving.
const BURST_HOLDS: u8 = 32;

/// The client-visible part of a stream; it also collects the output and records the job's
/// outcome in the store when the stream ends, fails, or the client goes away.
///
/// Output goes to the client in bursts: whatever the container sent back to back (the id line
/// included) leaves in one write. The HTTP client hands a response over one frame per task wake-up,
/// so a stream that merely forwarded frames would cost the client, the node and the kernel a
/// write, a read and a wake-up per frame. When the container has nothing more for now, the
/// stream waits one scheduler pass (the runtime polls for I/O and runs the other ready tasks) and
/// sends what it holds if that brought nothing new, so a slow model's tokens are not delayed.
struct RecordedStream<S> {
    inner: Pin<Box<S>>,
    /// Received but not yet sent; it starts with the job id and a newline.
    out: Vec<u8>,
    /// Scheduler passes `out` has been held for since the last send.
    holds: u8,
    /// The pass being waited for, while `out` is held and nothing new has arrived since it began.
    pass: Option<Arc<Pass>>,
    collected: Vec<u8>,
    record: Option<Recorder>,
    ended: bool,
    /// An upstream error to report after the data that preceded it.
    failed: Option<String>,
}

impl<S> RecordedStream<S> {
    fn new(inner: S, record: Recorder) -> Self {
        Self {
            inner: Box::pin(inner),
            out: {
                // Room for a short answer: it then leaves as it came, without growing this.
                let mut out = Vec::with_capacity(record.id.len() + 1 + 1024);
                out.extend_from_slice(record.id.as_bytes());
                out.push(b'\n');
                out
            },
            holds: 0,
            pass: None,
            collected: Vec::new(),
            record: Some(record),
            ended: false,
            failed: None,
        }
    }

    /// Hands out what is held.
    fn burst(&mut self) -> Bytes {
        self.holds = 0;
        self.pass = None;
        Bytes::from(std::mem::take(&mut self.out))
    }
}

struct Recorder {
    store: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
    started: Instant,
    owner: IpAddr,
    id: String,
    container: String,
}

impl Recorder {
    fn finish(self, outcome: Result<Vec<u8>, String>) {
        let took = self.started.elapsed();
        self.metrics.container_call(&self.container, outcome.is_ok(), took);
        self.metrics.job(Source::Offchain, outcome.is_ok(), took);
        let result = match outcome {
            Ok(bytes) => ContainerResult::Output {
                container: self.container,
                // Valid UTF-8 (the usual case) keeps its buffer.
                output: json!({"output": String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())}),
            },
            Err(error) => ContainerResult::Error {
                container: self.container,
                error,
            },
        };
        self.store
            .put_detached(self.owner, JobResult::finished(self.id, vec![result]));
    }
}

/// One scheduler pass: over once the runtime has polled for I/O and run the other ready tasks.
/// (The body is polled several times within one pass, so the number of polls says nothing.)
struct Pass {
    over: AtomicBool,
    task: AtomicWaker,
}

impl Pass {
    /// Starts a pass; the task is woken when it is over.
    fn start(cx: &mut Context<'_>) -> Arc<Self> {
        let pass = Arc::new(Self {
            over: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        pass.task.register(cx.waker());
        let waker = futures::task::waker(pass.clone());
        let mut yielding = std::pin::pin!(tokio::task::yield_now());
        // The first poll only registers the deferred wake-up.
        let _ = yielding.as_mut().poll(&mut Context::from_waker(&waker));
        pass
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }
}

impl ArcWake for Pass {
    fn wake_by_ref(pass: &Arc<Self>) {
        pass.over.store(true, Ordering::Release);
        pass.task.wake();
    }
}

impl<S: Stream<Item = Result<Bytes, String>>> Stream for RecordedStream<S> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(std::io::Error::other(e))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.collected.extend_from_slice(&chunk);
                    this.out.extend_from_slice(&chunk);
                    // Progress: a pass that brings more is worth waiting for again.
                    this.pass = None;
                    if this.out.len() >= BURST_BYTES {
                        return Poll::Ready(Some(Ok(this.burst())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(record) = this.record.take() {
                        record.finish(Err(e.clone()));
                    }
                    // An error ends the HTTP body abnormally, so the client sees a failed transfer
                    // rather than a silently truncated one (after what was already received).
                    if this.out.is_empty() {
                        return Poll::Ready(Some(Err(std::io::Error::other(e))));
                    }
                    this.failed = Some(e);
                    return Poll::Ready(Some(Ok(this.burst())));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Some(record) = this.record.take() {
                        record.finish(Ok(std::mem::take(&mut this.collected)));
                    }
                    return Poll::Ready((!this.out.is_empty()).then(|| Ok(this.burst())));
                }
                Poll::Pending if this.out.is_empty() => return Poll::Pending,
                Poll::Pending => match &this.pass {
                    // A whole pass brought nothing: the container is between outputs.
                    Some(pass) if pass.is_over() => return Poll::Ready(Some(Ok(this.burst()))),
                    Some(pass) => {
                        pass.task.register(cx.waker());
                        return Poll::Pending;
                    }
                    None if this.holds >= BURST_HOLDS => return Poll::Ready(Some(Ok(this.burst()))),
                    None => {
                        this.holds += 1;
                        this.pass = Some(Pass::start(cx));
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

impl<S> Drop for RecordedStream<S> {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish(Err("the client disconnected before the stream ended".into()));
        }
    }
}

/// `POST /api/jobs/stream`: runs the first container in streaming mode; the body is the job id and
/// a newline, then the container's output as it arrives.
#[utoipa::path(post, path = "/api/jobs/stream", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 200, description = "`<job id>\\n` followed by the raw output", content_type = "application/octet-stream"),
        (status = 405, description = "Rejected by the Guardian, or a delegated subscription"),
        (status = 502, description = "The container failed before sending anything: `{\"error\", \"id\"}`"),
    ))]
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    JsonText(body): JsonText,
) -> Result<Response, ApiError> {
    stream_job(&state, client, &body).await
}

/// `POST /api/jobs/stream` as the server's front answers it, straight from the connection.
pub(super) async fn stream_direct(
    state: &Arc<AppState>,
    client: IpAddr,
    body: infernet_service::http::RequestBody,
) -> Response {
    let answer = match read_text(body, state.max_body).await {
        Ok(body) => stream_job(state, client, &body).await,
        Err(e) => Err(e),
    };
    answer.into_response()
}

/// Runs a streaming job from its request body.
async fn stream_job(state: &Arc<AppState>, client: IpAddr, body: &str) -> Result<Response, ApiError> {
    let request = match ParsedJobRequest::from_json(body).map_err(ApiError::BadRequest)? {
        ParsedJobRequest::Offchain(request) => request,
        ParsedJobRequest::Delegated(_) => {
            return Err(ApiError::Rejected(crate::guardian::Rejection {
                error: "Streaming only supported for OffchainJob requests.",
                params: json!({}),
            }));
        }
    };
    admit(state, client, &request)?;
    let id = new_job_id();
    // The Guardian admits no empty pipeline.
    let container = request.containers.into_iter().next().unwrap_or_default();

    // The store is written off the response path; one writer keeps the two writes in order.
    state.store.put_detached(client, JobResult::running(&id));
    let record = Recorder {
        store: state.store.clone(),
        metrics: state.orchestrator.metrics().clone(),
        started: Instant::now(),
        owner: client,
        id,
        container,
    };
    let body = match state.orchestrator.open_stream(&record.container, request.data).await {
        Ok(body) => body,
        Err(message) => {
            let id = record.id.clone();
            record.finish(Err(message.clone()));
            return Err(ApiError::BadGateway { message, id });
        }
    };
    // The headers wait for the first burst (at most one scheduler pass when the container has
    // nothing yet), so a short answer leaves in one write, headers and end of body included.
    let mut recorded = RecordedStream::new(body, record);
    let first = recorded.next().await;
    // An answer that is already whole goes out with its length: the client reads one framed
    // body instead of decoding chunks.
    let body = match first {
        Some(Ok(whole)) if recorded.ended => Body::from(whole),
        first => Body::from_stream(futures::stream::iter(first).chain(recorded)),
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// Query of `GET /api/jobs`.
struct ResultsQuery {
    ids: Vec<String>,
    intermediate: bool,
    filter: ListFilter,
}

fn parse_results_query(raw: Option<&str>) -> Result<ResultsQuery, ApiError> {
    let mut q = ResultsQuery {
        ids: Vec::new(),
        intermediate: false,
        filter: ListFilter::All,
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "id" => q.ids.push(v.into_owned()),
            "intermediate" => q.intermediate = v == "true",
            "pending" => {
                q.filter = match v.as_ref() {
                    "true" => ListFilter::Pending,
                    "false" => ListFilter::Completed,
                    _ => ListFilter::All,
                }
            }
            _ => {}
        }
    }
    if q.ids.len() > 1000 {
        return Err(ApiError::BadRequest(format!(
            "at most 1000 ids per request, got {}",
            q.ids.len()
        )));
    }
    Ok(q)
}

/// `GET /api/jobs`: with `id` (repeatable), those jobs' results (from any address: ids are
/// unguessable); without, the ids of the caller's jobs.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    params(
        ("id" = Option<Vec<String>>, Query, description = "Job ids (repeatable)"),
        ("intermediate" = Option<bool>, Query, description = "Include intermediate results"),
        ("pending" = Option<bool>, Query, description = "Without ids: only running (true) or finished (false) jobs"),
    ),
    responses((status = 200, description = "Job results, or job ids", body = Vec<JobResult>)))]
pub(super) async fn results(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_results_query(raw.as_deref())?;
    if q.ids.is_empty() {
        let ids = state.store.list(client, q.filter).await?;
        return Ok(Json(json!(ids)));
    }
    let jobs = state.store.get(&q.ids).await?;
    let results: Vec<JobResult> = jobs
        .into_iter()
        .map(|stored| {
            let mut job = stored.job;
            if !q.intermediate {
                job.intermediate_results = None;
            }
            job
        })
        .collect();
    Ok(Json(json!(results)))
}

/// `PUT /api/status`: a container on this host reports the status of a job it runs itself.
#[utoipa::path(put, path = "/api/status", tag = "jobs",
    responses(
        (status = 200, description = "Recorded"),
        (status = 400, description = "Missing or invalid fields"),
        (status = 403, description = "Caller is not on this host"),
    ))]
pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonText(body): JsonText,
) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_str(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    // Only the TCP peer counts here: a proxy header must never grant this.
    if !peer.ip().to_canonical().is_loopback() {
        tracing::warn!(peer = %peer.ip(), "unauthorized attempt to store job status");
        return Err(ApiError::Forbidden("Unauthorized".into()));
    }
    let id = body.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let status = body.get("status").and_then(Value::as_str);
    let (Some(id), Some(status)) = (id, status) else {
        return Err(ApiError::BadRequest(
            "body must have a string `id` and a `status`".into(),
        ));
    };
    let Some(status) = JobStatus::parse(status) else {
        return Err(ApiError::BadRequest(
            "Status is invalid: use running, success or failed".into(),
        ));
    };
    if let Some(containers) = body.get("containers")
        && !containers.as_array().is_some_and(|c| c.iter().all(Value::is_string))
    {
        return Err(ApiError::BadRequest(
            "`containers` must be a list of container ids".into(),
        ));
    }
    // Keep the job under its original client when the node knows it (Ritual stored it under the
    // reporting container's address instead).
    let owner = match state.store.get(&[id.to_string()]).await?.into_iter().next() {
        Some(existing) => existing.owner,
        None => peer.ip().to_canonical(),
    };
    state.store.put(owner, &JobResult::reported(id, status)).await?;
    Ok(Json(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_query_reads_repeated_ids_and_flags() {
        let q = parse_results_query(Some("id=a&id=b&intermediate=true&pending=false")).unwrap();
        assert_eq!(q.ids, vec!["a", "b"]);
        assert!(q.intermediate);
        assert_eq!(q.filter, ListFilter::Completed);
        let q = parse_results_query(None).unwrap();
        assert!(q.ids.is_empty() && !q.intermediate);
        assert_eq!(q.filter, ListFilter::All);
    }
}
