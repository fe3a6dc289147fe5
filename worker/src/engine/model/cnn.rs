use candle_core::{Module, Tensor};
use ridgeline_common::spec::{Activation, CnnSpec, Pool};

use super::{activate, Model, ModelContext, ParamBuilder};
use crate::engine::error::{EngineError, Result};

/// Convolution blocks (conv with "same" padding → activation → 2×2 pool),
/// then a dense head.
pub struct Cnn {
    convs: Vec<candle_nn::Conv2d>,
    dense: Vec<candle_nn::Linear>,
    pool: Pool,
    activation: Activation,
}

impl Cnn {
    pub fn new(spec: &CnnSpec, ctx: &ModelContext, pb: &mut ParamBuilder) -> Result<Self> {
        let &[mut channels, mut h, mut w] = ctx.input_shape.as_slice() else {
            return Err(EngineError::Model(format!(
                "a CNN needs image inputs shaped [channels, height, width]; the data are shaped {:?}",
                ctx.input_shape
            )));
        };
        let padding = spec.kernel / 2;
        let config = candle_nn::Conv2dConfig {
            padding,
            stride: spec.stride,
            ..Default::default()
        };
        let mut convs = Vec::with_capacity(spec.channels.len());
        for (i, &c) in spec.channels.iter().enumerate() {
            convs.push(pb.conv2d(&format!("conv{i}"), channels, c, spec.kernel, config)?);
            channels = c;
            // "Same" padding with an odd kernel: (h + 2p - k)/s + 1.
            h = (h + 2 * padding - spec.kernel) / spec.stride + 1;
            w = (w + 2 * padding - spec.kernel) / spec.stride + 1;
            if spec.pool != Pool::None {
                h /= 2;
                w /= 2;
            }
            if h == 0 || w == 0 {
                return Err(EngineError::Model(format!(
                    "input {:?} is too small for {} convolution blocks: it shrinks to nothing after block {i}",
                    ctx.input_shape,
                    spec.channels.len()
                )));
            }
        }
        let mut width = channels * h * w;
        let mut dense = Vec::with_capacity(spec.dense.len() + 1);
        for (i, &d) in spec.dense.iter().enumerate() {
            dense.push(pb.linear(&format!("fc{i}"), width, d)?);
            width = d;
        }
        dense.push(pb.linear("out", width, ctx.outputs)?);
        Ok(Self {
            convs,
            dense,
            pool: spec.pool,
            activation: spec.activation,
        })
    }
}

impl Model for Cnn {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = xs.clone();
        for c in &self.convs {
            h = activate(&c.forward(&h)?, self.activation)?;
            h = match self.pool {
                Pool::Max => h.max_pool2d(2)?,
                Pool::Avg => h.avg_pool2d(2)?,
                Pool::None => h,
            };
        }
        let mut h = h.flatten_from(1)?;
        let last = self.dense.len() - 1;
        for (i, l) in self.dense.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = activate(&h, self.activation)?;
            }
        }
        Ok(h)
    }
}
