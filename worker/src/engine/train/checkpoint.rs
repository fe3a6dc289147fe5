//! Checkpoints: everything needed to continue a run exactly where it
//! stopped — weights, optimizer state, epochs and steps done — plus a
//! fingerprint of the spec it belongs to, so a checkpoint is never resumed
//! into a different run. The data order and the schedule position are pure
//! functions of (seed, epoch, step), so they need no state of their own.
//!
//! On disk (and over the wire) a checkpoint is one safetensors artifact:
//! tensors `param/<name>` and `optim/<name>.<slot>`, with their order and the
//! counters in the `ridgeline` metadata.

use candle_core::{Device, Tensor};
use ridgeline_common::RunSpec;
use sha2::{Digest, Sha256};

use crate::engine::artifact;
use crate::engine::error::{EngineError, Result};
use crate::engine::landscape::WeightSet;
use crate::engine::optim::OptimizerState;

#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// [`fingerprint`] of the run's spec.
    pub fingerprint: String,
    /// Optimizer kind (`OptimizerSpec::name`).
    pub optimizer: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Training steps completed.
    pub step: u64,
    pub weights: WeightSet,
    pub optimizer_state: OptimizerState,
}

/// What identifies a run's numbers: data, model, optimizer, schedule, batch
/// size and seed (not its length or how often it reports, which do not
/// change any number of the epochs they share).
pub fn fingerprint(spec: &RunSpec) -> String {
    let key = serde_json::json!({
        "data": spec.data,
        "model": spec.model,
        "optimizer": spec.optimizer,
        "schedule": spec.schedule,
        "batch_size": spec.batch_size,
        "seed": spec.seed,
    });
    hex::encode(Sha256::digest(key.to_string().as_bytes()))
}

impl Checkpoint {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let slot_names: Vec<&String> = self.optimizer_state.slots.iter().map(|(n, _)| n).collect();
        let header = serde_json::json!({
            "format": 1,
            "kind": "checkpoint",
            "fingerprint": self.fingerprint,
            "optimizer": self.optimizer,
            "epoch": self.epoch,
            "step": self.step,
            "optimizer_steps": self.optimizer_state.steps,
            "order": self.weights.names,
            "slots": slot_names,
        });
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (n, t) in self.weights.names.iter().zip(&self.weights.tensors) {
            tensors.push((format!("param/{n}"), t.clone()));
        }
        for (n, t) in &self.optimizer_state.slots {
            tensors.push((format!("optim/{n}"), t.clone()));
        }
        artifact::encode(&tensors, Some(&header))
    }

    pub fn decode(
        bytes: &[u8],
        expected_hash: Option<&str>,
        device: &Device,
    ) -> Result<Checkpoint> {
        let (mut tensors, header) = artifact::decode(bytes, expected_hash, device)?;
        let h = header
            .as_ref()
            .filter(|h| h.get("kind").and_then(|k| k.as_str()) == Some("checkpoint"))
            .ok_or_else(|| {
                EngineError::Checkpoint("the artifact is not a Ridgeline checkpoint".into())
            })?;
        let text = |k: &str| {
            h.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| EngineError::Checkpoint(format!("checkpoint metadata lacks `{k}`")))
        };
        let num = |k: &str| {
            h.get(k)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| EngineError::Checkpoint(format!("checkpoint metadata lacks `{k}`")))
        };
        let order = artifact::header_order(header.as_ref(), "order")?;
        let slots = artifact::header_order(header.as_ref(), "slots")?;
        let weights = artifact::take_ordered(&mut tensors, &order, "param/")?;
        let slot_tensors = artifact::take_ordered(&mut tensors, &slots, "optim/")?;
        Ok(Checkpoint {
            fingerprint: text("fingerprint")?,
            optimizer: text("optimizer")?,
            epoch: num("epoch")? as usize,
            step: num("step")?,
            weights: WeightSet {
                names: order,
                tensors: weights,
            },
            optimizer_state: OptimizerState {
                steps: num("optimizer_steps")?,
                slots: slots.into_iter().zip(slot_tensors).collect(),
            },
        })
    }
}
