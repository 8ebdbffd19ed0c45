//! `hello-world`: an Infernet-compatible example service.
//!
//! It implements the container contract the node relies on:
//! - `POST /service_output` with `{source, destination, data, requires_proof}`;
//!   - `destination` 1 (off-chain): answers `{"message": "hello, world!", "input": <data>}`;
//!   - `destination` 0 (on-chain): answers the five-key convention the node encodes for the chain
//!     (`raw_input`, `processed_input`, `raw_output`, `processed_output`, `proof`, hex without `0x`);
//!   - `destination` 2 (stream): streams `hello, world!` word by word, or `data.tokens` tokens;
//!   - `data.delay_ms` (at most 60 000) makes it work that long before answering, to simulate a model;
//! - `GET /service-resources[?model_id=]`: what the service can run;
//! - `GET /health`.
//!
//! It listens on `HOST:PORT` (defaults `0.0.0.0:3000`, the port managed containers must use).

use std::convert::Infallible;

use axum::{
    Json, Router,
    body::Body,
    extract::Query,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

const GREETING: &str = "hello, world!";

#[derive(Deserialize)]
struct ServiceInput {
    source: u8,
    destination: u8,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    requires_proof: Option<bool>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn service_output(body: axum::body::Bytes) -> Response {
    let input: ServiceInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("invalid input: {e}")})),
            )
                .into_response();
        }
    };
    if let Some(ms) = input.data.get("delay_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    match input.destination {
        2 => stream(&input.data),
        0 => {
            // On-chain input arrives as hex without 0x; echo it back as the raw input.
            let raw_input = match (&input.source, &input.data) {
                (0, Value::String(hex_input)) => hex_input.clone(),
                _ => hex(input.data.to_string().as_bytes()),
            };
            Json(json!({
                "raw_input": raw_input,
                "processed_input": "",
                "raw_output": hex(GREETING.as_bytes()),
                "processed_output": "",
                "proof": if input.requires_proof == Some(true) { hex(b"proof") } else { String::new() },
            }))
            .into_response()
        }
        _ => Json(json!({"message": GREETING, "input": input.data})).into_response(),
    }
}

fn stream(data: &Value) -> Response {
    let chunks: Vec<String> = match data.get("tokens").and_then(Value::as_u64) {
        Some(n) => (0..n.min(1_000_000)).map(|i| format!("token-{i} ")).collect(),
        None => GREETING.split_inclusive(' ').map(str::to_owned).collect(),
    };
    let body = Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(|c| Ok::<_, Infallible>(bytes::Bytes::from(c))),
    ));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct ResourcesQuery {
    model_id: Option<String>,
}

async fn service_resources(Query(q): Query<ResourcesQuery>) -> Json<Value> {
    match q.model_id {
        Some(model) => Json(json!({"model_id": model, "supported": model == "hello-world"})),
        None => Json(json!({"service": "hello-world", "models": ["hello-world"]})),
    }
}

fn app() -> Router {
    Router::new()
        .route("/service_output", post(service_output))
        .route("/service-resources", get(service_resources))
        .route("/health", get(|| async { Json(json!({"status": "healthy"})) }))
}

#[tokio::main]
async fn main() {
    let host = std::env::var("HOST").unwrap_or_else(|_| "0.0.0.0".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let addr = format!("{host}:{port}");
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-world: cannot listen on {addr}: {e} (set HOST and PORT to change it)");
            std::process::exit(1);
        }
    };
    eprintln!("hello-world: listening on {addr}");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app()).with_graceful_shutdown(shutdown).await {
        eprintln!("hello-world: server error: {e}");
        std::process::exit(1);
    }
}
