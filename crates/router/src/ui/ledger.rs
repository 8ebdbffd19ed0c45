//! The ledger as the fleet's operator sees it: the jobs their nodes ran, and their earnings.

use super::*;

/// `GET /api/v1/fleet/jobs?node=&container=&outcome=&page=`: the jobs the operator's nodes ran
/// for this router, newest first.
pub(super) async fn jobs(
    State(state): State<Arc<RouterState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let mut filter = JobFilter::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "node" if !v.is_empty() => filter.node = Some(v.into_owned()),
            "container" if !v.is_empty() => {
                if v.len() > 256 {
                    return error(StatusCode::BAD_REQUEST, "container: at most 256 characters");
                }
                filter.container = Some(v.into_owned())
            }
            "outcome" if !v.is_empty() => match v.as_ref() {
                "succeeded" | "failed" | "cancelled" => filter.outcome = Some(v.into_owned()),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("outcome: one of succeeded, failed, cancelled, got {v:?}"),
                    );
                }
            },
            "page" => match v.parse::<i64>() {
                Ok(p) if (1..=10_000).contains(&p) => filter.page = p,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("page: a whole number from 1 to 10000, got {v:?}"),
                    );
                }
            },
            "node" | "container" | "outcome" => {}
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{other}: unknown parameter; known: node, container, outcome, page"),
                );
            }
        }
    }
    let mine: Vec<String> = fleet_of(&state, &session.signer)
        .iter()
        .filter_map(|n| n["key"].as_str().map(str::to_string))
        .collect();
    let nodes: Vec<String> = match &filter.node {
        Some(n) if mine.contains(n) => vec![n.clone()],
        Some(n) => return error(StatusCode::NOT_FOUND, format!("no node {n} in your fleet")),
        None => mine,
    };
    let page = filter.page.max(1);
    if nodes.is_empty() {
        return Json(json!({"jobs": [], "page": page, "more": false})).into_response();
    }
    match jobs_of(&state.ui.db, &nodes, &filter).await {
        Ok(mut rows) => {
            let more = rows.len() as i64 > PAGE;
            rows.truncate(PAGE as usize);
            let jobs: Vec<Value> = rows
                .into_iter()
                .map(|r| {
                    json!({
                        "id": r.job_id, "node": r.node, "containers": r.containers, "outcome": r.outcome,
                        "started_at": r.started_at, "finished_at": r.finished_at, "duration_ms": r.duration_ms,
                        "price": r.price, "unit": r.unit,
                    })
                })
                .collect();
            Json(json!({"jobs": jobs, "page": page, "more": more})).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the router's database failed: {e}"),
        ),
    }
}

#[derive(Debug, Default)]
struct JobFilter {
    node: Option<String>,
    container: Option<String>,
    outcome: Option<String>,
    page: i64,
}

/// One page (and one row more, to tell whether there is another) of the ledger of `nodes`.
async fn jobs_of(
    db: &Db,
    nodes: &[String],
    filter: &JobFilter,
) -> Result<Vec<crate::db::ledger::LedgerRow>, crate::db::DbError> {
    // Few nodes per operator: one placeholder each, capped.
    let nodes = &nodes[..nodes.len().min(500)];
    let mut sql = String::from(
        "SELECT job_id, client, api_key_id, node, operator, containers, started_at, finished_at, outcome, \
         duration_ms, price, unit, receipt FROM ledger WHERE node IN (",
    );
    let mut n = 0;
    for i in 0..nodes.len() {
        n += 1;
        sql.push_str(&format!("{}${n}", if i > 0 { ", " } else { "" }));
    }
    sql.push(')');
    let container = filter.container.as_ref().map(|c| {
        let quoted = serde_json::to_string(c).unwrap_or_default();
        let escaped = quoted.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    if container.is_some() {
        n += 1;
        sql.push_str(&format!(" AND containers LIKE ${n} ESCAPE '\\'"));
    }
    if filter.outcome.is_some() {
        n += 1;
        sql.push_str(&format!(" AND outcome = ${n}"));
    }
    sql.push_str(&format!(
        " ORDER BY finished_at DESC, job_id DESC LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    ));
    let offset = (filter.page.max(1) - 1) * PAGE;
    Ok(crate::db::on_pool!(db, |p| {
        let mut q = sqlx::query_as::<_, crate::db::ledger::LedgerRow>(sqlx::AssertSqlSafe(sql.clone()));
        for node in nodes {
            q = q.bind(node);
        }
        if let Some(c) = &container {
            q = q.bind(c);
        }
        if let Some(o) = &filter.outcome {
            q = q.bind(o);
        }
        q.bind(PAGE + 1).bind(offset).fetch_all(p).await?
    }))
}

/// The periods of the earnings page: (name, length in ms).
const PERIODS: [(&str, i64); 3] = [
    ("day", 86_400_000),
    ("week", 7 * 86_400_000),
    ("month", 30 * 86_400_000),
];

/// `GET /api/v1/fleet/earnings`: per period, this one against the one before.
pub(super) async fn earnings(State(state): State<Arc<RouterState>>, method: Method, headers: HeaderMap) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let nodes: Vec<String> = fleet_of(&state, &session.signer)
        .iter()
        .filter_map(|n| n["key"].as_str().map(str::to_string))
        .collect();
    let now = crate::db::now_ms();
    let mut periods = Vec::new();
    for (name, length) in PERIODS {
        let mut period = json!({"period": name});
        for (which, from, to) in [
            ("current", now - length, now + 1),
            ("previous", now - 2 * length, now - length),
        ] {
            let rows = if nodes.is_empty() {
                Vec::new()
            } else {
                match state.ui.db.ledger_totals(&nodes, from, to).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the router's database failed: {e}"),
                        );
                    }
                }
            };
            let (mut jobs, mut earned) = (0i64, 0.0f64);
            let mut by_node = serde_json::Map::new();
            let mut by_container = serde_json::Map::new();
            for (node, containers, count, price) in rows {
                let price = price.unwrap_or(0.0);
                jobs += count;
                earned += price;
                let set = serde_json::from_str::<Vec<String>>(&containers)
                    .map(|c| c.join(" → "))
                    .unwrap_or(containers);
                for (map, key) in [(&mut by_node, node), (&mut by_container, set)] {
                    let entry = map.entry(key).or_insert_with(|| json!({"jobs": 0, "earned": 0.0}));
                    entry["jobs"] = json!(entry["jobs"].as_i64().unwrap_or(0) + count);
                    entry["earned"] = json!(entry["earned"].as_f64().unwrap_or(0.0) + price);
                }
            }
            period[which] = json!({"jobs": jobs, "earned": earned, "by_node": by_node, "by_container": by_container});
        }
        periods.push(period);
    }
    Json(json!({"unit": state.ui.price_unit, "periods": periods})).into_response()
}
