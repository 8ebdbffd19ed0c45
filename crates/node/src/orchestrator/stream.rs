//! Streaming jobs (`POST /api/jobs/stream`): the first container is called in streaming mode and
//! its output forwarded as it comes, after a first line with the job id.
//!
//! The id line is the first piece of the body and is ready at once, so the server sends it (with
//! the headers) before the container is even called: a client reading the id first (as Ritual's
//! does) has it within moments, whatever the container's latency. Output is never held back:
//! what the container sent back to back leaves in one piece, the rest as it arrives. Nothing is
//! buffered whole: a call may send at most the container's `max_output_size` (past it the stream
//! fails and the container connection is dropped), and of the output only the first
//! `store.max_result_size` bytes are kept for the stored result, which is then marked truncated.
//! Past the first [`budget::SMALL`] bytes, that copy takes its size from the node's budget for
//! large work: when other large work holds the budget, the copy stops there and is stored marked
//! truncated too (the client still gets the whole output), so many long streams at once cannot
//! hold `store.max_result_size` each.

use infernet_service::client_ip::is_stated;
use std::{
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use infernet_identity::dispatch::DispatchKey;
use infernet_types::{ContainerInput, ContainerResult, JobLocation, JobRequest, JobResult};
use serde_json::{Map, Value, json};

use super::{
    CallFailure, Orchestrator, Target,
    budget::{self, Budget, Held},
    http::BodyStream,
    new_job_id,
};
use crate::{
    stats::metrics::{Metrics, Source},
    store::JobStore,
};

/// Most output joined into one piece of the answer.
const BURST_BYTES: usize = 64 * 1024;

type Opening = Pin<Box<dyn Future<Output = Result<IdleTimeout, CallFailure>> + Send>>;

impl Orchestrator {
    /// Accepts a streaming job the Guardian admitted: stores it running and answers its body.
    /// The container is called when the body is first read past the id line; the outcome is
    /// stored when the stream ends, fails, or is dropped (the client went away).
    pub fn stream(self: &Arc<Self>, owner: IpAddr, request: JobRequest, slots: super::Slots) -> JobStream {
        let id = new_job_id();
        // Written off the response path; one writer keeps this and the result in order.
        self.store.put_detached(owner, JobResult::running(&id));
        // The Guardian admits no empty pipeline; only the first container streams. The receipt
        // states the containers asked for, as an async job's does.
        let containers = request.containers;
        let container = containers.first().cloned().unwrap_or_default();
        let max_output = self.target(&container).map_or(usize::MAX, |t| t.max_output);
        let this = self.clone();
        let opening = {
            let container = container.clone();
            Box::pin(async move { this.open_stream(&container, request.data).await })
        };
        let mut line = BytesMut::with_capacity(id.len() + 1);
        line.extend_from_slice(id.as_bytes());
        line.extend_from_slice(b"\n");
        let receipt = Arc::new(OnceLock::new());
        JobStream {
            receipt: receipt.clone(),
            stage: Stage::Id {
                line: line.freeze(),
                opening,
            },
            record: Some(Recorder {
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                started: Instant::now(),
                owner,
                id,
                container,
                containers,
                receipts: self.receipts.clone(),
                receipt,
                kept: Kept::new(self.max_result, self.budget.clone()),
            }),
            received: 0,
            max_output,
            failed: None,
            _slots: slots,
        }
    }

    /// Starts a streaming call of `container`; answers once the answer's head is in.
    async fn open_stream(&self, container: &str, data: Map<String, Value>) -> Result<IdleTimeout, CallFailure> {
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
            response = send => response.map_err(|e| CallFailure::of(e, &target, &target.output_url))?,
            () = deadline.as_mut() => return Err(CallFailure::TimedOut { id: target.id.clone(), timeout: idle }),
        };
        let status = response.status;
        if !status.is_success() {
            let body = tokio::time::timeout(idle, response.bytes(target.max_output, &self.budget, budget::SMALL))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|(body, _)| body)
                .unwrap_or_default();
            return Err(CallFailure::refused(container, status, &body));
        }
        Ok(IdleTimeout {
            body: response.into_stream(),
            target,
            deadline,
            last: tokio::time::Instant::now(),
            done: false,
        })
    }
}

