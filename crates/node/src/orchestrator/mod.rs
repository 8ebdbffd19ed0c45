//! Orchestrator: runs a job through its pipeline of containers.
//!
//! Each container is called at `POST {base}/service_output`; the output of container i is the
//! `data` of container i+1 (node reference §4). Unlike Ritual's node, a non-2xx answer is an
//! error, every call has the container's own timeout, and HTTP connections are pooled across jobs.

mod http;

use std::{net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::Stream;
use hyper::{StatusCode, header::HeaderValue};
use infernet_types::{ContainerInput, ContainerResult, JobLocation, JobResult, JobStatus};
use serde_json::{Map, Value};

use self::http::{BodyStream, CallError, ContainerHttp, Endpoint};

use crate::{
    config::ContainerSpec,
    stats::metrics::{Metrics, Source},
    store::JobStore,
};

/// Longest error body excerpt put in a job error.
const EXCERPT: usize = 512;
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

/// Runs pipelines and records off-chain jobs in the store.
pub struct Orchestrator {
    client: ContainerHttp,
    /// Shared: a streamed body keeps its container's for its errors.
    targets: crate::FastMap<String, Arc<Target>>,
    store: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let text = text.trim();
    if body.len() > EXCERPT {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

fn describe(e: &CallError, id: &str, url: &Endpoint) -> String {
    match e {
        CallError::Connect(cause) => format!("container {id} is unreachable at {url}: {cause}"),
        CallError::Failed(cause) => format!("container {id} call to {url} failed: {cause}"),
    }
}

fn timed_out(id: &str, timeout: Duration) -> String {
    format!("container {id} did not answer within {}s", timeout.as_secs_f64())
}

/// A non-2xx answer, as a job error.
fn refused(id: &str, status: StatusCode, body: &[u8]) -> String {
    format!("container {id} answered HTTP {}: {}", status.as_u16(), excerpt(body))
}

impl Orchestrator {
    /// Builds the Orchestrator for the configured containers.
    pub fn new(
        containers: &[ContainerSpec],
        store: Arc<dyn JobStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OrchestratorError> {
        let client = ContainerHttp::new()?;
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
                }),
            );
        }
        Ok(Self {
            client,
            targets,
            store,
            metrics,
        })
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The job store.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    fn target(&self, id: &str) -> Result<&Arc<Target>, String> {
        self.targets
            .get(id)
            .ok_or_else(|| format!("container {id} is not configured on this node"))
    }

    /// One whole exchange with a container within `timeout`: the answer's status and body.
    async fn exchange(
        &self,
        target: &Target,
        url: &Endpoint,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let answer = self.client.send(url, target.bearer.as_ref(), body).await?;
            let status = answer.status;
            Ok::<_, CallError>((status, answer.bytes().await?))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out(&target.id, timeout))?
            .map_err(|e| describe(&e, &target.id, url))
    }

    /// One container call: its parsed answer and the answer as sent.
    async fn call(&self, id: &str, input: &ContainerInput) -> Result<(Value, Bytes), String> {
        let target = self.target(id)?;
        let (status, body) = self
            .exchange(
                target,
                &target.output_url,
                Some(crate::json::container_input(input)),
                target.timeout,
            )
            .await?;
        if !status.is_success() {
            return Err(refused(id, status, &body));
        }
        if body.is_empty() {
            return Ok((Value::Null, Bytes::from_static(b"null")));
        }
        let value = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "container {id} answered with a body that is not JSON: {}",
                excerpt(&body)
            )
        })?;
        Ok((value, body))
    }

    /// Runs `containers` in order; stops at the first error, which is the last result.
    pub async fn run_pipeline(
        &self,
        containers: &[String],
        input: JobInput,
        requires_proof: bool,
    ) -> Vec<ContainerResult> {
        self.run_pipeline_raw(containers, input, requires_proof).await.0
    }

    /// [`Self::run_pipeline`], also giving the last container's answer as it sent it (the chain
    /// encoding keeps its key order).
    pub async fn run_pipeline_raw(
        &self,
        containers: &[String],
        input: JobInput,
        requires_proof: bool,
    ) -> (Vec<ContainerResult>, Bytes) {
        let mut raw = Bytes::new();
        let mut results = Vec::with_capacity(containers.len());
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
            let outcome = self.call(id, &next).await;
            self.metrics.container_call(id, outcome.is_ok(), started.elapsed());
            match outcome {
                Ok((output, body)) => {
                    raw = body;
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
                    results.push(ContainerResult::Output {
                        container: id.clone(),
                        output,
                    });
                }
                Err(error) => {
                    tracing::warn!(container = %id, %error, "container error");
                    results.push(ContainerResult::Error {
                        container: id.clone(),
                        error,
                    });
                    break;
                }
            }
        }
        (results, raw)
    }

    /// Runs an off-chain job whose running state is already stored, and stores its result.
    pub async fn run_offchain(
        &self,
        id: String,
        owner: IpAddr,
        containers: Vec<String>,
        data: Map<String, Value>,
        requires_proof: bool,
    ) {
        let started = std::time::Instant::now();
        let input = JobInput {
            source: JobLocation::Offchain,
            destination: JobLocation::Offchain,
            data: Value::Object(data),
        };
        let results = self.run_pipeline(&containers, input, requires_proof).await;
        let job = JobResult::finished(id, results);
        self.metrics
            .job(Source::Offchain, job.status == JobStatus::Success, started.elapsed());
        tracing::debug!(job = %job.id, status = ?job.status, "off-chain job finished");
        if let Err(e) = self.store.put(owner, &job).await {
            tracing::error!(job = %job.id, error = %e, "cannot store the job result");
        }
    }

    /// Starts a streaming call of `container` and returns its body as a stream of chunks.
    ///
    /// Each chunk must arrive within the container's timeout (an idle timeout, not a cap on the
    /// whole stream). An error mid-stream ends the stream with that error.
    pub async fn open_stream(&self, container: &str, data: Map<String, Value>) -> Result<IdleTimeout, String> {
        let target = self.target(container)?;
        let input = ContainerInput {
            source: JobLocation::Offchain,
            destination: JobLocation::Stream,
            data: Value::Object(data),
            requires_proof: None,
        };
        let idle = target.timeout;
        let body = crate::json::container_input(&input);
        // One timer for the whole stream: the wait for the answer's head, then each wait for
        // more (a timer registered and cancelled per stage showed up in profiles).
        let mut deadline = Box::pin(tokio::time::sleep(idle));
        let send = self.client.send(&target.output_url, target.bearer.as_ref(), Some(body));
        let response = tokio::select! {
            biased;
            response = send => response.map_err(|e| describe(&e, container, &target.output_url))?,
            () = deadline.as_mut() => return Err(timed_out(container, idle)),
        };
        let status = response.status;
        if !status.is_success() {
            let body = tokio::time::timeout(idle, response.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(refused(container, status, &body));
        }
        Ok(IdleTimeout {
            body: response.into_stream(),
            target: target.clone(),
            deadline,
            last: tokio::time::Instant::now(),
            done: false,
        })
    }

    /// Collects every container's `/service-resources` (with `model_id` if given), concurrently.
    /// Containers that fail or answer non-JSON are left out (and logged).
    pub async fn resources(&self, model_id: Option<&str>) -> Map<String, Value> {
        let calls = self.targets.iter().map(|(id, target)| async move {
            let url = match model_id {
                Some(model) => target.resources_url.with_query(&[("model_id", model)]),
                None => target.resources_url.clone(),
            };
            let result = match self.exchange(target, &url, None, RESOURCES_TIMEOUT).await {
                Ok((status, _)) if !status.is_success() => Err(format!("HTTP {}", status.as_u16())),
                Ok((_, body)) => serde_json::from_slice::<Value>(&body).map_err(|e| format!("not JSON: {e}")),
                Err(e) => Err(e),
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

/// A container's streamed body that fails when no chunk arrives for the container's timeout. One
/// timer serves the whole stream, and a chunk only notes when it came: the timer is moved on when
/// it fires early, not at every chunk (each move takes the runtime's timer lock).
pub struct IdleTimeout {
    body: BodyStream,
    target: Arc<Target>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// When the last chunk came (or the answer's head).
    last: tokio::time::Instant,
    done: bool,
}

impl Stream for IdleTimeout {
    type Item = Result<Bytes, String>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.last = tokio::time::Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(describe(&e, &this.target.id, &this.target.output_url))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => loop {
                match this.deadline.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        let due = this.last + this.target.timeout;
                        if due > this.deadline.deadline() {
                            // Chunks came meanwhile: wait from the last one.
                            this.deadline.as_mut().reset(due);
                            continue;
                        }
                        this.done = true;
                        let message = format!(
                            "container {} sent nothing for {}s; stream abandoned",
                            this.target.id,
                            this.target.timeout.as_secs_f64()
                        );
                        return Poll::Ready(Some(Err(message)));
                    }
                }
            },
        }
    }
}
