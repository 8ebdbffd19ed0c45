//! Orchestrator: the owner of a job's life. It accepts off-chain and streaming jobs, runs them
//! through their containers, records their outcome (store and metrics), and runs the pipelines of
//! chain jobs, which the chain side records itself.
//!
//! Each container is called at `POST {base}/service_output`; the output of container i is the
//! `data` of container i+1 (node reference §4). Unlike Ritual's node, a non-2xx answer is an
//! error, every call has the container's own timeout and output limit
//! (`containers[].max_output_size`), a stored result has a size limit (`store.max_result_size`),
//! and HTTP connections are pooled across jobs. Streams are in [`stream`].

pub mod budget;
mod failure;
mod http;
mod stream;

use std::{net::IpAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::{StatusCode, header::HeaderValue};
use infernet_service::client_ip::is_stated;
use infernet_types::{
    ContainerInput, ContainerResult, JobLocation, JobRequest, JobResult, JobStatus, MAX_DATA_DEPTH, nested_deeper_than,
};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use self::http::{CallError, ContainerHttp, Endpoint};
pub use self::{failure::CallFailure, stream::JobStream};

use crate::{
    config::{ContainerSpec, ValidConfig},
    stats::metrics::{Metrics, Source},
    store::{JobStore, StoreError},
};

/// Timeout of a `/service-resources` call.
const RESOURCES_TIMEOUT: Duration = Duration::from_secs(5);

/// How the Orchestrator reaches one container.
#[derive(Debug)]
struct Target {
    /// The container's id, as errors name it.
    id: String,
    output_url: Endpoint,
    resources_url: Endpoint,
    bearer: Option<HeaderValue>,
    timeout: Duration,
    /// Most bytes one call may answer.
    max_output: usize,
    /// Jobs at once (`limits.<id>.max_jobs`): its permits and their number.
    slots: Option<(Arc<Semaphore>, u32)>,
}

/// The permits of an admitted off-chain job, held until the job ends: one per container of its
/// pipeline that has a `max_jobs`, and its share of the node's [`budget`].
#[derive(Debug, Default)]
pub struct Slots {
    permits: Vec<OwnedSemaphorePermit>,
    _memory: budget::Held,
}

impl Slots {
    /// These slots and the memory `held` for the job.
    pub fn with(self, held: budget::Held) -> Self {
        Self {
            permits: self.permits,
            _memory: held,
        }
    }
}

/// A container already runs as many jobs as its provider allows (HTTP 429).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "container {container} is running its most jobs at once ({max_jobs}, limits.{container}.max_jobs); retry shortly or try another node"
)]
pub struct Busy {
    /// Container id.
    pub container: String,
    /// `limits.<id>.max_jobs`.
    pub max_jobs: u32,
}

/// Why the Orchestrator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client for containers: {0}")]
    Client(#[from] reqwest::Error),
    /// A container URL does not parse.
    #[error("containers[{0}].url: not a valid URL")]
    Url(usize),
    /// A bearer token has characters not allowed in an HTTP header.
    #[error("containers[{0}].bearer: contains characters not allowed in an HTTP header")]
    Bearer(usize),
}

impl OrchestratorError {
    /// The field of the container entry at fault, as the admin API names it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Client(_) => "containers",
            Self::Url(_) => "url",
            Self::Bearer(_) => "bearer",
        }
    }
}

