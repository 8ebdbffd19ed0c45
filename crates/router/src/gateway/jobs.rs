//! The gateway's job endpoints but the stream: submit, read, cancel, batch, and the chooser's
//! explanation.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    ApiError, Caller, Client, Gateway, JobAsk, Posted, callback,
    client::{bad, idempotency_key, parse_body},
    dispatch::Outcome,
    pipeline,
};
use crate::{
    choose::{self, Choice},
    db::{
        jobs::{Inserted, Job, JobStatus, NewJob},
        now_ms,
    },
    server::RouterState,
};

/// Where a new job went.
pub(super) enum Placed {
    /// To `node`.
    New { job: Job, node: String },
    /// The client's earlier job with the same idempotency key.
    Existing(Job),
}

/// A job opened for dispatch.
pub(super) struct Opened {
    /// Its row, claimed by this replica.
    pub job: Job,
    /// For a job with neither idempotency key nor callback, whose row goes to the group-commit
    /// writer rather than being written first: the sequence number of its row there (await its
    /// commit before the job's id is answered), or 0 when the row is handed over only once a
    /// node took the job (streams). `None` for a job written before dispatch.
    pub pending: Option<u64>,
}

/// Records a new job of `client` claimed for this replica: the job, or the client's first job
/// with the same `idempotency_key`.
///
/// A job with an idempotency key or a callback is written (inserted and claimed) before it is
/// dispatched: the key must hold across replicas, and a callback's watcher renews the row's lease.
/// Any other job's row is handed to the group-commit writer, already claimed, and its commit runs
/// while the node is called (`hand_over`), or only once a node took it.
pub(super) async fn open_job(
    gw: &Gateway,
    client: &Client,
    ask: &JobAsk,
    idempotency_key: Option<&str>,
    hand_over: bool,
) -> Result<Result<Opened, Job>, ApiError> {
    // Time-ordered (UUID v7): a new job's row and its ledger row land at the end of their
    // tables' primary-key order, not on a random page of it.
    let id = uuid::Uuid::now_v7().to_string();
    let client_id = client.id();
    if idempotency_key.is_none() && ask.callback_url.is_none() {
        let lease = gw.lease();
        let job = Job {
            id,
            client: client_id,
            idempotency_key: None,
            containers: ask.containers.clone(),
            status: JobStatus::Running,
            node: None,
            node_job: None,
            attempt: 1,
            lease_owner: Some(lease.owner.to_string()),
            lease_until: Some(lease.until()),
            callback_url: None,
            error: None,
            created_at: lease.now,
            updated_at: lease.now,
            finished_at: None,
        };
        let seq = match hand_over {
            true => gw.jobs.put(job.clone()).await,
            false => 0,
        };
        return Ok(Ok(Opened {
            job,
            pending: Some(seq),
        }));
    }
    let inserted = gw
        .db
        .insert_job(&NewJob {
            id: &id,
            client: &client_id,
            idempotency_key,
            containers: &ask.containers,
            callback_url: ask.callback_url.as_deref(),
            now: now_ms(),
        })
        .await?;
    let job = match inserted {
        Inserted::Existing(job) => return Ok(Err(job)),
        Inserted::Created(job) => job,
    };
    match gw.db.claim_job(&job.id, &gw.lease()).await? {
        Some(job) => Ok(Ok(Opened { job, pending: None })),
        None => Err(ApiError(StatusCode::CONFLICT, "the job was claimed elsewhere".into())),
    }
}

/// `job` placed on `node` (as `node_job` there), its lease renewed.
pub(super) fn on_node(gw: &Gateway, job: &Job, node: &str, node_job: Option<&str>) -> Job {
    let lease = gw.lease();
    Job {
        node: Some(node.to_string()),
        node_job: node_job.map(str::to_owned),
        lease_owner: Some(lease.owner.to_string()),
        lease_until: Some(lease.until()),
        updated_at: lease.now,
        ..job.clone()
    }
}

