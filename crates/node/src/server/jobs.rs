//! `/api/jobs`, `/api/jobs/batch`, `/api/jobs/stream` and `/api/status`: parse, ask the Guardian,
//! hand the job to the Orchestrator (which owns its life from there), map the error.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{ConnectInfo, FromRequest, RawQuery, Request, State},
    http::header,
    response::{IntoResponse, Response},
};
use infernet_types::{DelegatedBody, JobRequest, JobResult, JobStatus, ParsedJobRequest, StatusReport, kind_of};
use serde_json::{Value, json, value::RawValue};

use super::{ApiError, AppState, ClientIp};
use crate::{
    chain::delegated::IntakeError,
    containers::ContainerState,
    orchestrator::budget::{self, Budget, Held},
    store::ListFilter,
};

/// The rate-limit bucket of `POST /api/jobs/batch`, charged once per item.
pub(super) const BATCH_BUCKET: &str = "POST /api/jobs/batch";

/// A request body as text, whatever its content type (Ritual's clients do not always set one);
/// an oversized body is a 413, a body that is not UTF-8 a 400, never a 500. Parsing is left to
/// the handler so that delegated subscriptions keep their 256-bit integers exact.
pub(super) struct JsonText(pub(super) String, pub(super) Held);

impl FromRequest<Arc<AppState>> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (bytes, held) = read_bytes(req.into_body(), state.max_body, state.orchestrator.budget()).await?;
        Ok(Self(text(bytes)?, held))
    }
}

/// A body as text: not UTF-8 is a 400.
fn text(bytes: Bytes) -> Result<String, ApiError> {
    // Takes the buffer over when nothing else holds it, copies it otherwise.
    String::from_utf8(Vec::from(bytes))
        .map_err(|_| ApiError::BadRequest("request body is not valid JSON: not UTF-8 text".into()))
}

/// A body read straight from the connection, at most `max_body` bytes, as [`JsonText`] reads it.
async fn read_text<B>(body: B, state: &AppState) -> Result<(String, Held), ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (bytes, held) = read_bytes(body, state.max_body, state.orchestrator.budget()).await?;
    Ok((text(bytes)?, held))
}

/// The whole body, at most `max_body` bytes (413 beyond), with what it took from the node's
/// `budget`: past the first [`budget::SMALL`] bytes each chunk takes its size, and a body the
/// budget cannot hold is refused at once (503), so many large uploads at once cannot take more
/// memory than the budget. Gathered as it comes ([`infernet_service::http::Collected`]: no piece
/// holds its connection's read buffer past its turn), never sized by what the client announces
/// (a client announcing 16 MiB and sending a byte every few seconds must not make the node hold
/// 16 MiB for it).
pub(super) async fn read_bytes<B>(body: B, max_body: usize, budget: &Budget) -> Result<(Bytes, Held), ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut held = Held::default();
    let mut collected = infernet_service::http::Collected::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {}", e.into())))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let (len, end) = (collected.len(), collected.len() + chunk.len());
        if end > max_body {
            return Err(ApiError::TooLarge(max_body));
        }
        if !budget.grow(&mut held, budget::SMALL, len, end) {
            return Err(ApiError::OverBudget(budget::OverBudget { budget: budget.bytes() }));
        }
        collected.push(chunk);
    }
    Ok((collected.join(), held))
}

