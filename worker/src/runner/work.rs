//! The engine side of a task: what runs on a blocking thread. Nothing here
//! touches the network: artifacts arrive as bytes, measurements leave
//! through a channel, and cancellation is a flag read between steps, so the
//! same code is testable without a coordinator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::Device;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::task::{DirectionSpec, LineSearchTask, TrainTask};
use ridgeline_common::{
    wire, DataSpec, DataSummary, EpochReport, RunOutcome, ScheduleSpec, SpecError,
};

use super::reporter::ProgressSender;
use super::task::TaskControl;
use crate::engine::artifact;
use crate::engine::data::{self, Dataset};
use crate::engine::error::{EngineError, Result};
use crate::engine::landscape::{self, DirectionOptions, EvalOptions, WeightSet};
use crate::engine::model::{ModelContext, ModelRegistry, Network};
use crate::engine::train::{self, Checkpoint, Flow, Observer, Trainer};

/// Datasets kept in memory by default: the tasks of one job share theirs,
/// and a worker rarely alternates between more jobs than this.
pub const DATASET_CACHE_ENTRIES: usize = 4;

/// Brief-training directions kept in memory by default.
pub const DIRECTION_CACHE_ENTRIES: usize = 4;

/// What every task of a worker shares.
pub struct Engine {
    pub device: Device,
    pub registry: ModelRegistry,
    pub datasets: DatasetCache,
    /// (θ0, d) of "trained" line-search directions, by run and direction:
    /// every block of points of one line needs the same brief training,
    /// which can cost more than evaluating the block.
    pub directions: Memo<(WeightSet, WeightSet)>,
}

impl Engine {
    pub fn new(device: Device, registry: ModelRegistry) -> Self {
        Self {
            device,
            registry,
            datasets: DatasetCache::new(DATASET_CACHE_ENTRIES),
            directions: Memo::new(DIRECTION_CACHE_ENTRIES),
        }
    }
}

/// Whether another attempt (possibly on another machine) could succeed. A
/// spec or model that does not fit is wrong everywhere; a missing file, a
/// device or a bad download may be fine elsewhere or later.
pub fn is_retryable(error: &EngineError) -> bool {
    !matches!(error, EngineError::Spec(_) | EngineError::Model(_))
}

/// Values that are expensive to make, by key, least recently used dropped
/// first. Concurrent tasks asking for the same key wait for one to make it
/// instead of each making their own; a failure is not kept.
pub struct Memo<T> {
    capacity: usize,
    inner: Mutex<MemoInner<T>>,
}

struct MemoInner<T> {
    clock: u64,
    entries: HashMap<String, MemoEntry<T>>,
}

struct MemoEntry<T> {
    last_used: u64,
    /// Locked while the value is made, so a second task waits for it.
    slot: Arc<Mutex<Option<T>>>,
}

