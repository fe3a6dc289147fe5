//! What the engine benches share: the models they time, random
//! classification data and the training spec.

use candle_core::{Device, Tensor};
use rand_distr::{Distribution, StandardNormal};
use ridgeline_common::spec::{Activation, CnnSpec, MlpSpec, Pool};
use ridgeline_common::{
    DataSpec, DatasetSource, ModelSpec, OptimizerSpec, RunSpec, ScheduleSpec, Task,
};
use ridgeline_worker::engine::data::{Dataset, Split};
use ridgeline_worker::engine::rng;

/// `n` examples of `shape` (standard normal, seed 0), ten classes; the
/// heldout split is one example (the benches time the training split).
pub fn random_dataset(shape: &[usize], n: usize, dev: &Device) -> Dataset {
    let el: usize = shape.iter().product();
    let mut r = rng::stream(0, "bench", 0);
    let x: Vec<f32> = (0..n * el).map(|_| StandardNormal.sample(&mut r)).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 10).collect();
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    let split = |x: &[f32], y: &[u32], len: usize, dims: Vec<usize>| Split {
        x: Tensor::from_slice(x, dims, dev).expect("bench data"),
        y: Tensor::from_slice(y, len, dev).expect("bench data"),
        len,
    };
    let mut hd = vec![1];
    hd.extend_from_slice(shape);
    Dataset {
        name: "random".into(),
        task: Task::Classification,
        input_shape: shape.to_vec(),
        outputs: 10,
        train: split(&x, &y, n, dims),
        heldout: split(&x[..el], &y[..1], 1, hd),
    }
}

/// SGD with momentum 0.9 at a constant LR, batch 64, for as many epochs
/// as a bench asks for; the data is given directly, not loaded from the
/// spec.
pub fn train_spec(model: ModelSpec) -> RunSpec {
    RunSpec {
        data: DataSpec::new(DatasetSource::Glyphs(Default::default())),
        model,
        optimizer: OptimizerSpec::sgd(),
        schedule: ScheduleSpec::constant(0.01, Some(0.9)),
        epochs: 1_000_000,
        batch_size: 64,
        seed: 0,
        train_eval_size: 1,
        report_every_batches: None,
        metric: None,
    }
}

/// The models of `bench/engine_pytorch.py`: MLP 784-256-10, the small CNN,
/// the tiny MLP 64-128-10, with their example counts.
pub struct Case {
    pub name: &'static str,
    pub model: ModelSpec,
    pub shape: Vec<usize>,
    pub n: usize,
    pub quick_n: usize,
}

pub fn cases() -> Vec<Case> {
    let mlp = |h| {
        ModelSpec::Mlp(MlpSpec {
            hidden: vec![h],
            activation: Activation::Relu,
            init: Default::default(),
        })
    };
    vec![
        Case {
            name: "mlp_784_256_10",
            model: mlp(256),
            shape: vec![784],
            n: 4096,
            quick_n: 256,
        },
        Case {
            name: "cnn_small",
            model: ModelSpec::Cnn(CnnSpec {
                channels: vec![16, 32],
                kernel: 3,
                stride: 1,
                pool: Pool::Max,
                dense: vec![],
                activation: Activation::Relu,
                init: Default::default(),
            }),
            shape: vec![1, 28, 28],
            n: 2048,
            quick_n: 128,
        },
        Case {
            name: "mlp_64_128_10",
            model: mlp(128),
            shape: vec![64],
            n: 4096,
            quick_n: 256,
        },
    ]
}
