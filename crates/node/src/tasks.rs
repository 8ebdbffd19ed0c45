//! Named, supervised tasks: a critical task that fails or panics stops the node with a non-zero
//! exit and says which task died. Nothing runs as an anonymous `tokio::spawn` on the node's path.

use std::{future::Future, sync::Mutex};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Owns the node's long-running tasks and its shutdown signal.
#[derive(Clone, Default)]
pub struct TaskManager {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    failure: std::sync::Arc<Mutex<Option<String>>>,
}

impl TaskManager {
    /// A new manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the node starts shutting down (signal or failed task).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` under `name`; if it returns an error or panics, the node shuts down and
    /// [`Self::failure`] names it.
    pub fn spawn_critical<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let failure = self.failure.clone();
        let handle = tokio::spawn(task);
        self.tracker.spawn(async move {
            let reason = match handle.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => format!("panicked: {e}"),
                Err(e) => format!("was cancelled: {e}"),
            };
            if shutdown.is_cancelled() {
                tracing::debug!(task = name, %reason, "task ended during shutdown");
                return;
            }
            tracing::error!(task = name, %reason, "critical task failed; shutting down");
            failure
                .lock()
                .expect("failure slot poisoned")
                .get_or_insert(format!("task {name} {reason}"));
            shutdown.cancel();
        });
    }

    /// Why the node stopped, when a critical task failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure slot poisoned").clone()
    }

    /// Waits for every task to finish (after shutdown was requested).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_critical_task_stops_the_node_and_is_named() {
        let tasks = TaskManager::new();
        tasks.spawn_critical("listener", async { Err("rpc gone".to_string()) });
        tasks.shutdown_token().cancelled().await;
        tasks.wait().await;
        assert_eq!(tasks.failure().as_deref(), Some("task listener rpc gone"));
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported() {
        let tasks = TaskManager::new();
        tasks.spawn_critical("processor", async { panic!("boom") });
        tasks.shutdown_token().cancelled().await;
        tasks.wait().await;
        assert!(tasks.failure().unwrap().starts_with("task processor panicked"));
    }
}
