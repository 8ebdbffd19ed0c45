//! Requests the operator's extension signed for a node's admin API, passed on to the node.

use super::*;

/// A request for a node's admin API, signed by the operator's extension.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Relayed {
    method: String,
    path: String,
    #[serde(default)]
    body: Option<String>,
    authorization: String,
}

/// `POST /api/v1/fleet/{node}/admin`: passes a signed admin request to the node, answers
/// `{status, body}` as the node gave them.
pub(super) async fn relay(
    State(state): State<Arc<RouterState>>,
    method: Method,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    if body.len() > MAX_RELAY + 4096 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a relayed request is at most {MAX_RELAY} bytes"),
        );
    }
    let request: Relayed = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{method, path, body, authorization}}: {e}"),
            );
        }
    };
    let verb = match request.method.as_str() {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("method: one of GET, POST, PUT, DELETE, got {other:?}"),
            );
        }
    };
    if !request.path.starts_with("/admin/")
        || request.path.contains("..")
        || request.path.len() > 512
        || request.path.chars().any(|c| c.is_control() || c == '#')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "path: a path of the node's admin API, starting with /admin/",
        );
    }
    if !request.authorization.starts_with("Nostr ") || request.authorization.len() > 32 * 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "authorization: the NIP-98 header your extension signed (Nostr …)",
        );
    }
    let Some(target) = fleet_of(&state, &session.signer)
        .into_iter()
        .find(|n| n["key"] == node)
        .and_then(|n| n["url"].as_str().map(str::to_string))
    else {
        return error(StatusCode::NOT_FOUND, format!("no node {node} in your fleet"));
    };
    let url = format!("{}{}", target.trim_end_matches('/'), request.path);
    let mut call = state
        .client
        .request(verb, &url)
        .timeout(RELAY_TIMEOUT)
        .header(header::AUTHORIZATION, &request.authorization);
    if let Some(b) = request.body.filter(|b| !b.is_empty()) {
        call = call.header(header::CONTENT_TYPE, "application/json").body(b);
    }
    let answer = match call.send().await {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the node at {target} did not answer: {e}"),
            );
        }
    };
    let status = answer.status().as_u16();
    let mut answer = answer;
    let read = match crate::body::read_at_most(&mut answer, MAX_RELAY).await {
        Ok(read) => read,
        Err(crate::body::BodyError::TooLarge) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the node's answer is larger than {MAX_RELAY} bytes"),
            );
        }
        Err(crate::body::BodyError::Read(e)) => {
            return error(StatusCode::BAD_GATEWAY, format!("the node's answer was cut: {e}"));
        }
    };
    let body = serde_json::from_slice::<Value>(&read).unwrap_or_else(|_| json!(String::from_utf8_lossy(&read)));
    Json(json!({"status": status, "body": body})).into_response()
}
