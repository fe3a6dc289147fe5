//! The engine on its own: an LR ramp, then a short training run, then the
//! final line search θ0 → θ1, on the built-in glyph digits.
//!
//! cargo run --release -p ridgeline-worker --example engine_demo

use std::sync::Arc;

use candle_core::Device;
use ridgeline_common::{EpochReport, RunSpec};
use ridgeline_worker::engine::landscape::{self, EvalOptions};
use ridgeline_worker::engine::model::ModelRegistry;
use ridgeline_worker::engine::train::{Flow, Trainer};
use ridgeline_worker::engine::{data, device};

const SPEC: &str = r#"
epochs = 6
batch_size = 64
seed = 1
[data.source]
kind = "glyphs"
n_train = 3000
n_heldout = 1000
[model]
kind = "cnn"
channels = [16, 32]
dense = []
[optimizer]
kind = "sgd"
[schedule]
lr = { kind = "exp_ramp", start = 0.0001, end = 3.0, epochs = 6 }
momentum = { kind = "constant", value = 0.0 }
"#;

fn print(r: &EpochReport) -> Flow {
    println!(
        "  epoch {:>2}  lr {:<9.3e} μ {:.2}  train acc {:.3}  heldout acc {:.3}  heldout loss {:.4}",
        r.epoch, r.lr, r.momentum, r.train.metric, r.heldout.metric, r.heldout.loss
    );
    Flow::Continue
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    device::configure_threads(device::cores());
    let dev = Device::Cpu;
    let reg = ModelRegistry::default();
    let ramp: RunSpec = toml::from_str(SPEC)?;
    let data = Arc::new(data::load(&ramp.data, &dev)?);
    println!(
        "glyph digits: {} train / {} heldout, {:?}",
        data.train.len, data.heldout.len, data.input_shape
    );

    println!("LR ramp (exponential, one value per epoch):");
    let mut t = Trainer::new(&ramp, data.clone(), &dev, &reg)?;
    println!("  outcome: {:?}", t.run(ramp.epochs, &mut print)?);

    let mut fixed = ramp.clone();
    fixed.schedule = ridgeline_common::ScheduleSpec::constant(0.05, Some(0.9));
    fixed.epochs = 4;
    println!("Training at lr 0.05, μ 0.9:");
    let mut t = Trainer::new(&fixed, data.clone(), &dev, &reg)?;
    let theta0 = t.network().weights()?;
    println!("  outcome: {:?}", t.run(fixed.epochs, &mut print)?);
    let theta1 = t.network().weights()?;

    println!("Line search θ0 + a(θ1 − θ0):");
    let alphas = landscape::linspace(-0.5, 1.5, 9);
    for p in landscape::interpolate(
        t.network(),
        &theta0,
        &theta1,
        &alphas,
        &data,
        EvalOptions::default(),
    )? {
        println!(
            "  a {:>5.2}  train loss {:.4}  heldout acc {:.3}",
            p.alpha, p.train.loss, p.heldout.metric
        );
    }
    Ok(())
}
