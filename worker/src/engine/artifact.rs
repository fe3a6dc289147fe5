//! Artifacts: named tensors in safetensors format, addressed by the SHA-256
//! of their bytes. Weights, directions and checkpoints are artifacts; the
//! coordinator stores and serves them by hash, and a worker verifies the hash
//! of everything it downloads before using it.
//!
//! Safetensors sorts tensors by name, so the order that matters (parameter
//! order) is kept in the file's metadata under the key `ridgeline`, as JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::engine::error::{EngineError, Result};
use crate::engine::landscape::WeightSet;

/// Metadata key under which Ridgeline keeps its own header.
pub const META_KEY: &str = "ridgeline";

/// Hex SHA-256 of `bytes`: an artifact's address.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serialises `tensors` (names must be unique) with an optional JSON
/// header.
pub fn encode(tensors: &[(String, Tensor)], header: Option<&serde_json::Value>) -> Result<Vec<u8>> {
    let meta = header.map(|h| HashMap::from([(META_KEY.to_string(), h.to_string())]));
    // safetensors wants contiguous host tensors.
    let host = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), meta)
        .map_err(|e| EngineError::Artifact(format!("cannot serialise tensors: {e}")))
}

/// Parses an artifact; with `expected_hash`, first checks that the bytes are
/// the ones asked for.
pub fn decode(
    bytes: &[u8],
    expected_hash: Option<&str>,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, Option<serde_json::Value>)> {
    if let Some(want) = expected_hash {
        let got = content_hash(bytes);
        if !got.eq_ignore_ascii_case(want) {
            return Err(EngineError::Artifact(format!(
                "content hash mismatch: expected {want}, the bytes hash to {got}"
            )));
        }
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| EngineError::Artifact(format!("not a safetensors file: {e}")))?;
    let header = match meta.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
        Some(s) => Some(
            serde_json::from_str(s)
                .map_err(|e| EngineError::Artifact(format!("bad `{META_KEY}` metadata: {e}")))?,
        ),
        None => None,
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| EngineError::Artifact(format!("cannot read tensors: {e}")))?;
    Ok((tensors, header))
}

/// A [`WeightSet`] as an artifact (parameter order in the header).
pub fn encode_weights(w: &WeightSet, kind: &str) -> Result<Vec<u8>> {
    let header = serde_json::json!({ "format": 1, "kind": kind, "order": w.names });
    let tensors: Vec<(String, Tensor)> = w
        .names
        .iter()
        .cloned()
        .zip(w.tensors.iter().cloned())
        .collect();
    encode(&tensors, Some(&header))
}

/// Reads a [`WeightSet`] written by [`encode_weights`].
pub fn decode_weights(
    bytes: &[u8],
    expected_hash: Option<&str>,
    device: &Device,
) -> Result<WeightSet> {
    let (mut tensors, header) = decode(bytes, expected_hash, device)?;
    let order = header_order(header.as_ref(), "order")?;
    take_ordered(&mut tensors, &order, "").map(|t| WeightSet {
        names: order,
        tensors: t,
    })
}

/// The string list `key` of a Ridgeline header.
pub(crate) fn header_order(header: Option<&serde_json::Value>, key: &str) -> Result<Vec<String>> {
    let list = header
        .and_then(|h| h.get(key))
        .and_then(|v| v.as_array())
        .ok_or_else(|| {
            EngineError::Artifact(format!("the `{META_KEY}` metadata has no `{key}` list"))
        })?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                EngineError::Artifact(format!("`{key}` holds a non-string entry {v}"))
            })
        })
        .collect()
}

/// Removes `prefix + name` for each name from `tensors`, in order.
pub(crate) fn take_ordered(
    tensors: &mut HashMap<String, Tensor>,
    names: &[String],
    prefix: &str,
) -> Result<Vec<Tensor>> {
    names
        .iter()
        .map(|n| {
            let key = format!("{prefix}{n}");
            tensors.remove(&key).ok_or_else(|| {
                EngineError::Artifact(format!("tensor `{key}` is listed but missing"))
            })
        })
        .collect()
}

/// Writes `bytes` to `dir/<hash>.safetensors` (atomically: temp file, then
/// rename) and returns the hash.
pub fn store(dir: &Path, bytes: &[u8]) -> Result<String> {
    let hash = content_hash(bytes);
    let path = path_for(dir, &hash);
    if path.exists() {
        return Ok(hash);
    }
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| EngineError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{hash}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(hash)
}

/// Reads the artifact `hash` from `dir`, verifying its content.
pub fn fetch(dir: &Path, hash: &str) -> Result<Vec<u8>> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EngineError::Artifact(format!(
            "`{hash}` is not a SHA-256 hex digest"
        )));
    }
    let path = path_for(dir, hash);
    let bytes = std::fs::read(&path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let got = content_hash(&bytes);
    if got != hash.to_ascii_lowercase() {
        return Err(EngineError::Artifact(format!(
            "{} is corrupt: its content hashes to {got}",
            path.display()
        )));
    }
    Ok(bytes)
}

fn path_for(dir: &Path, hash: &str) -> PathBuf {
    dir.join(format!("{}.safetensors", hash.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip_in_order_and_hash_is_checked() {
        let d = Device::Cpu;
        let w = WeightSet {
            names: vec!["z.weight".into(), "a.bias".into()],
            tensors: vec![
                Tensor::new(&[[1f32, 2.], [3., 4.]], &d).unwrap(),
                Tensor::new(&[0.5f32, -0.5], &d).unwrap(),
            ],
        };
        let bytes = encode_weights(&w, "weights").unwrap();
        let h = content_hash(&bytes);
        let back = decode_weights(&bytes, Some(&h), &d).unwrap();
        assert_eq!(back.names, w.names);
        assert_eq!(
            back.tensors[0].to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![3., 4.]]
        );
        assert_eq!(
            encode_weights(&w, "weights").unwrap(),
            bytes,
            "encoding is deterministic"
        );

        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = decode_weights(&bad, Some(&h), &d).unwrap_err().to_string();
        assert!(err.contains("hash mismatch"), "{err}");
        let err = decode_weights(&bytes[..20], None, &d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("safetensors"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let stored = store(dir.path(), &bytes).unwrap();
        assert_eq!(stored, h);
        assert_eq!(fetch(dir.path(), &h).unwrap(), bytes);
        std::fs::write(dir.path().join(format!("{h}.safetensors")), &bad).unwrap();
        assert!(fetch(dir.path(), &h)
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
        assert!(fetch(dir.path(), "../etc/passwd").is_err());
    }
}
