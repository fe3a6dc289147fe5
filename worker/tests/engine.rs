//! The training engine end to end on the built-in datasets: learning,
//! divergence, determinism, exact checkpoint resume, line searches.

use std::sync::Arc;

use candle_core::Device;
use ridgeline_common::{EpochReport, RunOutcome, RunSpec};
use ridgeline_worker::engine::data::{self, Dataset};
use ridgeline_worker::engine::landscape::{self, DirectionOptions, EvalOptions};
use ridgeline_worker::engine::model::{ModelRegistry, ParamRole};
use ridgeline_worker::engine::train::{self, Checkpoint, Collect, Flow, Observer, Trainer};

fn spec(toml_text: &str) -> RunSpec {
    let s: RunSpec = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    s.validate().unwrap();
    s
}

fn load(s: &RunSpec) -> Arc<Dataset> {
    Arc::new(data::load(&s.data, &Device::Cpu).unwrap())
}

fn run(s: &RunSpec) -> (Vec<EpochReport>, RunOutcome, Trainer) {
    let mut t = Trainer::new(s, load(s), &Device::Cpu, &ModelRegistry::default()).unwrap();
    let mut c = Collect::default();
    let outcome = t.run(s.epochs, &mut c).unwrap();
    (c.0, outcome, t)
}

const TABULAR_MLP: &str = r#"
epochs = 4
batch_size = 32
seed = 1
[data.source]
kind = "tabular"
n_train = 1200
n_heldout = 400
seed = 7
[model]
kind = "mlp"
hidden = [64]
[optimizer]
kind = "sgd"
[schedule]
lr = { kind = "constant", lr = 0.05 }
momentum = { kind = "constant", value = 0.9 }
"#;

const NEURONS_MLP: &str = r#"
epochs = 4
batch_size = 32
[data]
standardize_targets = true
[data.source]
kind = "neurons"
n_train = 800
n_heldout = 200
image_size = 8
[model]
kind = "mlp"
hidden = [64]
[optimizer]
kind = "adam"
[schedule]
lr = { kind = "constant", lr = 0.003 }
"#;

const GLYPHS_CNN: &str = r#"
epochs = 3
batch_size = 32
seed = 2
[data.source]
kind = "glyphs"
n_train = 1000
n_heldout = 300
seed = 11
[model]
kind = "cnn"
channels = [8, 16]
dense = []
[optimizer]
kind = "sgd"
[schedule]
lr = { kind = "constant", lr = 0.05 }
momentum = { kind = "constant", value = 0.9 }
"#;

