//! Models: the [`Model`] trait, declarative MLP and CNN built from a
//! [`ModelSpec`], and a [`ModelRegistry`] through which a researcher plugs in
//! their own candle model by building their own worker binary.
//!
//! A model owns no parameters itself: they live in [`Params`] (created by a
//! [`ParamBuilder`]), which the optimizer updates in place and the
//! weight-space tools read and overwrite. The model only holds tensors that
//! share storage with those variables.

mod cnn;
mod mlp;
mod params;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use ridgeline_common::spec::{Activation, ModelSpec};
use ridgeline_common::Task;

pub use params::{ParamBuilder, ParamRole, Params};

use crate::engine::error::{EngineError, Result};
use crate::engine::landscape::WeightSet;

/// A trainable model: maps a batch of inputs `[batch, ...input_shape]` to
/// logits (classification) or predictions (regression), `[batch, outputs]`.
pub trait Model: Send + Sync {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor>;

    /// Optional, for fast line searches: a model whose first layer is
    /// affine in its own parameters, and those are parameters 0 (weight)
    /// and 1 (bias) in creation order, can return itself split after that
    /// layer. Along θ0 + a·d the first layer's output is then z0 + a·zd,
    /// two passes over the data whatever the number of points.
    fn split_first(&self) -> Option<&dyn SplitFirst> {
        None
    }
}

/// A model split after its first layer (see [`Model::split_first`]).
pub trait SplitFirst: Send + Sync {
    /// The first layer's output (before its activation) with weight `w`
    /// and bias `b` instead of the model's own.
    fn first(&self, xs: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor>;
    /// The rest of the forward pass from the first layer's output, with the
    /// model's current parameters.
    fn rest(&self, z: &Tensor) -> candle_core::Result<Tensor>;

    /// [`SplitFirst::rest`] from the first layer's output `z0 + a·zd` (a
    /// line search point), computed in one pass. A model whose activation
    /// after the first layer is a ReLU can fold it in
    /// ([`crate::engine::ops::axpy`]).
    fn rest_at(&self, z0: &Tensor, zd: &Tensor, a: f64) -> candle_core::Result<Tensor> {
        self.rest(&crate::engine::ops::axpy(z0, zd, a, false)?)
    }
}

/// What a model is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelContext {
    /// Shape of one example: `[features]` or `[channels, height, width]`.
    pub input_shape: Vec<usize>,
    /// Classes or regression outputs.
    pub outputs: usize,
    pub task: Task,
}

/// Builds a custom model. Implemented for closures of the same signature.
pub trait ModelFactory: Send + Sync {
    fn build(
        &self,
        ctx: &ModelContext,
        options: &serde_json::Value,
        params: &mut ParamBuilder,
    ) -> Result<Box<dyn Model>>;
}

impl<F> ModelFactory for F
where
    F: Fn(&ModelContext, &serde_json::Value, &mut ParamBuilder) -> Result<Box<dyn Model>>
        + Send
        + Sync,
{
    fn build(
        &self,
        ctx: &ModelContext,
        options: &serde_json::Value,
        params: &mut ParamBuilder,
    ) -> Result<Box<dyn Model>> {
        self(ctx, options, params)
    }
}

/// Custom models by name, for `kind = "custom"` in a job's `[model]`.
///
/// ```ignore
/// let mut registry = ModelRegistry::default();
/// registry.register("my_resnet", |ctx: &ModelContext, opts: &serde_json::Value, pb: &mut ParamBuilder| {
///     Ok(Box::new(MyResNet::new(ctx, opts, pb)?) as Box<dyn Model>)
/// });
/// ```
#[derive(Clone, Default)]
pub struct ModelRegistry {
    factories: BTreeMap<String, Arc<dyn ModelFactory>>,
}