/// Checks a delegated subscription and hands it to the chain side. The Guardian's first checks
/// (chain enabled, signature expiry) come before the full parse, in Ritual's order.
async fn accept_delegated(state: &AppState, body: DelegatedBody) -> Result<(), ApiError> {
    state
        .guardian
        .load()
        .check_delegated_precondition(&body.subscription, body.expiry, crate::store::unix_now())
        .map_err(ApiError::Rejected)?;
    let request = body.parse()?;
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
    state.admin.gate().map_err(|closed| ApiError::Closed {
        reason: closed.reason,
        available_at: closed.available_at.map(|t| t.to_string()),
    })?;
    state
        .guardian
        .load()
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

/// Admits an off-chain job and hands it to the Orchestrator; answers its id.
async fn accept(
    state: &Arc<AppState>,
    client: IpAddr,
    request: JobRequest,
    size: usize,
    read: Held,
) -> Result<String, ApiError> {
    admit(state, client, &request)?;
    let held = state.orchestrator.reserve(size, read)?;
    let slots = state.orchestrator.admit(&request.containers)?.with(held);
    Ok(state.orchestrator.submit(client, request, slots).await?)
}

/// One job of a request body, answered as `POST /api/jobs` answers it.
async fn answer(state: &Arc<AppState>, client: IpAddr, body: &str, read: Held) -> Result<Value, ApiError> {
    match ParsedJobRequest::from_json(body)? {
        ParsedJobRequest::Offchain(request) => {
            Ok(json!({"id": accept(state, client, request, body.len(), read).await?}))
        }
        ParsedJobRequest::Delegated(request) => {
            accept_delegated(state, request).await?;
            Ok(json!({}))
        }
    }
}

/// `POST /api/jobs`: an off-chain job (answers its id) or a delegated subscription.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 200, description = "Job accepted: `{\"id\": \"<uuid>\"}`; a delegated subscription: `{}`"),
        (status = 400, description = "Malformed request (the failing field is named), no container, or `data` nested deeper than 100 levels"),
        (status = 403, description = "Delegated subscription whose signature is not the owner's signer's"),
        (status = 405, description = "Rejected by the Guardian: `{\"error\", \"params\"}`"),
        (status = 413, description = "Body too large"),
        (status = 429, description = "Rate limited, or a container of the job runs its `max_jobs` already; `Retry-After` says when to try again"),
        (status = 503, description = "A container is restarting, the store is down, or the chain cannot be reached"),
    ))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    JsonText(body, read): JsonText,
) -> Result<Json<Value>, ApiError> {
    answer(&state, client, &body, read).await.map(Json)
}

/// `POST /api/jobs/batch`: a list of jobs; each item is answered on its own, in order. Each item
/// costs one request of the client's rate limit; items past it are answered with a 429 error.
#[utoipa::path(post, path = "/api/jobs/batch", tag = "jobs",
    request_body(content = Vec<Value>, description = "A list of what `POST /api/jobs` takes (off-chain jobs, delegated subscriptions); an item that is not valid is answered with its error, the others still run"),
    responses(
        (status = 200, description = "One answer per item: `{\"id\"}` or `{\"error\", \"params\"?}`"),
        (status = 400, description = "Body is not a JSON list, or has more items than `server.max_batch_items`"),
        (status = 413, description = "Body too large"),
        (status = 429, description = "Rate limited"),
    ))]
pub(super) async fn batch(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    JsonText(body, _): JsonText,
) -> Result<Json<Vec<Value>>, ApiError> {
    let items: Vec<&RawValue> =
        serde_json::from_str(&body).map_err(|e| match serde_json::from_str::<Value>(&body) {
            Ok(other) => ApiError::BadRequest(format!("Expected a list, found {}", kind_of(&other))),
            Err(_) => ApiError::BadRequest(format!("request body is not valid JSON: {e}")),
        })?;
    if items.len() > state.max_batch {
        return Err(ApiError::BadRequest(format!(
            "a batch holds at most {} jobs (server.max_batch_items), this one has {}; split it",
            state.max_batch,
            items.len()
        )));
    }
    let mut answers = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        // The request itself paid for the first item.
        let answer = if i == 0 || state.limiter.admit(BATCH_BUCKET, client).is_ok() {
            answer(&state, client, item.get(), Held::default()).await
        } else {
            Err(ApiError::BatchItemLimited)
        };
        answers.push(answer.unwrap_or_else(|e| e.body()));
    }
    Ok(Json(answers))
}

