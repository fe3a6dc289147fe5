//! A job file: what a researcher submits. One `kind`, the shared run
//! settings (data, model, optimizer, batch size…), and the section of its
//! kind. Parsing refuses unknown fields; [`JobSpec::validate`] names the
//! offending field of anything out of range.
//!
//! ```toml
//! kind = "lr_ramp"
//! name = "glyph CNN, LR ramp"
//! replicates = 3            # seeds seed, seed+1, …
//!
//! [data.source]
//! kind = "glyphs"
//!
//! [model]
//! kind = "cnn"
//! channels = [16, 32]
//!
//! [lr_ramp]
//! start = 1e-4
//! end = 3.0
//! epochs = 8
//! ```

use serde::{Deserialize, Serialize};

use crate::procedure::ProcedureSection;
use crate::schedule::{LrSchedule, MomentumSchedule, ScheduleSpec};
use crate::spec::{
    check_positive, check_unit_interval, DataSpec, MetricKind, ModelSpec, OptimizerSpec, SpecError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    LineSearch,
    LrRamp,
    MomentumRamp,
    Train,
    Compare,
    Grid,
    /// The seven steps of the procedure as one job (SPEC §1).
    Procedure,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::LineSearch => "line_search",
            JobKind::LrRamp => "lr_ramp",
            JobKind::MomentumRamp => "momentum_ramp",
            JobKind::Train => "train",
            JobKind::Compare => "compare",
            JobKind::Grid => "grid",
            JobKind::Procedure => "procedure",
        }
    }
}

/// Which workers may run a job's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRequirement {
    #[default]
    Any,
    Cpu,
    Cuda,
}

impl DeviceRequirement {
    /// Whether a worker on `device` ("cpu", "cuda:0", …) may run the task.
    pub fn admits(self, device: &str) -> bool {
        match self {
            DeviceRequirement::Any => true,
            DeviceRequirement::Cpu => device == "cpu",
            DeviceRequirement::Cuda => device.starts_with("cuda"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRequirement::Any => "any",
            DeviceRequirement::Cpu => "cpu",
            DeviceRequirement::Cuda => "cuda",
        }
    }
}

fn d_replicates() -> usize {
    3
}
fn d_chunk_epochs() -> usize {
    3
}
fn d_max_attempts() -> u32 {
    3
}
fn d_batch() -> usize {
    64
}
fn d_train_eval() -> usize {
    1000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub kind: JobKind,
    #[serde(default)]
    pub name: String,
    /// Seeds per configuration: `seed`, `seed + 1`, …
    #[serde(default = "d_replicates")]
    pub replicates: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub device: DeviceRequirement,
    /// Training runs are cut into tasks of this many epochs, each continuing
    /// from the previous one's checkpoint.
    #[serde(default = "d_chunk_epochs")]
    pub chunk_epochs: usize,
    /// Attempts per task before the job fails.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    pub data: DataSpec,
    pub model: ModelSpec,
    #[serde(default = "OptimizerSpec::sgd")]
    pub optimizer: OptimizerSpec,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_train_eval")]
    pub train_eval_size: usize,
    #[serde(default)]
    pub report_every_batches: Option<usize>,
    #[serde(default)]
    pub metric: Option<MetricKind>,
    #[serde(default)]
    pub line_search: Option<LineSearchSection>,
    #[serde(default)]
    pub lr_ramp: Option<LrRampSection>,
    #[serde(default)]
    pub momentum_ramp: Option<MomentumRampSection>,
    #[serde(default)]
    pub train: Option<TrainSection>,
    #[serde(default)]
    pub compare: Option<CompareSection>,
    #[serde(default)]
    pub grid: Option<GridSection>,
    #[serde(default)]
    pub procedure: Option<ProcedureSection>,
}

/// How a job file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFormat {
    Toml,
    Json,
}

