//! A hand-written training step for the built-in ReLU models on the CPU.
//!
//! **Why.** With the custom ops of `engine::ops` a training step of the
//! built-in MLP/CNN still goes through candle's autograd: a graph walk, a
//! hash map of gradients, a fresh output tensor per op (page faults and
//! `memset` of multi-megabyte buffers for the CNN) and, for every gradient,
//! a `zeros_like` plus an `add` into it. Here forward, backward and the SGD
//! update are written out for the fixed layer sequence, into buffers
//! allocated once per batch size, with the very kernels the custom ops run
//! (`ops::linear`, `ops::conv`, `ops::pool`, `ops::loss`,
//! `optim::fused`), called with the same arguments in the same order; the
//! one variant is the pooling, whose forward here records each window's
//! maximum so that the backward need not read the input again (same
//! numbers, tested in `ops::pool`).
//!
//! **Exactness.** Every value is computed by the same code as on the
//! autograd path, so the parameters after any number of steps are
//! bit-identical to it (candle's `0 + g` accumulation only changes the sign
//! of zeros, which SGD's `g·lr + 0` erases). Tests compare the two paths
//! step by step.
//!
//! **Where it applies** (decided once per [`super::Trainer`]): CPU, f32
//! data with u32 class labels (classification, cross-entropy loss), SGD (any
//! momentum, Nesterov, weight decay), and the built-in MLP with ReLU or the
//! built-in CNN with ReLU and max pooling. Everything else trains through
//! candle's autograd as before.
//!
//! Parameters stay in the network's candle variables and are updated in
//! place, so evaluation, checkpoints and the weight-space tools read them at
//! any time; no state is kept between steps besides scratch buffers.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use ridgeline_common::spec::{Activation, ModelSpec, Pool};
use ridgeline_common::{OptimizerSpec, RunSpec, Task};

use crate::engine::data::{Dataset, Split};
use crate::engine::error::{EngineError, Result};
use crate::engine::model::Network;
use crate::engine::ops::conv::{channel_sum, ConvScratch, Geom};
use crate::engine::ops::gemm::Mat;
use crate::engine::ops::linear::{linear_forward, linear_matmul, relu_mask_inplace};
use crate::engine::ops::loss::{cross_entropy_forward, cross_entropy_grad};
use crate::engine::ops::pool::{relu_max_pool_backward_from_arg, relu_max_pool_forward_arg};
use crate::engine::optim::{Hyper, Optimizer};

/// One layer of the forward pass, per example.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// `x·Wᵀ + b` (parameters `param`, `param + 1`); with `relu`, the
    /// fused `ops::linear_relu` (backward masks where the output is > 0).
    Dense {
        fan_in: usize,
        fan_out: usize,
        relu: bool,
        param: usize,
    },
    /// candle's own `relu` of `len` values (backward: where the input is
    /// ≥ 0, as candle's), after a hidden dense layer of the CNN.
    Relu { len: usize },
    /// `ops::conv2d` with bias (parameters `param`, `param + 1`).
    Conv {
        cin: usize,
        h: usize,
        w: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        param: usize,
    },
    /// `ops::relu_max_pool2d` of `[channels, h, w]`.
    ReluMaxPool { channels: usize, h: usize, w: usize },
}

impl Stage {
    fn geom(&self, batch: usize) -> Result<Option<Geom>> {
        Ok(match *self {
            Stage::Conv {
                cin,
                h,
                w,
                cout,
                kernel,
                stride,
                pad,
                ..
            } => Some(Geom::new(
                &[batch, cin, h, w],
                &[cout, cin, kernel, kernel],
                stride,
                pad,
            )?),
            _ => None,
        })
    }

    /// Values per example after this stage.
    fn out_len(&self) -> Result<usize> {
        Ok(match *self {
            Stage::Dense { fan_out, .. } => fan_out,
            Stage::Relu { len } => len,
            Stage::Conv { .. } => self.geom(1)?.map_or(0, |g| g.out_len()),
            Stage::ReluMaxPool { channels, h, w } => channels * (h / 2) * (w / 2),
        })
    }

