//! Memory the embedded store holds per job it keeps, a full store against an empty one.
//!
//! Opens a store bounded at `max_jobs`, then stores streamed jobs (a running record, then the
//! result) at a pace its writer keeps up with, as a node's requests come: first exactly
//! `max_jobs` of them (a store just filled), then twice as many more (a full store that has been
//! evicting for a while, as a busy node's is). After each phase, once the writer has drained,
//! prints the heap bytes live (counted by this program's allocator) and the RSS growth over the
//! empty store, per job held. A job's id and index entry are 72 bytes by themselves; the rest is
//! the index's own structure.
//!
//! `cargo bench -p infernet-node --bench store_memory`; `BENCH_MAX_JOBS` sets the bound
//! (default 100 000, the node's default).

mod support;

use std::{
    alloc::{GlobalAlloc, Layout},
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicIsize, Ordering},
    time::Duration,
};

use infernet_node::store::JobStore;
use infernet_testkit::rss_kib;
use support::{open_store, streamed_records};

/// The node's allocator, counting the bytes it has handed out and not got back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: every call is passed on to mimalloc unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `alloc` are passed on.
        unsafe { MIMALLOC.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `dealloc` are passed on.
        unsafe { MIMALLOC.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `realloc` are passed on.
        unsafe { MIMALLOC.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes live and RSS in bytes, once the writer has had time to drain.
fn settled() -> (f64, f64) {
    std::thread::sleep(Duration::from_millis(1500));
    (
        LIVE.load(Ordering::Relaxed) as f64,
        rss_kib(std::process::id()) as f64 * 1024.0,
    )
}

fn main() {
    let max_jobs = std::env::var("BENCH_MAX_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000u64);
    let (runtime, _dir, store) = open_store(max_jobs);
    let owner = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let empty = settled();
    let report = |phase: &str, (heap, rss): (f64, f64)| {
        let held = max_jobs as f64;
        println!(
            "{phase}: {max_jobs} jobs held, heap {:.1} MB ({:.0} bytes per job), RSS +{:.1} MB ({:.0} bytes per job)",
            (heap - empty.0) / 1e6,
            (heap - empty.0) / held,
            (rss - empty.1) / 1e6,
            (rss - empty.1) / held,
        );
    };
    let store_jobs = |count: u64| {
        runtime.block_on(async {
            for i in 0..count {
                let (running, done) = streamed_records(&uuid::Uuid::new_v4().to_string());
                store.put_detached(owner, running);
                store.put_detached(owner, done);
                // About 30 000 jobs/s: the pace of a busy node, which the writer keeps up with.
                if i % 32 == 31 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    store_jobs(max_jobs);
    report("embedded store just filled      ", settled());
    store_jobs(2 * max_jobs);
    report("after 2x max_jobs more (evicting)", settled());
}
