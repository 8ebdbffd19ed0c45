//! What the embedded store costs a streamed job, against building and dropping the same records.
//!
//! A streamed job writes two records nobody waits for: running, then its result. Sixteen tasks on
//! a two-worker runtime (the node's shape) each store `JOBS / 16` such jobs, the store full
//! (`max_jobs` reached, so every job also evicts its share); the baseline builds the same records
//! and drops them. Prints the process CPU per job of both (workers and the store's writer thread)
//! and their difference: the store's own cost per streamed job. Then the same for a write someone
//! awaits (`put`, as `POST /api/jobs` does), which is synced.
//!
//! `cargo bench -p infernet-node --bench store`; `BENCH_JOBS` sets the number of streamed jobs
//! per phase (default 400 000).

mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use infernet_node::store::JobStore;
use infernet_testkit::cpu_time;
use support::{open_store, streamed_records as records};

// The node's allocator, so the figures are the node's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: usize = 16;
const MAX_JOBS: u64 = 100_000;

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs `per_task` jobs on each of `TASKS` tasks; returns the process CPU and wall time spent.
fn measure<F, Fut>(runtime: &tokio::runtime::Runtime, per_task: usize, job: F) -> (Duration, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let (cpu, wall) = (cpu_time(std::process::id()), Instant::now());
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let job = job.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        job().await;
                        if i % 8 == 0 {
                            // Let the other tasks in, as requests interleave on a node.
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    (cpu_time(std::process::id()) - cpu, wall.elapsed())
}

fn main() {
    let jobs = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000usize);
    let per_task = jobs / TASKS;
    let jobs = per_task * TASKS;
    let (runtime, _dir, store) = open_store(MAX_JOBS);
    let store: Arc<dyn JobStore> = Arc::new(store);
    let owner = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Fill the store first, so the measured jobs evict as a busy node's do.
    let fill = store.clone();
    measure(&runtime, MAX_JOBS as usize / TASKS + 1, move || {
        let (running, done) = records(&new_id());
        fill.put_detached(owner, running);
        fill.put_detached(owner, done);
        std::future::ready(())
    });

    let mut rows = Vec::new();
    for round in 0..3 {
        let (base_cpu, _) = measure(&runtime, per_task, || {
            let (running, done) = records(&new_id());
            drop(std::hint::black_box(running));
            drop(std::hint::black_box(done));
            std::future::ready(())
        });
        let streams = store.clone();
        let (cpu, wall) = measure(&runtime, per_task, move || {
            let (running, done) = records(&new_id());
            streams.put_detached(owner, running);
            streams.put_detached(owner, done);
            std::future::ready(())
        });
        // Let the writer drain what the last jobs queued before the next phase is timed.
        std::thread::sleep(Duration::from_millis(100));
        let per_job = |d: Duration| d.as_secs_f64() * 1e6 / jobs as f64;
        println!(
            "round {round}: streamed job {:.2} us CPU, baseline {:.2} us, store's own {:.2} us per job ({:.0} jobs/s)",
            per_job(cpu),
            per_job(base_cpu),
            per_job(cpu) - per_job(base_cpu),
            jobs as f64 / wall.as_secs_f64()
        );
        rows.push(per_job(cpu) - per_job(base_cpu));
    }
    rows.sort_by(f64::total_cmp);
    println!(
        "embedded store, streamed job (two detached writes, store full): {:.2} us CPU per job (median of 3 rounds, above the baseline)",
        rows[1]
    );

    // Awaited writes: each is appended and synced before `put` returns (group commit).
    let awaited = store.clone();
    let awaited_jobs = (jobs / 20).max(TASKS);
    let (cpu, wall) = measure(&runtime, awaited_jobs / TASKS, move || {
        let awaited = awaited.clone();
        async move {
            let (_, done) = records(&new_id());
            awaited.put(owner, &done).await.expect("put");
        }
    });
    println!(
        "embedded store, awaited put: {:.0} puts/s, {:.2} us CPU per put ({} puts by {TASKS} tasks)",
        awaited_jobs as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / awaited_jobs as f64,
        awaited_jobs
    );
}
