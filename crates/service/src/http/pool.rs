//! A lean HTTP/1 client for plain `http`: a pool of keep-alive connections per endpoint and
//! nothing else. Each connection is driven by the call that holds it (its request, the answer's
//! head and each piece of its body are handed over within the caller's task), where a
//! general-purpose client gives each connection a task of its own and costs a wake-up and a
//! scheduling per hand-over, hashes a host name per call and follows redirects.
//!
//! Measured: the node spent 106.3k–106.4k instructions per streamed job with every container call
//! through reqwest, 77.9k–78.0k with hyper-util's legacy pooled client, and 63.3k–63.7k with this
//! one (`make count`, 2026-12-03). The node calls its containers with it, the router its nodes.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request,
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::{Connection, SendRequest},
};
use hyper_util::rt::TokioIo;

/// Longest wait for a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an idle connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint at most.
pub const POOL_IDLE_PER_HOST: usize = 64;
/// Longest a pooled connection may take to become ready for the next request.
const READY_WAIT: Duration = Duration::from_millis(50);
/// How often idle connections are looked at: those the other end closed, or idle too long, are
/// released (nothing else reads them while they wait).
const REAP_EVERY: Duration = Duration::from_secs(2);

/// Why a call on the pool failed: the root cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made.
    #[error("{0}")]
    Connect(String),
    /// Anything after the connection.
    #[error("{0}")]
    Failed(String),
}

/// The innermost cause of `e`, as text.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Keep-alive connections to one plain-`http` endpoint. The most recently used goes out first;
/// a connection comes back once its answer has been read to the end. A connection has no task of
/// its own: the call using it drives it (see [`Conn`]); idle ones are looked at every
/// [`REAP_EVERY`] and when taken out, and released once the other end closed them.
#[derive(Debug)]
pub struct Pool {
    /// Where to connect: `host:port`.
    authority: String,
    /// Oldest first.
    idle: Mutex<Vec<Idle>>,
    /// Set once the task that releases dead idle connections runs.
    reaping: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Neither ended nor idle too long.
    fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.since) < POOL_IDLE_TIMEOUT && !self.conn.is_closed()
    }
}

/// The reading and writing half of a connection.
type ConnectionIo = Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// A connection, driven by the call that holds it rather than by a task of its
/// own: the request, the answer's head and each piece of its body are then handed over within
/// the call's task, where a connection task would cost a wake-up and a scheduling per hand-over
/// (four or more per call).
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// Reads and writes the socket when polled; `None` once the connection has ended. Boxed: it
    /// holds its buffers' state, a kilobyte and more that would be copied at every hand-over.
    io: Option<Pin<Box<ConnectionIo>>>,
}

impl Conn {
    /// Lets the connection make progress (the caller is woken when it can make more).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(io) = &mut self.io
            && let Poll::Ready(ended) = io.as_mut().poll(cx)
        {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "pooled connection ended with an error");
            }
            // Requests still queued on it fail with the connection's error.
            self.io = None;
        }
    }

    fn is_closed(&self) -> bool {
        self.io.is_none() || self.sender.is_closed()
    }

    /// Waits until the connection can take a request.
    async fn ready(&mut self) -> hyper::Result<()> {
        std::future::poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Sends `request`; answers once the head is in.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, hyper::client::conn::TrySendError<Request<Full<Bytes>>>> {
        let mut answer = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            self.drive(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }
}

impl Pool {
    /// Connections to `authority` (`host:port`).
    pub fn new(authority: String) -> Self {
        Self {
            authority,
            idle: Mutex::new(Vec::new()),
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Releases idle connections the other end closed (their end of file is read now) or that
    /// waited too long; ends with the pool.
    fn reap(pool: std::sync::Weak<Self>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut idle = pool.idle.lock().expect("connection pool poisoned");
                for i in idle.iter_mut() {
                    i.conn.drive(&mut cx);
                }
                idle.retain(|i| i.usable(now));
            }
        });
    }

    /// A connection ready for a request, and whether it was pooled (a pooled one may turn out
    /// closed by the other end).
    async fn checkout(self: &Arc<Self>) -> Result<(Conn, bool), PoolError> {
        loop {
            let idle = self.idle.lock().expect("connection pool poisoned").pop();
            let Some(mut idle) = idle else { break };
            // An idle connection is ready at once, or within moments of its last answer's end;
            // one that stays busy (a request the other end never read) is left to close.
            if idle.usable(Instant::now())
                && matches!(tokio::time::timeout(READY_WAIT, idle.conn.ready()).await, Ok(Ok(())))
            {
                return Ok((idle.conn, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, PoolError> {
        if !self.reaping.swap(true, std::sync::atomic::Ordering::Relaxed) {
            Self::reap(Arc::downgrade(self));
        }
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| PoolError::Connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        // Requests and streamed answers are small writes: no Nagle delays.
        let _ = tcp.set_nodelay(true);
        let (sender, io) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| PoolError::Connect(root_cause(&e)))?;
        Ok(Conn {
            sender,
            io: Some(Box::pin(io)),
        })
    }

    /// Where it connects: `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `request` (origin-form target, `Host` set) on a pooled connection, or a new one;
    /// answers once the head is in. A request a pooled connection turned out closed for (the
    /// other end closed it meanwhile; never sent) goes once more on a new connection. The body
    /// drives the connection, which goes back to the pool once the body has been read to its end.
    pub async fn send(self: &Arc<Self>, request: Request<Full<Bytes>>) -> Result<hyper::Response<Pooled>, PoolError> {
        let (mut conn, pooled) = self.checkout().await?;
        let response = match conn.send(request).await {
            Ok(response) => response,
            Err(mut e) if pooled && e.message().is_some() => {
                let request = e.take_message().expect("checked just above");
                conn = self.connect().await?;
                conn.send(request)
                    .await
                    .map_err(|e| PoolError::Failed(root_cause(e.error())))?
            }
            Err(e) => return Err(PoolError::Failed(root_cause(e.error()))),
        };
        Ok(response.map(|body| Pooled {
            body,
            conn: Some(conn),
            pool: self.clone(),
        }))
    }

    fn put(&self, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("connection pool poisoned");
        // A full pool makes room by releasing connections ended or idle too long (the sweep
        // does so every few seconds anyway).
        if idle.len() >= POOL_IDLE_PER_HOST {
            idle.retain(|i| i.usable(now));
        }
        if idle.len() < POOL_IDLE_PER_HOST {
            idle.push(Idle { conn, since: now });
        }
    }
}

/// An answer's body on a pooled connection, which it drives, and which goes back to its pool at
/// the end of the body.
pub struct Pooled {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The connection hands the body over a piece at a time, once asked: a body found empty
        // asks, and a second turn fetches what was already read.
        let mut turns = 2;
        let frame = loop {
            if let Some(conn) = &mut this.conn {
                conn.drive(cx);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(frame) => break frame,
                Poll::Pending if turns > 1 => turns -= 1,
                Poll::Pending => return Poll::Pending,
            }
        };
        match &frame {
            None => {
                if let Some(conn) = this.conn.take() {
                    this.pool.put(conn);
                }
            }
            // A broken answer leaves its connection unusable.
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