/// `job` ended with `status` and `error`.
pub(super) fn ended(job: &Job, status: JobStatus, error: Option<&str>) -> Job {
    let now = now_ms();
    Job {
        status,
        error: error.map(str::to_owned),
        lease_owner: None,
        lease_until: None,
        updated_at: now,
        finished_at: Some(now),
        ..job.clone()
    }
}

/// Inserts and claims a job, then dispatches it along `order` (the chooser's, or a batch's plan).
async fn place(
    gw: &Arc<Gateway>,
    client: &Client,
    ask: &JobAsk,
    idempotency_key: Option<&str>,
    plan: Option<(&Choice, Vec<usize>)>,
) -> Result<Placed, ApiError> {
    if let Some(url) = &ask.callback_url {
        callback::check_url(url, gw.settings.callbacks_to_private).map_err(|e| bad(format!("callback_url: {e}")))?;
    }
    let (job, pending) = match open_job(gw, client, ask, idempotency_key, true).await? {
        Ok(Opened { job, pending }) => (job, pending),
        Err(first) => return Ok(Placed::Existing(first)),
    };
    let owned;
    let (choice, order) = match plan {
        Some(p) => p,
        None => {
            owned = gw.decide(ask, 1);
            let order = choose::pick(&owned.candidates, &mut rand::rng());
            (&owned, order)
        }
    };
    if choice.candidates.is_empty() {
        // No node serves the whole list: its stages may still run on several nodes.
        if let Some(stages) = pipeline::plan(gw, ask) {
            // The pipeline's follower works on the stored row.
            if let Some(seq) = pending {
                gw.jobs.committed(seq).await;
            }
            return pipeline::start(gw, client, ask, job, stages).await;
        }
        let why = gw.choose(ask, true).why_none(&ask.as_ask(&gw.settings.price_unit));
        fail(gw, &job, &why).await;
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why));
    }
    match dispatch_along(gw, choice, &order, ask.node_body(), client.stated(), ask.deadline).await {
        Ok((node, node_job)) => {
            let placed = on_node(gw, &job, &node, Some(&node_job));
            match pending {
                // Answered once the job's row is committed (its commit ran while the node was
                // called): every replica knows the job from then on. Its node follows in the next
                // commit; a crash before it leaves the job running without a node (the README
                // says so).
                Some(created) => {
                    gw.jobs.put(placed).await;
                    gw.jobs.committed(created).await;
                }
                None => {
                    gw.jobs.put_acked(placed).await;
                }
            }
            gw.keep_for_rerun(&job, &node, ask).await;
            if job.callback_url.is_some() {
                gw.watch(Job {
                    node: Some(node.clone()),
                    node_job: Some(node_job),
                    ..job.clone()
                });
            }
            Ok(Placed::New { job, node })
        }
        Err(e) => {
            fail(gw, &job, &e.1).await;
            Err(e)
        }
    }
}

/// Offers `body` to the candidates of `choice` in `order` (at most `attempts` of them, within
/// `deadline`): the node that accepted it and its id there.
pub(super) async fn dispatch_along(
    gw: &Arc<Gateway>,
    choice: &Choice,
    order: &[usize],
    body: Bytes,
    stated: IpAddr,
    deadline: Option<Duration>,
) -> Result<(String, String), ApiError> {
    let mut tried = Vec::new();
    let mut too_large = 0;
    let attempts = async {
        for &i in order.iter().take(gw.settings.attempts.max(1)) {
            let node = &choice.candidates[i].node;
            match gw.call(node, stated).submit(body.clone()).await {
                Outcome::Accepted(node_job) => return Ok((node.clone(), node_job)),
                Outcome::Refused(why) => {
                    gw.samples.loaded(node);
                    tried.push(format!("{node} refused: {why}"));
                }
                Outcome::TooLarge(why) => {
                    too_large += 1;
                    tried.push(format!("{node} refused: {why}"));
                }
                Outcome::Failed(why) => {
                    gw.record(node, &[], false, None);
                    tried.push(format!("{node} failed: {why}"));
                }
                Outcome::Invalid { status, message } => {
                    return Err(ApiError(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                        message,
                    ));
                }
            }
        }
        Err(none_accepted(&tried, too_large))
    };
    match deadline {
        Some(d) => tokio::time::timeout(d, attempts).await.unwrap_or_else(|_| {
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no node accepted the job within deadline_s ({d:?})"),
            ))
        }),
        None => attempts.await,
    }
}

