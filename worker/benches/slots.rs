//! Two tasks at once on a two-slot worker: where their engine work runs.
//!
//!     cargo bench -p ridgeline-worker --bench slots              # median of 5
//!     cargo bench -p ridgeline-worker --bench slots -- --quick   # CI: tiny sizes, 1 repeat
//!
//! A worker with `--slots S` on C cores gives each task C/S threads. Until
//! each task had a pool of its own ([`SlotPools`]), the slots shared
//! rayon's global pool, sized C/S: on two cores, one thread for both
//! slots, so the rayon work of both tasks (convolutions, pooling, large
//! gemms, batched evaluation) queued on that one thread. This bench sets
//! rayon's global pool as the worker binary sets it (`RAYON_NUM_THREADS` =
//! cores ÷ 2, whatever the environment says) and trains one epoch per pass,
//! in the same process, in three ways:
//!
//! * **alone**: one task on its own pool, the other slot idle;
//! * **shared**: two tasks at once, each on a blocking thread of its own,
//!   their rayon work on the global pool (the worker before `SlotPools`);
//! * **own pools**: two tasks at once, each inside its own `SlotPools` pool
//!   (the worker now).
//!
//! It prints the examples/s of all tasks together; ideally two tasks at once
//! do twice the work of one alone on half the cores, i.e. about as much as
//! one alone on all cores.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use ridgeline_common::RunSpec;
use ridgeline_worker::engine::data::Dataset;
use ridgeline_worker::engine::device::{self, SlotPools};
use ridgeline_worker::engine::model::ModelRegistry;
use ridgeline_worker::engine::train::{Flow, Trainer};

mod common;

const SLOTS: usize = 2;

/// One task: a trainer that trains one more epoch per call.
struct Job {
    trainer: Trainer,
    epoch: usize,
}

impl Job {
    fn new(spec: &RunSpec, data: &Arc<Dataset>) -> Self {
        let trainer = Trainer::new(spec, data.clone(), &Device::Cpu, &ModelRegistry::default())
            .expect("trainer");
        Self { trainer, epoch: 0 }
    }

    fn epoch(&mut self) {
        self.epoch += 1;
        self.trainer
            .run(self.epoch, &mut |_: &ridgeline_common::EpochReport| {
                Flow::Continue
            })
            .expect("train");
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Alone,
    Shared,
    OwnPools,
}

/// One epoch of each task at once (one task alone for `Alone`): seconds.
fn pass(way: Way, jobs: &mut [Job], pools: &SlotPools) -> f64 {
    let started = Instant::now();
    let count = if way == Way::Alone { 1 } else { jobs.len() };
    std::thread::scope(|s| {
        for job in jobs.iter_mut().take(count) {
            s.spawn(move || match way {
                Way::Shared => job.epoch(),
                Way::Alone | Way::OwnPools => pools.install(|| job.epoch()),
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let repeats = if quick { 1 } else { 5 };
    let cores = device::cores();
    let per_slot = device::threads_per_slot(SLOTS, cores);
    // As the worker binary sizes it for two slots (before any rayon use;
    // the process is single-threaded here).
    std::env::set_var("RAYON_NUM_THREADS", per_slot.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let pools = SlotPools::new(per_slot);
    println!(
        "{SLOTS} slots on {cores} cores ({per_slot} thread(s) each), one training epoch per task per pass, batch 64, median of {repeats}"
    );
    println!(
        "{:<16} {:>9} {:>14} {:>16} {:>16} {:>10}",
        "model", "examples", "alone/s", "shared pool/s", "own pools/s", "own/shared"
    );
    // MLP 784 and the CNN (the tiny MLP's ops are far too small to use a
    // pool at all).
    for case in common::cases().into_iter().take(2) {
        let (name, shape) = (case.name, case.shape);
        let n = if quick { case.quick_n } else { case.n };
        let data = Arc::new(common::random_dataset(&shape, n, &Device::Cpu));
        let spec = common::train_spec(case.model);
        let mut jobs: Vec<Job> = (0..SLOTS).map(|_| Job::new(&spec, &data)).collect();
        let mut times = [vec![], vec![], vec![]];
        // Warm-up, then the three ways in turn, so that a noisy neighbour
        // slows all three alike.
        for way in [Way::Alone, Way::Shared, Way::OwnPools] {
            pass(way, &mut jobs, &pools);
        }
        for _ in 0..repeats {
            for (i, way) in [Way::Alone, Way::Shared, Way::OwnPools]
                .into_iter()
                .enumerate()
            {
                times[i].push(pass(way, &mut jobs, &pools));
            }
        }
        let rate = |i: usize, tasks: usize| (n * tasks) as f64 / median(times[i].clone());
        let (alone, shared, own) = (rate(0, 1), rate(1, SLOTS), rate(2, SLOTS));
        println!(
            "{:<16} {:>9} {:>14.0} {:>16.0} {:>16.0} {:>9.2}×",
            name,
            n,
            alone,
            shared,
            own,
            own / shared
        );
    }
}