    /// The parameter shapes this stage expects, and the index of the first.
    fn params(&self) -> Option<(usize, [Vec<usize>; 2])> {
        match *self {
            Stage::Dense {
                fan_in,
                fan_out,
                param,
                ..
            } => Some((param, [vec![fan_out, fan_in], vec![fan_out]])),
            Stage::Conv {
                cin,
                cout,
                kernel,
                param,
                ..
            } => Some((param, [vec![cout, cin, kernel, kernel], vec![cout]])),
            _ => None,
        }
    }
}

/// The layer sequence of a built-in model, if the hand-written step covers
/// it (see the module documentation).
fn stages(model: &ModelSpec, input_shape: &[usize], outputs: usize) -> Option<Vec<Stage>> {
    let mut st = vec![];
    let mut param = 0;
    let dense = |st: &mut Vec<Stage>, param: &mut usize, fan_in, fan_out, relu| {
        st.push(Stage::Dense {
            fan_in,
            fan_out,
            relu,
            param: *param,
        });
        *param += 2;
    };
    match model {
        ModelSpec::Mlp(s) if s.activation == Activation::Relu => {
            let mut width: usize = input_shape.iter().product();
            for &h in &s.hidden {
                dense(&mut st, &mut param, width, h, true);
                width = h;
            }
            dense(&mut st, &mut param, width, outputs, false);
        }
        ModelSpec::Cnn(s) if s.activation == Activation::Relu && s.pool == Pool::Max => {
            let &[mut c, mut h, mut w] = input_shape else {
                return None;
            };
            let pad = s.kernel / 2;
            for &cout in &s.channels {
                st.push(Stage::Conv {
                    cin: c,
                    h,
                    w,
                    cout,
                    kernel: s.kernel,
                    stride: s.stride,
                    pad,
                    param,
                });
                param += 2;
                if s.stride == 0 || h + 2 * pad < s.kernel || w + 2 * pad < s.kernel {
                    return None;
                }
                let ho = (h + 2 * pad - s.kernel) / s.stride + 1;
                let wo = (w + 2 * pad - s.kernel) / s.stride + 1;
                if ho < 2 || wo < 2 {
                    return None;
                }
                st.push(Stage::ReluMaxPool {
                    channels: cout,
                    h: ho,
                    w: wo,
                });
                (c, h, w) = (cout, ho / 2, wo / 2);
            }
            let mut width = c * h * w;
            for &d in &s.dense {
                dense(&mut st, &mut param, width, d, false);
                st.push(Stage::Relu { len: d });
                width = d;
            }
            dense(&mut st, &mut param, width, outputs, false);
        }
        _ => return None,
    }
    Some(st)
}

/// Activations and their gradients for one batch size.
struct Buffers {
    batch: usize,
    /// `acts[0]`: the gathered inputs; `acts[s + 1]`: stage `s`'s output.
    acts: Vec<Vec<f32>>,
    /// Gradients of the loss with respect to `acts[s]` (`grads[0]`, the
    /// data's, is never computed).
    grads: Vec<Vec<f32>>,
    /// Per pooling stage, the position of each window's maximum (so that
    /// the backward need not read the stage's input again).
    args: Vec<Vec<u8>>,
    labels: Vec<usize>,
}

/// The hand-written training step of one run (see the module
/// documentation).
pub(crate) struct DirectStep {
    stages: Vec<Stage>,
    input_len: usize,
    classes: usize,
    /// Gradients of the parameters, in the network's order.
    param_grads: Vec<Vec<f32>>,
    /// By batch size (the full batches and the epoch's last, shorter one).
    buffers: Vec<Buffers>,
    scratch: ConvScratch,
    /// Whether `param_grads` hold the gradients of the last
    /// [`DirectStep::forward_backward`], not yet applied.
    pending: bool,
}

