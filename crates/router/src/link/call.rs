//! One link as the gateway sees it: calls (HTTP requests to the node's API) sent as frames, their
//! answers read back as a `reqwest::Response` whose body flows with back-pressure, so the gateway
//! handles it exactly as an answer over HTTP.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Bytes;
use hyper::body::Frame;
use infernet_types::link::{MAX_CALLS, Message, WINDOW, encode};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::gateway::dispatch::NodeError;

/// Requests queued for the link's writer, at most.
pub(super) const QUEUED_REQUESTS: usize = 64;

/// A piece of an answer's body.
#[derive(Debug)]
pub(super) enum Piece {
    /// Bytes.
    Data(Bytes),
    /// The end: whole, with the answer's trailers, or broken off and why.
    End(Result<axum::http::HeaderMap, String>),
}

/// The status line of an answer.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) content_type: Option<String>,
}

/// A call waiting for, or reading, its answer.
pub(super) struct Slot {
    /// Taken when the head arrives.
    pub(super) head: Option<oneshot::Sender<Head>>,
    /// The body's pieces: at most [`WINDOW`] chunks and the end.
    pub(super) body: mpsc::Sender<Piece>,
}

/// A node's link.
pub struct Link {
    node: String,
    id: u64,
    /// Frames for the writer: requests, bounded.
    pub(super) requests: mpsc::Sender<Vec<u8>>,
    /// Frames for the writer: credits and cancels. Unbounded in type, bounded in fact: a call has
    /// at most one cancel and at most [`WINDOW`] chunks' credit outstanding, and at most
    /// [`MAX_CALLS`] calls run.
    pub(super) control: mpsc::UnboundedSender<Vec<u8>>,
    pub(super) calls: Mutex<HashMap<u64, Slot>>,
    next_call: AtomicU64,
    free: Arc<Semaphore>,
    /// Cancelled when the link closes; the reason is said to the node.
    pub(super) closed: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.node)
            .field("id", &self.id)
            .finish()
    }
}

impl Link {
    pub(super) fn new(
        node: String,
        id: u64,
        requests: mpsc::Sender<Vec<u8>>,
        control: mpsc::UnboundedSender<Vec<u8>>,
    ) -> Self {
        Self {
            node,
            id,
            requests,
            control,
            calls: Mutex::default(),
            next_call: AtomicU64::new(1),
            free: Arc::new(Semaphore::new(MAX_CALLS)),
            closed: CancellationToken::new(),
            reason: Mutex::default(),
        }
    }

    /// The node's key, `npub1…`.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Closes the link, telling the node `reason`.
    pub(super) fn close(&self, reason: &str) {
        self.reason
            .lock()
            .expect("reason poisoned")
            .get_or_insert_with(|| reason.to_string());
        self.closed.cancel();
    }

    pub(super) fn reason(&self) -> Option<String> {
        self.reason.lock().expect("reason poisoned").clone()
    }

    /// Ends every call: those waiting for a head fail, bodies break off.
    pub(super) fn fail_calls(&self) {
        let calls = std::mem::take(&mut *self.calls.lock().expect("calls poisoned"));
        // Dropping the senders: a waiting call sees the link closed.
        drop(calls);
    }

    /// `method path` with `body` on the node's API, as the router signed it: the answer, whose
    /// body arrives as the node sends it. A link that closes before the head fails the call (the
    /// gateway tries another node); after it, the body breaks off.
    pub async fn send(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        authorization: Option<String>,
        client: Option<String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<reqwest::Response, NodeError> {
        let permit = self
            .free
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Unreachable(format!("the node's link has {MAX_CALLS} calls running")))?;
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(WINDOW as usize + 1);
        self.calls.lock().expect("calls poisoned").insert(
            call,
            Slot {
                head: Some(head_tx),
                body: body_tx,
            },
        );
        let guard = CallGuard {
            link: self.clone(),
            call,
            done: false,
            _permit: permit,
        };
        let frame = encode(
            &Message::Request {
                call,
                method: method.to_string(),
                path: path.to_string(),
                authorization,
                client,
            },
            body.as_deref().unwrap_or_default(),
        );
        let closed = || NodeError::Unreachable("the node's link closed".into());
        let exchange = async {
            self.requests.send(frame).await.map_err(|_| closed())?;
            head_rx.await.map_err(|_| closed())
        };
        let head = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NodeError::Timeout(timeout))??;
        // The guard lives as long as the body: dropped early, it cancels the call.
        let stream = futures::stream::unfold(Some((body_rx, 0u32, guard)), |state| async move {
            let (mut rx, mut taken, mut guard) = state?;
            match rx.recv().await {
                Some(Piece::Data(bytes)) => {
                    taken += 1;
                    if taken >= WINDOW / 2 {
                        guard.credit(taken);
                        taken = 0;
                    }
                    Some((Ok(Frame::data(bytes)), Some((rx, taken, guard))))
                }
                Some(Piece::End(Ok(trailers))) => {
                    guard.done = true;
                    (!trailers.is_empty()).then(|| (Ok(Frame::trailers(trailers)), None))
                }
                Some(Piece::End(Err(e))) => {
                    guard.done = true;
                    Some((Err(std::io::Error::other(e)), None))
                }
                None => {
                    guard.done = true;
                    Some((Err(std::io::Error::other("the node's link closed")), None))
                }
            }
        });
        let mut response = axum::http::Response::builder().status(head.status);
        if let Some(ct) = head.content_type {
            response = response.header(axum::http::header::CONTENT_TYPE, ct);
        }
        let response = response
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(stream)))
            .map_err(|e| NodeError::NotResult(e.to_string()))?;
        Ok(reqwest::Response::from(response))
    }
}

/// A call's end on the router's side: forgotten when dropped, and the node told to stop when
/// the answer did not end.
struct CallGuard {
    link: Arc<Link>,
    call: u64,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl CallGuard {
    fn credit(&self, chunks: u32) {
        let _ = self.link.control.send(encode(
            &Message::Credit {
                call: self.call,
                chunks,
            },
            b"",
        ));
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.link.calls.lock().expect("calls poisoned").remove(&self.call);
        if !self.done {
            let _ = self
                .link
                .control
                .send(encode(&Message::Cancel { call: self.call }, b""));
        }
    }
}