/// The body of a streaming job's answer: the id line, then the container's output. An error
/// after the id line ends the body abnormally, so the client sees a failed transfer rather than a
/// silently truncated one.
pub struct JobStream {
    stage: Stage,
    /// The receipt, once the stream ended and it was signed.
    receipt: Arc<OnceLock<String>>,
    /// Until the outcome is recorded.
    record: Option<Recorder>,
    /// Output bytes received so far.
    received: usize,
    /// Most output bytes the container may send.
    max_output: usize,
    /// A failure to report after the output that preceded it.
    failed: Option<CallFailure>,
    /// The job's permits (`max_jobs`), held until the stream ends.
    _slots: super::Slots,
}

enum Stage {
    /// The id line, not sent yet, and the call that follows it.
    Id { line: Bytes, opening: Opening },
    /// Waiting for the container's answer to start.
    Opening(Opening),
    /// Forwarding its output.
    Streaming(IdleTimeout),
    /// Over: the outcome is recorded and the container released.
    Ended,
}

impl JobStream {
    /// Ends the stream with `outcome`: recorded, the container connection released (dropped
    /// when the body was not read to its end).
    fn end(&mut self, outcome: Result<(), &CallFailure>) {
        self.stage = Stage::Ended;
        if let Some(record) = self.record.take() {
            record.finish(outcome.map_err(StreamFailure::Call));
        }
    }

    /// Output that is there now, joined, up to [`BURST_BYTES`]; `Ok(None)` when the stream
    /// ended; an error when it failed before any of this piece.
    fn forward(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, io::Error>>> {
        let mut burst = Burst::default();
        let outcome = loop {
            let Stage::Streaming(body) = &mut self.stage else {
                break Ok(());
            };
            match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(mut chunk))) => {
                    let room = self.max_output - self.received;
                    let over = chunk.len() > room;
                    if over {
                        chunk.truncate(room);
                    }
                    self.received += chunk.len();
                    if let Some(record) = &mut self.record {
                        record.kept.push(&chunk);
                    }
                    burst.push(chunk);
                    if over {
                        let id = self.record.as_ref().map(|r| r.container.clone()).unwrap_or_default();
                        break Err(CallFailure::TooLarge {
                            id,
                            limit: self.max_output,
                        });
                    }
                    if burst.len() >= BURST_BYTES {
                        return Poll::Ready(Some(Ok(burst.take())));
                    }
                }
                Poll::Ready(Some(Err(failure))) => break Err(failure),
                Poll::Ready(None) => break Ok(()),
                Poll::Pending if burst.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Some(Ok(burst.take()))),
            }
        };
        self.end(outcome.as_ref().map(|_| ()));
        match outcome {
            Ok(()) => Poll::Ready((!burst.is_empty()).then(|| Ok(burst.take()))),
            Err(failure) if burst.is_empty() => Poll::Ready(Some(Err(io::Error::other(failure.to_string())))),
            Err(failure) => {
                self.failed = Some(failure);
                Poll::Ready(Some(Ok(burst.take())))
            }
        }
    }
}

impl Stream for JobStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.stage {
                Stage::Id { .. } => {
                    if let Stage::Id { line, opening } = std::mem::replace(&mut this.stage, Stage::Ended) {
                        this.stage = Stage::Opening(opening);
                        return Poll::Ready(Some(Ok(line)));
                    }
                }
                Stage::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(body)) => this.stage = Stage::Streaming(body),
                    Poll::Ready(Err(failure)) => {
                        // A call that fails at once (a refused connection) would end the body
                        // in the same write as the id line, and the server would drop that
                        // write with the connection: the client would see no answer at all.
                        // One pending poll lets the id line leave first; the error follows.
                        this.end(Err(&failure));
                        this.failed = Some(failure);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                },
                Stage::Streaming(_) => return this.forward(cx),
                Stage::Ended => {
                    return Poll::Ready(this.failed.take().map(|f| Err(io::Error::other(f.to_string()))));
                }
            }
        }
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish(Err(StreamFailure::Disconnected));
        }
    }
}

