//! Receipts for off-chain jobs: when a job ends the node states, signed with its key, which
//! containers ran, for how long and at what price by its pricing as set then. The receipt goes
//! with the job's result (`receipt` in `GET /api/jobs`), so the router that dispatched the job
//! files it in its ledger, and the provider can later check every row against the node's key.
//! A stream's is stored with its result when the stream ends, where the router reads it then.
//!
//! Only a node in a network (with `network.routers`) signs receipts: a standalone node's answers
//! stay as Ritual's node gives them. A signature costs some tens of µs per job.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use infernet_types::{JobStatus, RECEIPT_SUBJECT, Receipt, settings::Price};

use crate::admin::Admin;

/// Signs receipts with the node's key, pricing by the operator's settings; cheap to clone.
#[derive(Clone)]
pub struct Receipts {
    admin: Arc<Admin>,
}

impl Receipts {
    /// Receipts signed by `admin`'s node key.
    pub fn new(admin: Arc<Admin>) -> Self {
        Self { admin }
    }

    /// The signed receipt of job `job` that ran `containers` for `duration` and ended `status`.
    pub fn sign(&self, job: &str, containers: &[String], status: JobStatus, duration: Duration) -> Option<String> {
        // Priced by the whole milliseconds it states, so that anyone can redo the sum.
        let duration = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let pricing = self.admin.state().settings.pricing;
        let (price, unit) = price(&pricing, containers, duration)
            .map(|(p, u)| (Some(p), Some(u)))
            .unwrap_or_default();
        let receipt = Receipt {
            job: job.to_string(),
            containers: containers.to_vec(),
            status: match status {
                JobStatus::Success => "success",
                JobStatus::Failed => "failed",
                JobStatus::Running => "running",
            }
            .into(),
            duration_ms: duration.as_millis() as u64,
            price,
            unit,
        };
        match infernet_identity::statement::sign(self.admin.identity(), RECEIPT_SUBJECT, &receipt) {
            Ok(signed) => Some(signed),
            Err(e) => {
                tracing::warn!(%job, error = %e, "cannot sign a receipt");
                None
            }
        }
    }
}

/// The price of running `containers` for `duration`: each priced container's price for the whole
/// duration, summed (as the router accounts it); `None` when none is priced or their units differ.
fn price(pricing: &BTreeMap<String, Price>, containers: &[String], duration: Duration) -> Option<(f64, String)> {
    let mut total: Option<(f64, String)> = None;
    for price in containers.iter().filter_map(|c| pricing.get(c)) {
        let p = price.of_job(duration.as_secs_f64());
        total = match total {
            None => Some((p, price.unit.clone())),
            Some((sum, unit)) if unit == price.unit => Some((sum + p, unit)),
            Some(_) => return None,
        };
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(per_job: f64, per_second: f64) -> Price {
        Price {
            per_job: Some(per_job),
            per_second: Some(per_second),
            unit: "USD".into(),
        }
    }

    #[test]
    fn a_price_sums_priced_containers_in_one_unit() {
        let pricing = BTreeMap::from([("a".to_string(), usd(0.01, 0.5)), ("b".to_string(), usd(0.02, 0.0))]);
        let two = Duration::from_secs(2);
        let (p, unit) = price(&pricing, &["a".into(), "b".into(), "free".into()], two).unwrap();
        assert!((p - 1.03).abs() < 1e-12 && unit == "USD", "{p} {unit}");
        assert_eq!(price(&pricing, &["free".into()], two), None);
        let mixed = BTreeMap::from([
            ("a".to_string(), usd(1.0, 0.0)),
            (
                "b".to_string(),
                Price {
                    unit: "EUR".into(),
                    ..usd(1.0, 0.0)
                },
            ),
        ]);
        assert_eq!(price(&mixed, &["a".into(), "b".into()], two), None);
    }
}
