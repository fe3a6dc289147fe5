//! The stage DAG of a `procedure` job (SPEC §1). A stage is planned as soon
//! as everything it needs is decided, so independent stages run at once:
//!
//! ```text
//!  submit ──► 1 initial_line_search ─────────────────────────────► (decided: shape)
//!         ──► 2 lr_ramp ─► lr ─► 3 momentum_ramp ─► μ ─► confirm_momentum ─┐
//!         │                                         └─► confirm_no_momentum ┴► μ_final
//!         │        lr, μ_final ─► 4 converge ─► M ─► decay ─────► decay? ─┐
//!         │                                     └──► 5 cyclical ──────────┴► SGD schedule
//!         └─► 6 variant_ramp:v ─► lr_v ─► variant:v ─────────────► (vs SGD) ─► final config
//!                                            final config ─► 7 final_line_search ─► shape
//! ```
//!
//! The planner only knows what each stage needs ([`Choices`]); what a
//! decision is made of lives in `analysis::steps`, and the scheduler glues
//! the two inside the transaction that completes a task.

use std::collections::{BTreeMap, BTreeSet};

use ridgeline_common::job::{evenly_spaced, DirectionKind, JobSpec};
use ridgeline_common::procedure::{groups, ProcedureSection, Variant};
use ridgeline_common::task::DirectionSpec;
use ridgeline_common::{LrSchedule, OptimizerSpec, ScheduleSpec};
use serde::{Deserialize, Serialize};

use super::{chunked_run, line_search_blocks, PlannedTask};

/// What one decision settled, as far as the DAG is concerned (stored with
/// the decision, so the DAG's state survives a restart with the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Choice {
    /// Nothing later stages need (the line searches).
    Observed,
    /// Step 2, and a variant's own ramp: the LR (`None`: undetermined).
    Lr { lr: Option<f64> },
    /// Step 3's ramp: μ (`None`: undetermined).
    Momentum { momentum: Option<f64> },
    /// Step 3's confirmation: the momentum used from here on.
    MomentumConfirmed { momentum: f64 },
    /// Step 4: M (`None`: undetermined; decay and cyclical are skipped).
    Plateau { m: Option<u32> },
    /// Steps 4 and 5: the group of the best SGD configuration so far.
    Schedule { group: String },
    /// Step 6: whether the variant beat the SGD configuration, and its mean
    /// final heldout metric.
    Variant { adopt: bool, mean: Option<f64> },
    /// The job's recommendation (the last decision).
    Recommendation,
}

/// Everything decided so far, folded from the stored decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choices {
    pub lr: Option<Option<f64>>,
    pub momentum: Option<Option<f64>>,
    pub momentum_final: Option<f64>,
    pub m: Option<Option<u32>>,
    /// Step 4's outcome: `converge` or `decay`.
    pub decay_group: Option<String>,
    /// Step 5's outcome (when step 5 runs).
    pub cyclical_group: Option<String>,
    /// Per variant name.
    pub variant_lr: BTreeMap<String, Option<f64>>,
    pub variants: BTreeMap<String, (bool, Option<f64>)>,
    /// Per seed, the final checkpoint of the final configuration's run
    /// (filled in by the scheduler once [`Choices::final_group`] is known).
    pub final_checkpoints: BTreeMap<u64, String>,
    pub recommended: bool,
}