/// The contiguous f32 values of a CPU tensor's storage.
fn cpu_f32<'a>(s: &'a Storage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => Ok(crate::engine::ops::contiguous_f32(c, l, what)?),
        _ => Err(EngineError::Device(format!(
            "{what}: the hand-written training step runs on the CPU only"
        ))),
    }
}

fn on_cpu_as(t: &Tensor, dtype: DType) -> bool {
    t.device().is_cpu() && t.dtype() == dtype && t.is_contiguous()
}

impl DirectStep {
    /// The hand-written step for this run, if it applies (module
    /// documentation); `None` means candle's autograd.
    pub(crate) fn plan(
        spec: &RunSpec,
        data: &Dataset,
        net: &Network,
        device: &Device,
    ) -> Option<DirectStep> {
        if !device.is_cpu()
            || data.task != Task::Classification
            || !matches!(spec.optimizer, OptimizerSpec::Sgd(_))
            || !on_cpu_as(&data.train.x, DType::F32)
            || !on_cpu_as(&data.train.y, DType::U32)
            || data.train.y.rank() != 1
            || data.outputs == 0
        {
            return None;
        }
        let stages = stages(&spec.model, &data.input_shape, data.outputs)?;
        // The network's parameters must be exactly the stages' (in order).
        let vars = net.params().vars();
        let mut n_params = 0;
        for stage in &stages {
            if let Some((i, shapes)) = stage.params() {
                for (j, shape) in shapes.iter().enumerate() {
                    let v = vars.get(i + j)?;
                    if v.dims() != shape.as_slice() || !on_cpu_as(v.as_tensor(), DType::F32) {
                        return None;
                    }
                }
                n_params = n_params.max(i + 2);
            }
        }
        let input_len: usize = data.input_shape.iter().product();
        if n_params != vars.len()
            || data.train.x.elem_count() != data.train.len * input_len
            || stages.last()?.out_len().ok()? != data.outputs
        {
            return None;
        }
        let param_grads = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Some(DirectStep {
            stages,
            input_len,
            classes: data.outputs,
            param_grads,
            buffers: vec![],
            scratch: ConvScratch::default(),
            pending: false,
        })
    }

