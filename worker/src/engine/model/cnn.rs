use candle_core::Tensor;
use ridgeline_common::spec::{Activation, CnnSpec, Pool};

use super::{activate, Model, ModelContext, ParamBuilder, SplitFirst};
use crate::engine::error::{EngineError, Result};
use crate::engine::ops;

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

impl Cnn {
    /// Convolution `i` with its bias.
    fn conv(&self, i: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.convs[i];
        let cfg = c.config();
        match c.bias() {
            Some(b) if cfg.dilation == 1 && cfg.groups == 1 => {
                ops::conv2d(x, c.weight(), b, cfg.stride, cfg.padding)
            }
            _ => candle_core::Module::forward(c, x),
        }
    }

    /// From the output of convolution `i` (before its activation) to the
    /// outputs.
    fn after_conv(&self, i: usize, mut h: Tensor) -> candle_core::Result<Tensor> {
        for j in i..self.convs.len() {
            if j > i {
                h = self.conv(j, &h)?;
            }
            h = match (self.activation, self.pool) {
                // The common block as one op (engine::ops::pool).
                (Activation::Relu, Pool::Max) => ops::relu_max_pool2d(&h)?,
                (a, Pool::Max) => activate(&h, a)?.max_pool2d(2)?,
                (a, Pool::Avg) => activate(&h, a)?.avg_pool2d(2)?,
                (a, Pool::None) => activate(&h, a)?,
            };
        }
        let mut h = h.flatten_from(1)?;
        let last = self.dense.len() - 1;
        for (i, l) in self.dense.iter().enumerate() {
            h = super::linear(l, &h)?;
            if i < last {
                h = activate(&h, self.activation)?;
            }
        }
        Ok(h)
    }
}

impl Model for Cnn {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.convs.is_empty() {
            return self.after_conv(0, xs.clone());
        }
        self.after_conv(0, self.conv(0, xs)?)
    }

    fn split_first(&self) -> Option<&dyn SplitFirst> {
        let c = self.convs.first()?;
        let cfg = c.config();
        (c.bias().is_some() && cfg.dilation == 1 && cfg.groups == 1)
            .then_some(self as &dyn SplitFirst)
    }
}

impl SplitFirst for Cnn {
    fn first(&self, xs: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let cfg = self.convs[0].config();
        ops::conv2d(xs, w, b, cfg.stride, cfg.padding)
    }

    fn rest(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self.after_conv(0, z.clone())
    }
}