/// The answer when no node took a job: why each one tried did not, as 413 when the job was too
/// large for every one of them (the client's to change, not to retry), 503 otherwise.
pub(super) fn none_accepted(tried: &[String], too_large: usize) -> ApiError {
    let status = match too_large > 0 && too_large == tried.len() {
        true => StatusCode::PAYLOAD_TOO_LARGE,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, format!("no node accepted the job: {}", tried.join("; ")))
}

/// Records `job` failed for `why` (a row that ended meanwhile is left as it is).
pub(super) async fn fail(gw: &Gateway, job: &Job, why: &str) {
    gw.jobs.put(ended(job, JobStatus::Failed, Some(why))).await;
}

fn placed_json(placed: &Placed) -> Value {
    match placed {
        Placed::New { job, node, .. } => json!({"id": job.id, "node": node, "status": "running"}),
        Placed::Existing(job) => json!({"id": job.id, "node": job.node, "status": job.status.as_str()}),
    }
}

/// `POST /api/v1/jobs`.
pub async fn submit(
    State(state): State<Arc<RouterState>>,
    Posted {
        client, headers, body, ..
    }: Posted,
) -> Result<Json<Value>, ApiError> {
    let key = idempotency_key(&headers)?;
    let ask = JobAsk::parse(&parse_body(&body)?, "").map_err(|e| bad(e.to_string()))?;
    let placed = place(&state.gateway, &client, &ask, key.as_deref(), None).await?;
    Ok(Json(placed_json(&placed)))
}

/// A job of `client`, or 404 (also for another client's job).
async fn own_job(gw: &Gateway, client: &Client, id: &str) -> Result<Job, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no job {id}"));
    if id.len() > 64 {
        return Err(not_found());
    }
    gw.jobs.settle(id).await;
    let job = gw.db.job(id).await?.ok_or_else(not_found)?;
    if job.client != client.id() {
        return Err(not_found());
    }
    Ok(job)
}

/// Most jobs one page of `GET /api/v1/jobs` holds.
const MAX_PAGE: i64 = 500;

/// `GET /api/v1/jobs?status=…&container=…&limit=50&after=…`: the caller's own jobs, newest
/// first, a page at a time (`next` is the `after` of the next page, `null` after the last).
pub async fn list(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (mut status, mut container, mut limit, mut after) = (None, None, 50i64, None);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "status" => {
                status = Some(v.parse::<JobStatus>().map_err(|e| {
                    bad(format!(
                        "status: {e}; one of queued, running, succeeded, failed, cancelled"
                    ))
                })?)
            }
            "container" if !v.is_empty() && v.len() <= 256 => container = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit: a whole number from 1 to {MAX_PAGE}, got {v:?}")))?
            }
            "after" => {
                let cursor = v
                    .split_once('.')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| bad("after: the `next` of a previous page"))?;
                after = Some(cursor);
            }
            other => {
                return Err(bad(format!(
                    "{other}: unknown parameter; known: status, container, limit, after"
                )));
            }
        }
    }
    state.gateway.jobs.flush_for(&client.id()).await;
    let jobs = state
        .gateway
        .db
        .jobs_of_client(
            &client.id(),
            status,
            container.as_deref(),
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit,
        )
        .await?;
    let next = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| format!("{}.{}", j.created_at, j.id)))
        .flatten();
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({"id": j.id, "node": j.node, "status": j.status.as_str(), "containers": j.containers,
                   "created_at": j.created_at, "finished_at": j.finished_at, "error": j.error})
        })
        .collect();
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