impl Choices {
    /// Folds `(step, choice)` pairs in the order they were decided.
    pub fn from_decisions<'a>(decisions: impl IntoIterator<Item = (&'a str, &'a Choice)>) -> Self {
        let mut c = Choices::default();
        for (step, choice) in decisions {
            match choice {
                Choice::Lr { lr } => match step.strip_prefix("variant_lr:") {
                    Some(v) => {
                        c.variant_lr.insert(v.to_string(), *lr);
                    }
                    None => c.lr = Some(*lr),
                },
                Choice::Momentum { momentum } => c.momentum = Some(*momentum),
                Choice::MomentumConfirmed { momentum } => c.momentum_final = Some(*momentum),
                Choice::Plateau { m } => c.m = Some(*m),
                Choice::Schedule { group } => {
                    if step == "cyclical" {
                        c.cyclical_group = Some(group.clone());
                    } else {
                        c.decay_group = Some(group.clone());
                    }
                }
                Choice::Variant { adopt, mean } => {
                    if let Some(v) = step.strip_prefix("variant:") {
                        c.variants.insert(v.to_string(), (*adopt, *mean));
                    }
                }
                Choice::Recommendation => c.recommended = true,
                Choice::Observed => {}
            }
        }
        c
    }

    /// The chosen LR, once decided and determined.
    pub fn chosen_lr(&self) -> Option<f64> {
        self.lr.flatten()
    }

    /// The momentum of the SGD runs after step 3 (0 when step 3 is not
    /// run; `None` while it is still being decided).
    pub fn momentum_for_training(&self, p: &ProcedureSection) -> Option<f64> {
        if p.runs_step(3) {
            self.momentum_final
        } else {
            Some(0.0)
        }
    }

    /// The best SGD configuration once steps 4 and 5 are decided.
    pub fn schedule_group(&self, p: &ProcedureSection) -> Option<&str> {
        if p.runs_step(5) {
            self.cyclical_group.as_deref()
        } else {
            self.decay_group.as_deref()
        }
    }

    /// The configuration whose weights are final: the best adopted variant,
    /// or the SGD configuration; `None` until every comparison is decided.
    pub fn final_group(&self, p: &ProcedureSection) -> Option<String> {
        let sgd = self.schedule_group(p)?.to_string();
        if !p.runs_step(6) {
            return Some(sgd);
        }
        if p.variants
            .iter()
            .any(|v| !self.variants.contains_key(v.as_str()))
        {
            return None;
        }
        let best = p
            .variants
            .iter()
            .filter_map(|v| match self.variants.get(v.as_str()) {
                Some((true, mean)) => Some((v.as_str(), mean.unwrap_or(f64::NEG_INFINITY))),
                _ => None,
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Some(match best {
            Some((v, _)) => groups::variant(v),
            None => sgd,
        })
    }
}

/// A training configuration of the procedure.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub optimizer: OptimizerSpec,
    pub schedule: ScheduleSpec,
    pub epochs: usize,
}

/// The configuration a group trains with, once what it needs is decided.
pub fn group_config(job: &JobSpec, choices: &Choices, group: &str) -> Option<Config> {
    let p = job.procedure_section();
    let sgd = |lr: LrSchedule, mu: f64, epochs: usize| Config {
        optimizer: job.optimizer,
        schedule: ScheduleSpec {
            lr,
            momentum: Some(ridgeline_common::MomentumSchedule::Constant { value: mu }),
            every_batches: None,
        },
        epochs,
    };
    let lr = choices.chosen_lr();
    match group {
        groups::LR_RAMP => Some(Config {
            optimizer: job.optimizer,
            schedule: p.lr_ramp_schedule(),
            epochs: p.lr_epochs,
        }),
        groups::MOMENTUM_RAMP => Some(Config {
            optimizer: job.optimizer,
            schedule: p.momentum_ramp_schedule(lr?),
            epochs: p.momentum_epochs,
        }),
        groups::CONFIRM_WITH => Some(sgd(
            LrSchedule::Constant { lr: lr? },
            choices.momentum.flatten()?,
            p.confirm_epochs,
        )),
        groups::CONFIRM_WITHOUT => {
            choices.momentum.flatten()?;
            Some(sgd(LrSchedule::Constant { lr: lr? }, 0.0, p.confirm_epochs))
        }
        groups::CONVERGE => Some(sgd(
            LrSchedule::Constant { lr: lr? },
            choices.momentum_for_training(&p)?,
            p.epochs,
        )),
        groups::DECAY => Some(sgd(
            LrSchedule::PowerDecay {
                lr: lr?,
                m: f64::from(choices.m.flatten()?),
            },
            choices.momentum_for_training(&p)?,
            p.epochs,
        )),
        groups::CYCLICAL => Some(sgd(
            LrSchedule::Cyclical {
                lr: lr?,
                m: choices.m.flatten()? as usize,
            },
            choices.momentum_for_training(&p)?,
            p.epochs,
        )),
        g => {
            if let Some(name) = g.strip_prefix("variant_ramp:") {
                let v = variant(&p, name)?;
                return Some(Config {
                    optimizer: v.optimizer(),
                    schedule: p.variant_ramp_schedule(v),
                    epochs: p.lr_epochs,
                });
            }
            let name = g.strip_prefix("variant:")?;
            let v = variant(&p, name)?;
            let lr = choices.variant_lr.get(name).copied().flatten()?;
            Some(Config {
                optimizer: v.optimizer(),
                schedule: ScheduleSpec {
                    lr: LrSchedule::Constant { lr },
                    momentum: v
                        .momentum()
                        .map(|value| ridgeline_common::MomentumSchedule::Constant { value }),
                    every_batches: None,
                },
                epochs: p.epochs,
            })
        }
    }
}

fn variant(p: &ProcedureSection, name: &str) -> Option<Variant> {
    p.variants.iter().copied().find(|v| v.as_str() == name)
}