/// `POST /api/jobs/stream`: runs the first container in streaming mode; the body is the job id and
/// a newline, sent at once, then the container's output as it arrives. The server's front
/// answers this route straight from the connection; the router's route (the same path served by
/// axum) comes here too.
#[utoipa::path(post, path = "/api/jobs/stream", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 200, description = "`<job id>\\n` at once, then the raw output as the container sends it. A container that fails ends the body abnormally (the job's stored result says why)", content_type = "application/octet-stream"),
        (status = 400, description = "Malformed request (the failing field is named), no container, or `data` nested deeper than 100 levels"),
        (status = 405, description = "Rejected by the Guardian, or a delegated subscription"),
        (status = 413, description = "Body too large"),
        (status = 429, description = "Rate limited, or the container runs its `max_jobs` already; `Retry-After` says when to try again"),
        (status = 503, description = "The container is restarting"),
    ))]
pub(super) async fn stream<B>(state: &Arc<AppState>, client: IpAddr, body: B, trailers: Option<Trailers>) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match start_stream(state, client, body, trailers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The router's `POST /api/jobs/stream`: [`stream`].
pub(super) async fn stream_route(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    request: Request,
) -> Response {
    let router = request.extensions().get::<super::routed::RoutedBy>().copied();
    let trailers = router
        .filter(|_| takes_trailers(request.headers()))
        .map(|router| Trailers::to(&state, router));
    stream(&state, client, request.into_body(), trailers).await
}

/// A stream's receipt goes back in its trailers, MAC'd with the key this node shares with the
/// router that dispatched it when there is one (the router then needs no signature check).
pub(super) struct Trailers {
    mac: Option<Arc<infernet_identity::dispatch::DispatchKey>>,
}

impl Trailers {
    /// Trailers for a stream `router` dispatched.
    pub(super) fn to(state: &AppState, router: super::routed::RoutedBy) -> Self {
        Self {
            mac: state.routers.as_ref().and_then(|r| r.shared_key(&router.0)).cloned(),
        }
    }
}

/// Whether the request says it takes trailers (`TE: trailers`): a router that dispatched a stream
/// then gets the job's receipt in one, after the output.
pub(super) fn takes_trailers(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Starts the stream; with `trailers`, a job a router dispatched ends with its receipt in the
/// trailer [`infernet_types::RECEIPT_TRAILER`].
async fn start_stream<B>(
    state: &Arc<AppState>,
    client: IpAddr,
    body: B,
    trailers: Option<Trailers>,
) -> Result<Response, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (body, read) = read_text(body, state).await?;
    let request = match ParsedJobRequest::from_json(&body)? {
        ParsedJobRequest::Offchain(request) => request,
        ParsedJobRequest::Delegated(_) => {
            return Err(ApiError::Rejected(crate::guardian::Rejection {
                error: "Streaming only supported for OffchainJob requests.",
                params: json!({}),
            }));
        }
    };
    admit(state, client, &request)?;
    let held = state.orchestrator.reserve(body.len(), read)?;
    let slots = state.orchestrator.admit(&request.containers)?.with(held);
    let job = state.orchestrator.stream(client, request, slots);
    if let Some(trailers) = trailers.filter(|_| infernet_service::client_ip::is_stated(client)) {
        let body = Body::new(job.with_receipt_trailer(trailers.mac));
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::TRAILER, infernet_types::RECEIPT_TRAILERS),
            ],
            body,
        )
            .into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(job),
    )
        .into_response())
}

/// Query of `GET /api/jobs`.
struct ResultsQuery {
    ids: Vec<String>,
    intermediate: bool,
    filter: ListFilter,
}

