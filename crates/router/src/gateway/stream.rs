//! `POST /api/v1/jobs/stream`: the node's stream passed through the gateway.

use std::{sync::Arc, time::Instant};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use http_body_util::BodyStream;
use hyper::body::Frame;

use super::{
    ApiError, Gateway, JobAsk, Posted,
    client::{bad, parse_body},
    dispatch::{self, NodeError, Outcome},
    jobs::{Opened, ended, fail, none_accepted, on_node, open_job},
};
use infernet_identity::dispatch::DispatchKey;

use crate::{
    choose,
    db::jobs::{Job, JobStatus},
    ledger::receipt::Received,
    server::RouterState,
};

/// Longest first line (the node's job id) a node's stream may start with.
const MAX_ID_LINE: usize = 1024;
/// Longest receipt taken from a stream's trailer (a receipt is well under 1 KiB).
const MAX_RECEIPT: usize = 16 * 1024;

/// `POST /api/v1/jobs/stream`: the node's stream passed through as it arrives (the first line is
/// the router's job id instead of the node's). A stream that has started is never run again
/// elsewhere: if it breaks, the client sees it end early and the job is recorded failed.
pub async fn stream(
    State(state): State<Arc<RouterState>>,
    Posted { client, body, .. }: Posted,
) -> Result<Response, ApiError> {
    let gw = &state.gateway;
    let ask = JobAsk::parse(&parse_body(&body)?, "").map_err(|e| bad(e.to_string()))?;
    if ask.callback_url.is_some() {
        return Err(bad(
            "callback_url: a stream is answered as it runs; submit to /api/v1/jobs for a callback",
        ));
    }
    let (job, _) = match open_job(gw, &client, &ask, None, false).await? {
        Ok(Opened { job, pending }) => (job, pending),
        Err(job) => (job, None),
    };
    let choice = gw.decide(&ask, 1);
    if choice.candidates.is_empty() {
        let why = gw.choose(&ask, true).why_none(&ask.as_ask(&gw.settings.price_unit));
        fail(gw, &job, &why).await;
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why));
    }
    let order = choose::pick(&choice.candidates, &mut rand::rng());
    let (body, stated) = (ask.node_body(), client.stated());
    let mut tried = Vec::new();
    let mut too_large = 0;
    let attempts = async {
        for &i in order.iter().take(gw.settings.attempts.max(1)) {
            let node = &choice.candidates[i].node;
            match open_on(gw, &job, node, body.clone(), stated).await {
                Ok(response) => return Ok(response),
                Err(Attempt::Refused(why)) => tried.push(format!("{node} refused: {why}")),
                Err(Attempt::TooLarge(why)) => {
                    too_large += 1;
                    tried.push(format!("{node} refused: {why}"));
                }
                Err(Attempt::Failed(why)) => {
                    gw.record(node, &[], false, None);
                    tried.push(format!("{node} failed: {why}"));
                }
                Err(Attempt::Stop(e)) => return Err(e),
            }
        }
        Err(none_accepted(&tried, too_large))
    };
    // `deadline_s` bounds the search for a node that starts the stream, not the stream itself.
    let opened = match ask.deadline {
        Some(d) => tokio::time::timeout(d, attempts).await.unwrap_or_else(|_| {
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no node started the stream within deadline_s ({d:?})"),
            ))
        }),
        None => attempts.await,
    };
    if let Err(e) = &opened {
        fail(gw, &job, &e.1).await;
    }
    opened
}

/// Why a node did not take a stream.
enum Attempt {
    /// It refused (busy, closed, not trusting this router): try the next.
    Refused(String),
    /// The job is past its body limit: try the next.
    TooLarge(String),
    /// It failed: try the next, and count it.
    Failed(String),
    /// The job itself is refused (the client's error) or the database failed: answer that.
    Stop(ApiError),
}

