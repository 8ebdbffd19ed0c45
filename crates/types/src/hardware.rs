//! What a node's host offers, as `/info` advertises it under `hardware` and a router filters jobs'
//! `requirements` on.

use serde::{Deserialize, Serialize};

/// The host's fixed resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Logical CPUs.
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// GPUs the node sees (none without an NVIDIA driver).
    #[serde(default)]
    pub gpus: Vec<GpuModel>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuModel {
    /// Model name as the driver reports it (`NVIDIA A100-SXM4-80GB`).
    pub model: String,
    /// Its memory, MiB.
    pub memory_mb: u64,
}