/// The training stages of the procedure, in the order they are listed
/// (and handed out when several are ready), with the step each belongs to.
fn training_stages(p: &ProcedureSection) -> Vec<(u8, String)> {
    let mut out: Vec<(u8, String)> = vec![
        (2, groups::LR_RAMP.into()),
        (3, groups::MOMENTUM_RAMP.into()),
        (3, groups::CONFIRM_WITH.into()),
        (3, groups::CONFIRM_WITHOUT.into()),
        (4, groups::CONVERGE.into()),
        (4, groups::DECAY.into()),
        (5, groups::CYCLICAL.into()),
    ];
    for v in &p.variants {
        out.push((6, groups::variant_ramp(v.as_str())));
    }
    for v in &p.variants {
        out.push((6, groups::variant(v.as_str())));
    }
    out
}

/// The tasks of every stage that is not `planned` yet and whose needs are
/// decided. Each stage's runs are cut into chunks; replicates run at once.
pub fn ready_stages(
    job: &JobSpec,
    choices: &Choices,
    planned: &BTreeSet<String>,
) -> Vec<PlannedTask> {
    let p = job.procedure_section();
    let mut out = vec![];
    if p.runs_step(1) && !planned.contains(groups::INITIAL_LINE_SEARCH) {
        let alphas = evenly_spaced(p.points, -1.0, 1.0);
        for seed in job.seeds() {
            let direction = match p.direction {
                DirectionKind::Random => DirectionSpec::Random {
                    seed,
                    filter_normalize: p.filter_normalize,
                    include_biases: false,
                },
                DirectionKind::Trained => DirectionSpec::Trained {
                    subset: 500,
                    epochs: 2,
                    lr: 0.01,
                },
            };
            let run = job.base_run(ScheduleSpec::constant(0.01, None), 2, seed);
            out.extend(line_search_blocks(
                groups::INITIAL_LINE_SEARCH,
                &groups::curve(groups::INITIAL_LINE_SEARCH, seed),
                &run,
                &direction,
                &alphas,
                p.points_per_task,
            ));
        }
    }
    for (step, group) in training_stages(&p) {
        if !p.runs_step(step) || planned.contains(&group) {
            continue;
        }
        // A variant's run is as long as the SGD one: it needs step 4 too.
        if group.starts_with("variant:") && !p.runs_step(4) {
            continue;
        }
        let Some(config) = group_config(job, choices, &group) else {
            continue;
        };
        for seed in job.seeds() {
            let mut run = job.base_run(config.schedule.clone(), config.epochs, seed);
            run.optimizer = config.optimizer;
            out.extend(chunked_run(
                &group,
                &groups::curve(&group, seed),
                &run,
                job.chunk_epochs,
                None,
            ));
        }
    }
    if p.runs_step(7) && !planned.contains(groups::FINAL_LINE_SEARCH) {
        if let Some(group) = choices.final_group(&p) {
            if let Some(config) = group_config(job, choices, &group) {
                let alphas = evenly_spaced(p.points, -0.5, 1.5);
                for seed in job.seeds() {
                    let Some(weights) = choices.final_checkpoints.get(&seed) else {
                        continue;
                    };
                    let mut run = job.base_run(config.schedule.clone(), config.epochs, seed);
                    run.optimizer = config.optimizer;
                    out.extend(line_search_blocks(
                        groups::FINAL_LINE_SEARCH,
                        &groups::curve(groups::FINAL_LINE_SEARCH, seed),
                        &run,
                        &DirectionSpec::Toward {
                            weights: weights.clone(),
                        },
                        &alphas,
                        p.points_per_task,
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ridgeline_common::job::JobFormat;
    use ridgeline_common::task::TaskSpec;

    use super::*;

    const JOB: &str = r#"
kind = "procedure"
replicates = 2
chunk_epochs = 4
[data.source]
kind = "tabular"
[model]
kind = "mlp"
hidden = [8]
[procedure]
lr_epochs = 6
momentum_epochs = 5
confirm_epochs = 3
epochs = 8
points = 9
points_per_task = 5
"#;

    fn stages(tasks: &[PlannedTask]) -> BTreeSet<String> {
        tasks.iter().map(|t| t.stage.clone()).collect()
    }

    fn job() -> JobSpec {
        JobSpec::parse(JOB, JobFormat::Toml).unwrap()
    }

    #[test]
    fn independent_stages_start_at_submit() {
        let tasks = super::super::plan(&job());
        let s = stages(&tasks);
        let want: BTreeSet<String> = ["initial_line_search", "lr_ramp", "variant_ramp:adam"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(s, want);
        // 2 seeds × 2 blocks of points; 2 seeds × 2 chunks per ramp.
        assert_eq!(tasks.len(), 4 + 4 + 4);
        let ramp = tasks
            .iter()
            .find(|t| t.stage == "variant_ramp:adam")
            .unwrap();
        let TaskSpec::Train(t) = &ramp.spec else {
            panic!()
        };
        assert_eq!(t.run.optimizer.name(), "adam");
        assert_eq!(ramp.curve, "variant_ramp:adam,seed=0");
    }

    #[test]
    fn later_stages_wait_for_their_decisions() {
        let job = job();
        let p = job.procedure_section();
        let mut planned = stages(&super::super::plan(&job));
        let mut c = Choices::default();
        assert!(ready_stages(&job, &c, &planned).is_empty());

        c.lr = Some(Some(0.3));
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(stages(&t), ["momentum_ramp".to_string()].into());
        planned.extend(stages(&t));

        c.momentum = Some(Some(0.8));
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(
            stages(&t),
            [
                "confirm_momentum".to_string(),
                "confirm_no_momentum".to_string()
            ]
            .into()
        );
        planned.extend(stages(&t));

        c.variant_lr.insert("adam".into(), Some(0.003));
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(
            stages(&t),
            ["variant:adam".to_string()].into(),
            "needs nothing from 3-5"
        );
        planned.extend(stages(&t));

        c.momentum_final = Some(0.8);
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(stages(&t), ["converge".to_string()].into());
        let TaskSpec::Train(first) = &t[0].spec else {
            panic!()
        };
        assert_eq!(first.run.schedule, ScheduleSpec::constant(0.3, Some(0.8)));
        assert_eq!(first.run.epochs, 8);
        assert_eq!(t.len(), 2 * 2, "2 seeds × chunks 0-4, 4-8");
        assert_eq!(t[1].after, Some(t[0].id));
        planned.extend(stages(&t));

        c.m = Some(Some(5));
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(
            stages(&t),
            ["cyclical".to_string(), "decay".to_string()].into()
        );
        planned.extend(stages(&t));

        c.decay_group = Some("decay".into());
        c.cyclical_group = Some("decay".into());
        assert_eq!(c.final_group(&p), None, "the variant is not decided yet");
        c.variants.insert("adam".into(), (false, Some(0.8)));
        assert_eq!(c.final_group(&p).as_deref(), Some("decay"));
        assert!(
            ready_stages(&job, &c, &planned).is_empty(),
            "no checkpoints yet"
        );
        c.final_checkpoints.insert(0, "a".repeat(64));
        c.final_checkpoints.insert(1, "b".repeat(64));
        let t = ready_stages(&job, &c, &planned);
        assert_eq!(stages(&t), ["final_line_search".to_string()].into());
        let TaskSpec::LineSearch(ls) = &t[0].spec else {
            panic!()
        };
        assert_eq!(
            ls.direction,
            DirectionSpec::Toward {
                weights: "a".repeat(64)
            }
        );
        assert_eq!(ls.points[0].1, -0.5);
        assert!(matches!(ls.run.schedule.lr, LrSchedule::PowerDecay { m, .. } if m == 5.0));
    }

    #[test]
    fn an_adopted_variant_is_the_final_configuration() {
        let p = job().procedure_section();
        let c = Choices {
            decay_group: Some("converge".into()),
            cyclical_group: Some("cyclical".into()),
            variants: [("adam".to_string(), (true, Some(0.9)))].into(),
            ..Default::default()
        };
        assert_eq!(c.final_group(&p).as_deref(), Some("variant:adam"));
    }

    #[test]
    fn choices_fold_from_stored_decisions() {
        let d = [
            ("lr", Choice::Lr { lr: Some(0.2) }),
            ("variant_lr:adam", Choice::Lr { lr: None }),
            (
                "momentum",
                Choice::Momentum {
                    momentum: Some(0.9),
                },
            ),
            (
                "momentum_confirm",
                Choice::MomentumConfirmed { momentum: 0.0 },
            ),
            ("plateau", Choice::Plateau { m: Some(4) }),
            (
                "decay",
                Choice::Schedule {
                    group: "converge".into(),
                },
            ),
            (
                "cyclical",
                Choice::Schedule {
                    group: "cyclical".into(),
                },
            ),
        ];
        let c = Choices::from_decisions(d.iter().map(|(s, c)| (*s, c)));
        assert_eq!(c.chosen_lr(), Some(0.2));
        assert_eq!(c.variant_lr.get("adam"), Some(&None));
        assert_eq!(c.momentum_final, Some(0.0));
        assert_eq!(c.m, Some(Some(4)));
        assert_eq!(c.decay_group.as_deref(), Some("converge"));
        assert_eq!(c.cyclical_group.as_deref(), Some("cyclical"));
        let json = serde_json::to_string(&d[4].1).unwrap();
        assert_eq!(serde_json::from_str::<Choice>(&json).unwrap(), d[4].1);
    }
}
