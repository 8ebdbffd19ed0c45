//! Pipelines across nodes: when no node serves a job's whole container list but nodes serve each
//! of its containers, the router runs the stages on them in order, the output of one the `data`
//! of the next (an output that is not a JSON object is passed on as `{"output": …}`).
//!
//! The client is answered once the first stage was accepted; the router then follows each stage
//! to its end (reading its result from its node), dispatches the next, and records the last
//! stage's node and job id on the job's row, from which `GET /api/v1/jobs/{id}` reads the result
//! as for any job. A stage that fails, or whose node stops answering for
//! `node_gone_after`, fails the job with the stage named. `max_price` bounds the whole pipeline:
//! a stage goes only to nodes whose price leaves enough for the cheapest node of every later
//! stage. Intermediate outputs pass through the router's memory, at most
//! [`dispatch::MAX_ANSWER`](super::dispatch::MAX_ANSWER) bytes each. A pipeline whose router
//! stops half-way is not resumed (its row stays running until its lease runs out).

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{
    ApiError, Client, Gateway, JobAsk,
    dispatch::NodeError,
    jobs::{Placed, dispatch_along, fail},
};
use crate::{
    choose::{self, Choice},
    db::{
        DbError,
        jobs::{Job, JobStatus},
    },
};

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum PipelineError {
    /// A stage that ran did not give an output.
    #[error("stage {stage} ({container}) on {node}: {cause}")]
    Stage {
        /// Its number, from 1.
        stage: usize,
        /// Its container.
        container: String,
        /// The node it ran on.
        node: String,
        /// What happened.
        cause: StageError,
    },
    /// No node took a stage.
    #[error("stage {stage} ({container}): {message}")]
    Dispatch {
        /// Its number, from 1.
        stage: usize,
        /// Its container.
        container: String,
        /// Why, as the client would have been told.
        message: String,
    },
    /// The router's database failed.
    #[error("the router's database failed: {0}")]
    Database(#[from] DbError),
}

/// Why a stage that ran gave no output.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    /// The client cancelled the job meanwhile.
    #[error("the job was cancelled")]
    Cancelled,
    /// The node ran it and it failed: the node's message.
    #[error("{0}")]
    Failed(String),
    /// The node stopped answering about it.
    #[error("the node stopped answering: {0}")]
    NodeGone(NodeError),
    /// The router's database failed.
    #[error("the router's database failed: {0}")]
    Database(#[from] DbError),
}

/// One stage: its container, the qualifying nodes and the order to try them in.
pub(super) struct Stage {
    container: String,
    choice: Choice,
    order: Vec<usize>,
}

/// The stages of `ask` when every container, taken alone, has qualifying nodes (and the
/// cheapest of each together fit `max_price`); `None` otherwise, or for a single container.
pub(super) fn plan(gw: &Gateway, ask: &JobAsk) -> Option<Vec<Stage>> {
    if ask.containers.len() < 2 {
        return None;
    }
    let mut stages = Vec::with_capacity(ask.containers.len());
    for container in &ask.containers {
        let alone = JobAsk {
            containers: vec![container.clone()],
            max_price: None,
            callback_url: None,
            ..ask.clone()
        };
        let choice = gw.choose(&alone, false);
        if choice.candidates.is_empty() {
            return None;
        }
        let order = choose::pick(&choice.candidates, &mut rand::rng());
        stages.push(Stage {
            container: container.clone(),
            choice,
            order,
        });
    }
    let cheapest: f64 = stages.iter().map(cheapest).sum();
    if ask.max_price.is_some_and(|max| cheapest > max) {
        return None;
    }
    Some(stages)
}

fn cheapest(stage: &Stage) -> f64 {
    stage
        .choice
        .candidates
        .iter()
        .map(|c| c.price)
        .fold(f64::INFINITY, f64::min)
}

/// Dispatches stage `i` with `data` to a node whose price fits `budget`.
async fn dispatch_stage(
    gw: &Arc<Gateway>,
    ask: &JobAsk,
    stage: &Stage,
    data: Value,
    client: &Client,
    budget: f64,
) -> Result<(String, String, f64), ApiError> {
    let order: Vec<usize> = stage
        .order
        .iter()
        .copied()
        .filter(|&i| stage.choice.candidates[i].price <= budget + 1e-12)
        .collect();
    let body = JobAsk {
        containers: vec![stage.container.clone()],
        data,
        ..ask.clone()
    }
    .node_body();
    let (node, node_job) = dispatch_along(gw, &stage.choice, &order, body, client.stated(), ask.deadline).await?;
    let price = stage
        .choice
        .candidates
        .iter()
        .find(|c| c.node == node)
        .map_or(0.0, |c| c.price);
    Ok((node, node_job, price))
}

/// Runs the first stage, answers, and runs the others in the background.
pub(super) async fn start(
    gw: &Arc<Gateway>,
    client: &Client,
    ask: &JobAsk,
    job: Job,
    stages: Vec<Stage>,
) -> Result<Placed, ApiError> {
    // Its follower is one of the replica's watchers, so pipelines in flight have a bound.
    let Ok(watcher) = gw.watchers.clone().try_acquire_owned() else {
        let why = "this router follows as many jobs as it may (pipelines and callbacks); retry shortly";
        fail(gw, &job, why).await;
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why.into()));
    };
    let later: f64 = stages[1..].iter().map(cheapest).sum();
    let budget = ask.max_price.map_or(f64::INFINITY, |max| max - later);
    let (node, node_job, price) = match dispatch_stage(gw, ask, &stages[0], ask.data.clone(), client, budget).await {
        Ok(x) => x,
        Err(e) => {
            fail(gw, &job, &e.1).await;
            return Err(e);
        }
    };
    gw.db
        .set_job_node(&job.id, job.attempt, &node, None, &gw.lease())
        .await?;
    let (gw2, client2, ask2, job2, first) = (gw.clone(), *client, ask.clone(), job.clone(), node.clone());
    tokio::spawn(async move {
        let _watcher = watcher;
        if let Err(why) = follow(&gw2, &client2, &ask2, &job2, stages, (first, node_job, price)).await {
            fail(&gw2, &job2, &why.to_string()).await;
        }
    });
    Ok(Placed::New { node, job })
}