impl JobStream {
    /// The stream as an HTTP body that ends with the job's receipt in the trailer
    /// [`infernet_types::RECEIPT_TRAILER`] (when the job has one: a router dispatched it to a
    /// node in a network, and it ended whole). Answer it with a `Trailer` header naming it.
    /// With `mac`, the key the node shares with that router, the receipt's MAC goes beside it
    /// ([`infernet_types::RECEIPT_MAC_TRAILER`]).
    pub fn with_receipt_trailer(self, mac: Option<Arc<DispatchKey>>) -> ReceiptTrailer {
        ReceiptTrailer {
            stream: self,
            mac,
            ended: false,
        }
    }
}

/// A [`JobStream`] whose body ends with its receipt as an HTTP trailer.
pub struct ReceiptTrailer {
    stream: JobStream,
    mac: Option<Arc<DispatchKey>>,
    ended: bool,
}

impl hyper::body::Body for ReceiptTrailer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(Pin::new(&mut self.stream).poll_next(cx)) {
            Some(item) => Poll::Ready(Some(item.map(hyper::body::Frame::data))),
            None => {
                self.ended = true;
                // Signed when the stream ended, before its end was answered.
                let trailer = self.stream.receipt.get().and_then(|receipt| {
                    let value = hyper::header::HeaderValue::from_str(receipt).ok()?;
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert(infernet_types::RECEIPT_TRAILER, value);
                    if let Some(key) = &self.mac
                        && let Ok(mac) = hyper::header::HeaderValue::from_str(&key.receipt_mac(receipt.as_bytes()))
                    {
                        trailers.insert(infernet_types::RECEIPT_MAC_TRAILER, mac);
                    }
                    Some(hyper::body::Frame::trailers(trailers))
                });
                Poll::Ready(trailer.map(Ok))
            }
        }
    }
}

