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

/// The CPU cores this process may use (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The threads each of a worker's `slots` gets on a machine with `cores`
/// cores: an equal share, at least one.
pub fn threads_per_slot(slots: usize, cores: usize) -> usize {
    (cores / slots.max(1)).max(1)
}

/// Sizes candle's CPU thread pools for tasks that run on `threads` threads
/// each. Must run before the first tensor operation (rayon reads
/// `RAYON_NUM_THREADS` once) and while the process is single-threaded.
/// Variables already set by the user win.
///
/// candle uses rayon (`RAYON_NUM_THREADS`) for matmul and convolutions and a
/// second pool (`CANDLE_NUM_THREADS`) for large elementwise ops; left unset
/// both are sized to every core, which oversubscribes a shared machine and
/// was measured 2.2× slower here. Elementwise ops at our sizes are fastest
/// on one thread. A worker runs each task's engine work on a pool of its
/// own ([`SlotPools`]); rayon's global pool is for work outside a task.
pub fn configure_threads(threads: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// One rayon pool per running task, each of the same size.
///
/// Tasks that shared rayon's global pool queued behind each other: a
/// two-slot worker on two cores had a one-thread global pool, and both
/// slots' convolutions ran on that one thread, one after the other. Here a
/// task's engine work runs inside a pool that no other task uses while it
/// runs, so slots never wait for each other, and every parallel op of the
/// engine (gemm, convolutions, batched evaluation) sees the task's own
/// thread count. Pools are made on first use and kept for the next task:
/// a worker holds at most as many as it ran tasks at once.
pub struct SlotPools {
    threads: usize,
    free: std::sync::Mutex<Vec<rayon::ThreadPool>>,
    made: std::sync::atomic::AtomicUsize,
}

impl SlotPools {
    /// Pools of `threads` threads each (at least one).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            free: std::sync::Mutex::new(Vec::new()),
            made: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Runs `work` on a pool no other caller uses until it returns (or
    /// panics: the panic goes on to the caller, the pool back to the free
    /// list). The calling thread waits.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let taken = self.lock().pop();
        let pool = match taken {
            Some(pool) => pool,
            None => match self.build() {
                Ok(pool) => pool,
                Err(e) => {
                    // Out of threads: the task still runs, on this thread
                    // (rayon's ops then use the global pool).
                    tracing::warn!(error = %e, "cannot start a thread pool for this task; it runs on the global pool");
                    return work();
                }
            },
        };
        // The pool goes back to the free list whether or not `work` panics.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(work)));
        self.lock().push(pool);
        match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rayon::ThreadPool>> {
        // A panic never happens while the list is held; a poisoned lock
        // still holds a valid list.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn build(&self) -> std::result::Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(move |i| format!("ridgeline-slot{n}-{i}"))
            .build()
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

    #[test]
    fn shares_of_the_cores() {
        assert_eq!(threads_per_slot(1, 2), 2);
        assert_eq!(threads_per_slot(2, 2), 1);
        assert_eq!(threads_per_slot(3, 2), 1);
        assert_eq!(threads_per_slot(0, 8), 8);
        assert_eq!(threads_per_slot(3, 8), 2);
    }

    /// Two tasks on one-thread pools run at the same time: each waits
    /// inside its pool for the other to arrive. On one shared one-thread
    /// pool (what slots had before) the second would queue behind the
    /// first, and both would give up waiting.
    #[test]
    fn each_task_runs_on_a_pool_of_its_own() {
        use std::sync::mpsc;
        use std::time::Duration;
        let pools = std::sync::Arc::new(SlotPools::new(1));
        let (a_tx, a_rx) = mpsc::channel();
        let (b_tx, b_rx) = mpsc::channel();
        let task =
            |pools: std::sync::Arc<SlotPools>, tell: mpsc::Sender<()>, wait: mpsc::Receiver<()>| {
                std::thread::spawn(move || {
                    pools.install(move || {
                        assert_eq!(rayon::current_num_threads(), 1);
                        // Rayon's ops run on this task's pool.
                        let name = std::thread::current().name().map(str::to_string);
                        let _ = tell.send(());
                        (wait.recv_timeout(Duration::from_secs(10)).is_ok(), name)
                    })
                })
            };
        let a = task(pools.clone(), a_tx, b_rx);
        let b = task(pools.clone(), b_tx, a_rx);
        let (a_met, a_thread) = a.join().unwrap();
        let (b_met, b_thread) = b.join().unwrap();
        assert!(a_met && b_met, "the two tasks did not run at the same time");
        assert_ne!(a_thread, b_thread);
        assert!(a_thread.unwrap().starts_with("ridgeline-slot"));
        // Both pools are kept for the next tasks: no third is made.
        pools.install(|| ());
        pools.install(|| ());
        assert_eq!(pools.made.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn a_task_s_pool_has_its_threads_and_survives_a_panic() {
        let pools = SlotPools::new(3);
        assert_eq!(pools.install(rayon::current_num_threads), 3);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pools.install(|| panic!("shapes disagree"))
        }));
        assert!(panicked.is_err());
        assert_eq!(pools.install(rayon::current_num_threads), 3);
        assert_eq!(pools.made.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
