//! One connection's bookkeeping: what phase it is in (idle, reading a request head, reading a
//! request body, answering), the deadline of that phase, and the wrappers that move it from one
//! phase to the next without waking anything (a few relaxed atomics and at most two clock reads
//! per request). The connection's watchdog sleeps until the current deadline, re-reading the
//! phase at least every [`Limits::check_every`](super::Limits::check_every).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

use super::Limits;

/// Milliseconds since the server started, plus one: 0 never is a time, it means "not set".
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock(Instant);

impl Clock {
    pub(super) fn new() -> Self {
        Self(Instant::now())
    }

    pub(super) fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn instant(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms.saturating_sub(1))
    }
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// No request within the idle keep-alive timeout.
    Idle,
    /// A request head took longer than the header timeout.
    Header,
    /// A request body took longer than the body timeout.
    Body,
    /// Closed to make room for a new connection at the connection limit.
    Shed,
    /// A write to the client made no progress within the write-stall timeout.
    Write,
}

/// The phase and timestamps of one connection, shared by its I/O, its requests and its watchdog.
#[derive(Debug)]
pub(super) struct ConnState {
    clock: Clock,
    /// Requests being answered.
    active: AtomicU32,
    /// When the connection last had no request in flight (or was accepted).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (0: none yet).
    head_started: AtomicU64,
    /// When the body of the request being read must be complete (0: no body being read).
    body_deadline: AtomicU64,
    /// Since when a write to the client has been waiting for room (0: not waiting).
    write_blocked_since: AtomicU64,
    /// Woken to close the connection at once.
    shed: Notify,
}

impl ConnState {
    pub(super) fn new(clock: Clock) -> Self {
        Self {
            clock,
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(clock.now()),
            head_started: AtomicU64::new(0),
            body_deadline: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            shed: Notify::new(),
        }
    }

    /// `Some(since)` when no request is in flight: a candidate for shedding, the oldest first.
    pub(super) fn idle_since(&self) -> Option<u64> {
        (self.active.load(Relaxed) == 0).then(|| self.idle_since.load(Relaxed))
    }

    /// Asks the watchdog to close the connection.
    pub(super) fn shed(&self) {
        self.shed.notify_one();
    }

    /// The current phase's deadline, and what it means when passed (`None`: no deadline now).
    fn deadline(&self, limits: &Limits) -> Option<(u64, Closed)> {
        let ms = |d: Duration| d.as_millis() as u64;
        let phase = if self.active.load(Relaxed) > 0 {
            let body = self.body_deadline.load(Relaxed);
            (body != 0).then_some((body, Closed::Body))
        } else {
            match self.head_started.load(Relaxed) {
                0 => Some((self.idle_since.load(Relaxed) + ms(limits.idle), Closed::Idle)),
                started => Some((started + ms(limits.header_read), Closed::Header)),
            }
        };
        // A write waiting for a client that does not read bounds every phase.
        let stalled = match self.write_blocked_since.load(Relaxed) {
            0 => None,
            since => Some((since + ms(limits.write_stall), Closed::Write)),
        };
        match (phase, stalled) {
            (Some(p), Some(w)) => Some(if w.0 < p.0 { w } else { p }),
            (p, w) => p.or(w),
        }
    }

    /// Notes a write's outcome: waiting for room starts the write-stall clock, progress stops it.
    fn wrote<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => {
                if self.write_blocked_since.load(Relaxed) == 0 {
                    self.write_blocked_since.store(self.clock.now(), Relaxed);
                }
            }
            Poll::Ready(_) => {
                if self.write_blocked_since.load(Relaxed) != 0 {
                    self.write_blocked_since.store(0, Relaxed);
                }
            }
        }
    }

    /// Returns when the connection must be closed, and why.
    pub(super) async fn watch(&self, limits: &Limits) -> Closed {
        let every = limits.check_every();
        loop {
            let now = self.clock.now();
            let wake = match self.deadline(limits) {
                Some((deadline, why)) if deadline <= now => return why,
                Some((deadline, _)) => deadline.min(now + every.as_millis() as u64),
                None => now + every.as_millis() as u64,
            };
            tokio::select! {
                () = tokio::time::sleep_until(self.clock.instant(wake)) => {}
                () = self.shed.notified() => return Closed::Shed,
            }
        }
    }

    /// A request head was read: the request is in flight; its body, if any, must arrive by the
    /// body deadline.
    pub(super) fn request_started(self: &Arc<Self>, has_body: bool, limits: &Limits) -> Active {
        self.active.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
        // Always written: a deadline left by an earlier request whose body was never read must
        // not close this one.
        let deadline = match has_body {
            true => self.clock.now() + limits.body_read.as_millis() as u64,
            false => 0,
        };
        self.body_deadline.store(deadline, Relaxed);
        Active(self.clone())
    }
}

/// A request in flight; when dropped (its answer written, or abandoned), the connection may go
/// idle.
#[derive(Debug)]
pub(super) struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let state = &self.0;
        if state.active.fetch_sub(1, Relaxed) == 1 {
            state.idle_since.store(state.clock.now(), Relaxed);
        }
    }
}

