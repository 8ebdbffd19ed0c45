//! The HTTP/1 (and cleartext HTTP/2) connection loop of the node and the router, with the limits
//! every public server needs:
//! - a request head must arrive within `header_read` (default 10 s) of its first byte;
//! - a request body within `body_read` (default 30 s) of its head;
//! - a connection without a request in flight is closed after `idle` (default 60 s);
//! - at most `max_connections` (default 10,000) are open: at the limit, the connection idle the
//!   longest is closed so that a new client is still served (a new connection is refused only
//!   when every open one has a request in flight);
//! - the soft open-file limit is raised to the hard one at start (a server holds a descriptor per
//!   connection, and 1,024 is a common soft default).
//!
//! Each connection is served by the hyper service the caller makes for it, which receives the
//! request body as a [`RequestBody`]; [`RouterService`] serves an axum router that way.
//! [`serve_tls`] serves the same over TLS (rustls), the handshake within `header_read`.

mod collect;
mod conn;
pub mod pool;
mod tls;

pub use collect::Collected;
pub use tls::{TlsError, acceptor};

use std::{
    collections::HashMap,
    convert::Infallible,
    error::Error as StdError,
    io::ErrorKind,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::ConnectInfo,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::future::RouteFuture,
};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use conn::RequestBody;
use conn::{Clock, Closed, ConnState, Io, ResponseBody};

/// A JSON error answer, `{"error": message}`, as every API of the workspace answers errors.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// Timeouts and the connection limit of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time from the first byte of a request head to its end.
    pub header_read: Duration,
    /// Longest time from the end of a request head to the end of its body.
    pub body_read: Duration,
    /// Longest time a connection stays open without a request in flight.
    pub idle: Duration,
    /// Longest time a write to the client may wait without progress (a client that stops reading
    /// its answer): past it the connection is closed.
    pub write_stall: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            write_stall: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Why [`Limits`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A timeout of zero would close every connection at once.
    #[error("{0} must be more than 0 seconds")]
    ZeroTimeout(&'static str),
    /// A server that accepts no connection serves no one.
    #[error("the connection limit must be at least 1")]
    NoConnections,
}

impl Limits {
    /// Checks that these limits can serve anyone.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, d) in [
            ("header_read", self.header_read),
            ("body_read", self.body_read),
            ("idle", self.idle),
            ("write_stall", self.write_stall),
        ] {
            if d.is_zero() {
                return Err(LimitsError::ZeroTimeout(name));
            }
        }
        if self.max_connections == 0 {
            return Err(LimitsError::NoConnections);
        }
        Ok(())
    }

    /// How often a connection's watchdog re-reads its phase: a timeout fires at most this late.
    fn check_every(&self) -> Duration {
        self.header_read
            .min(self.body_read)
            .min(self.idle)
            .min(self.write_stall)
            .max(Duration::from_millis(1))
    }
}

/// The open connections, for the connection limit.
struct Registry {
    clock: Clock,
    limits: Limits,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// When "connection limit reached" was last logged (throttled: it can repeat per accept).
    warned: AtomicU64,
}

impl Registry {
    /// Registers a new connection, closing the longest-idle one when at the limit; `None` when
    /// every open connection has a request in flight.
    fn admit(&self) -> Option<(u64, Arc<ConnState>)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.limits.max_connections {
            let victim = open
                .iter()
                .filter_map(|(id, c)| Some((c.idle_since()?, *id)))
                .min()
                .map(|(_, id)| id);
            let now = self.clock.now();
            if now.saturating_sub(self.warned.load(Relaxed)) >= 10_000 {
                self.warned.store(now, Relaxed);
                tracing::warn!(
                    limit = self.limits.max_connections,
                    "connection limit reached; closing the longest-idle connections (logged every 10 s at most)"
                );
            }
            open.remove(&victim?)?.shed();
        }
        let id = self.next.fetch_add(1, Relaxed);
        let state = Arc::new(ConnState::new(self.clock));
        open.insert(id, state.clone());
        Some((id, state))
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// The soft and hard open-file limits, before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard one.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        before,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Serves connections accepted on `listener` with the service `make` builds for each peer, within
/// `limits`, until `shutdown`; then stops accepting, lets requests in flight finish (for at most
/// `drain`: a stream can last long) and closes idle connections.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
    make: M,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with(listener, None, limits, shutdown, drain, make).await
}

/// [`serve`] over TLS: each connection's handshake must end within `limits.header_read`.
pub async fn serve_tls<M, S, B>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
    make: M,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with(listener, Some(acceptor), limits, shutdown, drain, make).await
}

