//! Prometheus metrics of the node, kept in atomics and rendered in the text exposition format.
//! No global recorder: the node owns its `Metrics`, so tests and several nodes in one process
//! never share counters.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Where a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// REST `POST /api/jobs`, batch or stream.
    Offchain,
    /// Delegated subscription.
    Delegated,
    /// On-chain subscription.
    Onchain,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Self::Offchain => "offchain",
            Self::Delegated => "delegated",
            Self::Onchain => "onchain",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 180.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

#[derive(Debug, Default)]
struct ContainerMetrics {
    success: AtomicU64,
    failure: AtomicU64,
    latency: Histogram,
}

/// The node's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// jobs[source][0 = success, 1 = failure]
    jobs: [[AtomicU64; 2]; 3],
    job_latency: Histogram,
    containers: RwLock<BTreeMap<String, ContainerMetrics>>,
}

/// Values read at render time from elsewhere in the node.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Running off-chain jobs (`None`: the store could not count them).
    pub pending_offchain: Option<u64>,
    /// Running chain jobs.
    pub pending_onchain: u64,
    /// Job records the store has accepted but not written yet.
    pub store_unwritten: u64,
    /// Container id → serving (1) or not (0).
    pub containers_up: Vec<(String, bool)>,
    /// Container id → times it went down since the node started.
    pub restarts: Vec<(String, u64)>,
    /// The host, when it could be sampled.
    pub system: Option<super::system::SystemSample>,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Metrics for the given containers.
    pub fn new<'a>(containers: impl IntoIterator<Item = &'a str>) -> Self {
        let m = Self::default();
        {
            let mut map = m.containers.write().expect("metrics poisoned");
            for id in containers {
                map.insert(id.to_string(), ContainerMetrics::default());
            }
        }
        m
    }

    /// Counts calls to `id` too (a container the operator added).
    pub fn add_container(&self, id: &str) {
        let mut map = self.containers.write().expect("metrics poisoned");
        map.entry(id.to_string()).or_default();
    }

    /// A finished job.
    pub fn job(&self, source: Source, success: bool, took: Duration) {
        self.jobs[source as usize][usize::from(!success)].fetch_add(1, Ordering::Relaxed);
        self.job_latency.observe(took);
    }

    /// One call to a container.
    pub fn container_call(&self, id: &str, success: bool, took: Duration) {
        let map = self.containers.read().expect("metrics poisoned");
        if let Some(c) = map.get(id) {
            if success { &c.success } else { &c.failure }.fetch_add(1, Ordering::Relaxed);
            c.latency.observe(took);
        }
    }

    /// Calls per container: `{id: {"success", "failure", "latency": {"le": [s…], "counts":
    /// [cumulative…]}}}` (the histogram's buckets, `+Inf` last as `null`), for `/info`: a router
    /// that reads it twice knows the latency over the time between.
    pub fn container_calls(&self) -> serde_json::Map<String, serde_json::Value> {
        let map = self.containers.read().expect("metrics poisoned");
        map.iter()
            .map(|(id, c)| {
                let mut cumulative = 0;
                let mut counts: Vec<u64> = c
                    .latency
                    .counts
                    .iter()
                    .map(|n| {
                        cumulative += n.load(Ordering::Relaxed);
                        cumulative
                    })
                    .collect();
                counts.push(c.latency.count.load(Ordering::Relaxed));
                let le: Vec<Option<f64>> = BUCKETS.iter().copied().map(Some).chain([None]).collect();
                (
                    id.clone(),
                    serde_json::json!({
                        "success": c.success.load(Ordering::Relaxed),
                        "failure": c.failure.load(Ordering::Relaxed),
                        "latency": {"le": le, "counts": counts},
                    }),
                )
            })
            .collect()
    }

    /// The job latency histogram for the heartbeat: the buckets' upper bounds in seconds, and how
    /// many jobs fell in each (not cumulative), the last count for those above every bound.
    pub fn job_latency(&self) -> (&'static [f64], Vec<u64>) {
        let h = &self.job_latency;
        let mut counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total = h.count.load(Ordering::Relaxed);
        counts.push(total.saturating_sub(counts.iter().sum()));
        (&BUCKETS, counts)
    }

    /// Job counters `{source: (success, failure)}`, for the heartbeat.
    pub fn job_counts(&self) -> BTreeMap<&'static str, (u64, u64)> {
        [Source::Offchain, Source::Delegated, Source::Onchain]
            .into_iter()
            .map(|s| {
                let [ok, failed] = &self.jobs[s as usize];
                (s.label(), (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
            })
            .collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP infernet_jobs_total Finished jobs by source and outcome.\n# TYPE infernet_jobs_total counter\n",
        );
        for s in [Source::Offchain, Source::Delegated, Source::Onchain] {
            for (i, outcome) in ["success", "failure"].iter().enumerate() {
                let v = self.jobs[s as usize][i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "infernet_jobs_total{{source=\"{}\",outcome=\"{outcome}\"}} {v}",
                    s.label()
                );
            }
        }
        out.push_str("# HELP infernet_job_duration_seconds Time from accepting a job to its result.\n# TYPE infernet_job_duration_seconds histogram\n");
        self.job_latency.render(&mut out, "infernet_job_duration_seconds", "");
        out.push_str("# HELP infernet_jobs_pending Jobs running now.\n# TYPE infernet_jobs_pending gauge\n");
        if let Some(pending) = gauges.pending_offchain {
            let _ = writeln!(out, "infernet_jobs_pending{{source=\"offchain\"}} {pending}");
        }
        let _ = writeln!(
            out,
            "infernet_jobs_pending{{source=\"onchain\"}} {}",
            gauges.pending_onchain
        );
        let _ = writeln!(
            out,
            "# HELP infernet_store_up Whether the job store answered.\n# TYPE infernet_store_up gauge\ninfernet_store_up {}",
            u8::from(gauges.pending_offchain.is_some())
        );
        let _ = writeln!(
            out,
            "# HELP infernet_store_unwritten_records Job records accepted but not written yet (queued, or held while the store does not take writes).\n# TYPE infernet_store_unwritten_records gauge\ninfernet_store_unwritten_records {}",
            gauges.store_unwritten
        );
        let map = self.containers.read().expect("metrics poisoned");
        out.push_str("# HELP infernet_container_calls_total Calls to containers by outcome.\n# TYPE infernet_container_calls_total counter\n");
        for (id, c) in map.iter() {
            let id = label(id);
            let _ = writeln!(
                out,
                "infernet_container_calls_total{{container=\"{id}\",outcome=\"success\"}} {}",
                c.success.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "infernet_container_calls_total{{container=\"{id}\",outcome=\"failure\"}} {}",
                c.failure.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP infernet_container_call_duration_seconds Duration of one container call.\n# TYPE infernet_container_call_duration_seconds histogram\n");
        for (id, c) in map.iter() {
            c.latency.render(
                &mut out,
                "infernet_container_call_duration_seconds",
                &format!("container=\"{}\"", label(id)),
            );
        }
        out.push_str(
            "# HELP infernet_container_up Whether a container is serving.\n# TYPE infernet_container_up gauge\n",
        );
        for (id, up) in &gauges.containers_up {
            let _ = writeln!(
                out,
                "infernet_container_up{{container=\"{}\"}} {}",
                label(id),
                u8::from(*up)
            );
        }
        out.push_str("# HELP infernet_container_restarts_total Times a container went down and was restarted since the node started.\n# TYPE infernet_container_restarts_total counter\n");
        for (id, _) in &gauges.containers_up {
            let n = gauges.restarts.iter().find(|(r, _)| r == id).map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "infernet_container_restarts_total{{container=\"{}\"}} {n}",
                label(id)
            );
        }
        if let Some(system) = &gauges.system {
            render_host(&mut out, system);
        }
        out
    }
}