impl JobSpec {
    /// Parses and validates a job file.
    pub fn parse(text: &str, format: JobFormat) -> Result<JobSpec, SpecError> {
        let spec: JobSpec = match format {
            JobFormat::Toml => {
                toml::from_str(text).map_err(|e| SpecError::new("job", toml_message(text, &e)))?
            }
            JobFormat::Json => serde_json::from_str(text).map_err(|e| {
                SpecError::new(
                    "job",
                    format!("line {}, column {}: {e}", e.line(), e.column()),
                )
            })?,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn display_name(&self) -> String {
        if self.name.trim().is_empty() {
            self.kind.as_str().to_string()
        } else {
            self.name.clone()
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.replicates == 0 || self.replicates > 100 {
            return Err(SpecError::new("replicates", "must be between 1 and 100"));
        }
        if self.chunk_epochs == 0 {
            return Err(SpecError::new("chunk_epochs", "must be at least 1"));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(SpecError::new("max_attempts", "must be between 1 and 100"));
        }
        if self.batch_size == 0 {
            return Err(SpecError::new("batch_size", "must be at least 1"));
        }
        if self.train_eval_size == 0 {
            return Err(SpecError::new("train_eval_size", "must be at least 1"));
        }
        self.data.validate().map_err(|e| e.within("data"))?;
        self.model.validate().map_err(|e| e.within("model"))?;
        self.optimizer
            .validate()
            .map_err(|e| e.within("optimizer"))?;
        let sections = [
            ("line_search", self.line_search.is_some()),
            ("lr_ramp", self.lr_ramp.is_some()),
            ("momentum_ramp", self.momentum_ramp.is_some()),
            ("train", self.train.is_some()),
            ("compare", self.compare.is_some()),
            ("grid", self.grid.is_some()),
            ("procedure", self.procedure.is_some()),
        ];
        let kind = self.kind.as_str();
        for (name, present) in sections {
            if present && name != kind {
                return Err(SpecError::new(
                    name,
                    format!("a `{kind}` job takes a [{kind}] section, not [{name}]"),
                ));
            }
        }
        let missing = || SpecError::new(kind, format!("a `{kind}` job needs a [{kind}] section"));
        match self.kind {
            JobKind::LineSearch => self.line_search.as_ref().ok_or_else(missing)?.validate(),
            JobKind::LrRamp => self.lr_ramp.as_ref().ok_or_else(missing)?.validate(),
            JobKind::MomentumRamp => self.momentum_ramp.as_ref().ok_or_else(missing)?.validate(),
            JobKind::Train => self.train.as_ref().ok_or_else(missing)?.validate(),
            JobKind::Compare => self.compare.as_ref().ok_or_else(missing)?.validate(),
            JobKind::Grid => self.grid.as_ref().ok_or_else(missing)?.validate(),
            // `[procedure]` may be left out: every setting has a default.
            JobKind::Procedure => self.procedure_section().validate(),
        }
        .map_err(|e| e.within(kind))?;
        // Every run the job makes must itself be valid (e.g. an Adagrad job
        // with a momentum schedule).
        for (i, run) in self.runs().iter().enumerate() {
            run.spec.validate().map_err(|e| {
                if i == 0 {
                    e
                } else {
                    SpecError::new(
                        e.field.clone(),
                        format!("{} (run {})", e.message, run.curve),
                    )
                }
            })?;
        }
        Ok(())
    }

    /// The procedure's settings (defaults when `[procedure]` is left out).
    pub fn procedure_section(&self) -> ProcedureSection {
        self.procedure.clone().unwrap_or_default()
    }

    /// The base run spec shared by all runs of this job.
    pub fn base_run(&self, schedule: ScheduleSpec, epochs: usize, seed: u64) -> crate::RunSpec {
        crate::RunSpec {
            data: self.data.clone(),
            model: self.model.clone(),
            optimizer: self.optimizer,
            schedule,
            epochs,
            batch_size: self.batch_size,
            seed,
            train_eval_size: self.train_eval_size,
            report_every_batches: self.report_every_batches,
            metric: self.metric,
        }
    }

    pub fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.replicates as u64).map(move |i| self.seed.wrapping_add(i))
    }

    /// The training runs of this job, one per (configuration, seed), each
    /// with the name of its curve and of its group (the configuration; the
    /// curves of a group are aggregated over seeds). A line-search job has
    /// none.
    pub fn runs(&self) -> Vec<PlannedRun> {
        let mut out = vec![];
        let mut push = |group: String,
                        schedule: ScheduleSpec,
                        epochs: usize,
                        optimizer: Option<OptimizerSpec>| {
            for seed in self.seeds() {
                let mut spec = self.base_run(schedule.clone(), epochs, seed);
                if let Some(o) = optimizer {
                    spec.optimizer = o;
                }
                let curve = if group.is_empty() {
                    format!("seed={seed}")
                } else {
                    format!("{group},seed={seed}")
                };
                out.push(PlannedRun {
                    group: group.clone(),
                    curve,
                    spec,
                });
            }
        };
        match self.kind {
            JobKind::LineSearch => {}
            JobKind::LrRamp => {
                if let Some(r) = &self.lr_ramp {
                    push(String::new(), r.schedule(), r.epochs, None);
                }
            }
            JobKind::MomentumRamp => {
                if let Some(r) = &self.momentum_ramp {
                    push(String::new(), r.schedule(), r.epochs, None);
                }
            }
            JobKind::Train => {
                if let Some(t) = &self.train {
                    push(String::new(), t.schedule.clone(), t.epochs, None);
                }
            }
            JobKind::Compare => {
                if let Some(c) = &self.compare {
                    for cfg in &c.configs {
                        push(
                            format!("config={}", cfg.name),
                            cfg.schedule.clone(),
                            cfg.epochs,
                            cfg.optimizer,
                        );
                    }
                }
            }
            JobKind::Grid => {
                if let Some(g) = &self.grid {
                    for &lr in &g.lrs {
                        for &mu in &g.momenta {
                            push(
                                format!("lr={lr},momentum={mu}"),
                                ScheduleSpec::constant(lr, Some(mu)),
                                g.epochs,
                                None,
                            );
                        }
                    }
                }
            }
            JobKind::Procedure => {
                // The runs known before anything is decided (the ones that
                // validation can check); the planner makes the rest as the
                // decisions come in.
                let p = self.procedure_section();
                if p.runs_step(2) {
                    push(
                        crate::procedure::groups::LR_RAMP.to_string(),
                        p.lr_ramp_schedule(),
                        p.lr_epochs,
                        None,
                    );
                }
                if p.runs_step(6) {
                    for v in &p.variants {
                        push(
                            crate::procedure::groups::variant_ramp(v.as_str()),
                            p.variant_ramp_schedule(*v),
                            p.lr_epochs,
                            Some(v.optimizer()),
                        );
                    }
                }
            }
        }
        out
    }
}

/// One (configuration, seed) run of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// The configuration ("" when the job has one).
    pub group: String,
    /// Unique within the job: group and seed.
    pub curve: String,
    pub spec: crate::RunSpec,
}