/// Why a container's `/service-resources` is left out of the node's answer (it is logged).
#[derive(Debug, thiserror::Error)]
enum ResourcesError {
    /// A non-2xx answer.
    #[error("HTTP {0}")]
    Status(u16),
    /// A body that is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The call itself failed.
    #[error("{0}")]
    Call(#[source] CallFailure),
}

/// The input of a job: where it comes from, where its output goes, and its data.
#[derive(Debug, Clone)]
pub struct JobInput {
    /// Origin of the data.
    pub source: JobLocation,
    /// Where the final output goes.
    pub destination: JobLocation,
    /// Input of the first container.
    pub data: Value,
}

/// What a pipeline run gives.
struct Pipeline {
    /// Every container's result in order; the last is the output or the error that stopped it.
    results: Vec<ContainerResult>,
    /// The last container's answer as it sent it.
    raw: Bytes,
    /// Bytes of every output together: about what the stored job holds.
    size: usize,
}

/// Accepts, runs and records jobs.
pub struct Orchestrator {
    client: ContainerHttp,
    /// By container id; swapped whole when the operator changes the containers. Shared: a
    /// streamed body keeps its container's for its errors.
    targets: ArcSwap<crate::FastMap<String, Arc<Target>>>,
    store: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
    /// Off-chain jobs running in the background, awaited at shutdown.
    jobs: TaskTracker,
    /// Largest result stored (`store.max_result_size`).
    max_result: usize,
    /// Memory for large work, node-wide.
    budget: budget::Budget,
    /// Off-chain jobs running, with their owner and what stops them (`DELETE /api/jobs/{id}`).
    running: std::sync::Mutex<crate::FastMap<String, (IpAddr, futures::future::AbortHandle)>>,
    /// Signs the receipts of finished off-chain jobs a router dispatched (a node in a network;
    /// their owner is the address the router stated, see [`is_stated`]). A client calling the
    /// node directly has no ledger to show a receipt to, and does not pay for the signature.
    receipts: Option<crate::receipt::Receipts>,
}

/// What [`Orchestrator::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was running and is stopped, recorded failed.
    Stopped,
    /// The job has already ended.
    Ended,
    /// The job is a stream that still runs: it stops when its client closes the connection.
    Streaming,
    /// No job of this owner has the id.
    Unknown,
}

/// The error a cancelled job is recorded with.
pub const CANCELLED: &str = "cancelled by the client";

/// How the Orchestrator reaches each of `containers`; a container whose `max_jobs` did not change
/// keeps its permits from `old`, so jobs running through a change still count.
fn targets(
    containers: &[ContainerSpec],
    old: &crate::FastMap<String, Arc<Target>>,
) -> Result<crate::FastMap<String, Arc<Target>>, OrchestratorError> {
    let mut targets = crate::FastMap::default();
    for (i, c) in containers.iter().enumerate() {
        let bearer = if c.bearer.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", c.bearer.expose()))
                .map_err(|_| OrchestratorError::Bearer(i))?;
            v.set_sensitive(true);
            Some(v)
        };
        let output_url = Endpoint::new(c.base_url.join("service_output")).ok_or(OrchestratorError::Url(i))?;
        // On the same connections as the calls.
        let resources_url = output_url.beside(c.base_url.join("service-resources"));
        targets.insert(
            c.id.clone(),
            Arc::new(Target {
                id: c.id.clone(),
                output_url,
                resources_url,
                bearer,
                timeout: c.timeout,
                max_output: size(c.raw.max_output_size),
                slots: c.limits.max_jobs.map(|max| {
                    let kept = old.get(&c.id).and_then(|t| t.slots.clone()).filter(|(_, n)| *n == max);
                    kept.unwrap_or_else(|| (Arc::new(Semaphore::new(max as usize)), max))
                }),
            }),
        );
    }
    Ok(targets)
}

fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `bytes` of a config as a size in memory.
fn size(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

impl Orchestrator {
    /// Builds the Orchestrator for the configured containers and limits.
    pub fn new(
        config: &ValidConfig,
        store: Arc<dyn JobStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OrchestratorError> {
        Ok(Self {
            client: ContainerHttp::new()?,
            targets: ArcSwap::from_pointee(targets(&config.containers, &crate::FastMap::default())?),
            store,
            metrics,
            jobs: TaskTracker::new(),
            max_result: size(config.config.store.max_result_size),
            budget: budget::Budget::new(config.config.server.max_buffered_bytes),
            running: Default::default(),
            receipts: None,
        })
    }

    /// Signs a receipt for every off-chain job that ends from now on.
    pub fn with_receipts(self, receipts: crate::receipt::Receipts) -> Self {
        Self {
            receipts: Some(receipts),
            ..self
        }
    }

    /// Whether the Orchestrator can call each of `containers` (URL, bearer token).
    pub fn check(containers: &[ContainerSpec]) -> Result<(), OrchestratorError> {
        targets(containers, &crate::FastMap::default()).map(drop)
    }

    /// Serves `containers` from now on (the operator changed them); jobs already running keep
    /// the targets they started with.
    pub fn serve(&self, containers: &[ContainerSpec]) -> Result<(), OrchestratorError> {
        let next = targets(containers, &self.targets.load())?;
        self.targets.store(Arc::new(next));
        Ok(())
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The job store.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// Off-chain jobs running in the background: close and wait for it at shutdown.
    pub fn jobs(&self) -> &TaskTracker {
        &self.jobs
    }

    fn target(&self, id: &str) -> Result<Arc<Target>, CallFailure> {
        self.targets
            .load()
            .get(id)
            .cloned()
            .ok_or_else(|| CallFailure::Unknown { id: id.to_string() })
    }

    /// Reserves the node's memory for an off-chain job whose body is `size` bytes (nothing for a
    /// small one), `held` being what reading the body took; refused (503) while other large jobs
    /// hold the budget.
    pub fn reserve(&self, size: usize, held: budget::Held) -> Result<budget::Held, budget::OverBudget> {
        self.budget.reserve_job(size, held)
    }

    /// The node-wide budget for large work.
    pub fn budget(&self) -> &budget::Budget {
        &self.budget
    }

    /// Takes a permit of each container of `containers` that has a `max_jobs`, without waiting:
    /// an off-chain job over the limit is refused (429), never queued.
    pub fn admit(&self, containers: &[String]) -> Result<Slots, Busy> {
        let targets = self.targets.load();
        let mut slots = Slots::default();
        for (i, id) in containers.iter().enumerate() {
            // A container repeated in the pipeline runs one call at a time: one permit.
            if containers[..i].contains(id) {
                continue;
            }
            if let Some((permits, max_jobs)) = targets.get(id).and_then(|t| t.slots.as_ref()) {
                let permit = permits.clone().try_acquire_owned().map_err(|_| Busy {
                    container: id.clone(),
                    max_jobs: *max_jobs,
                })?;
                slots.permits.push(permit);
            }
        }
        Ok(slots)
    }

    /// Accepts an off-chain job the Guardian admitted, with its `slots`: stores it running, then
    /// runs it in the background and stores its result. Answers its id once the running record
    /// is stored.
    pub async fn submit(
        self: &Arc<Self>,
        owner: IpAddr,
        request: JobRequest,
        slots: Slots,
    ) -> Result<String, StoreError> {
        let id = new_job_id();
        self.store.put(owner, &JobResult::running(&id)).await?;
        let (this, job) = (self.clone(), id.clone());
        let (stop, registration) = futures::future::AbortHandle::new_pair();
        self.running
            .lock()
            .expect("running jobs poisoned")
            .insert(id.clone(), (owner, stop));
        // Stopped by `cancel`, the job's future is dropped: its container call and its slots go.
        self.jobs.spawn(futures::future::Abortable::new(
            async move {
                this.run_offchain(job, owner, request).await;
                drop(slots);
            },
            registration,
        ));
        Ok(id)
    }

    /// Stops `owner`'s off-chain job `id` if it still runs (its container call is dropped) and
    /// records it failed with [`CANCELLED`].
    pub async fn cancel(&self, owner: IpAddr, id: &str) -> Result<Cancelled, StoreError> {
        let stop = {
            let mut running = self.running.lock().expect("running jobs poisoned");
            match running.get(id) {
                Some((o, _)) if *o == owner => running.remove(id).map(|(_, stop)| stop),
                _ => None,
            }
        };
        if let Some(stop) = stop {
            stop.abort();
            let error = ContainerResult::Error {
                container: String::new(),
                error: CANCELLED.into(),
            };
            self.store
                .put(owner, &JobResult::finished(id.to_string(), vec![error]))
                .await?;
            self.metrics.job(Source::Offchain, false, Duration::ZERO);
            return Ok(Cancelled::Stopped);
        }
        let stored = self.store.get(&[id.to_string()]).await?;
        Ok(match stored.first() {
            // Streams are not in `running`: their connection is their handle.
            Some(job) if job.owner == owner && job.job.status == JobStatus::Running => Cancelled::Streaming,
            Some(job) if job.owner == owner => Cancelled::Ended,
            _ => Cancelled::Unknown,
        })
    }

    async fn run_offchain(&self, id: String, owner: IpAddr, request: JobRequest) {
        let started = std::time::Instant::now();
        let input = JobInput {
            source: JobLocation::Offchain,
            destination: JobLocation::Offchain,
            data: Value::Object(request.data),
        };
        let run = self
            .pipeline(
                &request.containers,
                input,
                request.requires_proof.unwrap_or(false),
                true,
            )
            .await;
        // Whoever takes the job out of `running` records its end: the job here, or `cancel`.
        if self
            .running
            .lock()
            .expect("running jobs poisoned")
            .remove(&id)
            .is_none()
        {
            return;
        }
        let mut job = JobResult::finished(id, self.storable(run));
        if let Some(receipts) = self.receipts.as_ref().filter(|_| is_stated(owner)) {
            job.receipt = receipts.sign(&job.id, &request.containers, job.status, started.elapsed());
        }
        self.metrics
            .job(Source::Offchain, job.status == JobStatus::Success, started.elapsed());
        tracing::debug!(job = %job.id, status = ?job.status, "off-chain job finished");
        if let Err(e) = self.store.put(owner, &job).await {
            tracing::error!(job = %job.id, error = %e, "cannot store the job result");
        }
    }

    /// The results of `run` as they are stored: a run larger than the store takes is an error of
    /// its last container.
    fn storable(&self, run: Pipeline) -> Vec<ContainerResult> {
        if run.size <= self.max_result {
            return run.results;
        }
        let container = run
            .results
            .last()
            .map(|r| r.container().to_string())
            .unwrap_or_default();
        let error = format!(
            "the job's result is {} bytes, more than the {} bytes the node stores (store.max_result_size)",
            run.size, self.max_result
        );
        tracing::warn!(%container, %error, "job result not stored");
        vec![ContainerResult::Error { container, error }]
    }

    /// One whole exchange with a container within `timeout`: the answer's status and body (at
    /// most the container's output limit).
    async fn exchange(
        &self,
        target: &Target,
        url: &Endpoint,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes, budget::Held), CallFailure> {
        // As much as the input comes back freely: the job's reservation counts it.
        let free = budget::SMALL.max(body.as_ref().map_or(0, Vec::len));
        let exchange = async {
            let answer = self.client.send(url, target.bearer.as_ref(), body).await?;
            let status = answer.status;
            let (bytes, held) = answer.bytes(target.max_output, &self.budget, free).await?;
            Ok::<_, CallError>((status, bytes, held))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallFailure::TimedOut {
                id: target.id.clone(),
                timeout,
            })?
            .map_err(|e| CallFailure::of(e, target, url))
    }

    /// One container call: its parsed answer and the answer as sent. A job not `admitted` with
    /// its [`Slots`] (a chain job) waits here for a permit of a container with a `max_jobs`, for
    /// at most the container's timeout.
    async fn call(
        &self,
        id: &str,
        input: Vec<u8>,
        admitted: bool,
        parse_up_to: usize,
    ) -> Result<(Value, Bytes), CallFailure> {
        let target = self.target(id)?;
        let _slot = match (&target.slots, admitted) {
            (Some((permits, max_jobs)), false) => tokio::time::timeout(target.timeout, permits.clone().acquire_owned())
                .await
                .map_err(|_| CallFailure::NoSlot {
                    id: id.to_string(),
                    max_jobs: *max_jobs,
                    waited: target.timeout,
                })?
                .ok(),
            _ => None,
        };
        let (status, body, _held) = self
            .exchange(&target, &target.output_url, Some(input), target.timeout)
            .await?;
        if !status.is_success() {
            return Err(CallFailure::refused(id, status, &body));
        }
        if body.len() > parse_up_to {
            // A result that cannot be stored is not parsed either (the caller says so).
            return Ok((Value::Null, body));
        }
        if body.is_empty() {
            return Ok((Value::Null, Bytes::from_static(b"null")));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|_| CallFailure::NotJson {
            id: id.to_string(),
            excerpt: failure::excerpt(&body),
        })?;
        if nested_deeper_than(&value, MAX_DATA_DEPTH) {
            return Err(CallFailure::TooDeep { id: id.to_string() });
        }
        Ok((value, body))
    }

    /// Runs `containers` in order and stops at the first error, which is the last result. Also
    /// gives the last container's answer as it sent it (the chain encoding keeps its key order).
    pub async fn run_pipeline(
        &self,
        containers: &[String],
        input: JobInput,
        requires_proof: bool,
    ) -> (Vec<ContainerResult>, Bytes) {
        let run = self.pipeline(containers, input, requires_proof, false).await;
        (run.results, run.raw)
    }

    async fn pipeline(&self, containers: &[String], input: JobInput, requires_proof: bool, admitted: bool) -> Pipeline {
        let mut run = Pipeline {
            results: Vec::with_capacity(containers.len()),
            raw: Bytes::new(),
            size: 0,
        };
        let last = containers.len().saturating_sub(1);
        let mut next = ContainerInput {
            source: input.source,
            destination: if last == 0 {
                input.destination
            } else {
                JobLocation::Offchain
            },
            data: input.data,
            requires_proof: Some(requires_proof),
        };
        for (i, id) in containers.iter().enumerate() {
            let started = std::time::Instant::now();
            // The input as sent; the data it came from is not held during the call.
            let body = crate::json::container_input(&next);
            next.data = Value::Null;
            // An off-chain job's last answer larger than the store takes fails the job anyway:
            // it is not parsed (a copy of it saved).
            let parse_up_to = if admitted && i == last {
                self.max_result.saturating_sub(run.size)
            } else {
                usize::MAX
            };
            let outcome = self.call(id, body, admitted, parse_up_to).await;
            self.metrics.container_call(id, outcome.is_ok(), started.elapsed());
            match outcome {
                Ok((output, body)) => {
                    run.size += body.len();
                    run.raw = body;
                    if i < last {
                        next = ContainerInput {
                            source: JobLocation::Offchain,
                            destination: if i + 1 == last {
                                input.destination
                            } else {
                                JobLocation::Offchain
                            },
                            data: output.clone(),
                            requires_proof: Some(requires_proof),
                        };
                    }
                    run.results.push(ContainerResult::Output {
                        container: id.clone(),
                        output,
                    });
                }
                Err(failure) => {
                    tracing::warn!(container = %id, error = %failure, "container error");
                    run.results.push(ContainerResult::Error {
                        container: id.clone(),
                        error: failure.to_string(),
                    });
                    break;
                }
            }
        }
        run
    }

    /// Collects every container's `/service-resources` (with `model_id` if given), concurrently.
    /// Containers that fail or answer non-JSON are left out (and logged).
    pub async fn resources(&self, model_id: Option<&str>) -> Map<String, Value> {
        let targets = self.targets.load_full();
        let calls = targets.iter().map(|(id, target)| async move {
            let url = match model_id {
                Some(model) => target.resources_url.with_query(&[("model_id", model)]),
                None => target.resources_url.clone(),
            };
            let result = match self.exchange(target, &url, None, RESOURCES_TIMEOUT).await {
                Ok((status, _, _)) if !status.is_success() => Err(ResourcesError::Status(status.as_u16())),
                Ok((_, body, _held)) => serde_json::from_slice::<Value>(&body).map_err(ResourcesError::NotJson),
                Err(e) => Err(ResourcesError::Call(e)),
            };
            match result {
                Ok(v) => Some((id.clone(), v)),
                Err(error) => {
                    tracing::warn!(container = %id, %error, "cannot fetch service resources");
                    None
                }
            }
        });
        futures::future::join_all(calls).await.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_chain_job_waits_for_a_slot_at_most_its_containers_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({
            "containers": [{"id": "busy", "url": "http://127.0.0.1:9", "timeout": 0.2}],
            "store": {"path": dir.path().join("jobs.db")},
        });
        let loaded = crate::config::parse(&config.to_string()).unwrap();
        let mut valid = crate::config::validate(loaded.config, &[]).unwrap();
        valid.containers[0].limits.max_jobs = Some(1);
        let store = crate::store::open(&valid).await.unwrap();
        let metrics = Arc::new(Metrics::new(["busy"]));
        let orchestrator = Orchestrator::new(&valid, store, metrics).unwrap();
        // An off-chain job holds the only slot.
        let _running = orchestrator.admit(&["busy".to_string()]).unwrap();
        let input = JobInput {
            source: JobLocation::Onchain,
            destination: JobLocation::Onchain,
            data: Value::Null,
        };
        let (results, _) = tokio::time::timeout(
            Duration::from_secs(10),
            orchestrator.run_pipeline(&["busy".to_string()], input, false),
        )
        .await
        .expect("the chain job waited for a slot without a bound");
        let [ContainerResult::Error { container, error }] = &results[..] else {
            panic!("{results:?}");
        };
        assert_eq!(container, "busy");
        assert!(
            error.contains("max_jobs (1)") && error.contains("0.2s (containers[].timeout)"),
            "{error}"
        );
    }
}