/// Pieces of output joined into one: a single piece leaves as it came, without a copy.
#[derive(Default)]
struct Burst {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Burst {
    fn push(&mut self, chunk: Bytes) {
        match &self.first {
            None if self.rest.is_empty() => self.first = Some(chunk),
            _ => {
                if let Some(first) = self.first.take() {
                    self.rest.extend_from_slice(&first);
                }
                self.rest.extend_from_slice(&chunk);
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.rest.len(), Bytes::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&mut self) -> Bytes {
        self.first.take().unwrap_or_else(|| self.rest.split().freeze())
    }
}

/// Records a streaming job's outcome: metrics, and the stored result with the output kept.
struct Recorder {
    store: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
    started: Instant,
    owner: IpAddr,
    id: String,
    container: String,
    /// The containers the job asked for, for its receipt.
    containers: Vec<String>,
    /// Signs its receipt (a node in a network).
    receipts: Option<crate::receipt::Receipts>,
    /// Where the signed receipt goes for the stream's trailer.
    receipt: Arc<OnceLock<String>>,
    /// The start of the output, for the stored result.
    kept: Kept,
}

/// The start of a stream's output, kept for its stored result: at most `store.max_result_size`
/// bytes, and past [`budget::SMALL`] only what the node's budget for large work gives.
struct Kept {
    bytes: Vec<u8>,
    /// Most bytes kept.
    limit: usize,
    /// Output was left out.
    truncated: bool,
    budget: Budget,
    /// What `bytes` took from the budget.
    held: Held,
}

impl Kept {
    fn new(limit: usize, budget: Budget) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            truncated: false,
            budget,
            held: Held::default(),
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let len = self.bytes.len();
        let mut take = chunk.len().min(self.limit - len);
        let end = len + take;
        if !self.budget.grow(&mut self.held, budget::SMALL, len, end) {
            // Other large work holds the budget: keep no more of this stream.
            take = budget::SMALL.saturating_sub(len).min(take);
            self.limit = len + take;
        }
        if chunk.len() > take {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&chunk[..take]);
    }

    /// The stored output: `{"output": text}`, with `"truncated": true` when output was left out.
    fn into_output(self) -> Value {
        // Valid UTF-8 (the usual case) keeps its buffer; a cut may split a character.
        let text = String::from_utf8(self.bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        match self.truncated {
            true => json!({"output": text, "truncated": true}),
            false => json!({ "output": text }),
        }
    }
}

/// Why a recorded stream failed: the job's error in the store.
#[derive(Debug, thiserror::Error)]
enum StreamFailure<'a> {
    /// The container call failed.
    #[error("{0}")]
    Call(&'a CallFailure),
    /// The client went away before the end.
    #[error("the client disconnected before the stream ended")]
    Disconnected,
}

impl Recorder {
    fn finish(self, outcome: Result<(), StreamFailure<'_>>) {
        let took = self.started.elapsed();
        self.metrics.container_call(&self.container, outcome.is_ok(), took);
        self.metrics.job(Source::Offchain, outcome.is_ok(), took);
        let result = match outcome {
            Ok(()) => ContainerResult::Output {
                container: self.container,
                output: self.kept.into_output(),
            },
            Err(error) => ContainerResult::Error {
                container: self.container,
                error: error.to_string(),
            },
        };
        let mut job = JobResult::finished(self.id, vec![result]);
        if let Some(receipts) = self.receipts.as_ref().filter(|_| is_stated(self.owner)) {
            job.receipt = receipts.sign(&job.id, &self.containers, job.status, took);
            if let Some(receipt) = &job.receipt {
                let _ = self.receipt.set(receipt.clone());
            }
        }
        // Queued before the body's end is sent, and read back from the queue: whoever reads the
        // job once the stream has ended finds its result and receipt.
        self.store.put_detached(self.owner, job);
    }
}

/// A container's streamed body that fails when no chunk arrives for the container's timeout. One
/// timer serves the whole stream, and a chunk only notes when it came: the timer is moved on when
/// it fires early, not at every chunk (each move takes the runtime's timer lock).
pub(super) struct IdleTimeout {
    body: BodyStream,
    target: Arc<Target>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// When the last chunk came (or the answer's head).
    last: tokio::time::Instant,
    done: bool,
}

impl Stream for IdleTimeout {
    type Item = Result<Bytes, CallFailure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.last = tokio::time::Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                let target = &this.target;
                Poll::Ready(Some(Err(CallFailure::of(e, target, &target.output_url))))
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
                        return Poll::Ready(Some(Err(CallFailure::Silent {
                            id: this.target.id.clone(),
                            timeout: this.target.timeout,
                        })));
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_piece_is_that_piece_and_more_are_joined_in_order() {
        let mut burst = Burst::default();
        assert!(burst.is_empty());
        let piece = Bytes::from_static(b"hello, ");
        burst.push(piece.clone());
        assert_eq!(burst.len(), 7);
        let out = burst.take();
        assert_eq!(out.as_ptr(), piece.as_ptr(), "one piece leaves without a copy");
        assert!(burst.is_empty());
        burst.push(Bytes::from_static(b"hello, "));
        burst.push(Bytes::from_static(b"world!"));
        assert_eq!(burst.len(), 13);
        assert_eq!(burst.take(), Bytes::from_static(b"hello, world!"));
        assert!(burst.is_empty());
    }

    #[test]
    fn a_streams_stored_copy_past_the_first_mib_takes_from_the_budget_or_stops() {
        const MIB: usize = 1 << 20;
        let piece = vec![b'a'; MIB / 2];
        // A free budget: the copy keeps up to its limit, and holds what it kept past 1 MiB.
        let budget = Budget::new(4 * MIB as u64);
        let mut kept = Kept::new(3 * MIB, budget.clone());
        for _ in 0..8 {
            kept.push(&piece);
        }
        assert_eq!(kept.bytes.len(), 3 * MIB);
        let mut rest = Held::default();
        assert!(!budget.take(&mut rest, 3 * MIB), "the copy holds 2 MiB of the budget");
        assert_eq!(kept.into_output()["truncated"], true);
        assert!(budget.take(&mut rest, 4 * MIB), "and gives them back with the copy");
        // The budget is in use (by `rest`): the copy stops at the first MiB, marked truncated.
        let mut kept = Kept::new(3 * MIB, budget.clone());
        for _ in 0..4 {
            kept.push(&piece);
        }
        assert_eq!(kept.bytes.len(), MIB);
        let output = kept.into_output();
        assert_eq!(output["truncated"], true);
        assert_eq!(output["output"].as_str().unwrap().len(), MIB);
        // A short stream is kept whole and not marked.
        let mut kept = Kept::new(3 * MIB, budget);
        kept.push(b"hello");
        assert_eq!(kept.into_output(), json!({"output": "hello"}));
    }
}