/// toml's message with the line it is about, on one line (it travels in a
/// gRPC status).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim())
        }
        None => e.message().trim().to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionKind {
    /// Gaussian, filter-normalised (Li et al. 2018).
    #[default]
    Random,
    /// θ_short − θ0 after brief training on a small subset.
    Trained,
}

fn d_points() -> usize {
    41
}
fn d_from() -> f64 {
    -1.0
}
fn d_to() -> f64 {
    1.0
}
fn d_points_per_task() -> usize {
    8
}
fn d_true() -> bool {
    true
}
fn d_subset() -> usize {
    500
}
fn d_trained_epochs() -> usize {
    2
}
fn d_trained_lr() -> f64 {
    0.01
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSearchSection {
    #[serde(default = "d_points")]
    pub points: usize,
    #[serde(default = "d_from")]
    pub from: f64,
    #[serde(default = "d_to")]
    pub to: f64,
    #[serde(default)]
    pub direction: DirectionKind,
    /// Points per task (tasks spread over workers).
    #[serde(default = "d_points_per_task")]
    pub points_per_task: usize,
    #[serde(default = "d_true")]
    pub filter_normalize: bool,
    #[serde(default)]
    pub include_biases: bool,
    /// Trained direction: examples and epochs of the brief training, and its
    /// (constant) learning rate.
    #[serde(default = "d_subset")]
    pub trained_subset: usize,
    #[serde(default = "d_trained_epochs")]
    pub trained_epochs: usize,
    #[serde(default = "d_trained_lr")]
    pub trained_lr: f64,
}

impl LineSearchSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.points == 0 || self.points > 10_000 {
            return Err(SpecError::new("points", "must be between 1 and 10000"));
        }
        if !self.from.is_finite() || !self.to.is_finite() || self.from > self.to {
            return Err(SpecError::new(
                "from",
                "from and to must be finite with from ≤ to",
            ));
        }
        if self.points_per_task == 0 {
            return Err(SpecError::new("points_per_task", "must be at least 1"));
        }
        if self.direction == DirectionKind::Trained {
            if self.trained_subset == 0 {
                return Err(SpecError::new("trained_subset", "must be at least 1"));
            }
            if self.trained_epochs == 0 {
                return Err(SpecError::new("trained_epochs", "must be at least 1"));
            }
            check_positive("trained_lr", self.trained_lr)?;
        }
        Ok(())
    }

    /// The job's values of a, in order.
    pub fn alphas(&self) -> Vec<f64> {
        evenly_spaced(self.points, self.from, self.to)
    }
}