impl ModelRegistry {
    pub fn register(&mut self, name: impl Into<String>, factory: impl ModelFactory + 'static) {
        self.factories.insert(name.into(), Arc::new(factory));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

/// A model with its parameters.
pub struct Network {
    model: Box<dyn Model>,
    params: Params,
    roles: Vec<ParamRole>,
}

impl Network {
    /// Builds the model of `spec` for `ctx`, with initial weights drawn from
    /// `seed`.
    pub fn build(
        spec: &ModelSpec,
        ctx: &ModelContext,
        seed: u64,
        device: &Device,
        registry: &ModelRegistry,
    ) -> Result<Network> {
        let mut pb = ParamBuilder::new(seed, spec.init(), device);
        let model: Box<dyn Model> = match spec {
            ModelSpec::Mlp(s) => Box::new(mlp::Mlp::new(s, ctx, &mut pb)?),
            ModelSpec::Cnn(s) => Box::new(cnn::Cnn::new(s, ctx, &mut pb)?),
            ModelSpec::Custom(s) => {
                let factory = registry.factories.get(&s.name).ok_or_else(|| {
                    let known: Vec<&str> = registry.names().collect();
                    EngineError::Model(format!(
                        "no custom model named `{}` in this worker (registered: {})",
                        s.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
                factory.build(ctx, &s.options, &mut pb)?
            }
        };
        let (params, roles) = pb.finish();
        if params.is_empty() {
            return Err(EngineError::Model(
                "the model has no trainable parameters".into(),
            ));
        }
        Ok(Network {
            model,
            params,
            roles,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.model.forward(xs)
    }

    /// The model split after its first layer, if it supports that.
    pub fn split_first(&self) -> Option<&dyn SplitFirst> {
        self.model.split_first()
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn roles(&self) -> &[ParamRole] {
        &self.roles
    }

    /// A copy of the current weights.
    pub fn weights(&self) -> Result<WeightSet> {
        WeightSet::from_params(&self.params)
    }

    /// Overwrites the weights in place (the model sees them at once).
    pub fn set_weights(&self, w: &WeightSet) -> Result<()> {
        w.check_matches(&self.params)?;
        for (var, t) in self.params.vars().iter().zip(&w.tensors) {
            var.set(t)?;
        }
        Ok(())
    }
}

/// A built-in model's fully connected layer, through the fused op of
/// `engine::ops::linear` (candle's own on other devices).
pub(crate) fn linear(l: &candle_nn::Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    match l.bias() {
        Some(b) => crate::engine::ops::linear(x, l.weight(), b),
        None => candle_core::Module::forward(l, x),
    }
}

pub(crate) fn activate(x: &Tensor, a: Activation) -> candle_core::Result<Tensor> {
    match a {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        Activation::Gelu => x.gelu_erf(),
        Activation::Silu => x.silu(),
        Activation::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
    }
}

#[cfg(test)]
mod tests {
    use ridgeline_common::spec::{CnnSpec, CustomModelSpec, MlpSpec, Pool};

    use super::*;

    fn ctx(shape: &[usize]) -> ModelContext {
        ModelContext {
            input_shape: shape.to_vec(),
            outputs: 10,
            task: Task::Classification,
        }
    }

    fn mlp() -> ModelSpec {
        ModelSpec::Mlp(MlpSpec {
            hidden: vec![32, 16],
            activation: Activation::Tanh,
            init: Default::default(),
        })
    }

    #[test]
    fn mlp_shapes_and_seeded_init() {
        let reg = ModelRegistry::default();
        let a = Network::build(&mlp(), &ctx(&[1, 8, 8]), 5, &Device::Cpu, &reg).unwrap();
        let b = Network::build(&mlp(), &ctx(&[1, 8, 8]), 5, &Device::Cpu, &reg).unwrap();
        let c = Network::build(&mlp(), &ctx(&[1, 8, 8]), 6, &Device::Cpu, &reg).unwrap();
        assert_eq!(
            a.params().numel(),
            64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
        );
        let fa = a
            .weights()
            .unwrap()
            .flatten()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let fb = b
            .weights()
            .unwrap()
            .flatten()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let fc = c
            .weights()
            .unwrap()
            .flatten()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(fa, fb);
        assert_ne!(fa, fc);
        // PyTorch default init: |w| < 1/sqrt(fan_in) for the first layer.
        assert!(fa[..64 * 32].iter().all(|v| v.abs() <= 1.0 / 8.0));
        let x = Tensor::zeros((3, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.forward(&x).unwrap().dims(), &[3, 10]);
    }

    #[test]
    fn cnn_shapes_and_too_small_inputs() {
        let reg = ModelRegistry::default();
        let spec = ModelSpec::Cnn(CnnSpec {
            channels: vec![4, 8],
            kernel: 3,
            stride: 1,
            pool: Pool::Max,
            dense: vec![16],
            activation: Activation::Relu,
            init: Default::default(),
        });
        let n = Network::build(&spec, &ctx(&[1, 28, 28]), 0, &Device::Cpu, &reg).unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(n.forward(&x).unwrap().dims(), &[2, 10]);
        assert_eq!(n.params().names()[0], "conv0.weight");
        let err = Network::build(&spec, &ctx(&[16]), 0, &Device::Cpu, &reg)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("[channels, height, width]"), "{err}");
        let err = Network::build(&spec, &ctx(&[1, 3, 3]), 0, &Device::Cpu, &reg)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("too small"), "{err}");
    }

    struct Linear1(candle_nn::Linear);
    impl Model for Linear1 {
        fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
            candle_core::Module::forward(&self.0, &xs.flatten_from(1)?)
        }
    }

    #[test]
    fn custom_models_plug_in_by_name() {
        let mut reg = ModelRegistry::default();
        reg.register(
            "linear",
            |ctx: &ModelContext, _: &serde_json::Value, pb: &mut ParamBuilder| {
                let d = ctx.input_shape.iter().product();
                Ok(Box::new(Linear1(pb.linear("fc", d, ctx.outputs)?)) as Box<dyn Model>)
            },
        );
        let spec = ModelSpec::Custom(CustomModelSpec {
            name: "linear".into(),
            options: serde_json::Value::Null,
        });
        let n = Network::build(&spec, &ctx(&[5]), 0, &Device::Cpu, &reg).unwrap();
        assert_eq!(n.params().numel(), 5 * 10 + 10);
        let spec = ModelSpec::Custom(CustomModelSpec {
            name: "resnet".into(),
            options: serde_json::Value::Null,
        });
        let err = Network::build(&spec, &ctx(&[5]), 0, &Device::Cpu, &reg)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`resnet`") && err.contains("linear"), "{err}");
    }
}
