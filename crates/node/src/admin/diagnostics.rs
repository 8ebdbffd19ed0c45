//! What `GET /admin/status` tells a dashboard of the node's host, so an operator can see why a
//! container or a GPU does not work without a shell: whether the Docker engine answers (and has
//! the NVIDIA runtime), the GPUs NVML sees on the host and whether containers can get them, the
//! node's clock (for the dashboard to show skew) and the operator keys the node trusts.

use serde_json::{Value, json};

use crate::{
    containers::docker::{EngineStatus, engine_status},
    server::AppState,
};

/// Whether containers can be given GPUs, and if not why (in the order an operator fixes it).
fn gpus_for_containers(host_gpus: usize, engine: &EngineStatus) -> Result<(), &'static str> {
    if host_gpus == 0 {
        Err("no GPU on the host")
    } else if !engine.reachable {
        Err("the Docker engine does not answer")
    } else if !engine.nvidia_runtime {
        Err("the Docker engine has no nvidia runtime: install the NVIDIA Container Toolkit and restart dockerd")
    } else {
        Ok(())
    }
}

/// The `diagnostics` of `GET /admin/status`.
pub(super) async fn diagnostics(state: &AppState) -> Value {
    let sampler = state.system.clone();
    let (engine, sample) = tokio::join!(engine_status(), tokio::task::spawn_blocking(move || sampler.sample()));
    let (gpus, note) = match sample {
        Ok(sample) => (sample.gpus, sample.gpu_note),
        Err(e) => (Vec::new(), Some(format!("the host could not be sampled: {e}"))),
    };
    let for_containers = gpus_for_containers(gpus.len(), &engine);
    let now = jiff::Timestamp::now();
    json!({
        "docker": engine,
        "gpus": {
            "host": gpus,
            "note": note,
            "containers": {"visible": for_containers.is_ok(), "reason": for_containers.err()},
        },
        "clock": {"time": now.to_string(), "unix_ms": now.as_millisecond()},
        "operators": state.admin.operators(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(reachable: bool, nvidia_runtime: bool) -> EngineStatus {
        EngineStatus {
            address: "unix:///var/run/docker.sock".into(),
            reachable,
            version: None,
            nvidia_runtime,
            error: None,
        }
    }

    #[test]
    fn containers_see_gpus_only_with_gpus_an_engine_and_its_nvidia_runtime() {
        assert_eq!(gpus_for_containers(0, &engine(true, true)), Err("no GPU on the host"));
        assert!(
            gpus_for_containers(1, &engine(false, false))
                .unwrap_err()
                .contains("does not answer")
        );
        assert!(
            gpus_for_containers(1, &engine(true, false))
                .unwrap_err()
                .contains("NVIDIA Container Toolkit")
        );
        assert_eq!(gpus_for_containers(2, &engine(true, true)), Ok(()));
    }
}