    /// The buffers for `batch` examples, made on first use.
    fn buffers(&mut self, batch: usize) -> Result<usize> {
        if let Some(i) = self.buffers.iter().position(|b| b.batch == batch) {
            return Ok(i);
        }
        let mut lens = vec![self.input_len];
        for s in &self.stages {
            lens.push(s.out_len()?);
        }
        let acts: Vec<Vec<f32>> = lens.iter().map(|&l| vec![0f32; batch * l]).collect();
        let grads = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if i == 0 {
                    vec![]
                } else {
                    vec![0f32; batch * l]
                }
            })
            .collect();
        let args = self
            .stages
            .iter()
            .map(|s| match s {
                Stage::ReluMaxPool { .. } => s.out_len().map(|l| vec![0u8; batch * l]),
                _ => Ok(vec![]),
            })
            .collect::<Result<Vec<_>>>()?;
        // Batch sizes other than the run's own and its last batch's are
        // rare (none in a run); keep at most a few.
        if self.buffers.len() >= 3 {
            self.buffers.remove(0);
        }
        self.buffers.push(Buffers {
            batch,
            acts,
            grads,
            args,
            labels: vec![0; batch],
        });
        Ok(self.buffers.len() - 1)
    }

    /// Forward and backward for the examples `idx` of `split`: returns the
    /// batch's mean cross-entropy (the value `ops::cross_entropy` gives) and
    /// keeps the parameters' gradients for [`DirectStep::update`].
    pub(crate) fn forward_backward(
        &mut self,
        net: &Network,
        split: &Split,
        idx: &[u32],
    ) -> Result<f32> {
        self.pending = false;
        let batch = idx.len();
        if batch == 0 {
            return Err(EngineError::Model("an empty training batch".into()));
        }
        let b = self.buffers(batch)?;
        let Buffers {
            acts,
            grads,
            args,
            labels,
            ..
        } = &mut self.buffers[b];
        let (classes, el) = (self.classes, self.input_len);

        // Gather the batch (as `Split::gather`).
        {
            let (xs, xl) = split.x.storage_and_layout();
            let x = cpu_f32(&xs, xl, "training inputs")?;
            let (ys, yl) = split.y.storage_and_layout();
            let y = match (&*ys, yl.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::U32(v)), Some((a, z))) => &v[a..z],
                _ => {
                    return Err(EngineError::Model(
                        "training labels must be contiguous u32 class indices on the CPU".into(),
                    ))
                }
            };
            for (j, &i) in idx.iter().enumerate() {
                let i = i as usize;
                let (Some(row), Some(&label)) = (x.get(i * el..(i + 1) * el), y.get(i)) else {
                    return Err(EngineError::Model(format!(
                        "training example {i} is out of range ({} examples)",
                        split.len
                    )));
                };
                acts[0][j * el..(j + 1) * el].copy_from_slice(row);
                let label = label as usize;
                if label >= classes {
                    return Err(EngineError::Model(format!(
                        "cross entropy: label {label} for {classes} classes"
                    )));
                }
                labels[j] = label;
            }
        }

        let guards: Vec<_> = net
            .params()
            .vars()
            .iter()
            .map(|v| v.as_tensor().storage_and_layout())
            .collect();
        let params = guards
            .iter()
            .map(|(s, l)| cpu_f32(s, l, "parameter"))
            .collect::<Result<Vec<&[f32]>>>()?;

        // Forward.
        for (s, stage) in self.stages.iter().enumerate() {
            let (done, rest) = acts.split_at_mut(s + 1);
            let (x, y) = (&done[s], &mut rest[0]);
            match *stage {
                Stage::Dense {
                    fan_in,
                    fan_out,
                    relu,
                    param,
                } => linear_forward(
                    y,
                    x,
                    params[param],
                    params[param + 1],
                    batch,
                    fan_in,
                    fan_out,
                    relu,
                ),
                Stage::Relu { .. } => {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = x.max(0.0);
                    }
                }
                Stage::Conv { param, .. } => {
                    let g = stage.geom(batch)?.ok_or_else(|| bug("conv geometry"))?;
                    g.forward(x, params[param], params[param + 1], y, &mut self.scratch);
                }
                Stage::ReluMaxPool { channels, h, w } => {
                    relu_max_pool_forward_arg(x, y, &mut args[s], batch * channels, h, w)
                }
            }
        }
        let last = self.stages.len();
        let loss = cross_entropy_forward(&acts[last], labels, classes);

        // Backward (the loss's upstream gradient is 1, as `backward()`'s).
        cross_entropy_grad(&acts[last], labels, classes, 1.0, &mut grads[last]);
        for (s, stage) in self.stages.iter().enumerate().rev() {
            let x = &acts[s];
            let (before, after) = grads.split_at_mut(s + 1);
            let (gx, go) = (&mut before[s], &mut after[0]);
            // The data (stage 0's input) needs no gradient.
            let need_gx = s > 0;
            match *stage {
                Stage::Dense {
                    fan_in,
                    fan_out,
                    relu,
                    param,
                } => {
                    if relu {
                        relu_mask_inplace(go, &acts[s + 1]);
                    }
                    let g = Mat::rm(go, batch, fan_out);
                    if need_gx {
                        // ∂L/∂x = G·W
                        linear_matmul(gx, g, Mat::rm(params[param], fan_out, fan_in), false);
                    }
                    let (gw, gb) = two(&mut self.param_grads, param);
                    // ∂L/∂W = Gᵀ·x
                    linear_matmul(gw, g.t(), Mat::rm(x, batch, fan_in), false);
                    channel_sum(go, batch, fan_out, 1, gb);
                }
                Stage::Relu { .. } => {
                    if need_gx {
                        for ((gx, &go), &x) in gx.iter_mut().zip(go.iter()).zip(x) {
                            *gx = go * if x >= 0.0 { 1.0 } else { 0.0 };
                        }
                    }
                }
                Stage::Conv { cout, param, .. } => {
                    let g = stage.geom(batch)?.ok_or_else(|| bug("conv geometry"))?;
                    if need_gx {
                        g.input_grad(go, params[param], gx, &mut self.scratch);
                    }
                    let (gw, gb) = two(&mut self.param_grads, param);
                    g.weight_grad(x, go, gw, &mut self.scratch);
                    channel_sum(go, batch, cout, g.p(), gb);
                }
                Stage::ReluMaxPool { channels, h, w } => {
                    if need_gx {
                        relu_max_pool_backward_from_arg(
                            &acts[s + 1],
                            &args[s],
                            go,
                            gx,
                            batch * channels,
                            h,
                            w,
                        );
                    }
                }
            }
        }
        self.pending = true;
        Ok(loss)
    }

    /// The SGD step with the gradients of the last
    /// [`DirectStep::forward_backward`], in place on the network's
    /// variables and the optimizer's velocities.
    pub(crate) fn update(&mut self, opt: &mut Optimizer, hyper: Hyper) -> Result<()> {
        if !std::mem::take(&mut self.pending) {
            return Err(bug("an update without gradients"));
        }
        opt.sgd_step_from_slices(&self.param_grads, hyper)
    }
}