/// A boolean query parameter: `true` or `false` (any case: Python clients send `True`).
fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::BadRequest(format!(
            "{name}: expected true or false, found {value:?}"
        )))
    }
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
            "intermediate" => q.intermediate = flag("intermediate", &v)?,
            "pending" => {
                q.filter = match flag("pending", &v)? {
                    true => ListFilter::Pending,
                    false => ListFilter::Completed,
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

/// What `GET /api/jobs` answers: job results (with `id`) or job ids (without).
pub(super) struct JobsAnswer;

impl utoipa::PartialSchema for JobsAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Ref, Type};
        AnyOfBuilder::new()
            .description(Some(
                "With `id`: the results of those jobs; without: the ids of the caller's jobs",
            ))
            .item(ArrayBuilder::new().items(Ref::from_schema_name("JobResult")))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .into()
    }
}

impl utoipa::ToSchema for JobsAnswer {}

/// `GET /api/jobs`: with `id` (repeatable), those jobs' results (from any address: ids are
/// unguessable); without, the ids of the caller's jobs.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    params(
        ("id" = Option<Vec<String>>, Query, description = "Job ids (repeatable, at most 1000); without: list the caller's job ids"),
        ("intermediate" = Option<bool>, Query, description = "Include intermediate results"),
        ("pending" = Option<bool>, Query, description = "Without ids: only running (true) or finished (false) jobs"),
    ),
    responses(
        (status = 200, description = "With `id`: the jobs' results (unknown ids left out); without: the caller's job ids", body = JobsAnswer),
        (status = 400, description = "More than 1000 ids, or results of more than 64 MiB"),
        (status = 429, description = "Rate limited"),
        (status = 503, description = "The store is down"),
    ))]
pub(super) async fn results(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_results_query(raw.as_deref())?;
    if q.ids.is_empty() {
        let ids = state.store.list(client, q.filter).await?;
        return Ok(Json(json!(ids)).into_response());
    }
    // Read a few at a time and written out as they come: a thousand ids of results of up to
    // `max_result_size` each must not be held at once, nor many such answers at once.
    let budget = state.orchestrator.budget();
    let mut held = Held::default();
    let mut out = vec![b'['];
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = q.ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
    for ids in ids.chunks(RESULTS_READ_AT_ONCE) {
        for stored in state.store.get(ids).await? {
            let mut job = stored.job;
            if !q.intermediate {
                job.intermediate_results = None;
            }
            let before = out.len();
            if before > 1 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &job)
                .map_err(|e| ApiError::Unavailable(format!("a stored result cannot be written: {e}")))?;
            if out.len() > MAX_RESULTS_ANSWER {
                return Err(ApiError::BadRequest(format!(
                    "the results of these ids are more than {} MiB: ask for fewer at once",
                    MAX_RESULTS_ANSWER >> 20
                )));
            }
            // The first MiB is free, as for a request's body.
            if !budget.grow(&mut held, budget::SMALL, before, out.len()) {
                return Err(ApiError::OverBudget(budget::OverBudget { budget: budget.bytes() }));
            }
        }
    }
    out.push(b']');
    // What the answer took from the buffer is given back once it is sent, not when this returns:
    // a reader that takes its time holds it meanwhile.
    let answer = Bytes::from(out);
    let chunks = futures::stream::unfold((answer, Some(held)), |(mut rest, held)| async move {
        if rest.is_empty() {
            drop(held);
            return None;
        }
        let chunk = rest.split_to(rest.len().min(ANSWER_CHUNK));
        Some((Ok::<_, std::convert::Infallible>(chunk), (rest, held)))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(chunks)).into_response())
}

/// Pieces a results answer is sent in.
const ANSWER_CHUNK: usize = 256 * 1024;

/// Ids whose results `GET /api/jobs` reads from the store at once.
const RESULTS_READ_AT_ONCE: usize = 16;
/// Largest answer of `GET /api/jobs` with ids.
const MAX_RESULTS_ANSWER: usize = 64 << 20;

