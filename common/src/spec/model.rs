//! The `[model]` section: declarative MLP and CNN, or a model registered by
//! name in a custom worker binary.

use serde::{Deserialize, Serialize};

use super::SpecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
    Silu,
    LeakyRelu,
}

/// Weight initialisation. Every scheme is drawn from the run's seed, one
/// independent stream per parameter, so adding a layer does not change the
/// others' initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// PyTorch's default for `nn.Linear`/`nn.Conv2d`: weights and biases
    /// U(-1/√fan_in, 1/√fan_in).
    #[default]
    Pytorch,
    /// He normal for weights (std √(2/fan_in)), zero biases.
    KaimingNormal,
    /// Glorot uniform for weights, zero biases.
    XavierUniform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// 2×2 max pooling after each convolution.
    #[default]
    Max,
    /// 2×2 average pooling after each convolution.
    Avg,
    /// No pooling (use `stride` to shrink instead).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    Mlp(MlpSpec),
    Cnn(CnnSpec),
    /// A model registered under `name` in the worker binary (see the worker
    /// crate's `ModelRegistry`); `options` is passed to it as JSON.
    Custom(CustomModelSpec),
}

impl ModelSpec {
    pub fn init(&self) -> Init {
        match self {
            ModelSpec::Mlp(s) => s.init,
            ModelSpec::Cnn(s) => s.init,
            ModelSpec::Custom(_) => Init::Pytorch,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            ModelSpec::Mlp(s) => {
                if let Some(i) = s.hidden.iter().position(|&w| w == 0) {
                    return Err(SpecError::new(
                        format!("hidden[{i}]"),
                        "width must be at least 1",
                    ));
                }
            }
            ModelSpec::Cnn(s) => {
                if s.channels.is_empty() {
                    return Err(SpecError::new("channels", "needs at least one convolution"));
                }
                if let Some(i) = s.channels.iter().position(|&w| w == 0) {
                    return Err(SpecError::new(
                        format!("channels[{i}]"),
                        "must be at least 1",
                    ));
                }
                if let Some(i) = s.dense.iter().position(|&w| w == 0) {
                    return Err(SpecError::new(
                        format!("dense[{i}]"),
                        "width must be at least 1",
                    ));
                }
                if s.kernel == 0 || s.kernel % 2 == 0 {
                    return Err(SpecError::new(
                        "kernel",
                        format!(
                            "must be odd and at least 1 (padding keeps the size), got {}",
                            s.kernel
                        ),
                    ));
                }
                if s.stride == 0 {
                    return Err(SpecError::new("stride", "must be at least 1"));
                }
            }
            ModelSpec::Custom(s) => {
                if s.name.trim().is_empty() {
                    return Err(SpecError::new("name", "must name a registered model"));
                }
            }
        }
        Ok(())
    }
}

/// Fully connected layers: `hidden` widths, then a linear output layer.
/// Image inputs are flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    #[serde(default)]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default)]
    pub init: Init,
}

fn d_kernel() -> usize {
    3
}
fn d_stride() -> usize {
    1
}

/// Convolution blocks (conv with "same" padding → activation → pool), then
/// flatten, `dense` hidden layers, and a linear output layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// Output channels of each convolution block.
    pub channels: Vec<usize>,
    #[serde(default = "d_kernel")]
    pub kernel: usize,
    #[serde(default = "d_stride")]
    pub stride: usize,
    #[serde(default)]
    pub pool: Pool,
    /// Hidden widths of the dense head.
    #[serde(default)]
    pub dense: Vec<usize>,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default)]
    pub init: Init,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomModelSpec {
    pub name: String,
    #[serde(default)]
    pub options: serde_json::Value,
}
