//! The `process` runtime: runs a container's service as a local program, for hosts without Docker
//! and for the quickstart. The program gets the container's `env`, plus `PORT` (its port) and
//! `HOST=127.0.0.1`, so it is reachable from this host only.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::{oneshot, watch},
};

use super::{ContainerError, ContainerRuntime};
use crate::config::{ContainerSpec, Runtime};

/// Lines of output kept per service for error reports.
const LOG_LINES: usize = 40;

type Logs = Arc<Mutex<VecDeque<String>>>;

struct Proc {
    kill: Option<oneshot::Sender<()>>,
    exit: watch::Receiver<Option<String>>,
    logs: Logs,
}

/// Runs services as child processes of the node.
#[derive(Default)]
pub struct ProcessRuntime {
    procs: Mutex<HashMap<String, Proc>>,
}

/// Finds `program`: a path as given, else next to the running `infernet-node`, else in `PATH`.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    let as_given = Path::new(program);
    if program.contains('/') {
        return as_given.is_file().then(|| as_given.to_path_buf());
    }
    let beside_node = std::env::current_exe().ok().and_then(|exe| {
        // Tests run from target/*/deps; the service binaries sit one level up.
        let dir = exe.parent()?.to_path_buf();
        [dir.join(program), dir.parent()?.join(program)]
            .into_iter()
            .find(|p| p.is_file())
    });
    beside_node.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    })
}

/// Docker-style string form of an `env` value (Python's `str()`, as Ritual's node passes them).
pub(crate) fn env_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn capture(id: String, stream: impl AsyncRead + Unpin + Send + 'static, logs: Logs) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(container = %id, "{line}");
            let mut logs = logs.lock().expect("log buffer poisoned");
            if logs.len() == LOG_LINES {
                logs.pop_front();
            }
            logs.push_back(line);
        }
    });
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    async fn start(&self, spec: &ContainerSpec) -> Result<(), ContainerError> {
        let Runtime::Process(process) = &spec.runtime else {
            return Err(ContainerError::Start {
                id: spec.id.clone(),
                message: "not a process container".into(),
            });
        };
        let program = resolve_program(&process.program).ok_or_else(|| ContainerError::Start {
            id: spec.id.clone(),
            message: format!(
                "program \"{}\" not found (as a path, next to infernet-node, or in PATH); build it first (cargo build --release)",
                process.program
            ),
        })?;
        let mut cmd = Command::new(&program);
        cmd.args(&process.args)
            .envs(spec.raw.env.iter().map(|(k, v)| (k.clone(), env_value(v))))
            .env("PORT", spec.port.to_string())
            .env("HOST", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // If the node dies without stopping its services (kill -9), the kernel stops them too,
        // so a restarted node does not find its ports taken by orphans.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ContainerError::Start {
            id: spec.id.clone(),
            message: format!("cannot run {}: {e}", program.display()),
        })?;
        let logs: Logs = Arc::default();
        if let Some(out) = child.stdout.take() {
            capture(spec.id.clone(), out, logs.clone());
        }
        if let Some(err) = child.stderr.take() {
            capture(spec.id.clone(), err, logs.clone());
        }
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let reason = match status {
                Ok(s) => format!("process exited ({s})"),
                Err(e) => format!("process lost: {e}"),
            };
            let _ = exit_tx.send(Some(reason));
        });
        let old = self.procs.lock().expect("process table poisoned").insert(
            spec.id.clone(),
            Proc {
                kill: Some(kill_tx),
                exit: exit_rx,
                logs,
            },
        );
        if let Some(mut old) = old
            && let Some(kill) = old.kill.take()
        {
            let _ = kill.send(());
        }
        Ok(())
    }

    async fn wait_exit(&self, id: &str) -> String {
        let exit = self
            .procs
            .lock()
            .expect("process table poisoned")
            .get(id)
            .map(|p| p.exit.clone());
        let Some(mut exit) = exit else {
            return std::future::pending().await;
        };
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "process monitor stopped".into(),
        }
    }

    async fn recent_logs(&self, id: &str) -> String {
        let procs = self.procs.lock().expect("process table poisoned");
        procs
            .get(id)
            .map(|p| {
                p.logs
                    .lock()
                    .expect("log buffer poisoned")
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    async fn stop(&self, id: &str) {
        let (kill, exit) = {
            let mut procs = self.procs.lock().expect("process table poisoned");
            match procs.get_mut(id) {
                Some(p) => (p.kill.take(), p.exit.clone()),
                None => return,
            }
        };
        if let Some(kill) = kill {
            let _ = kill.send(());
            let mut exit = exit;
            let _ = exit.wait_for(Option::is_some).await;
        }
    }

    async fn remove(&self, id: &str) {
        self.stop(id).await;
        self.procs.lock().expect("process table poisoned").remove(id);
    }
}