#[test]
fn mlp_on_tabular_learns_well_above_chance() {
    let s = spec(TABULAR_MLP);
    let (reports, outcome, t) = run(&s);
    assert_eq!(outcome, RunOutcome::Completed { epoch: 4 });
    assert_eq!(reports.len(), 5, "epoch 0 plus one report per epoch");
    assert_eq!(
        reports.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let chance = load(&s).chance_accuracy().unwrap();
    let last = reports.last().unwrap();
    eprintln!(
        "tabular MLP: chance {chance:.3}, heldout accuracy {:.3}",
        last.heldout.metric
    );
    assert!(
        last.heldout.metric > chance + 0.3,
        "heldout {} vs chance {chance}",
        last.heldout.metric
    );
    assert!(last.heldout.loss < reports[0].heldout.loss);
    assert_eq!(last.step, 4 * t.batches_per_epoch() as u64);
    assert_eq!((last.lr, last.momentum), (0.05, 0.9));
}

#[test]
fn cnn_on_glyphs_learns_well_above_chance() {
    let s = spec(GLYPHS_CNN);
    let (reports, outcome, _) = run(&s);
    assert_eq!(outcome, RunOutcome::Completed { epoch: 3 });
    let last = reports.last().unwrap();
    eprintln!(
        "glyph CNN: heldout accuracy {:.3} (chance 0.1)",
        last.heldout.metric
    );
    assert!(
        last.heldout.metric > 0.6,
        "heldout accuracy {}",
        last.heldout.metric
    );
    assert!(reports[0].heldout.metric < 0.3);
}

#[test]
fn regression_reports_r2_and_pearson() {
    let s = spec(NEURONS_MLP);
    let (reports, outcome, _) = run(&s);
    assert_eq!(outcome, RunOutcome::Completed { epoch: 4 });
    let last = reports.last().unwrap();
    let (r2, r) = (last.heldout.r2.unwrap(), last.heldout.pearson.unwrap());
    eprintln!("neurons MLP: heldout R² {r2:.3}, Pearson r {r:.3}");
    assert_eq!(
        last.heldout.metric, r2,
        "R² is the default regression metric"
    );
    assert!(last.heldout.accuracy.is_none());
    assert!(r2 > reports[0].heldout.r2.unwrap() + 0.1);
    assert!(r > 0.3 && r <= 1.0);
    // Adam's default β1 is reported as the momentum.
    assert_eq!(last.momentum, 0.9);
}

#[test]
fn absurd_learning_rate_is_a_divergence_not_a_crash() {
    let s = spec(&TABULAR_MLP.replace("lr = 0.05", "lr = 1e6"));
    let (reports, outcome, _) = run(&s);
    match outcome {
        RunOutcome::Diverged { epoch, reason, .. } => {
            assert!(epoch < 4);
            assert!(
                reason.contains("loss") || reason.contains("finite"),
                "{reason}"
            );
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    assert!(!reports.is_empty() && reports[0].epoch == 0);
}

#[test]
fn same_spec_and_seed_give_identical_numbers() {
    let s = spec(&TABULAR_MLP.replace("epochs = 4", "epochs = 2"));
    let (a, _, ta) = run(&s);
    let (b, _, tb) = run(&s);
    assert_eq!(a, b);
    let wa = ta
        .network()
        .weights()
        .unwrap()
        .flatten()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let wb = tb
        .network()
        .weights()
        .unwrap()
        .flatten()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(wa, wb);
    let mut other = s.clone();
    other.seed = 99;
    let (c, _, _) = run(&other);
    assert_ne!(a, c, "another seed gives other numbers");
}

/// Runs `s` straight, and in chunks of `chunk` epochs each resumed in a fresh
/// trainer from the previous chunk's serialised checkpoint; both must give
/// the same reports and final weights, bit for bit.
fn check_resume_is_exact(s: &RunSpec, chunk: usize) {
    let data = load(s);
    let reg = ModelRegistry::default();
    let (straight, outcome, t) = run(s);
    assert_eq!(outcome, RunOutcome::Completed { epoch: s.epochs });

    let mut chunked = Collect::default();
    let mut ckpt: Option<Vec<u8>> = None;
    let mut done = 0;
    while done < s.epochs {
        let mut tr = match &ckpt {
            None => Trainer::new(s, data.clone(), &Device::Cpu, &reg).unwrap(),
            Some(bytes) => {
                let c = Checkpoint::decode(bytes, None, &Device::Cpu).unwrap();
                assert_eq!(c.epoch, done);
                Trainer::resume(s, data.clone(), &Device::Cpu, &reg, &c).unwrap()
            }
        };
        done = (done + chunk).min(s.epochs);
        assert_eq!(
            tr.run(done, &mut chunked).unwrap(),
            RunOutcome::Completed { epoch: done }
        );
        ckpt = Some(tr.checkpoint().unwrap().encode().unwrap());
    }
    assert_eq!(chunked.0, straight);
    let c = Checkpoint::decode(ckpt.as_ref().unwrap(), None, &Device::Cpu).unwrap();
    let a = t
        .network()
        .weights()
        .unwrap()
        .flatten()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = c.weights.flatten().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn resume_from_checkpoint_is_exact_sgd_with_ramps() {
    // lr and momentum change every 8 batches, with reports every 10.
    let s = spec(&format!(
        "report_every_batches = 10\n{}",
        TABULAR_MLP
            .replace(
                "lr = { kind = \"constant\", lr = 0.05 }",
                "lr = { kind = \"exp_ramp\", start = 0.001, end = 0.2, epochs = 4 }\nevery_batches = 8",
            )
            .replace(
                "momentum = { kind = \"constant\", value = 0.9 }",
                "momentum = { kind = \"linear_ramp\", start = 0.5, end = 0.95, epochs = 4 }",
            )
            .replace("kind = \"sgd\"", "kind = \"sgd\"\nnesterov = true\nweight_decay = 0.0001")
            .replace("epochs = 4\nbatch_size", "epochs = 5\nbatch_size")
    ));
    check_resume_is_exact(&s, 2);
}

#[test]
fn resume_from_checkpoint_is_exact_for_every_optimizer() {
    for opt in ["adam", "adamw", "rmsprop", "adagrad"] {
        let mut text = TABULAR_MLP.to_string();
        if opt == "adagrad" {
            text = text.replace("momentum = { kind = \"constant\", value = 0.9 }", "");
        }
        let s = spec(
            &text
                .replace("kind = \"sgd\"", &format!("kind = \"{opt}\""))
                .replace(
                    "lr = { kind = \"constant\", lr = 0.05 }",
                    "lr = { kind = \"power_decay\", lr = 0.005, m = 2 }",
                )
                .replace("epochs = 4\nbatch_size", "epochs = 3\nbatch_size"),
        );
        check_resume_is_exact(&s, 1);
    }
}

#[test]
fn checkpoint_of_another_run_is_refused() {
    let s = spec(&TABULAR_MLP.replace("epochs = 4", "epochs = 1"));
    let (_, _, t) = run(&s);
    let c = t.checkpoint().unwrap();
    let mut other = s.clone();
    other.seed = 5;
    let err = Trainer::resume(
        &other,
        load(&s),
        &Device::Cpu,
        &ModelRegistry::default(),
        &c,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("another run"), "{err}");
    let bytes = c.encode().unwrap();
    let err = Checkpoint::decode(&bytes[..bytes.len() / 2], None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("artifact"), "{err}");
}

#[test]
fn reports_every_k_batches_and_stops_when_cancelled() {
    let s = spec(&format!(
        "report_every_batches = 10\n{}",
        TABULAR_MLP.replace("epochs = 4", "epochs = 1")
    ));
    let (reports, _, t) = run(&s);
    let bpe = t.batches_per_epoch(); // 1200 / 32 → 38
    assert_eq!(bpe, 38);
    let progress: Vec<f64> = reports.iter().map(|r| r.progress).collect();
    assert_eq!(
        progress,
        vec![0.0, 10.0 / 38.0, 20.0 / 38.0, 30.0 / 38.0, 1.0]
    );
    assert!(reports[1..].iter().all(|r| r.batch_loss.is_some()));

    struct CancelAfter(usize, usize);
    impl Observer for CancelAfter {
        fn report(&mut self, _: &EpochReport) -> Flow {
            self.0 += 1;
            Flow::Continue
        }
        fn cancelled(&self) -> bool {
            self.0 >= self.1
        }
    }
    let mut t = Trainer::new(&s, load(&s), &Device::Cpu, &ModelRegistry::default()).unwrap();
    let mut obs = CancelAfter(0, 2);
    assert_eq!(
        t.run(1, &mut obs).unwrap(),
        RunOutcome::Stopped { epoch: 0 }
    );
    assert_eq!(
        t.step(),
        10,
        "stopped at the first step after the second report"
    );
}

#[test]
fn line_search_and_interpolation_agree_with_the_trained_models() {
    let s = spec(&TABULAR_MLP.replace("epochs = 4", "epochs = 2"));
    let data = load(&s);
    let reg = ModelRegistry::default();
    let mut t = Trainer::new(&s, data.clone(), &Device::Cpu, &reg).unwrap();
    let theta0 = t.network().weights().unwrap();
    let mut reports = Collect::default();
    t.run(2, &mut reports).unwrap();
    let theta1 = t.network().weights().unwrap();
    let eval = EvalOptions {
        train_eval_size: s.train_eval_size,
        eval_batch: 1000,
    };
    let net = t.network();

    // Random filter-normalised direction: a = 0 is θ0's own figures.
    let roles = net.roles().to_vec();
    let d = landscape::random_direction(&theta0, &roles, 3, DirectionOptions::default()).unwrap();
    let alphas = landscape::linspace(-1.0, 1.0, 5);
    let pts = landscape::line_search(net, &theta0, &d, &alphas, &data, eval, |_| true).unwrap();
    assert_eq!(pts.len(), 5);
    assert_eq!(pts[2].alpha, 0.0);
    assert_eq!(pts[2].heldout, reports.0[0].heldout, "a = 0 is θ0");
    assert_eq!(pts[2].train, reports.0[0].train);
    assert!(pts[0].heldout.loss != pts[2].heldout.loss);
    // The network is back at its trained weights afterwards.
    assert_eq!(t.evaluate().unwrap().1, reports.0[2].heldout);

    // Filter normalisation: every unit of d has its unit's norm in θ0;
    // biases are zero.
    for ((w, dd), role) in theta0.tensors.iter().zip(&d.tensors).zip(&roles) {
        let units = |t: &candle_core::Tensor| t.reshape((t.dims()[0], ())).unwrap();
        let rows_w = units(w).sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
        let rows_d = units(dd).sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
        let (rw, rd) = (
            rows_w.to_vec1::<f32>().unwrap(),
            rows_d.to_vec1::<f32>().unwrap(),
        );
        match role {
            ParamRole::Weight => rw
                .iter()
                .zip(&rd)
                .for_each(|(a, b)| assert!((a - b).abs() < 1e-4 * a.max(1e-3))),
            ParamRole::Bias => assert!(rd.iter().all(|&v| v == 0.0)),
        }
    }

    // Interpolation θ0 → θ1: a = 0 and a = 1 reproduce both models.
    let pts = landscape::interpolate(net, &theta0, &theta1, &[0.0, 0.5, 1.0], &data, eval).unwrap();
    let end = reports.0.last().unwrap();
    assert_eq!(pts[0].heldout, reports.0[0].heldout);
    assert_eq!(pts[2].heldout.accuracy, end.heldout.accuracy);
    assert!((pts[2].heldout.loss - end.heldout.loss).abs() < 1e-5);
    assert!((pts[2].train.loss - end.train.loss).abs() < 1e-5);

    // Brief-training direction: nonzero, and moving along it lowers the loss.
    let (b0, bd, outcome) =
        train::brief_training_direction(&s, &data, &Device::Cpu, &reg, 200, 1).unwrap();
    assert_eq!(outcome, RunOutcome::Completed { epoch: 1 });
    assert!(bd.norm().unwrap() > 0.0);
    let pts = landscape::line_search(net, &b0, &bd, &[0.0, 1.0], &data, eval, |_| true).unwrap();
    assert!(pts[1].train.loss < pts[0].train.loss);

    // Flatten / unflatten round trip.
    let flat = theta1.flatten().unwrap();
    assert_eq!(flat.dims(), &[net.params().numel()]);
    let back = theta1.unflatten(&flat).unwrap();
    assert_eq!(
        back.flatten().unwrap().to_vec1::<f32>().unwrap(),
        flat.to_vec1::<f32>().unwrap()
    );
}

/// Runs `s` to the end with the hand-written training step (which must
/// apply) and through candle's autograd; returns both runs.
fn run_both(s: &RunSpec) -> [(Vec<EpochReport>, RunOutcome, Trainer); 2] {
    let data = load(s);
    let reg = ModelRegistry::default();
    [false, true].map(|autograd| {
        let mut t = Trainer::new(s, data.clone(), &Device::Cpu, &reg).unwrap();
        assert!(t.uses_direct_step(), "the hand-written step applies here");
        if autograd {
            t.force_autograd();
            assert!(!t.uses_direct_step());
        }
        let mut c = Collect::default();
        let outcome = t.run(s.epochs, &mut c).unwrap();
        (c.0, outcome, t)
    })
}

fn flat_weights(t: &Trainer) -> Vec<f32> {
    t.network()
        .weights()
        .unwrap()
        .flatten()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// The hand-written step (built-in ReLU MLP/CNN, cross-entropy, SGD on the
/// CPU) computes exactly what candle's autograd computes: the same reports
/// (batch losses, evaluations every 10 batches and every epoch) and the same
/// weights and optimizer state, bit for bit, with momentum and LR ramps,
/// Nesterov, weight decay and a short last batch in every epoch.
#[test]
fn hand_written_step_matches_autograd_bit_for_bit() {
    let mlp = format!(
        "report_every_batches = 10\n{}",
        TABULAR_MLP
            .replace(
                "lr = { kind = \"constant\", lr = 0.05 }",
                "lr = { kind = \"exp_ramp\", start = 0.001, end = 0.2, epochs = 3 }\nevery_batches = 8",
            )
            .replace(
                "momentum = { kind = \"constant\", value = 0.9 }",
                "momentum = { kind = \"linear_ramp\", start = 0.5, end = 0.95, epochs = 3 }",
            )
            .replace("kind = \"sgd\"", "kind = \"sgd\"\nnesterov = true\nweight_decay = 0.001")
            .replace("hidden = [64]", "hidden = [48, 24]")
            .replace("epochs = 4\nbatch_size", "epochs = 3\nbatch_size")
    );
    let cnn = GLYPHS_CNN
        .replace("dense = []", "dense = [16]")
        .replace("kind = \"sgd\"", "kind = \"sgd\"\nweight_decay = 0.0005")
        .replace("epochs = 3", "epochs = 2");
    for text in [mlp, cnn] {
        let s = spec(&text);
        assert_ne!(load(&s).train.len % s.batch_size, 0, "a short last batch");
        let [(rd, od, td), (ra, oa, ta)] = run_both(&s);
        assert_eq!(od, RunOutcome::Completed { epoch: s.epochs });
        assert_eq!(od, oa);
        assert_eq!(rd, ra, "reports");
        assert!(rd.iter().skip(1).all(|r| r.batch_loss.is_some()));
        assert_eq!(flat_weights(&td), flat_weights(&ta), "weights");
        let (cd, ca) = (td.checkpoint().unwrap(), ta.checkpoint().unwrap());
        assert_eq!(cd.optimizer_state.steps, ca.optimizer_state.steps);
        for ((nd, vd), (na, va)) in cd
            .optimizer_state
            .slots
            .iter()
            .zip(&ca.optimizer_state.slots)
        {
            assert_eq!(nd, na);
            assert_eq!(
                vd.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                va.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{nd}"
            );
        }
    }
}

/// A diverging run ends the same way on both paths: same epoch, step and
/// reason, same reports up to there.
#[test]
fn hand_written_step_reports_divergence_as_autograd_does() {
    for text in [
        TABULAR_MLP.replace("lr = 0.05", "lr = 1e6"),
        GLYPHS_CNN.replace("lr = 0.05", "lr = 1e7"),
    ] {
        let s = spec(&text);
        let [(rd, od, _), (ra, oa, _)] = run_both(&s);
        assert!(
            matches!(od, RunOutcome::Diverged { .. }),
            "expected a divergence, got {od:?}"
        );
        assert_eq!(od, oa);
        assert_eq!(rd, ra);
    }
}

/// `f` on a rayon pool of `threads` threads (what the engine's ops and
/// evaluation split their work over).
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The hand-written step gives the same numbers run after run, and whatever
/// the number of threads (gemms large enough to be split over threads
/// here: 64 × 200 × 512).
#[test]
fn hand_written_step_is_deterministic_and_thread_independent() {
    let s = spec(
        &TABULAR_MLP
            .replace("batch_size = 32", "batch_size = 64")
            .replace("seed = 7", "seed = 7\nfeatures = 200")
            .replace("hidden = [64]", "hidden = [512]")
            .replace("epochs = 4", "epochs = 1"),
    );
    let data = load(&s);
    let reg = ModelRegistry::default();
    let train = |threads: usize| {
        on_threads(threads, || {
            let mut t = Trainer::new(&s, data.clone(), &Device::Cpu, &reg).unwrap();
            assert!(t.uses_direct_step());
            let mut c = Collect::default();
            t.run(1, &mut c).unwrap();
            (c.0, flat_weights(&t))
        })
    };
    let a = train(2);
    assert_eq!(a, train(2));
    assert_eq!(a, train(1));
    assert_eq!(a, train(3));
    let s = spec(&GLYPHS_CNN.replace("epochs = 3", "epochs = 1"));
    let (ra, _, ta) = run(&s);
    let (rb, _, tb) = run(&s);
    assert!(ta.uses_direct_step());
    assert_eq!(ra, rb);
    assert_eq!(flat_weights(&ta), flat_weights(&tb));
}

/// Checkpoints taken in the middle of an epoch's reports (every 10 batches)
/// and resumed continue exactly, on the hand-written step.
#[test]
fn resume_is_exact_with_the_hand_written_cnn_step() {
    let s = spec(&format!(
        "report_every_batches = 10\n{}",
        GLYPHS_CNN.replace(
            "kind = \"sgd\"",
            "kind = \"sgd\"\nnesterov = true\nweight_decay = 0.0001"
        )
    ));
    check_resume_is_exact(&s, 1);
}

/// Evaluation and line searches run their batches in parallel: the figures
/// are the same with 1, 2 or 3 threads, for a classifier (line search on
/// the first-layer fast path) and a regression model, with batches that do
/// not divide the data.
#[test]
fn evaluation_and_line_searches_do_not_depend_on_the_thread_count() {
    for text in [
        TABULAR_MLP.replace("epochs = 4", "epochs = 1"),
        NEURONS_MLP.replace("epochs = 4", "epochs = 1"),
    ] {
        let s = spec(&text);
        let data = load(&s);
        let reg = ModelRegistry::default();
        let figures = |threads: usize| {
            on_threads(threads, || {
                let mut t = Trainer::new(&s, data.clone(), &Device::Cpu, &reg).unwrap();
                t.run(1, &mut Collect::default()).unwrap();
                let net = t.network();
                let metric = ridgeline_common::MetricKind::default_for(data.task);
                let heldout = train::evaluate(net, &data.heldout, data.task, metric, 33).unwrap();
                let theta0 = net.weights().unwrap();
                let d = landscape::random_direction(
                    &theta0,
                    net.roles(),
                    5,
                    DirectionOptions::default(),
                )
                .unwrap();
                let eval = EvalOptions {
                    train_eval_size: 250,
                    eval_batch: 33,
                };
                let alphas = [-0.5, 0.0, 0.7];
                let line = landscape::line_search(net, &theta0, &d, &alphas, &data, eval, |_| true)
                    .unwrap();
                (heldout, line)
            })
        };
        let two = figures(2);
        assert!(two.0.loss.is_finite() && two.1.len() == 3);
        assert_eq!(two, figures(1), "{text}");
        assert_eq!(two, figures(3), "{text}");
    }
}