/// Follows each stage to its end and dispatches the next; the last one is recorded on the row.
async fn follow(
    gw: &Arc<Gateway>,
    client: &Client,
    ask: &JobAsk,
    job: &Job,
    stages: Vec<Stage>,
    first: (String, String, f64),
) -> Result<(), PipelineError> {
    let (mut node, mut node_job, mut spent) = first;
    for i in 1..stages.len() {
        let prev = &stages[i - 1].container;
        let output = wait(gw, job, prev, &node, &node_job)
            .await
            .map_err(|cause| PipelineError::Stage {
                stage: i,
                container: prev.clone(),
                node: node.clone(),
                cause,
            })?;
        let data = match output {
            Value::Object(_) => output,
            other => json!({"output": other}),
        };
        let later: f64 = stages[i + 1..].iter().map(cheapest).sum();
        let budget = ask.max_price.map_or(f64::INFINITY, |max| max - spent - later);
        let (n, j, price) = dispatch_stage(gw, ask, &stages[i], data, client, budget)
            .await
            .map_err(|e| PipelineError::Dispatch {
                stage: i + 1,
                container: stages[i].container.clone(),
                message: e.1,
            })?;
        (node, node_job, spent) = (n, j, spent + price);
        let last = i + 1 == stages.len();
        let recorded = gw
            .db
            .set_job_node(
                &job.id,
                job.attempt,
                &node,
                last.then_some(node_job.as_str()),
                &gw.lease(),
            )
            .await?;
        if !recorded {
            return Ok(()); // Cancelled meanwhile.
        }
    }
    if job.callback_url.is_some() {
        gw.watch(Job {
            node: Some(node),
            node_job: Some(node_job),
            ..job.clone()
        });
    }
    Ok(())
}

/// Waits for a stage's job to end: its output, or why it failed.
async fn wait(gw: &Arc<Gateway>, job: &Job, stage: &str, node: &str, node_job: &str) -> Result<Value, StageError> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut unreachable_since = None;
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(gw.settings.callback_poll);
        if !gw.db.renew_job_lease(&job.id, job.attempt, &gw.lease()).await? {
            return Err(StageError::Cancelled);
        }
        match gw.read_result(node, node_job, &job.client).await {
            Ok((JobStatus::Running, _)) if gw.ran_too_long(job.created_at) => {
                let said = gw.stop_on_node(node, node_job, &job.client).await;
                tracing::debug!(job = %job.id, %node, node_said = %said, "a pipeline stage ran too long");
                return Err(StageError::Failed(format!(
                    "stage {stage} still running after {:?}; the router stopped waiting",
                    gw.settings.max_running
                )));
            }
            Ok((JobStatus::Running, _)) => unreachable_since = None,
            Ok((JobStatus::Succeeded, Some(infernet_types::ContainerResult::Output { output, .. }))) => {
                let latency = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                gw.record(node, &[stage.to_string()], true, Some(latency));
                return Ok(output);
            }
            Ok((_, result)) => {
                gw.record(node, &[stage.to_string()], false, None);
                let why = match result {
                    Some(infernet_types::ContainerResult::Error { error, .. }) => error,
                    _ => "the node reports the stage failed".into(),
                };
                return Err(StageError::Failed(why));
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= gw.settings.node_gone_after {
                    return Err(StageError::NodeGone(e));
                }
            }
        }
    }
}
