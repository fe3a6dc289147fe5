use candle_core::{Module, Tensor};
use ridgeline_common::spec::{Activation, MlpSpec};

use super::{activate, Model, ModelContext, ParamBuilder};
use crate::engine::error::Result;

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

impl Model for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = xs.flatten_from(1)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = activate(&h, self.activation)?;
            }
        }
        Ok(h)
    }
}