/// Opens `job`'s stream on `node`: the client's answer, its first line the router's id, the rest
/// the node's output as it comes.
async fn open_on(
    gw: &Arc<Gateway>,
    job: &Job,
    node: &str,
    body: Bytes,
    stated: std::net::IpAddr,
) -> Result<Response, Attempt> {
    let call = gw.call(node, stated);
    let response = call.stream(body).await.map_err(|e| Attempt::Failed(e.to_string()))?;
    // The key the node MACs its receipt with.
    let shared = call.shared.clone();
    let status = response.status();
    if !status.is_success() {
        let text = dispatch::read_body(response.into_body(), gw.settings.dispatch_timeout)
            .await
            .unwrap_or_default();
        return Err(match dispatch::classify(status.as_u16(), &text) {
            Outcome::Refused(why) => Attempt::Refused(why),
            Outcome::TooLarge(why) => Attempt::TooLarge(why),
            Outcome::Invalid { status, message } => Attempt::Stop(ApiError(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            )),
            Outcome::Failed(why) | Outcome::Accepted(why) => Attempt::Failed(why),
        });
    }
    // Frames, not bytes: the node's receipt comes in a trailer after the output.
    let mut body = BodyStream::new(response.into_body());
    let (node_job, rest) = tokio::time::timeout(gw.settings.dispatch_timeout, id_line(&mut body))
        .await
        .unwrap_or(Err(NodeError::LateStart))
        .map_err(|e| Attempt::Failed(e.to_string()))?;
    // The job's row, naming its node, is held by the group-commit writer and replaced by the
    // stream's end when it comes first; the stream goes on without waiting for a commit: a crash
    // in between loses the row (the README says so).
    let job = on_node(gw, job, node, Some(&node_job));
    gw.jobs.put_later(job.clone()).await;
    let first = Bytes::from([format!("{}\n", job.id).into_bytes(), rest].concat());
    let finish = Finish {
        gw: gw.clone(),
        job,
        node: node.to_string(),
        started: Instant::now(),
        ok: false,
        receipt: None,
        shared,
    };
    let idle = gw.settings.stream_idle;
    let tail = futures::stream::unfold((body, Some(finish)), move |(mut body, mut finish)| async move {
        // Ended (broken or silent): nothing more is read.
        finish.as_ref()?;
        loop {
            let next = match tokio::time::timeout(idle, body.next()).await {
                Ok(next) => next.map(|r| r.map_err(io_error)),
                Err(_) => Some(Err(std::io::Error::other(NodeError::Slow(idle).to_string()))),
            };
            return match next {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => Some((Ok::<_, std::io::Error>(chunk), (body, finish))),
                    Err(trailers) => {
                        if let Some(f) = finish.as_mut() {
                            f.receipt = receipt(&trailers, f.shared.as_deref());
                        }
                        continue;
                    }
                },
                Some(Err(e)) => {
                    drop(finish.take());
                    Some((Err(e), (body, None)))
                }
                None => {
                    if let Some(mut f) = finish.take() {
                        f.ok = true;
                    }
                    None
                }
            };
        }
    });
    let stream = futures::stream::once(async move { Ok(first) }).chain(tail);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A broken body's error as the client's stream carries it.
fn io_error(e: dispatch::BodyError) -> std::io::Error {
    std::io::Error::other(e)
}

/// The receipt of a stream's trailers, when it has one of a sane size; vouched for when the
/// node MAC'd it with the key it shares with this router (`shared`).
fn receipt(trailers: &Frame<Bytes>, shared: Option<&DispatchKey>) -> Option<Received> {
    let trailers = trailers.trailers_ref()?;
    let value = trailers.get(infernet_types::RECEIPT_TRAILER)?;
    let json = (value.len() <= MAX_RECEIPT)
        .then(|| value.to_str().ok().map(str::to_owned))
        .flatten()?;
    let mac = trailers
        .get(infernet_types::RECEIPT_MAC_TRAILER)
        .and_then(|v| v.to_str().ok());
    let vouched_by = match (shared, mac) {
        (Some(key), Some(mac)) if key.check_receipt_mac(json.as_bytes(), mac) => Some(*key.peer()),
        _ => None,
    };
    Some(Received { json, vouched_by })
}

/// The node's first line (its job id) and what came after it in the same chunks.
async fn id_line<E: std::fmt::Display>(
    body: &mut (impl futures::Stream<Item = Result<Frame<Bytes>, E>> + Unpin),
) -> Result<(String, Vec<u8>), NodeError> {
    let mut head = Vec::new();
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| NodeError::Broken(e.to_string()))?;
        // Trailers end a body: the id line never came.
        let Ok(chunk) = frame.into_data() else { break };
        head.extend_from_slice(&chunk);
        if let Some(end) = head.iter().position(|&b| b == b'\n') {
            let rest = head.split_off(end + 1);
            let id = String::from_utf8_lossy(&head[..end]).trim().to_string();
            return match dispatch::is_node_job_id(&id) {
                true => Ok((id, rest)),
                false => Err(NodeError::BadJobId),
            };
        }
        if head.len() > MAX_ID_LINE {
            break;
        }
    }
    Err(NodeError::NoIdLine)
}

/// Records how a stream ended when it is dropped: whole (`ok`), or broken or abandoned. A whole
/// stream's row carries the node's receipt: from the stream's trailer, or read from the node once
/// the stream has ended (a node that sends none: over a link, or of an earlier version).
struct Finish {
    gw: Arc<Gateway>,
    job: Job,
    node: String,
    started: Instant,
    ok: bool,
    /// The receipt of the stream's trailer.
    receipt: Option<Received>,
    /// The key the node shares with this router, to check the receipt's MAC with.
    shared: Option<Arc<DispatchKey>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let (gw, job, node, ok) = (self.gw.clone(), self.job.clone(), self.node.clone(), self.ok);
        let trailer = self.receipt.take();
        let latency = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let (status, error) = match ok {
                true => (JobStatus::Succeeded, None),
                false => (JobStatus::Failed, Some("the stream ended early")),
            };
            let done = ended(&job, status, error);
            if gw.jobs.put_acked_batched(done.clone()).await {
                gw.record(&node, &job.containers, ok, Some(latency));
                let receipt = match (ok, trailer, &done.node_job) {
                    (true, Some(receipt), _) => Some(receipt),
                    (true, None, Some(node_job)) => gw
                        .stream_receipt(&node, node_job, &done.client)
                        .await
                        .map(Received::plain),
                    _ => None,
                };
                gw.account_with(&done, receipt);
            }
        });
    }
}