pin_project! {
    /// The connection's socket: notes when the first byte of a request head arrives.
    pub(super) struct Io<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
        // Bytes of the connection's start that matched `H2_START` so far; `None` once it is
        // known not to be HTTP/2.
        h2_start: Option<usize>,
    }
}

/// How an HTTP/2 connection in the clear starts (its preface). Such connections are refused: the
/// server's timeouts are per connection, one HTTP/1.1 request at a time, and HTTP/2's streams on
/// one connection would slip past them (a new stream renewed the deadline of one that trickled
/// its body). `PRI` is no HTTP/1 method.
const H2_START: &[u8] = b"PRI * HTTP/2.0";

impl<T> Io<T> {
    pub(super) fn new(inner: T, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            state,
            h2_start: Some(0),
        }
    }
}

impl<T: AsyncRead> AsyncRead for Io<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let poll = this.inner.poll_read(cx, buf);
        if let Some(matched) = *this.h2_start {
            let read = &buf.filled()[before..];
            let n = read.len().min(H2_START.len() - matched);
            *this.h2_start = match read[..n] == H2_START[matched..matched + n] {
                true if matched + n == H2_START.len() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "HTTP/2 in the clear is not served",
                    )));
                }
                true => Some(matched + n),
                false => None,
            };
        }
        let state = &**this.state;
        if buf.filled().len() > before && state.active.load(Relaxed) == 0 && state.head_started.load(Relaxed) == 0 {
            state.head_started.store(state.clock.now(), Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite> AsyncWrite for Io<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write(cx, buf);
        this.state.wrote(&poll);
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_flush(cx);
        this.state.wrote(&poll);
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write_vectored(cx, bufs);
        this.state.wrote(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pin_project! {
    /// A request body as services receive it: the connection's body, whose end lifts the body
    /// deadline. A body that stalls past the deadline ends with an error when the watchdog closes
    /// the connection.
    #[derive(Debug)]
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        state: Option<Arc<ConnState>>,
    }
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, state: Arc<ConnState>) -> Self {
        let state = (!inner.is_end_stream()).then_some(state);
        Self { inner, state }
    }
}

impl Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let poll = this.inner.as_mut().poll_frame(cx);
        let ended = matches!(poll, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || this.inner.is_end_stream();
        if ended && let Some(state) = this.state.take() {
            state.body_deadline.store(0, Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body; once it is written (or dropped), its request is no longer in flight.
    pub(super) struct ResponseBody<B> {
        #[pin]
        inner: B,
        active: Active,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: B, active: Active) -> Self {
        Self { inner, active }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read: Duration::from_millis(100),
            body_read: Duration::from_millis(200),
            idle: Duration::from_millis(300),
            write_stall: Duration::from_millis(400),
            max_connections: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_after_the_write_stall() {
        use tokio::io::AsyncWriteExt;
        let state = Arc::new(ConnState::new(Clock::new()));
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut io = Io::new(ours, state.clone());
        // Answering a request (no body deadline), and the client reads nothing.
        let _answering = state.request_started(false, &limits());
        let blocked = tokio::time::timeout(Duration::from_millis(10), io.write_all(&[0u8; 1024])).await;
        assert!(blocked.is_err(), "the pipe is full");
        let start = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), state.watch(&limits())).await;
        assert_eq!(closed, Ok(Closed::Write), "closed for a client that stopped reading");
        assert!(start.elapsed() >= Duration::from_millis(380), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let state = ConnState::new(Clock::new());
        let start = Instant::now();
        assert_eq!(state.watch(&limits()).await, Closed::Idle);
        assert!(start.elapsed() >= Duration::from_millis(299));
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_gets_the_header_timeout_and_a_body_the_body_timeout() {
        let clock = Clock::new();
        let state = Arc::new(ConnState::new(clock));
        state.head_started.store(clock.now(), Relaxed);
        assert_eq!(state.watch(&limits()).await, Closed::Header);
        let active = state.request_started(true, &limits());
        assert_eq!(state.watch(&limits()).await, Closed::Body);
        // A request whose body was read has no deadline while it is answered.
        state.body_deadline.store(0, Relaxed);
        let answered = tokio::time::timeout(Duration::from_secs(5), state.watch(&limits())).await;
        assert!(answered.is_err(), "no deadline while answering");
        drop(active);
        assert_eq!(state.idle_since(), Some(clock.now()));
        assert_eq!(state.watch(&limits()).await, Closed::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_body_of_an_earlier_request_does_not_time_out_the_next_one() {
        let state = Arc::new(ConnState::new(Clock::new()));
        // A POST answered without its body being read (a 404, say).
        drop(state.request_started(true, &limits()));
        let _get = state.request_started(false, &limits());
        let answering = tokio::time::timeout(Duration::from_secs(5), state.watch(&limits())).await;
        assert!(answering.is_err(), "no body deadline for a request without a body");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shed_connection_closes_at_once() {
        let state = ConnState::new(Clock::new());
        state.shed();
        assert_eq!(state.watch(&limits()).await, Closed::Shed);
    }
}
