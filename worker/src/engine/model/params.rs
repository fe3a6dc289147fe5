//! Trainable parameters: an ordered list of named candle [`Var`]s, and the
//! builder that creates them with seeded initial values.
//!
//! The order is the order of creation and is what flattening, checkpoints
//! and directions use, so it never depends on hash-map iteration.

use candle_core::{Device, Shape, Tensor, Var};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use ridgeline_common::spec::Init;

use crate::engine::error::{EngineError, Result};
use crate::engine::rng;

/// The model's trainable parameters, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl Params {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The variable named `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.vars[i])
    }
}

/// What a parameter is, which decides its initialisation and how a
/// filter-normalised direction treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A weight whose first dimension indexes output units (rows of a linear
    /// layer, filters of a convolution).
    Weight,
    /// A bias (one value per output unit).
    Bias,
}

/// Creates a model's parameters with values drawn from the run's seed: one
/// random stream per parameter name, so adding or reordering layers leaves
/// the other parameters' initial values unchanged.
pub struct ParamBuilder {
    seed: u64,
    init: Init,
    device: Device,
    params: Params,
    roles: Vec<ParamRole>,
}

impl ParamBuilder {
    pub fn new(seed: u64, init: Init, device: &Device) -> Self {
        Self {
            seed,
            init,
            device: device.clone(),
            params: Params::default(),
            roles: vec![],
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new parameter of `shape`, initialised for a layer with `fan_in`
    /// inputs and `fan_out` outputs per the builder's [`Init`].
    pub fn param(
        &mut self,
        name: &str,
        shape: impl Into<Shape>,
        role: ParamRole,
        fan_in: usize,
        fan_out: usize,
    ) -> Result<Tensor> {
        if self.params.names.iter().any(|n| n == name) {
            return Err(EngineError::Model(format!(
                "parameter `{name}` is defined twice"
            )));
        }
        let shape: Shape = shape.into();
        let n = shape.elem_count();
        let mut r = rng::stream(self.seed, &format!("init/{name}"), 0);
        let fan_in = fan_in.max(1) as f64;
        let values: Vec<f32> = match (self.init, role) {
            (Init::Pytorch, _) => {
                let bound = 1.0 / fan_in.sqrt();
                (0..n)
                    .map(|_| r.random_range(-bound..bound) as f32)
                    .collect()
            }
            (Init::KaimingNormal, ParamRole::Weight) => {
                let normal = Normal::new(0.0, (2.0 / fan_in).sqrt())
                    .map_err(|e| EngineError::Model(format!("init of `{name}`: {e}")))?;
                (0..n).map(|_| normal.sample(&mut r) as f32).collect()
            }
            (Init::XavierUniform, ParamRole::Weight) => {
                let bound = (6.0 / (fan_in + fan_out.max(1) as f64)).sqrt();
                (0..n)
                    .map(|_| r.random_range(-bound..bound) as f32)
                    .collect()
            }
            (Init::KaimingNormal | Init::XavierUniform, ParamRole::Bias) => vec![0.0; n],
        };
        let t = Tensor::from_vec(values, shape, &self.device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.params.names.push(name.to_string());
        self.params.vars.push(var);
        self.roles.push(role);
        Ok(out)
    }

    /// A linear layer `in → out` (weight `[out, in]`, bias `[out]`).
    pub fn linear(&mut self, name: &str, input: usize, output: usize) -> Result<candle_nn::Linear> {
        let w = self.param(
            &format!("{name}.weight"),
            (output, input),
            ParamRole::Weight,
            input,
            output,
        )?;
        let b = self.param(
            &format!("{name}.bias"),
            output,
            ParamRole::Bias,
            input,
            output,
        )?;
        Ok(candle_nn::Linear::new(w, Some(b)))
    }

    /// A 2-D convolution (weight `[out, in, k, k]`, bias `[out]`).
    pub fn conv2d(
        &mut self,
        name: &str,
        input: usize,
        output: usize,
        kernel: usize,
        config: candle_nn::Conv2dConfig,
    ) -> Result<candle_nn::Conv2d> {
        let fan_in = input * kernel * kernel;
        let fan_out = output * kernel * kernel;
        let w = self.param(
            &format!("{name}.weight"),
            (output, input, kernel, kernel),
            ParamRole::Weight,
            fan_in,
            fan_out,
        )?;
        let b = self.param(
            &format!("{name}.bias"),
            output,
            ParamRole::Bias,
            fan_in,
            fan_out,
        )?;
        Ok(candle_nn::Conv2d::new(w, Some(b), config))
    }

    /// The parameters created so far and their roles.
    pub fn finish(self) -> (Params, Vec<ParamRole>) {
        (self.params, self.roles)
    }
}