/// Parameters `i` and `i + 1` (a layer's weight and bias gradients).
fn two(v: &mut [Vec<f32>], i: usize) -> (&mut [f32], &mut [f32]) {
    let (a, b) = v[i..].split_at_mut(1);
    (&mut a[0], &mut b[0])
}

fn bug(what: &str) -> EngineError {
    EngineError::Model(format!(
        "hand-written training step: {what} (an internal error)"
    ))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use rand_distr::{Distribution, StandardNormal};
    use ridgeline_common::spec::{AdamSpec, CnnSpec, MlpSpec, SgdSpec};
    use ridgeline_common::{DataSpec, DatasetSource, ScheduleSpec};

    use super::*;
    use crate::engine::data::epoch_order;
    use crate::engine::model::{ModelContext, ModelRegistry};
    use crate::engine::rng;
    use crate::engine::train::loss;

    const CLASSES: usize = 5;

    /// `n` standard-normal examples shaped `shape`, labels 0..CLASSES.
    fn dataset(shape: &[usize], n: usize, seed: u64) -> Dataset {
        let el: usize = shape.iter().product();
        let mut r = rng::stream(seed, "direct-test", 0);
        let x: Vec<f32> = (0..n * el).map(|_| StandardNormal.sample(&mut r)).collect();
        let y: Vec<u32> = (0..n as u32)
            .map(|i| (i * 7 + 3) % CLASSES as u32)
            .collect();
        let split = |len: usize| {
            let mut dims = vec![len];
            dims.extend_from_slice(shape);
            Split {
                x: Tensor::from_slice(&x[..len * el], dims, &Device::Cpu).unwrap(),
                y: Tensor::from_slice(&y[..len], len, &Device::Cpu).unwrap(),
                len,
            }
        };
        Dataset {
            name: "random".into(),
            task: Task::Classification,
            input_shape: shape.to_vec(),
            outputs: CLASSES,
            train: split(n),
            heldout: split(3),
        }
    }

    fn run_spec(model: ModelSpec, optimizer: OptimizerSpec) -> RunSpec {
        RunSpec {
            data: DataSpec::new(DatasetSource::Glyphs(Default::default())),
            model,
            optimizer,
            schedule: ScheduleSpec::constant(0.05, Some(0.9)),
            epochs: 1,
            batch_size: 16,
            seed: 3,
            train_eval_size: 1,
            report_every_batches: None,
            metric: None,
        }
    }

    fn build(spec: &RunSpec, data: &Dataset) -> (Network, Optimizer) {
        let ctx = ModelContext {
            input_shape: data.input_shape.clone(),
            outputs: data.outputs,
            task: data.task,
        };
        let net = Network::build(
            &spec.model,
            &ctx,
            spec.seed,
            &Device::Cpu,
            &ModelRegistry::default(),
        )
        .unwrap();
        let opt = Optimizer::new(spec.optimizer, net.params()).unwrap();
        (net, opt)
    }

    fn flat(net: &Network) -> Vec<f32> {
        net.weights().unwrap().flatten().unwrap().to_vec1().unwrap()
    }

    fn velocities(opt: &Optimizer) -> Vec<Vec<f32>> {
        let state = opt.state().unwrap();
        state
            .slots
            .iter()
            .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    /// Largest |a − b| / (|b| + 1e-30) over the elements.
    fn max_rel(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&a, &b)| (a as f64 - b as f64).abs() / (b.abs() as f64 + 1e-30))
            .fold(0.0, f64::max)
    }

    fn mlp(hidden: Vec<usize>) -> ModelSpec {
        ModelSpec::Mlp(MlpSpec {
            hidden,
            activation: Activation::Relu,
            init: Default::default(),
        })
    }

    fn cnn(channels: Vec<usize>, kernel: usize, stride: usize, dense: Vec<usize>) -> ModelSpec {
        ModelSpec::Cnn(CnnSpec {
            channels,
            kernel,
            stride,
            pool: Pool::Max,
            dense,
            activation: Activation::Relu,
            init: Default::default(),
        })
    }

    /// `steps` steps of the hand-written step and of candle's autograd from
    /// the same initial weights, over epochs of `n` examples in batches of
    /// `batch` (so the last batch of each epoch is short), with a learning
    /// rate that changes every step: losses, weights and velocities must be
    /// equal after every step, bit for bit.
    fn assert_matches_autograd(model: ModelSpec, shape: &[usize], n: usize, batch: usize) {
        let sgds = [
            SgdSpec {
                nesterov: false,
                weight_decay: 1e-3,
            },
            SgdSpec {
                nesterov: true,
                weight_decay: 5e-4,
            },
            SgdSpec::default(),
        ];
        let data = dataset(shape, n, 1);
        for s in sgds {
            let spec = run_spec(model.clone(), OptimizerSpec::Sgd(s));
            let (net_d, mut opt_d) = build(&spec, &data);
            let (net_a, mut opt_a) = build(&spec, &data);
            let mut direct = DirectStep::plan(&spec, &data, &net_d, &Device::Cpu)
                .unwrap_or_else(|| panic!("the hand-written step applies to {model:?}"));
            let batches: Vec<Vec<u32>> = (0..2)
                .flat_map(|epoch| {
                    let order = epoch_order(spec.seed, epoch, n);
                    order.chunks(batch).map(<[u32]>::to_vec).collect::<Vec<_>>()
                })
                .collect();
            assert!(batches.iter().any(|b| b.len() < batch), "a short batch");
            for (step, idx) in batches.iter().enumerate() {
                let hyper = Hyper {
                    lr: 0.02 * (1 + step % 3) as f64,
                    momentum: if step == 0 { 0.0 } else { 0.9 },
                };
                let ld = direct.forward_backward(&net_d, &data.train, idx).unwrap();
                direct.update(&mut opt_d, hyper).unwrap();

                let it = Tensor::from_slice(idx, idx.len(), &Device::Cpu).unwrap();
                let (x, y) = data.train.gather(&it).unwrap();
                let l = loss(Task::Classification, &net_a.forward(&x).unwrap(), &y).unwrap();
                let la = l.to_scalar::<f32>().unwrap();
                opt_a.backward_step(&l, hyper).unwrap();

                let what = format!("{model:?}, {s:?}, step {step} (batch {})", idx.len());
                assert_eq!(ld.to_bits(), la.to_bits(), "{what}: loss {ld} vs {la}");
                let (wd, wa) = (flat(&net_d), flat(&net_a));
                assert_eq!(
                    wd,
                    wa,
                    "{what}: weights (max rel. diff {})",
                    max_rel(&wd, &wa)
                );
                assert_eq!(velocities(&opt_d), velocities(&opt_a), "{what}: velocities");
                assert_eq!(opt_d.steps(), opt_a.steps());
            }
            // It did learn something: the weights moved.
            assert_ne!(flat(&net_d), flat(&build(&spec, &data).0));
        }
    }

    #[test]
    fn mlp_matches_autograd_bit_for_bit() {
        // Image-shaped inputs are flattened; two hidden layers so that a
        // hidden layer's input gradient is computed too.
        assert_matches_autograd(mlp(vec![24, 12]), &[2, 3, 4], 50, 16);
        // No hidden layer: softmax regression.
        assert_matches_autograd(mlp(vec![]), &[7], 21, 8);
    }

    #[test]
    fn cnn_matches_autograd_bit_for_bit() {
        // Two blocks on odd sizes (9×8: the pool drops the odd row) and a
        // hidden dense layer (candle's own ReLU); 19 images in batches of
        // 12, more than one chunk of 8 images per convolution.
        assert_matches_autograd(cnn(vec![3, 4], 3, 1, vec![7]), &[2, 9, 8], 19, 12);
        // Stride 2 with a 5×5 kernel.
        assert_matches_autograd(cnn(vec![4], 5, 2, vec![]), &[1, 12, 12], 10, 4);
    }

    #[test]
    fn applies_only_where_it_is_exact() {
        let img = dataset(&[1, 8, 8], 4, 0);
        let plan = |model: ModelSpec, opt: OptimizerSpec, data: &Dataset| {
            let spec = run_spec(model, opt);
            let (net, _) = build(&spec, data);
            DirectStep::plan(&spec, data, &net, &Device::Cpu).is_some()
        };
        let sgd = OptimizerSpec::sgd();
        assert!(plan(mlp(vec![8]), sgd, &img));
        assert!(plan(cnn(vec![2], 3, 1, vec![4]), sgd, &img));
        // Other optimizers, activations, pooling: candle's autograd.
        assert!(!plan(
            mlp(vec![8]),
            OptimizerSpec::Adam(AdamSpec::default()),
            &img
        ));
        let mut tanh = mlp(vec![8]);
        if let ModelSpec::Mlp(s) = &mut tanh {
            s.activation = Activation::Tanh;
        }
        assert!(!plan(tanh, sgd, &img));
        let mut avg = cnn(vec![2], 3, 1, vec![]);
        if let ModelSpec::Cnn(s) = &mut avg {
            s.pool = Pool::Avg;
        }
        assert!(!plan(avg, sgd, &img));
        // Regression (MSE loss): autograd.
        let mut reg = img.clone();
        reg.task = Task::Regression;
        reg.train.y = Tensor::zeros((4, CLASSES), DType::F32, &Device::Cpu).unwrap();
        assert!(!plan(mlp(vec![8]), sgd, &reg));
    }

    #[test]
    fn bad_labels_and_indices_are_errors() {
        let mut data = dataset(&[3], 4, 0);
        let spec = run_spec(mlp(vec![4]), OptimizerSpec::sgd());
        let (net, mut opt) = build(&spec, &data);
        let mut d = DirectStep::plan(&spec, &data, &net, &Device::Cpu).unwrap();
        let err = d.forward_backward(&net, &data.train, &[0, 9]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = d.update(
            &mut opt,
            Hyper {
                lr: 0.1,
                momentum: 0.0,
            },
        );
        assert!(err.is_err(), "no update without gradients");
        data.train.y = Tensor::from_slice(&[0u32, 1, 7, 2], 4, &Device::Cpu).unwrap();
        let err = d.forward_backward(&net, &data.train, &[1, 2]).unwrap_err();
        assert!(err.to_string().contains("label 7"), "{err}");
    }
}
