//! SIGINT and SIGTERM as a graceful shutdown, the same for every binary: install the handlers
//! before anything starts (so a signal during start-up is handled, not fatal), then let the first
//! signal cancel the process's shutdown token.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The OS refused to register a handler.
    #[error("cannot install the {signal} handler: {source}")]
    Install {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Installed SIGINT and SIGTERM handlers.
#[derive(Debug)]
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers; from now on SIGINT and SIGTERM no longer end the process at once.
    /// Needs a tokio runtime.
    pub fn install() -> Result<Self, SignalError> {
        let install = |kind, name| signal(kind).map_err(|source| SignalError::Install { signal: name, source });
        Ok(Self {
            int: install(SignalKind::interrupt(), "SIGINT")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for the first SIGINT or SIGTERM and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }

    /// Cancels `shutdown` at the first signal (logged); returns when either happened.
    pub async fn cancel_on_signal(mut self, shutdown: CancellationToken) {
        tokio::select! {
            name = self.recv() => {
                tracing::info!(signal = name, "signal received; shutting down");
                shutdown.cancel();
            }
            () = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_shutdown_token_instead_of_killing_the_process() {
        let signals = Signals::install().unwrap();
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
        // SAFETY: sends a signal to this process, whose handler is installed above.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the signal cancels the token");
        watcher.await.unwrap();
    }
}
