//! Named, supervised tasks: a critical task that fails or panics stops the process with a
//! non-zero exit and says which task died. Nothing runs as an anonymous `tokio::spawn` on a
//! server's path.

use std::{
    fmt::Display,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Why a critical task ended the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task returned an error.
    #[error("task {task} failed: {reason}")]
    Failed {
        /// The task's name.
        task: &'static str,
        /// The error it returned.
        reason: String,
    },
    /// The task panicked.
    #[error("task {task} panicked: {reason}")]
    Panicked {
        /// The task's name.
        task: &'static str,
        /// The panic, as the runtime reports it.
        reason: String,
    },
    /// The runtime cancelled the task before it finished (it is shutting down).
    #[error("task {task} was cancelled")]
    Cancelled {
        /// The task's name.
        task: &'static str,
    },
}

impl TaskError {
    /// The name of the task that failed.
    pub fn task(&self) -> &'static str {
        match self {
            Self::Failed { task, .. } | Self::Panicked { task, .. } | Self::Cancelled { task } => task,
        }
    }
}

/// Owns a process's long-running tasks and its shutdown signal.
#[derive(Clone, Default)]
pub struct TaskManager {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    failure: Arc<Mutex<Option<TaskError>>>,
}

impl TaskManager {
    /// A new manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the process starts shutting down (signal or failed task).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` under `name`; if it returns an error or panics, shutdown starts and
    /// [`Self::failure`] names it.
    pub fn spawn_critical<F, E>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let failure = self.failure.clone();
        let handle = tokio::spawn(task);
        self.tracker.spawn(async move {
            let error = match handle.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => TaskError::Failed {
                    task: name,
                    reason: e.to_string(),
                },
                Err(e) if e.is_panic() => TaskError::Panicked {
                    task: name,
                    reason: e.to_string(),
                },
                Err(_) => TaskError::Cancelled { task: name },
            };
            if shutdown.is_cancelled() {
                tracing::debug!(task = name, %error, "task ended during shutdown");
                return;
            }
            tracing::error!(task = name, %error, "critical task failed; shutting down");
            failure
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get_or_insert(error);
            shutdown.cancel();
        });
    }

    /// Why the process stopped, when a critical task failed (the first one to fail).
    pub fn failure(&self) -> Option<TaskError> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
    async fn a_failing_critical_task_stops_everything_and_is_named() {
        let tasks = TaskManager::new();
        tasks.spawn_critical("listener", async { Err("rpc gone") });
        tasks.shutdown_token().cancelled().await;
        tasks.wait().await;
        let failure = tasks.failure().unwrap();
        assert_eq!(failure.task(), "listener");
        assert_eq!(failure.to_string(), "task listener failed: rpc gone");
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported() {
        let tasks = TaskManager::new();
        tasks.spawn_critical::<_, String>("processor", async { panic!("boom") });
        tasks.shutdown_token().cancelled().await;
        tasks.wait().await;
        assert!(matches!(
            tasks.failure(),
            Some(TaskError::Panicked { task: "processor", .. })
        ));
    }

    #[tokio::test]
    async fn a_task_that_fails_during_shutdown_is_not_a_failure() {
        let tasks = TaskManager::new();
        let token = tasks.shutdown_token();
        tasks.shutdown_token().cancel();
        tasks.spawn_critical("server", async move {
            token.cancelled().await;
            Err("stopped")
        });
        tasks.wait().await;
        assert_eq!(tasks.failure(), None);
    }
}
