//! Choosing the compute device and sizing candle's thread pools.

use candle_core::Device;

use crate::engine::error::{EngineError, Result};

/// A device as users write it: `cpu`, `cuda:N` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// CUDA device 0 when this build has CUDA and a GPU answers, else CPU.
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    EngineError::Device(format!(
                        "`{other}` is not a device: use cpu, cuda:N or auto"
                    ))
                }),
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Opens the device. `cuda:N` in a build without the `cuda` feature is
/// refused (candle would otherwise silently run on the CPU).
pub fn open(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !CUDA_BUILD {
                return Err(EngineError::Device(format!(
                    "cuda:{n} was asked for, but this binary was built without the `cuda` feature \
                     (rebuild with `cargo build --release --features cuda`)"
                )));
            }
            Device::new_cuda(n)
                .map_err(|e| EngineError::Device(format!("cannot open cuda:{n}: {e}")))
        }
        DeviceChoice::Auto => {
            if CUDA_BUILD {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// How the device is named in reports and to the coordinator.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Sizes candle's CPU thread pools for a worker running `slots` tasks at once
/// on `cores` cores. Must run before the first tensor operation (rayon reads
/// `RAYON_NUM_THREADS` once). Variables already set by the user win.
///
/// candle uses rayon (`RAYON_NUM_THREADS`) for matmul and convolutions and a
/// second pool (`CANDLE_NUM_THREADS`) for large elementwise ops; left unset
/// both are sized to every core, which oversubscribes a shared machine and
/// was measured 2.2× slower here. Elementwise ops at our sizes are fastest
/// on one thread.
pub fn configure_threads(slots: usize, cores: usize) {
    let per_task = (cores / slots.max(1)).max(1);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", per_task.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_refuses_cuda_without_the_feature() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        let err = "gpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("`gpu`"), "{err}");
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        if !CUDA_BUILD {
            let err = open(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(err.contains("without the `cuda` feature"), "{err}");
            assert!(open(DeviceChoice::Auto).unwrap().is_cpu());
        }
    }
}