/// The host's gauges: what the alert rules on disk, memory and GPU temperature read.
fn render_host(out: &mut String, s: &super::system::SystemSample) {
    let gauge = |out: &mut String, name: &str, help: &str, v: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        out,
        "infernet_host_cpu_percent",
        "CPU use of the host since the previous sample, percent of all CPUs.",
        s.cpu_percent.to_string(),
    );
    gauge(
        out,
        "infernet_host_memory_total_bytes",
        "Memory of the host.",
        s.memory_total_bytes.to_string(),
    );
    gauge(
        out,
        "infernet_host_memory_used_bytes",
        "Memory of the host in use.",
        s.memory_used_bytes.to_string(),
    );
    gauge(
        out,
        "infernet_host_disk_total_bytes",
        "Size of the filesystem holding the node's working directory.",
        s.disk_total_bytes.to_string(),
    );
    gauge(
        out,
        "infernet_host_disk_available_bytes",
        "Free space on the filesystem holding the node's working directory.",
        s.disk_available_bytes.to_string(),
    );
    /// A GPU gauge: name, help, value.
    type GpuGauge = (&'static str, &'static str, fn(&super::system::Gpu) -> Option<u64>);
    let families: [GpuGauge; 4] = [
        ("infernet_gpu_utilization_percent", "Busy percentage of a GPU.", |g| {
            Some(u64::from(g.utilization_percent))
        }),
        ("infernet_gpu_memory_total_bytes", "Memory of a GPU.", |g| {
            Some(g.memory_total_bytes)
        }),
        ("infernet_gpu_memory_used_bytes", "Memory of a GPU in use.", |g| {
            Some(g.memory_used_bytes)
        }),
        ("infernet_gpu_temperature_celsius", "Die temperature of a GPU.", |g| {
            g.temperature_celsius.map(u64::from)
        }),
    ];
    for (name, help, value) in families {
        if s.gpus.is_empty() {
            break;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, gpu) in s.gpus.iter().enumerate() {
            if let Some(v) = value(gpu) {
                let _ = writeln!(out, "{name}{{gpu=\"{i}\",model=\"{}\"}} {v}", label(&gpu.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_labelled() {
        let m = Metrics::new(["a\"b"]);
        m.job(Source::Offchain, true, Duration::from_millis(3));
        m.job(Source::Offchain, false, Duration::from_secs(1));
        m.container_call("a\"b", true, Duration::from_micros(400));
        let text = m.render(&Gauges {
            pending_offchain: Some(2),
            pending_onchain: 0,
            store_unwritten: 3,
            containers_up: vec![("a\"b".into(), true)],
            restarts: vec![("a\"b".into(), 2)],
            system: Some(super::super::system::SystemSample {
                cpus: 2,
                cpu_percent: 12.5,
                memory_total_bytes: 1000,
                memory_used_bytes: 960,
                disk_total_bytes: 100,
                disk_available_bytes: 5,
                gpus: vec![super::super::system::Gpu {
                    name: "NVIDIA A100".into(),
                    utilization_percent: 90,
                    memory_total_bytes: 80,
                    memory_used_bytes: 40,
                    temperature_celsius: Some(91),
                }],
                gpu_note: None,
                kernel: String::new(),
            }),
        });
        assert!(text.contains("infernet_jobs_total{source=\"offchain\",outcome=\"success\"} 1"));
        assert!(text.contains("infernet_jobs_total{source=\"offchain\",outcome=\"failure\"} 1"));
        assert!(text.contains("infernet_job_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("infernet_job_duration_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("infernet_job_duration_seconds_count 2"));
        assert!(text.contains("infernet_container_call_duration_seconds_bucket{container=\"a\\\"b\",le=\"0.0005\"} 1"));
        assert!(text.contains("infernet_jobs_pending{source=\"offchain\"} 2"));
        assert!(text.contains("infernet_container_up{container=\"a\\\"b\"} 1"));
        assert!(text.contains("infernet_store_up 1"));
        assert!(text.contains("infernet_store_unwritten_records 3"));
        assert!(text.contains("infernet_container_restarts_total{container=\"a\\\"b\"} 2"));
        assert!(text.contains("infernet_host_memory_used_bytes 960"));
        assert!(text.contains("infernet_host_disk_available_bytes 5"));
        assert!(text.contains("infernet_gpu_temperature_celsius{gpu=\"0\",model=\"NVIDIA A100\"} 91"));
    }

    /// Every metric the shipped alerting rules and dashboard read is one the node exports, so
    /// an operator's alerts never silently watch a name that does not exist.
    #[test]
    fn the_deployed_rules_and_dashboard_read_only_metrics_the_node_exports() {
        use crate::chain::{
            rpc::RpcErrorCounts,
            status::{Balances, ChainStatus},
        };
        let m = Metrics::new(["c"]);
        m.job(Source::Offchain, true, Duration::from_millis(1));
        m.container_call("c", true, Duration::from_millis(1));
        let gpu = super::super::system::Gpu {
            name: "g".into(),
            utilization_percent: 1,
            memory_total_bytes: 1,
            memory_used_bytes: 1,
            temperature_celsius: Some(40),
        };
        let mut text = m.render(&Gauges {
            pending_offchain: Some(0),
            pending_onchain: 0,
            store_unwritten: 0,
            containers_up: vec![("c".into(), true)],
            restarts: Vec::new(),
            system: Some(super::super::system::SystemSample {
                cpus: 1,
                cpu_percent: 1.0,
                memory_total_bytes: 1,
                memory_used_bytes: 1,
                disk_total_bytes: 1,
                disk_available_bytes: 1,
                gpus: vec![gpu],
                gpu_note: None,
                kernel: String::new(),
            }),
        });
        let chain = ChainStatus::new(std::sync::Arc::new(RpcErrorCounts::default()));
        chain.set_balances(Balances {
            block: 1,
            node: (Default::default(), Default::default()),
            payment: Some((Default::default(), Default::default())),
        });
        chain.render(&mut text);
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for (file, body) in [
            (
                "deploy/prometheus/alerts.yml",
                include_str!("../../../../deploy/prometheus/alerts.yml"),
            ),
            (
                "deploy/grafana/infernet.json",
                include_str!("../../../../deploy/grafana/infernet.json"),
            ),
        ] {
            let mut read = 0;
            for (at, _) in body.match_indices("infernet_") {
                let name: String = body[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                // Label values and the dashboard's own names are not metrics.
                if name.ends_with('_') || !body[..at].ends_with(|c: char| !c.is_alphanumeric() && c != '-') {
                    continue;
                }
                read += 1;
                assert!(
                    exported.contains(name.as_str()),
                    "{file} reads {name}, which the node does not export"
                );
            }
            assert!(read >= 10, "{file}: only {read} metric names found");
        }
    }
}
