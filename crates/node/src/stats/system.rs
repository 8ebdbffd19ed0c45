//! CPU, memory, disk and GPU figures of the host, for `/info` and the heartbeat. GPUs are read
//! through NVML, loaded at run time: a host without an NVIDIA driver simply has no GPUs.

use std::sync::Mutex;

use serde::Serialize;

/// One GPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gpu {
    /// Model name.
    pub name: String,
    /// Busy percentage over the last sample period.
    pub utilization_percent: u32,
    /// Memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory in use in bytes.
    pub memory_used_bytes: u64,
    /// Die temperature in °C, when the driver reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
}

/// A sample of the host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SystemSample {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU use since the previous sample, percent of all CPUs.
    pub cpu_percent: f32,
    /// Memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory in use in bytes.
    pub memory_used_bytes: u64,
    /// Size of the filesystem holding the working directory, in bytes.
    pub disk_total_bytes: u64,
    /// Free space there, in bytes.
    pub disk_available_bytes: u64,
    /// GPUs (empty without NVML).
    pub gpus: Vec<Gpu>,
    /// Why no GPU is listed, when NVML could not be loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_note: Option<String>,
    /// Kernel version.
    pub kernel: String,
}

/// Why no GPU is listed (shown as the sample's `gpu_note`).
#[derive(Debug, thiserror::Error)]
enum GpuError {
    /// NVML could not be loaded: no NVIDIA driver on this host, or not a working one.
    #[error("no NVIDIA driver (NVML): {0}")]
    NoNvml(#[from] nvml_wrapper::error::NvmlError),
}

struct Sampler {
    /// `None` where sysinfo cannot read this platform.
    system: Option<sysinfo::System>,
    nvml: Result<nvml_wrapper::Nvml, GpuError>,
}

/// Samples the host; keeps the state CPU usage needs between samples.
pub struct SystemStats {
    sampler: Mutex<Sampler>,
    hardware: std::sync::OnceLock<infernet_types::Hardware>,
}

impl Default for SystemStats {
    fn default() -> Self {
        let nvml = nvml_wrapper::Nvml::init().map_err(GpuError::from);
        if let Err(note) = &nvml {
            tracing::debug!(%note, "GPU statistics unavailable");
        }
        Self {
            sampler: Mutex::new(Sampler {
                system: sysinfo::System::new().ok(),
                nvml,
            }),
            hardware: std::sync::OnceLock::new(),
        }
    }
}

impl SystemStats {
    /// A new sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The host's fixed resources, read once (blocking the first time).
    pub fn hardware(&self) -> &infernet_types::Hardware {
        self.hardware.get_or_init(|| {
            let sample = self.sample();
            infernet_types::Hardware {
                cpus: sample.cpus as f64,
                memory_mb: sample.memory_total_bytes >> 20,
                gpus: sample
                    .gpus
                    .iter()
                    .map(|g| infernet_types::GpuModel {
                        model: g.name.clone(),
                        memory_mb: g.memory_total_bytes >> 20,
                    })
                    .collect(),
            }
        })
    }

    /// Takes a sample (blocking: call from `spawn_blocking`).
    pub fn sample(&self) -> SystemSample {
        let mut s = self.sampler.lock().expect("system sampler poisoned");
        let (cpus, cpu_percent, memory_total_bytes, memory_used_bytes) = match s.system.as_mut() {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory();
                (
                    system.cpus().len(),
                    system.global_cpu_usage(),
                    system.total_memory(),
                    system.used_memory(),
                )
            }
            None => (0, 0.0, 0, 0),
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let (disk_total_bytes, disk_available_bytes) = sysinfo::Disks::new_with_refreshed_list()
            .ok()
            .and_then(|disks| {
                disks
                    .iter()
                    .filter(|d| cwd.starts_with(d.mount_point()))
                    .max_by_key(|d| d.mount_point().as_os_str().len())
                    .map(|d| (d.total_space(), d.available_space()))
            })
            .unwrap_or((0, 0));
        let (gpus, gpu_note) = match &s.nvml {
            Ok(nvml) => (read_gpus(nvml), None),
            Err(note) => (Vec::new(), Some(note.to_string())),
        };
        SystemSample {
            cpus,
            cpu_percent,
            memory_total_bytes,
            memory_used_bytes,
            disk_total_bytes,
            disk_available_bytes,
            gpus,
            gpu_note,
            kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        }
    }
}

fn read_gpus(nvml: &nvml_wrapper::Nvml) -> Vec<Gpu> {
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let device = nvml.device_by_index(i).ok()?;
            let memory = device.memory_info().ok();
            Some(Gpu {
                name: device.name().unwrap_or_else(|_| "unknown".into()),
                utilization_percent: device.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                memory_total_bytes: memory.as_ref().map_or(0, |m| m.total),
                memory_used_bytes: memory.as_ref().map_or(0, |m| m.used),
                temperature_celsius: device
                    .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                    .ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_describes_this_host_and_no_gpu_is_not_an_error() {
        let stats = SystemStats::new();
        let sample = stats.sample();
        assert!(sample.cpus >= 1);
        assert!(sample.memory_total_bytes > 0 && sample.memory_used_bytes <= sample.memory_total_bytes);
        assert!(sample.disk_total_bytes >= sample.disk_available_bytes);
        if sample.gpus.is_empty() {
            assert!(sample.gpu_note.is_some(), "an empty GPU list says why");
        }
    }
}
