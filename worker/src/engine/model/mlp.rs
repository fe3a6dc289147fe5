use candle_core::Tensor;
use ridgeline_common::spec::{Activation, MlpSpec};

use super::{activate, Model, ModelContext, ParamBuilder, SplitFirst};
use crate::engine::error::Result;
use crate::engine::ops;

/// Fully connected network; inputs of any shape are flattened.
pub struct Mlp {
    layers: Vec<candle_nn::Linear>,
    activation: Activation,
}

impl Mlp {
    pub fn new(spec: &MlpSpec, ctx: &ModelContext, pb: &mut ParamBuilder) -> Result<Self> {
        let mut width: usize = ctx.input_shape.iter().product();
        let mut layers = Vec::with_capacity(spec.hidden.len() + 1);
        for (i, &h) in spec.hidden.iter().enumerate() {
            layers.push(pb.linear(&format!("fc{i}"), width, h)?);
            width = h;
        }
        layers.push(pb.linear("out", width, ctx.outputs)?);
        Ok(Self {
            layers,
            activation: spec.activation,
        })
    }
}

impl Mlp {
    /// From the output of layer `i` (before its activation) to the outputs.
    fn after_layer(&self, i: usize, mut h: Tensor) -> candle_core::Result<Tensor> {
        let last = self.layers.len() - 1;
        for j in i..=last {
            if j > i {
                h = super::linear(&self.layers[j], &h)?;
            }
            if j < last {
                h = activate(&h, self.activation)?;
            }
        }
        Ok(h)
    }
}

impl Model for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = super::linear(&self.layers[0], &xs.flatten_from(1)?)?;
        self.after_layer(0, h)
    }

    fn split_first(&self) -> Option<&dyn SplitFirst> {
        Some(self)
    }
}

impl SplitFirst for Mlp {
    fn first(&self, xs: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        ops::linear(xs, w, b)
    }

    fn rest(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self.after_layer(0, z.clone())
    }
}
