//! Per node and minute counters for the node's public record: probes answered and failed (its
//! uptime), jobs and their latency, and how often each of the chooser's filters left it out.
//! Counted in memory and added to the database's `metric_samples` through the batch writer every
//! few seconds: one write per node and minute, not one per probe or job. Two replicas' samples for
//! the same minute add up. A crash loses at most the last flush interval's counts.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    choose::Filter,
    db::{
        batcher::{BatchSender, Record},
        metrics::MetricSample,
        now_ms,
    },
};

/// Node and minute pairs counted at most between two flushes; counts for new pairs past it are
/// dropped (with a warning at the flush), so a flood of node names cannot grow the map.
pub const MAX_PENDING: usize = 100_000;

/// How often counts go to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

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
        let minute = now_ms().div_euclid(60_000);
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

    /// The chooser left `node` out of a job by `filter` (not serving the containers is not
    /// counted: that is no reason a provider can act on).
    pub fn excluded(&self, node: &str, filter: Filter) {
        self.add(node, |s| match filter {
            Filter::Price => s.excluded_price += 1,
            Filter::Hours => s.excluded_hours += 1,
            Filter::Hardware => s.excluded_hardware += 1,
            Filter::Health => s.excluded_health += 1,
            Filter::Containers => {}
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
    /// writer; waits for room in its queue rather than drop them.
    pub async fn flush(
        &self,
        to: BatchSender,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(every) => false,
            };
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