/// `GET /api/v1/jobs/{id}`: the record, with the result read from the node.
pub async fn job(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let mut job = own_job(gw, &client, &id).await?;
    let mut answer = json!({"id": job.id, "node": job.node, "status": job.status.as_str(), "result": null});
    if let Some(error) = &job.error {
        answer["error"] = json!(error);
    }
    let (Some(node), Some(node_job)) = (job.node.clone(), job.node_job.clone()) else {
        return Ok(Json(answer));
    };
    if job.status == JobStatus::Cancelled {
        return Ok(Json(answer));
    }
    match gw.read_job(&node, &node_job, &job.client).await {
        Ok((status, result, receipt)) => {
            if let Some(done) = gw.ended_on_node(&job, &node, status, receipt).await? {
                job = done;
            }
            answer["status"] = json!(job.status.as_str());
            answer["result"] = json!(result);
        }
        Err(e) => {
            answer["warning"] = json!(format!("could not read the result from {node}: {e}"));
        }
    }
    Ok(Json(answer))
}

/// `DELETE /api/v1/jobs/{id}`: cancels a job that has not finished; a late answer of the node is
/// dropped.
pub async fn cancel(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let job = own_job(gw, &client, &id).await?;
    match gw.db.cancel_job(&job.id, now_ms()).await? {
        Some(job) => {
            let mut answer = json!({"id": job.id, "node": job.node, "status": job.status.as_str()});
            // The node is told, so it stops the work; its late answer is not taken either way.
            if let (Some(node), Some(node_job)) = (&job.node, &job.node_job) {
                answer["node_said"] = json!(gw.stop_on_node(node, node_job, &job.client).await);
            }
            Ok(Json(answer))
        }
        None => Err(ApiError(
            StatusCode::CONFLICT,
            format!("job {id} has already ended ({})", job.status),
        )),
    }
}

/// `POST /api/v1/jobs/batch`: jobs spread over the qualifying nodes in proportion to their
/// scores, answered in input order; one failing item never fails the others. Each item costs
/// one request of the client's rate limit (the batch itself paid for the first): items past it
/// are answered with an error, not run.
pub async fn batch(
    State(state): State<Arc<RouterState>>,
    Posted {
        client,
        ip,
        body,
        keyed,
        ..
    }: Posted,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let items = match parse_body(&body)? {
        Value::Array(items) => items,
        _ => return Err(bad("the body must be a list of jobs")),
    };
    if items.len() > gw.settings.max_batch {
        return Err(bad(format!(
            "{} jobs in one batch; at most {} (--max-batch)",
            items.len(),
            gw.settings.max_batch
        )));
    }
    // A key holder's items are counted against its quotas, the first one already was.
    let mut keyed_admits = items.len();
    if let Some(key) = &keyed {
        keyed_admits = 1;
        while keyed_admits < items.len() {
            match crate::keys::charge(&gw.db, key, now_ms()).await {
                Ok(()) => keyed_admits += 1,
                Err(crate::keys::KeyError::OverQuota { .. }) => break,
                Err(crate::keys::KeyError::Unknown) => break,
                Err(crate::keys::KeyError::Database(e)) => return Err(e.into()),
            }
        }
    }
    let asks: Vec<Result<JobAsk, ItemError>> = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let admitted = match keyed {
                Some(_) => i < keyed_admits,
                None => i == 0 || state.limiter.admit(crate::server::JOBS_ROUTE, ip).is_ok(),
            };
            if !admitted {
                return Err(ItemError::Limited);
            }
            JobAsk::parse(v, &format!("[{i}].")).map_err(ItemError::Bad)
        })
        .collect();
    // One plan per kind of job: the chooser once, then each job its node by `spread`.
    let mut plans: HashMap<String, (Choice, std::vec::IntoIter<usize>)> = HashMap::new();
    let mut orders: Vec<Option<(String, Vec<usize>)>> = Vec::with_capacity(asks.len());
    let kind = |a: &JobAsk| json!([a.containers, a.requirements, a.max_price, a.max_seconds]).to_string();
    let counts = asks.iter().flatten().fold(HashMap::new(), |mut m, a| {
        *m.entry(kind(a)).or_insert(0usize) += 1;
        m
    });
    for ask in &asks {
        let Ok(ask) = ask else {
            orders.push(None);
            continue;
        };
        let k = kind(ask);
        let (choice, spread) = plans.entry(k.clone()).or_insert_with(|| {
            let choice = gw.decide(ask, counts[&k] as u64);
            let spread = choose::spread(&choice.candidates, counts[&k]);
            (choice, spread.into_iter())
        });
        let first = spread.next();
        // The planned node first, then the others best first.
        let order: Vec<usize> = first
            .into_iter()
            .chain((0..choice.candidates.len()).filter(|&i| Some(i) != first))
            .collect();
        orders.push(Some((k, order)));
    }
    let plans = &plans;
    let client = &client;
    let answers: Vec<Value> = futures::stream::iter(asks.into_iter().zip(orders))
        .map(|(ask, order)| async move {
            let ask = match ask {
                Ok(a) => a,
                Err(e) => return json!({"id": null, "node": null, "status": "failed", "error": e.to_string()}),
            };
            let plan = order.map(|(k, order)| (&plans[&k].0, order));
            match place(gw, client, &ask, None, plan).await {
                Ok(placed) => placed_json(&placed),
                Err(ApiError(_, e)) => json!({"id": null, "node": null, "status": "failed", "error": e}),
            }
        })
        .buffered(gw.settings.batch_concurrency.max(1))
        .collect()
        .await;
    Ok(Json(Value::Array(answers)))
}

