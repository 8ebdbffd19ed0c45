//! `/api/v1/resources`: every available node's `/resources`, gathered with a bound on calls in
//! flight, on each answer's size and on the whole gathering's time. A node that has not answered
//! by the deadline is listed as late instead of holding the answer back (5,000 nodes once took
//! 48 s to gather one by one).

use std::{collections::BTreeSet, time::Duration};

use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::monitor::{ProbeError, get_json};

/// Bounds of one gathering.
#[derive(Debug, Clone, Copy)]
pub struct FanOut {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Time for the whole gathering; nodes not answered by then are reported late.
    pub deadline: Duration,
    /// Largest answer read from one node.
    pub max_body_bytes: usize,
    /// Most bytes of nodes' answers held for one gathering, all nodes together: past it, the
    /// gathering stops and the nodes not taken are listed as over budget.
    pub max_total_bytes: usize,
}

/// The default of [`FanOut::max_total_bytes`]: 16 MiB.
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 16 << 20;

/// The answer for a node left out because the gathering's byte budget was spent.
fn over_budget(budget: usize) -> Value {
    json!({"error": format!("over budget: one answer holds at most {budget} bytes of nodes' resources")})
}

/// The answer for a node that did not answer within `deadline`.
fn late(deadline: Duration) -> Value {
    json!({"error": format!("late: no answer within {deadline:?}")})
}

/// `{node key: its /resources answer}` for `nodes` (key, base URL). Nodes that failed are left
/// out; nodes that did not answer in time appear with `{"error": "late: …"}`.
pub async fn gather(
    client: &reqwest::Client,
    nodes: Vec<(String, String)>,
    model: Option<&str>,
    fan: FanOut,
) -> Map<String, Value> {
    let deadline = Instant::now() + fan.deadline;
    let mut waiting: BTreeSet<String> = nodes.iter().map(|(key, _)| key.clone()).collect();
    let calls = nodes.into_iter().map(|(key, url)| {
        let mut request = client.get(format!("{url}/resources"));
        if let Some(m) = model {
            request = request.query(&[("model_id", m)]);
        }
        async move {
            let answer = get_json::<Value>(request, "/resources", fan.deadline, fan.max_body_bytes).await;
            (key, answer)
        }
    });
    let mut answers = futures::stream::iter(calls).buffer_unordered(fan.concurrency.max(1));
    let mut out = Map::new();
    let mut held = 0usize;
    let mut spent = false;
    // Dropping `answers` at the deadline (or when the budget is spent) cancels the calls still
    // running.
    while let Ok(Some((key, answer))) = tokio::time::timeout_at(deadline, answers.next()).await {
        waiting.remove(&key);
        match answer {
            Ok(value) => {
                let size = value.to_string().len();
                if held + size > fan.max_total_bytes {
                    out.insert(key, over_budget(fan.max_total_bytes));
                    spent = true;
                    break;
                }
                held += size;
                out.insert(key, value);
            }
            // The call's own timeout is the deadline: it may fire just before the deadline does.
            Err(ProbeError::Timeout(_)) => {
                out.insert(key, late(fan.deadline));
            }
            Err(e) => tracing::debug!(node = %key, error = %e, "no resources"),
        }
    }
    drop(answers);
    for key in waiting {
        let why = match spent {
            true => over_budget(fan.max_total_bytes),
            false => late(fan.deadline),
        };
        out.insert(key, why);
    }
    out
}
