//! Parts every Infernet server needs and that know nothing of jobs or chains; the node and the
//! router are both built on them.
//!
//! - [`tasks`] — named, supervised tasks and the shutdown signal;
//! - [`signals`] — SIGINT/SIGTERM as a graceful shutdown;
//! - [`retry`] — the one retry policy (capped exponential backoff, full jitter);
//! - [`client_ip`] — which address a request comes from, believing only trusted proxies;
//! - [`rate_limit`] — per-client, per-route GCRA limiter and its middleware;
//! - [`secret`] — [`Secret`](secret::Secret) and [`SensitiveUrl`](secret::SensitiveUrl), the
//!   one redaction of keys, tokens and credentials in URLs;
//! - [`http`] — the HTTP/1 connection loop with timeouts and a connection limit, TLS optional;
//! - [`web`] — the control interface's sessions and its embedded web app;
//! - [`websocket`] — WebSocket clients over TCP or TLS (the node's link, the router's relays).

pub mod allocator;
pub mod client_ip;
pub mod http;
pub mod rate_limit;
pub mod retry;
pub mod secret;
pub mod signals;
pub mod tasks;
pub mod web;
pub mod websocket;

/// Installs the process-wide TLS provider (ring) that every HTTP client uses. Idempotent; call it
/// before building a client.
pub fn install_tls_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