impl<T: Clone> Memo<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(MemoInner {
                clock: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// The value of `key`, made by `make` unless it is held; the flag says
    /// whether `make` ran.
    pub fn get_or_try_make<E>(
        &self,
        key: &str,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(T, bool), E> {
        let slot = {
            // A panic elsewhere while holding the lock leaves the map
            // consistent (every update is a single insert or remove).
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.clock += 1;
            let now = inner.clock;
            let entry = inner
                .entries
                .entry(key.to_string())
                .or_insert_with(|| MemoEntry {
                    last_used: now,
                    slot: Arc::new(Mutex::new(None)),
                });
            entry.last_used = now;
            let slot = entry.slot.clone();
            while inner.entries.len() > self.capacity {
                let oldest = inner
                    .entries
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => inner.entries.remove(&k),
                    None => break,
                };
            }
            slot
        };
        let mut held = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = held.as_ref() {
            return Ok((v.clone(), false));
        }
        let v = make()?;
        *held = Some(v.clone());
        Ok((v, true))
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loaded datasets by their [`DataSpec`]. Loading a dataset (generating
/// it, or parsing files and moving them to the device) often costs more
/// than a training chunk, and every chunk and line-search block of a job
/// uses the same one.
pub struct DatasetCache(Memo<CachedDataset>);

/// A cached dataset and its summary, made the first time a task asks.
#[derive(Clone)]
struct CachedDataset {
    data: Arc<Dataset>,
    summary: Arc<Mutex<Option<DataSummary>>>,
}

impl DatasetCache {
    pub fn new(capacity: usize) -> Self {
        Self(Memo::new(capacity))
    }

    /// The dataset of `spec` on `device`, loaded at most once while cached.
    pub fn get_or_load(&self, spec: &DataSpec, device: &Device) -> Result<Arc<Dataset>> {
        Ok(self.entry(spec, device)?.data)
    }

    /// The dataset of `spec` on `device` and its [`DataSummary`], each made
    /// at most once while cached (the summary reads the whole dataset).
    pub fn get_or_load_summarized(
        &self,
        spec: &DataSpec,
        device: &Device,
    ) -> Result<(Arc<Dataset>, DataSummary)> {
        let entry = self.entry(spec, device)?;
        // Held while the summary is made, so a second task waits for it.
        let mut held = entry.summary.lock().unwrap_or_else(PoisonError::into_inner);
        let summary = match *held {
            Some(s) => s,
            None => {
                let s = data::summarize(&entry.data)?;
                if s.heldout_in_train > 0 {
                    tracing::warn!(
                        dataset = %entry.data.name,
                        heldout_in_train = s.heldout_in_train,
                        heldout = s.heldout_rows,
                        "heldout examples that are copies of training examples"
                    );
                }
                *held = Some(s);
                s
            }
        };
        drop(held);
        Ok((entry.data, summary))
    }

    fn entry(&self, spec: &DataSpec, device: &Device) -> Result<CachedDataset> {
        let key = serde_json::to_string(spec)
            .map_err(|e| EngineError::Spec(SpecError::new("data", e.to_string())))?;
        let (entry, loaded) = self.0.get_or_try_make(&key, || {
            data::load(spec, device)
                .map(|d| CachedDataset {
                    data: Arc::new(d),
                    summary: Arc::default(),
                })
                .map_err(EngineError::from)
        })?;
        if loaded {
            let d = &entry.data;
            tracing::info!(
                dataset = %d.name,
                train = d.train.len,
                heldout = d.heldout.len,
                "dataset loaded"
            );
        }
        Ok(entry)
    }

    /// Datasets currently held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a training chunk produced.
#[derive(Debug)]
pub struct Trained {
    pub outcome: RunOutcome,
    /// Epochs completed by this attempt.
    pub epochs_trained: u32,
    /// Training examples per epoch.
    pub train_rows: usize,
    /// The encoded checkpoint at the end (absent when stopped).
    pub checkpoint: Option<Vec<u8>>,
}

/// Sends the summary of a task's dataset, ahead of its measurements (the
/// coordinator keeps one per curve).
fn send_data_summary(progress: &ProgressSender, curve: &str, summary: DataSummary) {
    // A closed channel means the reporter is gone; the task's flag says so.
    let _ = progress.send(pb::Progress {
        curve: curve.to_string(),
        kind: Some(pb::progress::Kind::Data(summary.into())),
        // Filled in by the coordinator from the lease.
        ..Default::default()
    });
}

/// Forwards every report as a `Progress` and stops the run when the task's
/// flag is set.
struct Forward<'a> {
    curve: &'a str,
    control: &'a TaskControl,
    progress: &'a ProgressSender,
}

impl Observer for Forward<'_> {
    fn report(&mut self, report: &EpochReport) -> Flow {
        // A closed channel means the reporter is gone (the task is being
        // abandoned); the flag says so too, and stops the run below.
        let _ = self.progress.send(pb::Progress {
            curve: self.curve.to_string(),
            kind: Some(pb::progress::Kind::Epoch((*report).into())),
            // Filled in by the coordinator from the lease.
            ..Default::default()
        });
        if self.control.is_stopped() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn cancelled(&self) -> bool {
        self.control.is_stopped()
    }
}

/// Trains one chunk: from `checkpoint` (its hash and bytes, verified
/// against the hash by [`super::artifacts::obtain`], so not hashed again
/// here) when the chunk does not start at epoch 0, up to `to_epoch`. A chunk from epoch 0 sends
/// the dataset's summary before its first epoch report.
pub fn train(
    engine: &Engine,
    task: &TrainTask,
    checkpoint: Option<(&str, &[u8])>,
    control: &TaskControl,
    progress: &ProgressSender,
) -> Result<Trained> {
    task.run.validate()?;
    let (data, summary) = if task.from_epoch == 0 {
        let (data, summary) = engine
            .datasets
            .get_or_load_summarized(&task.run.data, &engine.device)?;
        (data, Some(summary))
    } else {
        let data = engine
            .datasets
            .get_or_load(&task.run.data, &engine.device)?;
        (data, None)
    };
    let train_rows = data.train.len;
    let mut trainer = match checkpoint {
        Some((hash, bytes)) => {
            let ck = Checkpoint::decode(bytes, None, &engine.device)?;
            if ck.epoch != task.from_epoch {
                return Err(EngineError::Checkpoint(format!(
                    "checkpoint {hash} is at epoch {}, but the chunk starts at epoch {}",
                    ck.epoch, task.from_epoch
                )));
            }
            Trainer::resume(&task.run, data, &engine.device, &engine.registry, &ck)?
        }
        None if task.from_epoch == 0 => {
            Trainer::new(&task.run, data, &engine.device, &engine.registry)?
        }
        None => {
            return Err(EngineError::Spec(SpecError::new(
                "checkpoint",
                format!(
                    "a chunk starting at epoch {} needs the checkpoint of that epoch",
                    task.from_epoch
                ),
            )))
        }
    };
    if let Some(summary) = summary {
        send_data_summary(progress, &task.curve, summary);
    }
    let start = trainer.epoch();
    let mut observer = Forward {
        curve: &task.curve,
        control,
        progress,
    };
    let outcome = trainer.run(task.to_epoch, &mut observer)?;
    let epochs_trained = u32::try_from(trainer.epoch().saturating_sub(start)).unwrap_or(u32::MAX);
    let checkpoint = match outcome {
        RunOutcome::Stopped { .. } => None,
        RunOutcome::Completed { .. } | RunOutcome::Diverged { .. } => {
            Some(trainer.checkpoint()?.encode()?)
        }
    };
    Ok(Trained {
        outcome,
        epochs_trained,
        train_rows,
        checkpoint,
    })
}

/// What a block of line-search points produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Searched {
    /// Points measured (and sent).
    pub points: usize,
    /// Epochs spent building the direction (brief training), else 0.
    pub epochs_trained: u32,
    /// Cancelled before every point was measured.
    pub stopped: bool,
}

/// Measures a block of line-search points θ0 + a·d. θ0 and random
/// directions are rebuilt from the run's seeds; `toward` carries the
/// artifact (hash and bytes) of a `Toward` direction. Every block sends the
/// dataset's summary before its first point.
pub fn line_search(
    engine: &Engine,
    task: &LineSearchTask,
    toward: Option<(&str, &[u8])>,
    control: &TaskControl,
    progress: &ProgressSender,
) -> Result<Searched> {
    let run = &task.run;
    run.validate()?;
    let device = &engine.device;
    let (data, summary) = engine.datasets.get_or_load_summarized(&run.data, device)?;
    let ctx = ModelContext {
        input_shape: data.input_shape.clone(),
        outputs: data.outputs,
        task: data.task,
    };
    let net = Network::build(&run.model, &ctx, run.seed, device, &engine.registry)?;
    let mine = net.weights()?;
    let (theta0, direction, epochs_trained) = match &task.direction {
        DirectionSpec::Random {
            seed,
            filter_normalize,
            include_biases,
        } => {
            let options = DirectionOptions {
                filter_normalize: *filter_normalize,
                include_biases: *include_biases,
            };
            let d = landscape::random_direction(&mine, net.roles(), *seed, options)?;
            (mine, d, 0)
        }
        DirectionSpec::Trained { subset, epochs, lr } => {
            let mut short = run.clone();
            short.schedule = ScheduleSpec::constant(*lr, None);
            let key = serde_json::json!({ "run": short, "direction": task.direction }).to_string();
            let mut trained = 0;
            let ((theta0, d), _) = engine.directions.get_or_try_make(&key, || {
                let (theta0, d, outcome) = train::brief_training_direction(
                    &short,
                    &data,
                    device,
                    &engine.registry,
                    *subset,
                    *epochs,
                )?;
                trained = match outcome {
                    RunOutcome::Completed { epoch } | RunOutcome::Stopped { epoch } => epoch,
                    RunOutcome::Diverged { epoch, reason, .. } => {
                        tracing::warn!(%reason, "brief training diverged: the direction is not finite");
                        epoch
                    }
                };
                Ok::<_, EngineError>((theta0, d))
            })?;
            // Same model, same seed: the θ0 it trained from must be ours. If
            // it were not, its θ0 is the one the direction belongs to.
            let gap = theta0.sub(&mine)?.norm()?;
            if gap != 0.0 {
                tracing::warn!(
                    gap,
                    "brief training started from other weights than θ0; using its θ0"
                );
            }
            // Epochs this attempt actually trained (none when the direction
            // was already known here).
            (theta0, d, u32::try_from(trained).unwrap_or(u32::MAX))
        }
        DirectionSpec::Toward { weights } => {
            let (hash, bytes) = toward.ok_or_else(|| {
                EngineError::Artifact(format!("artifact {weights} was not fetched"))
            })?;
            let theta1 = decode_weights_or_checkpoint(bytes, hash, device)?;
            let d = theta1.sub(&mine)?;
            (mine, d, 0)
        }
    };
    let alphas: Vec<f64> = task.points.iter().map(|&(_, a)| a).collect();
    let eval = EvalOptions {
        train_eval_size: run.train_eval_size,
        eval_batch: train::EVAL_BATCH,
    };
    let mut next = task.points.iter().map(|&(index, _)| index);
    send_data_summary(progress, &task.curve, summary);
    let points = landscape::line_search(&net, &theta0, &direction, &alphas, &data, eval, |p| {
        // line_search reports the points in the order of `alphas`.
        let index = next.next().unwrap_or(u32::MAX);
        let _ = progress.send(pb::Progress {
            curve: task.curve.clone(),
            kind: Some(pb::progress::Kind::Point(wire::line_point_to_wire(
                index, p,
            ))),
            ..Default::default()
        });
        !control.is_stopped()
    })?;
    Ok(Searched {
        points: points.len(),
        epochs_trained,
        stopped: points.len() < task.points.len() || control.is_stopped(),
    })
}

/// Reads the weights of a `Toward` artifact: plain weights
/// ([`artifact::encode_weights`]) or a whole checkpoint (a run's final
/// checkpoint is what the coordinator has of its trained weights).
pub fn decode_weights_or_checkpoint(
    bytes: &[u8],
    hash: &str,
    device: &Device,
) -> Result<WeightSet> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        EngineError::Artifact(format!("artifact {hash} is not a safetensors file: {e}"))
    })?;
    let kind = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(artifact::META_KEY))
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
        .and_then(|h| h.get("kind").and_then(|k| k.as_str()).map(str::to_string));
    if kind.as_deref() == Some("checkpoint") {
        Ok(Checkpoint::decode(bytes, Some(hash), device)?.weights)
    } else {
        artifact::decode_weights(bytes, Some(hash), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::data::DataError;
    use ridgeline_common::RunSpec;
    use tokio::sync::mpsc;

    const RUN: &str = r#"
epochs = 3
batch_size = 32
seed = 3
train_eval_size = 100
[data.source]
kind = "tabular"
n_train = 160
n_heldout = 64
seed = 9
[model]
kind = "mlp"
hidden = [8]
[optimizer]
kind = "sgd"
[schedule]
lr = { kind = "constant", lr = 0.05 }
momentum = { kind = "constant", value = 0.9 }
"#;

    fn run_spec() -> RunSpec {
        toml::from_str(RUN).unwrap()
    }

    fn engine() -> Engine {
        Engine::new(Device::Cpu, ModelRegistry::default())
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<pb::Progress>) -> Vec<pb::progress::Kind> {
        let mut out = vec![];
        while let Ok(p) = rx.try_recv() {
            assert_eq!(p.curve, "seed=3");
            out.extend(p.kind);
        }
        out
    }

    /// The dataset summary leading `items`, and the rest.
    fn data_first(items: &[pb::progress::Kind]) -> (DataSummary, &[pb::progress::Kind]) {
        match items.split_first() {
            Some((pb::progress::Kind::Data(d), rest)) => (DataSummary::from(*d), rest),
            other => panic!("no leading data summary: {other:?}"),
        }
    }

    fn epochs(items: &[pb::progress::Kind]) -> Vec<u32> {
        items
            .iter()
            .map(|k| match k {
                pb::progress::Kind::Epoch(e) => e.epoch,
                other => panic!("not an epoch report: {other:?}"),
            })
            .collect()
    }

    fn chunk(from: usize, to: usize, checkpoint: Option<String>) -> TrainTask {
        TrainTask {
            curve: "seed=3".into(),
            run: run_spec(),
            from_epoch: from,
            to_epoch: to,
            checkpoint,
        }
    }

    #[test]
    fn errors_of_the_spec_or_model_are_final_and_the_rest_retryable() {
        assert!(!is_retryable(&EngineError::Spec(SpecError::new(
            "epochs", "0"
        ))));
        assert!(!is_retryable(&EngineError::Model("no such model".into())));
        for e in [
            EngineError::Data(DataError::Invalid("empty".into())),
            EngineError::Checkpoint("other run".into()),
            EngineError::Artifact("hash mismatch".into()),
            EngineError::Device("cuda:3".into()),
            EngineError::Io {
                path: "/x".into(),
                source: std::io::Error::other("disk"),
            },
        ] {
            assert!(is_retryable(&e), "{e}");
        }
    }

    #[test]
    fn chunks_resume_from_their_checkpoint_and_line_searches_reach_the_trained_weights() {
        let engine = engine();
        let control = TaskControl::new();
        let (tx, mut rx) = mpsc::unbounded_channel();

        // Chunk 1: epochs 0..2, reporting the initial weights too.
        let first = train(&engine, &chunk(0, 2, None), None, &control, &tx).unwrap();
        assert_eq!(first.outcome, RunOutcome::Completed { epoch: 2 });
        assert_eq!(first.epochs_trained, 2);
        assert_eq!(epochs(data_first(&drain(&mut rx)).1), [0, 1, 2]);
        let ck1 = first.checkpoint.unwrap();
        let h1 = artifact::content_hash(&ck1);

        // Chunk 2 continues at epoch 3 without re-reporting earlier epochs.
        let second = train(
            &engine,
            &chunk(2, 3, Some(h1.clone())),
            Some((&h1, &ck1)),
            &control,
            &tx,
        )
        .unwrap();
        assert_eq!(second.outcome, RunOutcome::Completed { epoch: 3 });
        assert_eq!(second.epochs_trained, 1);
        let reports = drain(&mut rx);
        assert_eq!(epochs(&reports), [3]);
        let pb::progress::Kind::Epoch(last) = &reports[0] else {
            unreachable!()
        };
        let ck2 = second.checkpoint.unwrap();
        let h2 = artifact::content_hash(&ck2);
        assert_eq!(engine.datasets.len(), 1, "both chunks share one dataset");

        // A checkpoint of the wrong epoch is refused, and so is a chunk
        // that needs one and has none (a spec error, not retryable).
        let err = train(
            &engine,
            &chunk(1, 3, Some(h1.clone())),
            Some((&h1, &ck1)),
            &control,
            &tx,
        )
        .unwrap_err();
        assert!(err.to_string().contains("epoch 2"), "{err}");
        let err = train(&engine, &chunk(2, 3, None), None, &control, &tx).unwrap_err();
        assert!(!is_retryable(&err), "{err}");

        // Towards the final checkpoint: a = 1 are the trained weights, whose
        // train loss the last epoch report gave.
        let search = LineSearchTask {
            curve: "seed=3".into(),
            run: run_spec(),
            direction: DirectionSpec::Toward {
                weights: h2.clone(),
            },
            points: vec![(4, 0.0), (5, 1.0)],
        };
        let s = line_search(&engine, &search, Some((&h2, &ck2)), &control, &tx).unwrap();
        assert_eq!(
            s,
            Searched {
                points: 2,
                epochs_trained: 0,
                stopped: false
            }
        );
        let items = drain(&mut rx);
        let points: Vec<pb::LinePoint> = data_first(&items)
            .1
            .iter()
            .map(|k| match k {
                pb::progress::Kind::Point(p) => *p,
                other => panic!("not a point: {other:?}"),
            })
            .collect();
        assert_eq!(points.iter().map(|p| p.index).collect::<Vec<_>>(), [4, 5]);
        let at_one = points[1].train.unwrap().loss;
        let trained = last.train.unwrap().loss;
        assert!((at_one - trained).abs() < 1e-5, "{at_one} vs {trained}");

        // Plain weights artifacts work too.
        let net_weights = Checkpoint::decode(&ck2, None, &Device::Cpu)
            .unwrap()
            .weights;
        let plain = artifact::encode_weights(&net_weights, "weights").unwrap();
        let hp = artifact::content_hash(&plain);
        let w = decode_weights_or_checkpoint(&plain, &hp, &Device::Cpu).unwrap();
        assert_eq!(w.names, net_weights.names);
    }

    #[test]
    fn random_and_trained_directions_and_cancellation() {
        let engine = engine();
        let control = TaskControl::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut search = LineSearchTask {
            curve: "seed=3".into(),
            run: run_spec(),
            direction: DirectionSpec::Random {
                seed: 1,
                filter_normalize: true,
                include_biases: false,
            },
            points: vec![(0, -1.0), (1, 0.0), (2, 1.0)],
        };
        let s = line_search(&engine, &search, None, &control, &tx).unwrap();
        assert_eq!((s.points, s.epochs_trained, s.stopped), (3, 0, false));
        assert_eq!(data_first(&drain(&mut rx)).1.len(), 3);

        search.direction = DirectionSpec::Trained {
            subset: 64,
            epochs: 2,
            lr: 0.1,
        };
        let s = line_search(&engine, &search, None, &control, &tx).unwrap();
        assert_eq!((s.points, s.epochs_trained, s.stopped), (3, 2, false));
        let first = drain(&mut rx);
        let first = data_first(&first).1.to_vec();
        assert_eq!(first.len(), 3);
        // Another block of the same line reuses the direction: no training,
        // and the same numbers.
        search.points = vec![(2, 1.0)];
        let s = line_search(&engine, &search, None, &control, &tx).unwrap();
        assert_eq!((s.points, s.epochs_trained, s.stopped), (1, 0, false));
        assert_eq!(data_first(&drain(&mut rx)).1, &first[2..]);
        assert_eq!(engine.directions.len(), 1);
        search.points = vec![(0, -1.0), (1, 0.0), (2, 1.0)];

        // A stopped task measures at most one more point, trains no step.
        control.stop(super::super::task::StopReason::Coordinator);
        let s = line_search(&engine, &search, None, &control, &tx).unwrap();
        assert!(s.stopped && s.points == 1, "{s:?}");
        drain(&mut rx);
        let t = train(&engine, &chunk(0, 3, None), None, &control, &tx).unwrap();
        assert_eq!(t.outcome, RunOutcome::Stopped { epoch: 0 });
        assert!(t.checkpoint.is_none());
        assert_eq!(t.epochs_trained, 0);

        // A Toward direction without its artifact is an artifact error.
        search.direction = DirectionSpec::Toward {
            weights: "ab".repeat(32),
        };
        let err = line_search(&engine, &search, None, &TaskControl::new(), &tx).unwrap_err();
        assert!(matches!(err, EngineError::Artifact(_)), "{err}");
    }

    #[test]
    fn first_chunks_and_line_search_blocks_send_the_data_summary_first() {
        let engine = engine();
        let control = TaskControl::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let expected = DataSummary {
            classes: 4,
            train_rows: 160,
            heldout_rows: 64,
            heldout_in_train: 0,
        };

        // A first chunk: exactly one summary, before the epoch-0 report.
        let first = train(&engine, &chunk(0, 1, None), None, &control, &tx).unwrap();
        let items = drain(&mut rx);
        let (summary, rest) = data_first(&items);
        assert_eq!(summary, expected);
        assert_eq!(epochs(rest), [0, 1], "no second summary: {items:?}");

        // A later chunk: none.
        let ck = first.checkpoint.unwrap();
        let h = artifact::content_hash(&ck);
        train(
            &engine,
            &chunk(1, 2, Some(h.clone())),
            Some((&h, &ck)),
            &control,
            &tx,
        )
        .unwrap();
        assert_eq!(epochs(&drain(&mut rx)), [2]);

        // Every line-search block: one, before its points.
        let search = LineSearchTask {
            curve: "seed=3".into(),
            run: run_spec(),
            direction: DirectionSpec::Random {
                seed: 1,
                filter_normalize: true,
                include_biases: false,
            },
            points: vec![(0, 0.0), (1, 0.5)],
        };
        for _ in 0..2 {
            line_search(&engine, &search, None, &control, &tx).unwrap();
            let items = drain(&mut rx);
            let (summary, rest) = data_first(&items);
            assert_eq!(summary, expected);
            assert_eq!(rest.len(), 2, "{items:?}");
            assert!(rest
                .iter()
                .all(|k| matches!(k, pb::progress::Kind::Point(_))));
        }
        assert_eq!(engine.datasets.len(), 1);
    }

    #[test]
    fn the_dataset_cache_keeps_the_most_recent_and_reuses_them() {
        let cache = DatasetCache::new(1);
        let a = run_spec().data;
        let mut b = a.clone();
        b.split_seed = 1;
        let d1 = cache.get_or_load(&a, &Device::Cpu).unwrap();
        let d2 = cache.get_or_load(&a, &Device::Cpu).unwrap();
        assert!(Arc::ptr_eq(&d1, &d2));
        cache.get_or_load(&b, &Device::Cpu).unwrap();
        assert_eq!(cache.len(), 1);
        let d3 = cache.get_or_load(&a, &Device::Cpu).unwrap();
        assert!(!Arc::ptr_eq(&d1, &d3), "evicted and loaded again");
    }
}
