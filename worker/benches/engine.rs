//! Engine throughput: training and evaluation samples/s for the models of
//! `bench/engine_pytorch.py`, batch 64, and the line-search evaluation path.
//!
//!     cargo bench -p ridgeline-worker --bench engine                 # candle only
//!     cargo bench -p ridgeline-worker --bench engine -- --pytorch    # side by side
//!
//! Options: `--repeats N` (default 5), `--quick` (tiny sizes, 1 repeat),
//! `--pytorch` (also runs the PyTorch script with the same thread count and
//! prints its figures and the ratio candle/PyTorch beside each row),
//! `--autograd` (also times training through candle's autograd, the path
//! the hand-written step replaces, as a `train_autograd` row right after
//! the `train` row: before and after in the same window), `--train-only`
//! (skips evaluation and line search, e.g. to profile training alone),
//! `--model NAME` (only that model), `--best` (the fastest pass instead of
//! the median: on a loaded machine, closer to what it does unloaded).
//! Threads: `RAYON_NUM_THREADS` (default here: 2, from `.cargo/config.toml`).
//!
//! Each figure is the median of the timed passes after one warm-up pass; a
//! training pass is exactly what the worker's training loop does for one
//! epoch (shuffle, gather, forward, loss, NaN check, backward, SGD step with
//! momentum 0.9), an `eval` pass is forward-only in batches of 1024, an
//! `evaluate` pass is the worker's evaluation (loss and accuracy, as in its
//! reports) over the same batches; PyTorch's script times the same three.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use ridgeline_common::{MetricKind, Task};
use ridgeline_worker::engine::landscape::{self, DirectionOptions, EvalOptions};
use ridgeline_worker::engine::model::ModelRegistry;
use ridgeline_worker::engine::train::{self, Flow, Trainer};

mod common;

const EVAL_BATCH: usize = 1024;

static BEST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The median (or, with `--best`, the largest) of the rates.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if BEST.load(std::sync::atomic::Ordering::Relaxed) {
        return v[v.len() - 1];
    }
    v[v.len() / 2]
}

fn timed(repeats: usize, mut pass: impl FnMut() -> usize) -> f64 {
    pass();
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                let n = pass();
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let with_pytorch = args.iter().any(|a| a == "--pytorch");
    let with_autograd = args.iter().any(|a| a == "--autograd");
    let train_only = args.iter().any(|a| a == "--train-only");
    if args.iter().any(|a| a == "--best") {
        BEST.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let only_model = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let repeats = args
        .iter()
        .position(|a| a == "--repeats")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let threads: usize = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let dev = Device::Cpu;
    let reg = ModelRegistry::default();

    let torch = if with_pytorch {
        pytorch(threads, repeats, quick)
    } else {
        HashMap::new()
    };

    println!("candle 0.11 on CPU, RAYON_NUM_THREADS={threads}, float32, median of {repeats}; train batch 64, eval batch {EVAL_BATCH}");
    println!(
        "{:<16} {:<15} {:>9} {:>14} {:>14} {:>8}",
        "model", "phase", "examples", "candle/s", "pytorch/s", "ratio"
    );
    for case in common::cases() {
        if only_model.as_ref().is_some_and(|m| m != case.name) {
            continue;
        }
        let n = if quick { case.quick_n } else { case.n };
        let data = Arc::new(common::random_dataset(&case.shape, n, &dev));
        let spec = common::train_spec(case.model.clone());
        let train_pass = |t: &mut Trainer| {
            let mut epoch = 0;
            timed(repeats, || {
                epoch += 1;
                t.run(epoch, &mut |_: &ridgeline_common::EpochReport| {
                    Flow::Continue
                })
                .expect("train");
                n
            })
        };
        let autograd = with_autograd.then(|| {
            let mut t = Trainer::new(&spec, data.clone(), &dev, &reg).expect("trainer");
            t.force_autograd();
            train_pass(&mut t)
        });
        let mut t = Trainer::new(&spec, data.clone(), &dev, &reg).expect("trainer");
        let train = train_pass(&mut t);
        let net = t.network();
        if train_only {
            for (phase, rate) in [("train", Some(train)), ("train_autograd", autograd)] {
                if let Some(rate) = rate {
                    println!("{:<16} {:<15} {:>9} {:>14.0}", case.name, phase, n, rate);
                }
            }
            continue;
        }
        let eval = timed(repeats, || {
            let mut s = 0;
            while s < n {
                let len = EVAL_BATCH.min(n - s);
                net.forward(&data.train.x.narrow(0, s, len).expect("narrow"))
                    .expect("forward");
                s += len;
            }
            n
        });
        // What the worker's evaluation does: loss and accuracy over all n.
        let evaluate = timed(repeats, || {
            train::evaluate(
                net,
                &data.train,
                Task::Classification,
                MetricKind::Accuracy,
                EVAL_BATCH,
            )
            .expect("evaluate");
            n
        });
        // Line search: 9 points along a random direction, train loss/metric on
        // all n examples per point (heldout is one example here).
        let theta0 = net.weights().expect("weights");
        let d = landscape::random_direction(&theta0, net.roles(), 1, DirectionOptions::default())
            .expect("dir");
        let alphas = landscape::linspace(-1.0, 1.0, 9);
        let opts = EvalOptions {
            train_eval_size: n,
            eval_batch: EVAL_BATCH,
        };
        let line = timed(repeats, || {
            landscape::line_search(net, &theta0, &d, &alphas, &data, opts, |_| true)
                .expect("line search");
            n * alphas.len()
        });
        let rows = [
            ("train", Some(train)),
            ("train_autograd", autograd),
            ("eval", Some(eval)),
            ("evaluate", Some(evaluate)),
            ("line_search", Some(line)),
        ];
        for (phase, rate) in rows {
            let Some(rate) = rate else { continue };
            let reference = torch
                .get(&(
                    case.name.to_string(),
                    phase.trim_end_matches("_autograd").to_string(),
                ))
                .copied();
            println!(
                "{:<16} {:<15} {:>9} {:>14.0} {:>14} {:>8}",
                case.name,
                phase,
                n,
                rate,
                reference.map_or("-".into(), |r| format!("{r:.0}")),
                reference.map_or("-".into(), |r| format!("{:.2}×", rate / r)),
            );
        }
    }
    if with_pytorch && torch.is_empty() {
        println!("(PyTorch figures unavailable: see the message above)");
    }
}

/// Runs `bench/engine_pytorch.py --json` and returns samples/s by (model,
/// phase). The line-search row has no PyTorch equivalent in the script; it
/// is compared with PyTorch's eval figure (a line search is n·points
/// forward passes there).
fn pytorch(threads: usize, repeats: usize, quick: bool) -> HashMap<(String, String), f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/engine_pytorch.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg("--json").args([
        "--threads",
        &threads.to_string(),
        "--repeats",
        &repeats.to_string(),
    ]);
    if quick {
        cmd.arg("--quick");
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "PyTorch reference failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return HashMap::new();
        }
        Err(e) => {
            eprintln!("cannot run python3 for the PyTorch reference: {e}");
            return HashMap::new();
        }
    };
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(model), Some(phase), Some(rate)) = (
            v.get("model").and_then(|x| x.as_str()),
            v.get("phase").and_then(|x| x.as_str()),
            v.get("samples_per_s").and_then(|x| x.as_f64()),
        ) else {
            continue;
        };
        m.insert((model.to_string(), phase.to_string()), rate);
        if phase == "eval" {
            m.insert((model.to_string(), "line_search".to_string()), rate);
        }
    }
    m
}
