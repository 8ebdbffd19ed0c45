//! The ledger: who ran what, for whom, for how long and at what price. Every job the gateway
//! routed and saw end is one row ([`crate::db::ledger`]); this module builds the row (pricing,
//! the node's signed receipt), checks receipts ([`receipt`]), and answers the public record of a
//! node, its earnings and an operator's own rows ([`api`]).
//!
//! The price is accounted, not settled: it is what the node's advertised pricing (or its signed
//! receipt) says the job cost, in the router's unit; no money moves.

pub mod api;
pub mod receipt;
pub mod samples;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use infernet_identity::PublicKey;
use infernet_types::settings::Price;

use tokio_util::sync::CancellationToken;

use crate::{
    db::{jobs::Job, ledger::LedgerRow, now_ms},
    gateway::Gateway,
};

/// How long metric samples are kept: the public record looks 30 days back.
pub const SAMPLES_KEPT: Duration = Duration::from_secs(31 * 86_400);
/// How long quota windows are kept: the day's and the minute's are all that count.
pub const USAGE_KEPT: Duration = Duration::from_secs(2 * 86_400);
/// How often old rows are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Every hour until `shutdown` (and once at start), deletes ledger rows older than the gateway's
/// `ledger_retention`, metric samples older than [`SAMPLES_KEPT`] and quota windows older than
/// [`USAGE_KEPT`]. A failure is logged and tried again at the next round.
pub async fn retention(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Result<(), std::convert::Infallible> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = now_ms();
        let db = gateway.db();
        let keep = gateway.settings().ledger_retention;
        match db.prune_ledger(now.saturating_sub(ms(keep))).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, ?keep, "ledger rows past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "could not prune the ledger"),
        }
        if let Err(e) = db
            .prune_metric_samples(now.saturating_sub(ms(SAMPLES_KEPT)).div_euclid(60_000))
            .await
        {
            tracing::warn!(error = %e, "could not prune metric samples");
        }
        if let Err(e) = db.prune_api_key_usage(now.saturating_sub(ms(USAGE_KEPT))).await {
            tracing::warn!(error = %e, "could not prune quota windows");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// What the router knows of the node when a job ends.
#[derive(Debug, Clone, Default)]
pub struct NodeTerms<'a> {
    /// Its pricing as it advertises it now (`None`: the node is not available now).
    pub pricing: Option<&'a BTreeMap<String, Price>>,
    /// Its key, when its heartbeats are signed.
    pub key: Option<PublicKey>,
    /// Its operator (hex key), when its signed statement names one.
    pub operator: Option<String>,
}

/// The ledger row of `done`, a job that ended on `node` at `finished_at`, priced in `unit`.
///
/// Without a receipt the duration is the time from submission to the end the router saw, and the
/// price is by the node's pricing (per job plus per second of that time; none when it prices a
/// container in another unit). A receipt that checks out ([`receipt::take`]) is kept with the
/// row, and its duration and price (when in `unit`) are the row's; one that does not is dropped
/// with a warning, and the router's own figures stand.
pub fn row(
    done: &Job,
    node: &str,
    finished_at: i64,
    unit: &str,
    terms: &NodeTerms<'_>,
    receipt: Option<receipt::Received>,
) -> LedgerRow {
    let mut duration_ms = (finished_at - done.created_at).max(0);
    let mut price = terms.pricing.and_then(|pricing| {
        done.containers.iter().try_fold(0.0, |total, c| match pricing.get(c) {
            None => Some(total),
            Some(p) if p.unit == unit => Some(total + p.of_job(duration_ms as f64 / 1000.0)),
            Some(_) => None,
        })
    });
    let receipt = receipt.and_then(|received| {
        let node_job = done.node_job.as_deref().unwrap_or_default();
        match receipt::take_received(&received, terms.key.as_ref(), node_job, &done.containers) {
            Ok(signed) => {
                let r = signed.receipt;
                duration_ms = i64::try_from(r.duration_ms).unwrap_or(i64::MAX);
                price = match (r.price, r.unit) {
                    (Some(p), Some(u)) if u == unit => Some(p),
                    (None, None) => Some(0.0),
                    _ => None,
                };
                Some(received.json)
            }
            Err(e) => {
                tracing::warn!(job = %done.id, %node, error = %e, "receipt refused");
                None
            }
        }
    });
    LedgerRow {
        job_id: done.id.clone(),
        client: done.client.clone(),
        api_key_id: done.client.strip_prefix("key:").map(str::to_string),
        node: node.to_string(),
        operator: terms.operator.clone(),
        containers: done.containers.clone(),
        started_at: done.created_at,
        finished_at,
        outcome: done.status.as_str().to_string(),
        duration_ms,
        price,
        unit: Some(unit.to_string()),
        receipt,
    }
}