async fn serve_with<M, S, B>(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
    make: M,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    match raise_fd_limit() {
        Ok(fd) => tracing::info!(
            soft_before = fd.before,
            soft = fd.soft,
            hard = fd.hard,
            "open-file limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let registry = Arc::new(Registry {
        clock: Clock::new(),
        limits,
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        warned: AtomicU64::new(0),
    });
    // HTTP/1.1 only: `Io` refuses a connection that starts as HTTP/2 (the builder's own switch
    // does nothing for connections that may upgrade, as WebSockets do).
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A client that gave up before its connection was accepted.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to be released rather
                    // than spin.
                    tracing::error!(error = %e, "cannot accept a connection; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some((id, state)) = registry.admit() else {
            // Every connection is busy: this one is closed unanswered.
            continue;
        };
        // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs add ~40 ms to each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = Tracked {
            inner: make(peer),
            state: state.clone(),
            limits,
        };
        let (watcher, builder, acceptor) = (graceful.watcher(), builder.clone(), acceptor.clone());
        let registry = registry.clone();
        tokio::spawn(async move {
            let stream = match acceptor {
                None => tokio_util::either::Either::Left(tcp),
                Some(acceptor) => match tokio::time::timeout(limits.header_read, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tokio_util::either::Either::Right(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        registry.remove(id);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake not done within the header timeout");
                        registry.remove(id);
                        return;
                    }
                },
            };
            let io = TokioIo::new(Io::new(stream, state.clone()));
            let connection = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                closed = state.watch(&limits) => log_closed(closed, peer),
            }
            registry.remove(id);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// An axum router as one connection's service, its handlers seeing the peer's address as
/// [`ConnectInfo<SocketAddr>`].
#[derive(Clone)]
pub struct RouterService {
    router: Router,
    peer: SocketAddr,
}

impl RouterService {
    /// `router` serving the connection from `peer`.
    pub fn new(router: Router, peer: SocketAddr) -> Self {
        Self { router, peer }
    }
}

impl hyper::service::Service<Request<RequestBody>> for RouterService {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut req: Request<RequestBody>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // A router is always ready; a clone is a reference count.
        tower::Service::call(&mut self.router.clone(), req)
    }
}

fn log_closed(closed: Closed, peer: SocketAddr) {
    match closed {
        Closed::Idle => tracing::trace!(%peer, "idle connection closed"),
        Closed::Header => {
            tracing::debug!(%peer, "request head not complete within the header timeout; connection closed")
        }
        Closed::Body => tracing::debug!(%peer, "request body not complete within the body timeout; connection closed"),
        Closed::Shed => tracing::debug!(%peer, "idle connection closed to make room at the connection limit"),
        Closed::Write => {
            tracing::debug!(%peer, "the client read nothing of its answer within the write timeout; connection closed")
        }
    }
}

/// A connection's service, keeping the connection's phase up to date.
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    limits: Limits,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>,
{
    type Response = hyper::Response<ResponseBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let has_body = !hyper::body::Body::is_end_stream(req.body());
        let active = self.state.request_started(has_body, &self.limits);
        let state = self.state.clone();
        TrackedFuture {
            inner: self.inner.call(req.map(|body| RequestBody::new(body, state))),
            active: Some(active),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a [`Tracked`] service: the request stays in flight until its body is written.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        active: Option<conn::Active>,
    }
}

impl<F, B> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<hyper::Response<B>, Infallible>>,
{
    type Output = Result<hyper::Response<ResponseBody<B>>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let active = this.active.take().expect("polled after completion");
        std::task::Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, active))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_connections: usize) -> Registry {
        Registry {
            clock: Clock::new(),
            limits: Limits {
                max_connections,
                ..Limits::default()
            },
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            warned: AtomicU64::new(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let registry = registry(2);
        let (oldest, _) = registry.admit().unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let (_, busy) = registry.admit().unwrap();
        let _request = busy.request_started(false, &registry.limits);
        let (newest, _) = registry.admit().expect("a new client is served");
        let open = registry.open.lock().unwrap();
        assert!(!open.contains_key(&oldest), "the idle connection was shed");
        assert!(open.contains_key(&newest));
        assert_eq!(open.len(), 2);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_a_new_one_is_refused() {
        let registry = registry(1);
        let (_, busy) = registry.admit().unwrap();
        let _request = busy.request_started(false, &registry.limits);
        assert!(registry.admit().is_none());
        drop(_request);
        assert!(registry.admit().is_some());
    }

    #[test]
    fn limits_that_serve_no_one_are_refused() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let zero = Limits {
            idle: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(zero.validate(), Err(LimitsError::ZeroTimeout("idle")));
        let none = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(none.validate(), Err(LimitsError::NoConnections));
    }

    #[tokio::test]
    async fn a_router_sees_the_peer_and_a_half_sent_head_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let router = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_read: Duration::from_millis(200),
            ..Limits::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            limits,
            shutdown.clone(),
            Duration::from_secs(1),
            move |peer| RouterService::new(router.clone(), peer),
        ));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("127.0.0.1"),
            "{answer}"
        );
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a half-sent head is closed after the header timeout");
        // HTTP/2 spoken in the clear is not served: its streams would slip past the timeouts.
        let mut h2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), h2.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the connection is closed");
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        let fd = raise_fd_limit().unwrap();
        assert_eq!(fd.soft, fd.hard);
        assert!(fd.soft >= fd.before);
    }
}
