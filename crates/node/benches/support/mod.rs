//! What the store benches share: an embedded store on a runtime of the node's shape, and the
//! records a streamed job writes.

use std::time::Duration;

use infernet_node::store::{EmbeddedStore, Lifetimes};
use infernet_types::{ContainerResult, JobResult};
use serde_json::json;

/// A two-worker runtime (the node's shape) and an empty embedded store bounded at `max_jobs`
/// in a temporary directory (removed when the returned guard drops). Results are kept until
/// evicted, so only the bound removes jobs.
pub(crate) fn open_store(max_jobs: u64) -> (tokio::runtime::Runtime, tempfile::TempDir, EmbeddedStore) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let lifetimes = Lifetimes {
        pending: Duration::from_secs(900),
        result: None,
    };
    let store = runtime
        .block_on(EmbeddedStore::open(&dir.path().join("jobs.db"), lifetimes, max_jobs))
        .expect("store");
    (runtime, dir, store)
}

/// A streamed job's two records: running, then its result (hello-world's answer).
pub(crate) fn streamed_records(id: &str) -> (JobResult, JobResult) {
    let output = ContainerResult::Output {
        container: "hello-world".into(),
        output: json!({"output": "{\"output\": \"hello, world!\"}\n"}),
    };
    (JobResult::running(id), JobResult::finished(id, vec![output]))
}