/// `n` evenly spaced values from `from` to `to` (both included; `from`
/// alone when `n` is 1): the a values of a line search.
pub fn evenly_spaced(n: usize, from: f64, to: f64) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![from],
        n => (0..n)
            .map(|i| from + (to - from) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampShape {
    #[default]
    Exp,
    Linear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrRampSection {
    pub start: f64,
    pub end: f64,
    pub epochs: usize,
    #[serde(default)]
    pub shape: RampShape,
    /// Raise the LR every k batches instead of every epoch.
    #[serde(default)]
    pub every_batches: Option<usize>,
    /// Momentum during the ramp (the procedure uses 0).
    #[serde(default)]
    pub momentum: f64,
}

impl LrRampSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.schedule().validate()?;
        if self.end <= self.start {
            return Err(SpecError::new("end", "must be larger than start"));
        }
        if self.epochs < 2 {
            return Err(SpecError::new("epochs", "a ramp needs at least 2 epochs"));
        }
        Ok(())
    }

    pub fn schedule(&self) -> ScheduleSpec {
        let (start, end, epochs) = (self.start, self.end, self.epochs);
        ScheduleSpec {
            lr: match self.shape {
                RampShape::Exp => LrSchedule::ExpRamp { start, end, epochs },
                RampShape::Linear => LrSchedule::LinearRamp { start, end, epochs },
            },
            momentum: Some(MomentumSchedule::Constant {
                value: self.momentum,
            }),
            every_batches: self.every_batches,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentumRampShape {
    Linear,
    /// Geometric in 1 − μ (as many epochs from 0.9 to 0.99 as from 0 to 0.9).
    #[default]
    OneMinusExp,
}

fn d_mu_start() -> f64 {
    0.0
}
fn d_mu_end() -> f64 {
    0.99
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentumRampSection {
    pub lr: f64,
    #[serde(default = "d_mu_start")]
    pub start: f64,
    #[serde(default = "d_mu_end")]
    pub end: f64,
    pub epochs: usize,
    #[serde(default)]
    pub shape: MomentumRampShape,
}

impl MomentumRampSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_positive("lr", self.lr)?;
        check_unit_interval("start", self.start)?;
        check_unit_interval("end", self.end)?;
        if self.epochs < 2 {
            return Err(SpecError::new("epochs", "a ramp needs at least 2 epochs"));
        }
        self.schedule().validate()
    }

    pub fn schedule(&self) -> ScheduleSpec {
        let (start, end, epochs) = (self.start, self.end, self.epochs);
        ScheduleSpec {
            lr: LrSchedule::Constant { lr: self.lr },
            momentum: Some(match self.shape {
                MomentumRampShape::Linear => MomentumSchedule::LinearRamp { start, end, epochs },
                MomentumRampShape::OneMinusExp => {
                    MomentumSchedule::OneMinusExpRamp { start, end, epochs }
                }
            }),
            every_batches: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub schedule: ScheduleSpec,
    pub epochs: usize,
}

impl TrainSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.epochs == 0 {
            return Err(SpecError::new("epochs", "must be at least 1"));
        }
        self.schedule.validate().map_err(|e| e.within("schedule"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    pub name: String,
    /// Overrides the job's optimizer.
    #[serde(default)]
    pub optimizer: Option<OptimizerSpec>,
    pub schedule: ScheduleSpec,
    pub epochs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSection {
    pub configs: Vec<CompareConfig>,
}

impl CompareSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.configs.len() < 2 {
            return Err(SpecError::new(
                "configs",
                "a comparison needs at least 2 configurations",
            ));
        }
        for (i, c) in self.configs.iter().enumerate() {
            let within = |e: SpecError| e.within(&format!("configs[{i}]"));
            if c.name.trim().is_empty() || c.name.contains([',', '=']) {
                return Err(within(SpecError::new(
                    "name",
                    "must be non-empty, without `,` or `=`",
                )));
            }
            if self.configs[..i].iter().any(|o| o.name == c.name) {
                return Err(within(SpecError::new(
                    "name",
                    format!("`{}` is used twice", c.name),
                )));
            }
            if c.epochs == 0 {
                return Err(within(SpecError::new("epochs", "must be at least 1")));
            }
            if let Some(o) = &c.optimizer {
                o.validate().map_err(|e| within(e.within("optimizer")))?;
            }
            c.schedule
                .validate()
                .map_err(|e| within(e.within("schedule")))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    pub lrs: Vec<f64>,
    #[serde(default = "zero_momentum")]
    pub momenta: Vec<f64>,
    pub epochs: usize,
}

fn zero_momentum() -> Vec<f64> {
    vec![0.0]
}

impl GridSection {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.lrs.is_empty() {
            return Err(SpecError::new("lrs", "needs at least one learning rate"));
        }
        for (i, &lr) in self.lrs.iter().enumerate() {
            check_positive(&format!("lrs[{i}]"), lr)?;
        }
        for (i, &m) in self.momenta.iter().enumerate() {
            check_unit_interval(&format!("momenta[{i}]"), m)?;
        }
        if self.momenta.is_empty() {
            return Err(SpecError::new("momenta", "needs at least one value"));
        }
        if self.lrs.len() * self.momenta.len() > 1000 {
            return Err(SpecError::new("lrs", "the grid has more than 1000 points"));
        }
        if self.epochs == 0 {
            return Err(SpecError::new("epochs", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAMP: &str = r#"
kind = "lr_ramp"
replicates = 2
seed = 10
[data.source]
kind = "tabular"
n_train = 100
n_heldout = 50
[model]
kind = "mlp"
hidden = [8]
[lr_ramp]
start = 1e-3
end = 1.0
epochs = 4
"#;

    #[test]
    fn a_ramp_job_makes_one_run_per_seed() {
        let j = JobSpec::parse(RAMP, JobFormat::Toml).unwrap();
        let runs = j.runs();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].curve, "seed=11");
        assert_eq!(runs[1].spec.seed, 11);
        assert_eq!(runs[0].spec.epochs, 4);
        let json = serde_json::to_string(&j).unwrap();
        assert_eq!(JobSpec::parse(&json, JobFormat::Json).unwrap(), j);
    }

    #[test]
    fn bad_jobs_name_the_field() {
        let e = JobSpec::parse(
            &RAMP.replace("start = 1e-3", "start = -1e-3"),
            JobFormat::Toml,
        )
        .unwrap_err();
        assert_eq!(e.field, "lr_ramp.lr.start", "{e}");
        let e = JobSpec::parse(
            &RAMP.replace("epochs = 4", "epochs = 4\nepoch = 3"),
            JobFormat::Toml,
        )
        .unwrap_err();
        assert!(e.to_string().contains("epoch"), "{e}");
        let e = JobSpec::parse(
            &RAMP.replace("kind = \"tabular\"", "kind = \"imagenet\""),
            JobFormat::Toml,
        )
        .unwrap_err();
        assert!(e.to_string().contains("imagenet"), "{e}");
        let e = JobSpec::parse(&RAMP.replace("[lr_ramp]", "[train]"), JobFormat::Toml).unwrap_err();
        assert!(
            e.to_string().contains("line 14: unknown field `end`"),
            "{e}"
        );
    }

    #[test]
    fn grid_and_compare_expand_per_configuration_and_seed() {
        let g = RAMP
            .replace("kind = \"lr_ramp\"", "kind = \"grid\"")
            .replace(
                "[lr_ramp]\nstart = 1e-3\nend = 1.0\nepochs = 4",
                "[grid]\nlrs = [0.01, 0.1]\nmomenta = [0.0, 0.9]\nepochs = 2",
            );
        let j = JobSpec::parse(&g, JobFormat::Toml).unwrap();
        let runs = j.runs();
        assert_eq!(runs.len(), 2 * 2 * 2);
        assert_eq!(runs[3].curve, "lr=0.01,momentum=0.9,seed=11");
        assert_eq!(runs[3].group, "lr=0.01,momentum=0.9");
    }
}
