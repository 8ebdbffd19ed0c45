//! The fleet page's data: the signed-in operator's nodes, and each one's plots.

use super::*;

/// The nodes of `signer`, as the fleet page shows them.
pub(super) fn fleet_of(state: &RouterState, signer: &str) -> Vec<Value> {
    let now = Instant::now();
    let snapshot = state.registry.snapshot();
    let beats = state.ui.beats.lock().expect("beats poisoned");
    state
        .registry
        .view(now)
        .into_iter()
        .filter(|n| {
            n.identity
                .as_ref()
                .is_some_and(|i| i.operators.iter().any(|o| o == signer))
        })
        .map(|n| {
            let beat = beats.get(&n.address);
            let content = beat.map_or(Value::Null, |b| b.content.clone());
            let offer = snapshot
                .available
                .iter()
                .find(|a| a.key == n.address)
                .map(|a| &a.report.offer);
            let open = offer.is_none_or(|o| o.open);
            let status = match (n.available, open) {
                (true, true) => "up",
                (true, false) => "closed",
                _ => "down",
            };
            let (mut ok, mut failed) = (0u64, 0u64);
            if let Some(jobs) = content["jobs"].as_object() {
                for j in jobs.values() {
                    ok += j["success"].as_u64().unwrap_or(0);
                    failed += j["failure"].as_u64().unwrap_or(0);
                }
            }
            let age = beat.map(|b| now.duration_since(b.at).as_secs_f64());
            let mut problems = Vec::new();
            if let Some(e) = &n.last_error {
                problems.push(format!("the router cannot reach it: {e}"));
            }
            if !n.registered {
                problems.push("no heartbeat within the registration's lifetime".to_string());
            }
            if status == "closed" {
                problems.push(format!(
                    "not taking jobs now{}",
                    offer
                        .and_then(|o| o.available_at.as_deref())
                        .map(|t| format!(" (opens {t})"))
                        .unwrap_or_default()
                ));
            }
            json!({
                "key": n.address,
                "url": beat.map_or_else(|| format!("http://{}", n.address), |b| b.url.clone()),
                "node": n.identity.as_ref().map(|i| i.key.clone()),
                "name": content["node"],
                "status": status,
                "open": open,
                "available_at": offer.and_then(|o| o.available_at.clone()),
                "heartbeat_age": age,
                "version": content["version"],
                "containers": n.containers,
                "pending": n.pending,
                "jobs": {
                    "succeeded": ok,
                    "failed": failed,
                    "total": ok + failed,
                    "success_rate": (ok + failed > 0).then(|| 100.0 * ok as f64 / (ok + failed) as f64),
                },
                "system": content["system"],
                "pricing": content["pricing"],
                "availability": content["availability"],
                "chain": content["chain"],
                "container_restarts": content["container_restarts"],
                "container_states": content["container_states"]
                    .as_object()
                    .map(|m| m.iter().map(|(id, s)| json!({"id": id, "state": s})).collect::<Vec<_>>()),
                "problems": problems,
            })
        })
        .collect()
}

/// `GET /api/v1/fleet`.
pub(super) async fn fleet(State(state): State<Arc<RouterState>>, method: Method, headers: HeaderMap) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    Json(json!({"operator": session.signer, "nodes": fleet_of(&state, &session.signer)})).into_response()
}

/// `GET /api/v1/fleet/{node}/history?range=`.
pub(super) async fn history_of(
    State(state): State<Arc<RouterState>>,
    method: Method,
    headers: HeaderMap,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let mut range = "24h".to_string();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "range" => range = v.into_owned(),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{other}: unknown parameter; known: range"),
                );
            }
        }
    }
    let Some(&(_, span, step)) = history::RANGES.iter().find(|(name, _, _)| *name == range) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("range: one of 1h, 24h, 7d, 30d, got {range:?}"),
        );
    };
    if !fleet_of(&state, &session.signer).iter().any(|n| n["key"] == node) {
        return error(StatusCode::NOT_FOUND, format!("no node {node} in your fleet"));
    }
    let from = infernet_identity::unix_now() as i64 - span;
    match state.ui.db.history(&node, step, from).await {
        Ok(points) => Json(json!({"node": node, "range": range, "step": step, "points": points})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the router's database failed: {e}"),
        ),
    }
}