/// Why an item of a batch was not run.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    /// Not a job body.
    #[error(transparent)]
    Bad(super::ask::BadField),
    /// Past the client's rate limit or its API key's quota.
    #[error("too many requests: this job is past your rate limit or quota; submit it again later")]
    Limited,
}

/// `GET /api/v1/route?container=…`: the chooser's reasoning for a job like the query describes
/// (`requirements` fields, `max_price`, `max_seconds` as query parameters).
pub async fn route(State(state): State<Arc<RouterState>>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let mut job = serde_json::Map::new();
    let mut containers = Vec::new();
    let mut requirements = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || {
            v.parse::<f64>()
                .map_err(|_| bad(format!("{k}: must be a number, got {v:?}")))
        };
        match k.as_ref() {
            "container" => containers.push(json!(v)),
            "max_price" | "max_seconds" => {
                job.insert(k.to_string(), json!(number()?));
            }
            "gpus" => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| bad(format!("gpus: must be a whole number, got {v:?}")))?;
                requirements.insert("gpus".into(), json!(n));
            }
            "gpu_memory_gb" | "cpus" | "memory_gb" => {
                requirements.insert(k.to_string(), json!(number()?));
            }
            "gpu_model" => {
                requirements.insert("gpu_model".into(), json!(v));
            }
            other => return Err(bad(format!("{other}: unknown parameter"))),
        }
    }
    job.insert("containers".into(), Value::Array(containers));
    job.insert("requirements".into(), Value::Object(requirements));
    let ask = JobAsk::parse(&Value::Object(job), "").map_err(|e| bad(e.to_string()))?;
    let choice = state.gateway.choose(&ask, true);
    let why = choice
        .candidates
        .is_empty()
        .then(|| choice.why_none(&ask.as_ask(&state.gateway.settings.price_unit)));
    Ok(Json(json!({
        "unit": state.gateway.settings.price_unit,
        "candidates": choice.candidates,
        "excluded": choice.excluded,
        "none": why,
    })))
}

/// `GET /api/v1/identity`: the router's key, for nodes' `network.routers`.
pub async fn identity(State(state): State<Arc<RouterState>>) -> Json<Value> {
    Json(json!({"router": state.gateway.npub(), "price_unit": state.gateway.settings.price_unit}))
}
