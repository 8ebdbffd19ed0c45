//! Per node and hour counters for the node's public record: probes answered and failed (its
//! uptime), jobs and their latency, and how often each of the chooser's filters left it out.
//! Counted in memory and added to the database's `metric_samples` through the batch writer every
//! `--samples-flush` (60 s): one write per node and flush, not one per probe or job. Two replicas'
//! samples for the same hour add up. A crash loses at most the last flush interval's counts.
//!
//! Why hours, though the table's key is a minute (the sample's `minute` is the hour's first): the
//! record looks at 24 h to 30 d, and 10,000 nodes probed every 30 s would be 14 million rows a
//! day by the minute, 240,000 by the hour.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    db::{
        batcher::{BatchSender, Record},
        metrics::MetricSample,
        now_ms,
    },
    registry::Registry,
};

/// Node and minute pairs counted at most between two flushes; counts for new pairs past it are
/// dropped (with a warning at the flush), so a flood of node names cannot grow the map.
pub const MAX_PENDING: usize = 100_000;

/// The counters not flushed yet.
#[derive(Default)]
pub struct Samples {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    by: HashMap<(String, i64), MetricSample>,
    dropped: u64,
}

impl Samples {
    fn add(&self, node: &str, change: impl FnOnce(&mut MetricSample)) {
        let minute = now_ms().div_euclid(3_600_000) * 60;
        let mut p = self.pending.lock().expect("samples poisoned");
        let full = p.by.len() >= MAX_PENDING;
        let key = (node.to_string(), minute);
        match p.by.get_mut(&key) {
            Some(s) => change(s),
            None if full => p.dropped += 1,
            None => {
                let mut s = MetricSample {
                    node: node.to_string(),
                    minute,
                    jobs_ok: 0,
                    jobs_failed: 0,
                    latency_ms_sum: 0,
                    probes_ok: 0,
                    probes_failed: 0,
                    excluded_price: 0,
                    excluded_hours: 0,
                    excluded_hardware: 0,
                    excluded_health: 0,
                    excluded_load: 0,
                };
                change(&mut s);
                p.by.insert(key, s);
            }
        }
    }

    /// A probe of `node` answered (`ok`) or failed.
    pub fn probe(&self, node: &str, ok: bool) {
        self.add(node, |s| match ok {
            true => s.probes_ok += 1,
            false => s.probes_failed += 1,
        });
    }

    /// A job on `node` ended with a result (`ok`, its latency when measured) or failed.
    pub fn job(&self, node: &str, ok: bool, latency_ms: Option<i64>) {
        self.add(node, |s| match ok {
            true => {
                s.jobs_ok += 1;
                s.latency_ms_sum += latency_ms.unwrap_or(0).max(0);
            }
            false => s.jobs_failed += 1,
        });
    }

    /// The chooser left `node` out of jobs, by health, hardware, price and hours as many times
    /// as `counts` says (counted in the registry, [`crate::registry::PassedOver`]).
    pub fn passed_over(&self, node: &str, [health, hardware, price, hours]: [u64; 4]) {
        let n = |c: u64| i64::try_from(c).unwrap_or(i64::MAX);
        self.add(node, |s| {
            s.excluded_health += n(health);
            s.excluded_hardware += n(hardware);
            s.excluded_price += n(price);
            s.excluded_hours += n(hours);
        });
    }

    /// `node` was offered a job and refused it (busy: its load or its limits).
    pub fn loaded(&self, node: &str) {
        self.add(node, |s| s.excluded_load += 1);
    }

    /// Takes what was counted.
    fn take(&self) -> (Vec<MetricSample>, u64) {
        let mut p = self.pending.lock().expect("samples poisoned");
        let dropped = std::mem::take(&mut p.dropped);
        (std::mem::take(&mut p.by).into_values().collect(), dropped)
    }

    /// Every `every` until `shutdown` (and once more then), queues the counts for the batch
    /// writer, with the chooser's counts taken from `registry`; waits for room in its queue
    /// rather than drop them.
    pub async fn flush(
        &self,
        to: BatchSender,
        registry: Arc<Registry>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(every) => false,
            };
            for (node, counts) in registry.take_passed_over() {
                self.passed_over(&node, counts);
            }
            let (samples, dropped) = self.take();
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    max = MAX_PENDING,
                    "metric samples dropped: too many nodes counted at once"
                );
            }
            for s in samples {
                if to.send(Record::Metrics(s)).await.is_err() {
                    return Ok(());
                }
            }
            if stop {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_node_and_hour_and_empty_on_take() {
        let s = Samples::default();
        s.probe("a", true);
        s.probe("a", false);
        s.probe("a", true);
        s.job("a", true, Some(120));
        s.job("a", false, None);
        s.passed_over("a", [0, 0, 1, 0]);
        s.loaded("b");
        let (mut taken, dropped) = s.take();
        taken.sort_by(|x, y| x.node.cmp(&y.node));
        assert_eq!(dropped, 0);
        let a = &taken[0];
        assert_eq!((a.probes_ok, a.probes_failed, a.jobs_ok, a.jobs_failed), (2, 1, 1, 1));
        assert_eq!((a.latency_ms_sum, a.excluded_price, a.excluded_load), (120, 1, 0));
        assert_eq!(a.minute % 60, 0, "the hour's first minute");
        assert_eq!((taken[1].node.as_str(), taken[1].excluded_load), ("b", 1));
        assert!(s.take().0.is_empty());
    }
}