/// `DELETE /api/jobs/{id}`: stops the caller's off-chain job if it still runs (extension).
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Stopped: `{\"id\", \"status\": \"failed\"}`, its result the error `cancelled by the client`"),
        (status = 404, description = "No job of this client has the id"),
        (status = 409, description = "The job has already ended, or is a stream (closing its connection stops it)"),
        (status = 429, description = "Rate limited"),
        (status = 503, description = "The store is down"),
    ))]
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    use crate::orchestrator::Cancelled;
    match state.orchestrator.cancel(client, &id).await? {
        Cancelled::Stopped => Ok(Json(json!({"id": id, "status": "failed"}))),
        Cancelled::Ended => Err(ApiError::Conflict(format!("job {id} has already ended"))),
        Cancelled::Streaming => Err(ApiError::Conflict(format!(
            "job {id} is a stream: it stops when its client closes the connection"
        ))),
        Cancelled::Unknown => Err(ApiError::NotFound),
    }
}

/// Largest `PUT /api/status` body: `{"id", "status", "containers"}` (and `data`, ignored).
const MAX_STATUS_BODY: usize = 64 * 1024;

/// `PUT /api/status`: a container on this host reports the status of a job it runs itself.
#[utoipa::path(put, path = "/api/status", tag = "jobs",
    request_body = StatusReport,
    responses(
        (status = 200, description = "Recorded: `null`"),
        (status = 400, description = "Missing or invalid fields (`id`, `status` and `containers` are required)"),
        (status = 403, description = "Caller is not in server.status_sources (this host and its Docker networks by default)"),
        (status = 413, description = "Body larger than 64 KiB"),
        (status = 503, description = "The store is down"),
    ))]
pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    // Only the TCP peer counts here: a proxy header must never grant this. Checked before the
    // body is read: a stranger's body costs nothing.
    let from = peer.ip().to_canonical();
    if !state.status_sources.iter().any(|net| net.contains(&from)) {
        tracing::warn!(peer = %peer.ip(), "unauthorized attempt to store job status (server.status_sources)");
        return Err(ApiError::Forbidden("Unauthorized".into()));
    }
    let (bytes, _) = read_bytes(request.into_body(), MAX_STATUS_BODY, state.orchestrator.budget()).await?;
    let body: Value = serde_json::from_str(&text(bytes)?)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
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
    if !body
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().all(Value::is_string))
    {
        return Err(ApiError::BadRequest(
            "`containers` must be the list of the ids of the containers that ran the job".into(),
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
    fn a_routed_stream_announces_both_receipt_trailers() {
        let names: Vec<&str> = infernet_types::RECEIPT_TRAILERS.split(", ").collect();
        assert_eq!(
            names,
            [infernet_types::RECEIPT_TRAILER, infernet_types::RECEIPT_MAC_TRAILER]
        );
        let mut te = axum::http::HeaderMap::new();
        assert!(!takes_trailers(&te));
        te.insert(header::TE, "gzip, Trailers".parse().unwrap());
        assert!(takes_trailers(&te));
    }

    #[test]
    fn results_query_reads_repeated_ids_and_flags() {
        let q = parse_results_query(Some("id=a&id=b&intermediate=true&pending=false")).unwrap();
        assert_eq!(q.ids, vec!["a", "b"]);
        assert!(q.intermediate);
        assert_eq!(q.filter, ListFilter::Completed);
        let q = parse_results_query(None).unwrap();
        assert!(q.ids.is_empty() && !q.intermediate);
        assert_eq!(q.filter, ListFilter::All);
        let q = parse_results_query(Some("intermediate=True&pending=TRUE")).unwrap();
        assert!(q.intermediate);
        assert_eq!(q.filter, ListFilter::Pending);
        for bad in ["pending=null", "intermediate=1", "pending="] {
            let Err(ApiError::BadRequest(e)) = parse_results_query(Some(bad)) else {
                panic!("{bad} accepted")
            };
            assert!(e.contains("expected true or false"), "{e}");
        }
    }
}
