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
    fn after_layer(&self, i: usize, h: Tensor) -> candle_core::Result<Tensor> {
        if i < self.layers.len() - 1 {
            self.layers_from(i + 1, activate(&h, self.activation)?)
        } else {
            Ok(h)
        }
    }

    /// From the input of layer `j` (the previous layer's activated
    /// output) to the outputs.
    fn layers_from(&self, j: usize, mut h: Tensor) -> candle_core::Result<Tensor> {
        for j in j..self.layers.len() {
            h = self.layer(j, &h)?;
        }
        Ok(h)
    }

    /// Layer `j` with its activation (none after the last): a hidden ReLU
    /// layer with bias is one op (`engine::ops::linear_relu`).
    fn layer(&self, j: usize, h: &Tensor) -> candle_core::Result<Tensor> {
        let l = &self.layers[j];
        if j == self.layers.len() - 1 {
            return super::linear(l, h);
        }
        match (self.activation, l.bias()) {
            (Activation::Relu, Some(b)) => ops::linear_relu(h, l.weight(), b),
            (a, _) => activate(&super::linear(l, h)?, a),
        }
    }
}

impl Model for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.layer(0, &xs.flatten_from(1)?)?;
        for j in 1..self.layers.len() {
            h = self.layer(j, &h)?;
        }
        Ok(h)
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

    fn rest_at(&self, z0: &Tensor, zd: &Tensor, a: f64) -> candle_core::Result<Tensor> {
        if self.activation == Activation::Relu && self.layers.len() > 1 {
            self.layers_from(1, ops::axpy(z0, zd, a, true)?)
        } else {
            self.rest(&ops::axpy(z0, zd, a, false)?)
        }
    }
}
