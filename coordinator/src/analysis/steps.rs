//! The procedure's decisions from a job's stored curves: each step's rule
//! (in [`crate::decisions`]) applied to the stages it reads, with the red
//! flags that step can raise. [`decide`] makes every decision whose inputs
//! are complete; the scheduler calls it again after each one (a decision
//! may make another ready, e.g. a skipped step skips the next) and plans
//! the stages the new choices release.
//!
//! A decision that cannot be made (no LR, so no momentum ramp) is still
//! recorded, as skipped with the reason, so the report explains every step.

use std::collections::BTreeSet;

use ridgeline_common::job::JobSpec;
use ridgeline_common::procedure::{groups, ProcedureSection};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::{LrSchedule, MomentumSchedule, OptimizerSpec, ScheduleSpec};
use serde::Serialize;

use crate::decisions::{
    self, choose_lr, choose_momentum, compare_runs, confirm_momentum, flag_divergence_at_small_lr,
    flag_heldout_overlap, flag_init_far_from_chance, flag_line_search_mismatch,
    flag_no_lr_improves, flag_single_class_fraction, flag_train_good_heldout_chance,
    line_search_shape, plateau_epoch, CompareOptions, Confidence, LineSearchInput, LineSearchKind,
    LineSearchOptions, MetricKind, PlateauOptions, RampInput, RampOptions, RedFlag, RunComparison,
    SeedCurves, TrainedFigure,
};
use crate::planner::procedure::{group_config, Choice, Choices};

/// A decision as made: what the DAG needs, and what people read.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub step: String,
    pub choice: Choice,
    pub decision: pb::Decision,
}

/// What [`decide`] reads.
pub struct Inputs<'a> {
    pub job: &'a JobSpec,
    pub results: &'a pb::JobResults,
    /// Whether a stage was planned and all its tasks have ended.
    pub complete: &'a dyn Fn(&str) -> bool,
    /// Steps already decided.
    pub made: &'a BTreeSet<String>,
    pub choices: &'a Choices,
    /// Red-flag codes already raised (each is raised once per job).
    pub raised: &'a BTreeSet<String>,
}

impl Inputs<'_> {
    fn metric(&self) -> MetricKind {
        metric_of(self.job, self.results)
    }

    fn compare_options(&self, p: &ProcedureSection) -> CompareOptions {
        CompareOptions {
            delta_min: p.delta_min,
            metric: self.metric(),
            ..CompareOptions::default()
        }
    }

    fn ready(&self, step: &str) -> bool {
        !self.made.contains(step)
    }
}

/// The metric the job's decisions read: accuracy when the curves report
/// it, else the job's regression metric.
pub fn metric_of(job: &JobSpec, results: &pb::JobResults) -> MetricKind {
    let has_accuracy = results
        .curves
        .iter()
        .flat_map(|c| c.points.iter())
        .any(|p| p.heldout.as_ref().is_some_and(|m| m.accuracy.is_some()));
    if has_accuracy {
        return MetricKind::Accuracy;
    }
    match job.metric {
        Some(ridgeline_common::MetricKind::Pearson) => MetricKind::Pearson,
        _ => MetricKind::R2,
    }
}

/// Every decision that can be made now (see the module docs).
pub fn decide(inp: &Inputs) -> Vec<Made> {
    let p = inp.job.procedure_section();
    let c = inp.choices;
    let metric = inp.metric();
    let mut out = vec![];
    let mut raised = inp.raised.clone();
    let mut flags = |candidates: Vec<Option<RedFlag>>| -> Vec<RedFlag> {
        candidates
            .into_iter()
            .flatten()
            .filter(|f| raised.insert(f.code.clone()))
            .collect()
    };

    // Step 1.
    if p.runs_step(1)
        && inp.ready("initial_line_search")
        && (inp.complete)(groups::INITIAL_LINE_SEARCH)
    {
        let input = line_input(inp.results, groups::INITIAL_LINE_SEARCH);
        let shape = line_search_shape(
            &input,
            &[],
            &LineSearchOptions::new(LineSearchKind::Initial, metric),
        );
        let summary = shape_summary(&shape, metric);
        out.push(made(
            "initial_line_search",
            "Step 1 · initial line search",
            summary,
            shape.thoughts.clone(),
            Confidence::Clear,
            &shape,
            vec![],
            Choice::Observed,
        ));
    }

    // Step 2.
    if p.runs_step(2) && inp.ready("lr") && (inp.complete)(groups::LR_RAMP) {
        let (input, init) = ramp_input(
            inp.results,
            groups::LR_RAMP,
            |pt| pt.lr,
            schedule_x(inp, groups::LR_RAMP, false),
        );
        let d = choose_lr(&input, &RampOptions::lr(metric));
        let data = data_summary(inp.results);
        let chance = metric.chance(data.map(|d| d.classes as usize).filter(|&k| k > 0));
        let heldout_rows = data.map(|d| d.heldout_rows as usize);
        let summary = match (d.lr, &d.region) {
            (Some(lr), Some(r)) => format!(
                "lr = {} (steady region {} – {}{})",
                num(lr),
                num(r.lo),
                num(r.hi),
                d.cliff_lr
                    .map(|c| format!(", cliff at {}", num(c)))
                    .unwrap_or_default()
            ),
            (Some(lr), None) => format!("lr = {}", num(lr)),
            _ => "no learning rate could be chosen".to_string(),
        };
        let f = flags(vec![
            init.zip(chance)
                .and_then(|(v, ch)| flag_init_far_from_chance(metric, v, ch, heldout_rows)),
            flag_no_lr_improves(&d.analysis),
            flag_divergence_at_small_lr(&input.x, &d.analysis.divergence, d.lr),
            data.and_then(|s| {
                flag_heldout_overlap(s.heldout_in_train as usize, s.heldout_rows as usize, 0.0)
            }),
            generalization_flag(inp.results, groups::LR_RAMP, metric, chance),
            single_class_flag(inp.results, groups::LR_RAMP, data.map(|d| d.classes), true),
        ]);
        let choice = Choice::Lr { lr: d.lr };
        out.push(made(
            "lr",
            "Step 2 · learning rate",
            summary,
            d.thoughts.clone(),
            d.confidence,
            &d,
            f,
            choice,
        ));
    }

    // Step 3: the momentum ramp, then the confirmation.
    if p.runs_step(3) && inp.ready("momentum") {
        match c.lr {
            Some(None) => out.push(skipped(
                "momentum",
                "Step 3 · momentum",
                "no learning rate was chosen in step 2",
                Choice::Momentum { momentum: None },
            )),
            Some(Some(lr)) if (inp.complete)(groups::MOMENTUM_RAMP) => {
                let (input, _) = ramp_input(
                    inp.results,
                    groups::MOMENTUM_RAMP,
                    |pt| pt.momentum,
                    schedule_x(inp, groups::MOMENTUM_RAMP, true),
                );
                let d = choose_momentum(&input, lr, &RampOptions::momentum(metric));
                let summary = match (d.momentum, &d.region) {
                    (Some(m), Some(r)) => format!(
                        "μ = {} (steady region {} – {})",
                        num(m),
                        num(r.lo),
                        num(r.hi)
                    ),
                    (Some(m), None) => format!("μ = {}", num(m)),
                    _ => "no momentum could be chosen".into(),
                };
                let choice = Choice::Momentum {
                    momentum: d.momentum,
                };
                out.push(made(
                    "momentum",
                    "Step 3 · momentum",
                    summary,
                    d.thoughts.clone(),
                    d.confidence,
                    &d,
                    vec![],
                    choice,
                ));
            }
            _ => {}
        }
    }
    if p.runs_step(3) && inp.ready("momentum_confirm") {
        match (c.lr, c.momentum) {
            (_, Some(None)) => out.push(skipped(
                "momentum_confirm",
                "Step 3 · does momentum help?",
                "the momentum ramp chose no momentum, so μ = 0",
                Choice::MomentumConfirmed { momentum: 0.0 },
            )),
            (Some(Some(lr)), Some(Some(mu)))
                if (inp.complete)(groups::CONFIRM_WITH)
                    && (inp.complete)(groups::CONFIRM_WITHOUT) =>
            {
                let with = finals(inp.results, groups::CONFIRM_WITH);
                let without = finals(inp.results, groups::CONFIRM_WITHOUT);
                let d = confirm_momentum(lr, mu, &with, &without, &inp.compare_options(&p));
                let summary = if d.helps {
                    format!("momentum {} helps: μ = {}", num(mu), num(d.momentum))
                } else {
                    format!("momentum {} does not clearly help: μ = 0", num(mu))
                };
                let choice = Choice::MomentumConfirmed {
                    momentum: d.momentum,
                };
                out.push(made(
                    "momentum_confirm",
                    "Step 3 · does momentum help?",
                    summary,
                    d.thoughts.clone(),
                    d.comparison.confidence,
                    &d,
                    vec![],
                    choice,
                ));
            }
            _ => {}
        }
    }

    // Step 4: M from the run to convergence, then decay against no decay.
    if p.runs_step(4) && inp.ready("plateau") {
        if c.lr == Some(None) {
            out.push(skipped(
                "plateau",
                "Step 4 · training to convergence",
                "no learning rate was chosen in step 2",
                Choice::Plateau { m: None },
            ));
        } else if (inp.complete)(groups::CONVERGE) {
            let curves = seed_curves(inp.results, groups::CONVERGE);
            let d = plateau_epoch(
                &curves,
                &PlateauOptions {
                    metric,
                    ..PlateauOptions::default()
                },
            );
            let summary = match (d.m, d.best) {
                (Some(m), Some(b)) => {
                    format!("M = {m} epochs (best {} {})", metric_word(metric), num(b))
                }
                (Some(m), None) => format!("M = {m} epochs"),
                _ => "no plateau epoch could be found".into(),
            };
            let data = data_summary(inp.results);
            let chance = metric.chance(data.map(|d| d.classes as usize).filter(|&k| k > 0));
            let f = flags(vec![
                generalization_flag(inp.results, groups::CONVERGE, metric, chance),
                single_class_flag(
                    inp.results,
                    groups::CONVERGE,
                    data.map(|d| d.classes),
                    false,
                ),
            ]);
            let choice = Choice::Plateau { m: d.m };
            out.push(made(
                "plateau",
                "Step 4 · training to convergence (M)",
                summary,
                d.thoughts.clone(),
                d.confidence,
                &d,
                f,
                choice,
            ));
        }
    }
    if p.runs_step(4) && inp.ready("decay") {
        match c.m {
            Some(None) => out.push(skipped(
                "decay",
                "Step 4 · does LR decay help?",
                "no M was found",
                Choice::Schedule {
                    group: groups::CONVERGE.into(),
                },
            )),
            Some(Some(m)) if (inp.complete)(groups::DECAY) => {
                let d = compare(
                    inp,
                    &p,
                    groups::DECAY,
                    &format!("power decay (M = {m})"),
                    groups::CONVERGE,
                    "no decay",
                );
                let group = if d.helps {
                    groups::DECAY
                } else {
                    groups::CONVERGE
                };
                let summary = verdict(&d, "LR decay");
                out.push(made(
                    "decay",
                    "Step 4 · does LR decay help?",
                    summary,
                    d.thoughts.clone(),
                    d.confidence,
                    &d,
                    vec![],
                    Choice::Schedule {
                        group: group.into(),
                    },
                ));
            }
            _ => {}
        }
    }

    // Step 5: cyclical against the best schedule so far.
    if p.runs_step(5) && inp.ready("cyclical") {
        match (c.m, &c.decay_group) {
            (Some(None), Some(best)) => out.push(skipped(
                "cyclical",
                "Step 5 · does a cyclical LR help?",
                "no M was found",
                Choice::Schedule {
                    group: best.clone(),
                },
            )),
            (Some(Some(m)), Some(best)) if (inp.complete)(groups::CYCLICAL) => {
                let best_name = schedule_name(best);
                let d = compare(
                    inp,
                    &p,
                    groups::CYCLICAL,
                    &format!("cyclical (M = {m})"),
                    best,
                    &best_name,
                );
                let group = if d.helps {
                    groups::CYCLICAL.to_string()
                } else {
                    best.clone()
                };
                let summary = verdict(&d, "a cyclical LR");
                out.push(made(
                    "cyclical",
                    "Step 5 · does a cyclical LR help?",
                    summary,
                    d.thoughts.clone(),
                    d.confidence,
                    &d,
                    vec![],
                    Choice::Schedule { group },
                ));
            }
            _ => {}
        }
    }

    // Step 6: each variant's own LR, then its run against the SGD choice.
    if p.runs_step(6) {
        for v in &p.variants {
            let name = v.as_str();
            let step = format!("variant_lr:{name}");
            let ramp = groups::variant_ramp(name);
            if inp.ready(&step) && (inp.complete)(&ramp) {
                let (input, _) = ramp_input(
                    inp.results,
                    &ramp,
                    |pt| pt.lr,
                    schedule_x(inp, &ramp, false),
                );
                let d = choose_lr(&input, &RampOptions::lr(metric));
                let summary = match d.lr {
                    Some(lr) => format!("{name}: lr = {}", num(lr)),
                    None => format!("{name}: no learning rate could be chosen"),
                };
                let title = format!("Step 6 · {name}'s own learning rate");
                out.push(made(
                    &step,
                    &title,
                    summary,
                    d.thoughts.clone(),
                    d.confidence,
                    &d,
                    vec![],
                    Choice::Lr { lr: d.lr },
                ));
            }
            let step = format!("variant:{name}");
            let run = groups::variant(name);
            if !inp.ready(&step) {
                continue;
            }
            let title = format!("Step 6 · {name} against SGD");
            match (c.variant_lr.get(name), c.schedule_group(&p)) {
                (Some(None), _) => out.push(skipped(
                    &step,
                    &title,
                    &format!("no learning rate was chosen for {name}"),
                    Choice::Variant {
                        adopt: false,
                        mean: None,
                    },
                )),
                (Some(Some(_)), Some(sgd)) if (inp.complete)(&run) => {
                    let sgd_name = format!("SGD ({})", schedule_name(sgd));
                    let d = compare(inp, &p, &run, name, sgd, &sgd_name);
                    let summary = verdict(&d, name);
                    let choice = Choice::Variant {
                        adopt: d.helps,
                        mean: d.final_metric.candidate_mean,
                    };
                    out.push(made(
                        &step,
                        &title,
                        summary,
                        d.thoughts.clone(),
                        d.confidence,
                        &d,
                        vec![],
                        choice,
                    ));
                }
                _ => {}
            }
        }
    }

    // Step 7.
    if p.runs_step(7) && inp.ready("final_line_search") && c.lr == Some(None) {
        out.push(skipped(
            "final_line_search",
            "Step 7 · final line search",
            "no configuration was trained (no learning rate was chosen)",
            Choice::Observed,
        ));
    }
    if p.runs_step(7) && inp.ready("final_line_search") && (inp.complete)(groups::FINAL_LINE_SEARCH)
    {
        if let Some(group) = c.final_group(&p) {
            let input = line_input(inp.results, groups::FINAL_LINE_SEARCH);
            // The trained model's own figures, seed by seed as the line
            // searches are ordered.
            let trained: Vec<TrainedFigure> = line_seeds(inp.results, groups::FINAL_LINE_SEARCH)
                .iter()
                .map(|seed| trained_figure(inp.results, &groups::curve(&group, *seed)))
                .collect();
            let shape = line_search_shape(
                &input,
                &trained,
                &LineSearchOptions::new(LineSearchKind::Final, metric),
            );
            let f = flags(vec![flag_line_search_mismatch(&shape)]);
            let summary = shape_summary(&shape, metric);
            out.push(made(
                "final_line_search",
                "Step 7 · final line search",
                summary,
                shape.thoughts.clone(),
                Confidence::Clear,
                &shape,
                f,
                Choice::Observed,
            ));
        }
    }
    out
}

/// The job's recommendation, made when nothing is left to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The configuration's group (`converge`, `decay`, `cyclical`,
    /// `variant:adam`…), or `None` when nothing could be recommended.
    pub group: Option<String>,
    pub optimizer: Option<OptimizerSpec>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub schedule: Option<ScheduleSpec>,
    /// `constant`, `power_decay` or `cyclical`.
    pub schedule_kind: Option<String>,
    /// M (epochs) of a decay or cyclical schedule.
    pub m: Option<f64>,
    /// The decay factor a = (2/3)^(1/M) of a power decay.
    pub decay_factor: Option<f64>,
    /// Epochs to train: the first epoch where the chosen configuration's
    /// mean heldout metric comes within `delta_min` of its best.
    pub epochs: Option<usize>,
    /// Its mean heldout metric over seeds at that epoch, and the metric's
    /// name.
    pub expected_metric: Option<f64>,
    pub metric: String,
    /// Training epochs all of the job's tasks spent.
    pub epochs_trained: u64,
    pub reasons: Vec<String>,
    /// Paste-ready TOML (`[optimizer]` and `[train]` of a `train` job).
    pub toml: String,
}

#[derive(Serialize)]
struct PasteReady<'a> {
    optimizer: &'a OptimizerSpec,
    train: PasteTrain<'a>,
}

#[derive(Serialize)]
struct PasteTrain<'a> {
    epochs: usize,
    schedule: &'a ScheduleSpec,
}

pub fn recommend(
    job: &JobSpec,
    job_id: &str,
    results: &pb::JobResults,
    choices: &Choices,
    epochs_trained: u64,
) -> Made {
    let p = job.procedure_section();
    let metric = metric_of(job, results);
    let mut r = Recommendation {
        group: None,
        optimizer: None,
        lr: None,
        momentum: None,
        schedule: None,
        schedule_kind: None,
        m: None,
        decay_factor: None,
        epochs: None,
        expected_metric: None,
        metric: metric_word(metric).to_string(),
        epochs_trained,
        reasons: vec![],
        toml: String::new(),
    };
    let group = if p.runs_step(4) {
        choices.final_group(&p)
    } else if p.runs_step(3) && choices.momentum_final.is_some() {
        Some(
            if choices.momentum_final.unwrap_or(0.0) > 0.0 {
                groups::CONFIRM_WITH
            } else {
                groups::CONFIRM_WITHOUT
            }
            .to_string(),
        )
    } else {
        None
    };
    let config = group.as_deref().and_then(|g| group_config(job, choices, g));
    match (&group, config) {
        (Some(g), Some(config)) => {
            // Train as long as it takes the mean heldout metric to come
            // within `delta_min` of its best (raw means: a moving average
            // would look at epochs after the one it recommends).
            let (epochs, expected) = recommended_epochs(&seed_curves(results, g), p.delta_min)
                .map_or((config.epochs, None), |(e, m)| {
                    (e.clamp(1, config.epochs), Some(m))
                });
            r.group = Some(g.clone());
            r.optimizer = Some(config.optimizer);
            r.momentum = match &config.schedule.momentum {
                Some(MomentumSchedule::Constant { value }) => Some(*value),
                Some(_) => None,
                None => Some(config.optimizer.default_momentum()),
            };
            let (kind, m) = match config.schedule.lr {
                LrSchedule::PowerDecay { m, .. } => ("power_decay", Some(m)),
                LrSchedule::Cyclical { m, .. } => ("cyclical", Some(m as f64)),
                _ => ("constant", None),
            };
            r.schedule_kind = Some(kind.into());
            r.m = m;
            if kind == "power_decay" {
                r.decay_factor = m.map(|m| (2.0f64 / 3.0).powf(1.0 / m));
            }
            // The base LR (a cyclical schedule starts at 2·lr).
            r.lr = match config.schedule.lr {
                LrSchedule::Constant { lr }
                | LrSchedule::PowerDecay { lr, .. }
                | LrSchedule::Cyclical { lr, .. } => Some(lr),
                _ => r.lr,
            };
            r.epochs = Some(epochs);
            r.expected_metric = expected;
            let paste = PasteReady {
                optimizer: &config.optimizer,
                train: PasteTrain {
                    epochs,
                    schedule: &config.schedule,
                },
            };
            let body = toml::to_string(&paste)
                .unwrap_or_else(|e| format!("# could not write TOML: {e}\n"));
            r.toml = format!(
                "# Ridgeline's recommendation from job {job_id} ({}).\n# Paste into a job file with kind = \"train\" (or use [optimizer] and the\n# schedule in your own training code). {} epochs of tasks were spent to find it.\n{body}",
                job.display_name(),
                epochs_trained
            );
            r.schedule = Some(config.schedule);
        }
        _ => {
            r.reasons.push(if choices.lr == Some(None) {
                "no learning rate could be chosen in step 2 (see its red flags)".into()
            } else {
                "the steps that choose a configuration did not all run or finish".into()
            });
            r.toml = format!(
                "# Ridgeline could not recommend hyperparameters for job {job_id}: {}\n",
                r.reasons.join("; ")
            );
        }
    }
    let (summary, thoughts, confidence) = match (&r.optimizer, r.lr, r.epochs) {
        (Some(o), Some(lr), Some(epochs)) => {
            let mut s = format!("{} with lr {}", o.name(), num(lr));
            if let Some(m) = r
                .momentum
                .filter(|m| *m > 0.0 && o.name() != "adam" && o.name() != "adamw")
            {
                s.push_str(&format!(", momentum {}", num(m)));
            }
            match (r.schedule_kind.as_deref(), r.m) {
                (Some("power_decay"), Some(m)) => {
                    s.push_str(&format!(", power decay with M = {}", num(m)))
                }
                (Some("cyclical"), Some(m)) => {
                    s.push_str(&format!(", cyclical with M = {}", num(m)))
                }
                _ => {}
            }
            s.push_str(&format!(", {epochs} epochs"));
            let t = format!(
                "Putting the steps together, I recommend {s}: over the seeds, this configuration's mean {} came within {} of its best at that epoch ({}). Finding it took {} epochs of training across all tasks.",
                metric_word(metric),
                num(p.delta_min),
                r.expected_metric.map(num).unwrap_or_else(|| "n/a".into()),
                epochs_trained
            );
            (s, t, Confidence::Clear)
        }
        _ => (
            "no recommendation".to_string(),
            format!(
                "I cannot recommend hyperparameters: {}.",
                r.reasons.join("; ")
            ),
            Confidence::Undetermined,
        ),
    };
    made(
        "recommendation",
        "Recommendation",
        summary,
        thoughts,
        confidence,
        &r,
        vec![],
        Choice::Recommendation,
    )
}

// ------------------------------------------------------------ helpers

#[allow(clippy::too_many_arguments)]
fn made<T: Serialize>(
    step: &str,
    title: &str,
    summary: String,
    thoughts: String,
    confidence: Confidence,
    numbers: &T,
    red_flags: Vec<RedFlag>,
    choice: Choice,
) -> Made {
    Made {
        step: step.to_string(),
        choice,
        decision: pb::Decision {
            step: step.to_string(),
            title: title.to_string(),
            summary,
            thoughts,
            confidence: confidence_word(confidence).into(),
            json: serde_json::to_string(numbers)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
            red_flags: red_flags
                .into_iter()
                .map(|f| pb::RedFlag {
                    code: f.code,
                    title: f.title,
                    detail: f.detail,
                })
                .collect(),
            unix_ms: 0,
        },
    }
}

#[derive(Serialize)]
struct Skipped<'a> {
    skipped: &'a str,
}

fn skipped(step: &str, title: &str, why: &str, choice: Choice) -> Made {
    made(
        step,
        title,
        format!("skipped: {why}"),
        format!("Skipped, because {why}."),
        Confidence::Undetermined,
        &Skipped { skipped: why },
        vec![],
        choice,
    )
}

fn confidence_word(c: Confidence) -> &'static str {
    match c {
        Confidence::Clear => "clear",
        Confidence::Weak => "weak",
        Confidence::Undetermined => "undetermined",
    }
}

fn metric_word(m: MetricKind) -> &'static str {
    match m {
        MetricKind::Accuracy => "accuracy",
        MetricKind::R2 => "R²",
        MetricKind::Pearson => "Pearson r",
        MetricKind::Other => "metric",
    }
}

fn num(v: f64) -> String {
    decisions::common::fmt_num(v)
}

fn schedule_name(group: &str) -> String {
    match group {
        groups::CONVERGE => "constant LR".into(),
        groups::DECAY => "power decay".into(),
        groups::CYCLICAL => "cyclical".into(),
        g => g.to_string(),
    }
}

fn verdict(d: &RunComparison, what: &str) -> String {
    let diff = d
        .final_metric
        .mean_difference
        .map(|x| format!(" (mean difference {:+.4})", x))
        .unwrap_or_default();
    if d.helps {
        format!("{what} helps{diff}: adopted")
    } else {
        format!("{what} does not clearly help{diff}: not adopted")
    }
}

fn compare(
    inp: &Inputs,
    p: &ProcedureSection,
    cand: &str,
    cand_name: &str,
    base: &str,
    base_name: &str,
) -> RunComparison {
    compare_runs(
        cand_name,
        &seed_curves(inp.results, cand),
        base_name,
        &seed_curves(inp.results, base),
        &inp.compare_options(p),
    )
}

/// The first epoch (≥ 1) whose mean heldout metric over seeds is within
/// `delta` of the best mean, and that mean; `None` without finite means.
pub fn recommended_epochs(curves: &SeedCurves, delta: f64) -> Option<(usize, f64)> {
    let mean = curves.strict_mean();
    let points: Vec<(f64, f64)> = curves
        .x
        .iter()
        .zip(&mean)
        .filter(|(x, m)| **x >= 1.0 && m.is_finite())
        .map(|(x, m)| (*x, *m))
        .collect();
    let best = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    points
        .into_iter()
        .find(|p| p.1 >= best - delta)
        .map(|(x, m)| (x.ceil() as usize, m))
}

/// The seed of a curve named `<group>,seed=<s>`.
fn seed_of(curve: &str) -> Option<u64> {
    curve
        .rsplit_once(",seed=")
        .and_then(|(_, s)| s.parse().ok())
}

/// The curves of `group`, ordered by seed.
fn group_curves<'a>(results: &'a pb::JobResults, group: &str) -> Vec<(u64, &'a pb::Curve)> {
    let mut out: Vec<(u64, &pb::Curve)> = results
        .curves
        .iter()
        .filter_map(|c| {
            let (g, _) = c.curve.rsplit_once(",seed=")?;
            (g == group).then_some(())?;
            Some((seed_of(&c.curve)?, c))
        })
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out
}

fn line_seeds(results: &pb::JobResults, group: &str) -> Vec<u64> {
    group_curves(results, group)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn heldout(p: &pb::CurvePoint) -> (f64, f64) {
    p.heldout
        .as_ref()
        .map_or((f64::NAN, f64::NAN), |m| (m.metric, m.loss))
}

/// Heldout metric against epoch, per seed.
fn seed_curves(results: &pb::JobResults, group: &str) -> SeedCurves {
    let per_seed: Vec<Vec<(f64, f64)>> = group_curves(results, group)
        .into_iter()
        .map(|(_, c)| c.points.iter().map(|p| (p.x, heldout(p).0)).collect())
        .collect();
    SeedCurves::from_points(&per_seed)
}

/// Each seed's heldout metric at the end of its run (NaN if it diverged).
fn finals(results: &pb::JobResults, group: &str) -> Vec<f64> {
    group_curves(results, group)
        .into_iter()
        .map(|(_, c)| {
            if c.end
                .as_ref()
                .is_some_and(|e| e.kind == pb::run_end::Kind::Diverged as i32)
            {
                return f64::NAN;
            }
            c.points.last().map_or(f64::NAN, |p| heldout(p).0)
        })
        .collect()
}

fn trained_figure(results: &pb::JobResults, curve: &str) -> TrainedFigure {
    let last = results
        .curves
        .iter()
        .find(|c| c.curve == curve)
        .and_then(|c| c.points.last());
    match last {
        Some(p) => {
            let (metric, loss) = heldout(p);
            TrainedFigure {
                metric: metric.is_finite().then_some(metric),
                loss: loss.is_finite().then_some(loss),
            }
        }
        None => TrainedFigure::default(),
    }
}

/// A ramp's input: per epoch after the first, the ramped value (`x_of`)
/// and the heldout figures; and the mean heldout metric at θ0 (epoch 0).
fn ramp_input(
    results: &pb::JobResults,
    group: &str,
    x_of: impl Fn(&pb::CurvePoint) -> f64,
    schedule_x: Option<Vec<f64>>,
) -> (RampInput, Option<f64>) {
    let curves = group_curves(results, group);
    // The ramp's values per epoch come from its schedule, so a ramp whose
    // seeds all diverged early still spans every epoch it was meant to
    // (the epochs after a divergence count as fallen); with a finer
    // schedule (every k batches), from the longest curve.
    // Per-epoch ramps read the end-of-epoch reports only (a job may also
    // report every k batches).
    let per_epoch = schedule_x.is_some();
    let xs: Vec<f64> = schedule_x.unwrap_or_else(|| {
        curves
            .iter()
            .map(|(_, c)| {
                c.points
                    .iter()
                    .filter(|p| p.x > 0.0)
                    .map(&x_of)
                    .collect::<Vec<f64>>()
            })
            .max_by_key(|v| v.len())
            .unwrap_or_default()
    });
    let n = xs.len();
    let mut input = RampInput {
        x: xs,
        metric: vec![],
        loss: vec![],
        diverged_at: vec![],
    };
    let mut init = vec![];
    for (_, c) in &curves {
        let mut metric = vec![f64::NAN; n];
        let mut loss = vec![f64::NAN; n];
        let reports = c
            .points
            .iter()
            .filter(|p| p.x > 0.0 && (!per_epoch || p.x.fract() == 0.0));
        for (i, p) in reports.take(n).enumerate() {
            (metric[i], loss[i]) = heldout(p);
        }
        if let Some(p0) = c.points.iter().find(|p| p.x == 0.0) {
            init.push(heldout(p0).0);
        }
        let diverged = c
            .end
            .as_ref()
            .filter(|e| e.kind == pb::run_end::Kind::Diverged as i32)
            .map(|e| (e.epoch as usize).min(n.saturating_sub(1)));
        input.metric.push(metric);
        input.loss.push(loss);
        input.diverged_at.push(diverged);
    }
    (
        input,
        decisions::common::mean(
            &init
                .into_iter()
                .filter(|v| v.is_finite())
                .collect::<Vec<_>>(),
        ),
    )
}

/// A per-epoch ramp's values (LR, or momentum with `momentum`), epoch by
/// epoch, from the schedule it was planned with; `None` for a ramp stepped
/// every k batches.
fn schedule_x(inp: &Inputs, group: &str, momentum: bool) -> Option<Vec<f64>> {
    let config = group_config(inp.job, inp.choices, group)?;
    if config.schedule.every_batches.is_some() {
        return None;
    }
    (0..config.epochs)
        .map(|e| {
            let t = e as f64;
            if momentum {
                config.schedule.momentum.as_ref().map(|m| m.at(t))
            } else {
                Some(config.schedule.lr.at(t))
            }
        })
        .collect()
}

fn line_input(results: &pb::JobResults, group: &str) -> LineSearchInput {
    let curves = group_curves(results, group);
    let a: Vec<f64> = curves
        .iter()
        .map(|(_, c)| c.points.iter().map(|p| p.x).collect::<Vec<f64>>())
        .max_by_key(|v| v.len())
        .unwrap_or_default();
    let mut input = LineSearchInput {
        a: a.clone(),
        metric: vec![],
        loss: vec![],
    };
    for (_, c) in &curves {
        let mut metric = vec![f64::NAN; a.len()];
        let mut loss = vec![f64::NAN; a.len()];
        for p in &c.points {
            if let Some(i) = a.iter().position(|x| x.to_bits() == p.x.to_bits()) {
                (metric[i], loss[i]) = heldout(p);
            }
        }
        input.metric.push(metric);
        input.loss.push(loss);
    }
    input
}

fn shape_summary(s: &decisions::LineSearchShape, metric: MetricKind) -> String {
    let mut parts = vec![];
    if let Some(pk) = &s.metric_peak {
        parts.push(format!(
            "peak {} {} at a = {}",
            metric_word(metric),
            num(pk.value),
            num(pk.a)
        ));
    }
    if let Some(m) = s.loss_monotone_0_1 {
        parts.push(if m {
            "loss falls monotonically from a = 0 to 1".into()
        } else {
            "loss not monotone from a = 0 to 1".to_string()
        });
    }
    if s.has_barrier {
        parts.push(format!(
            "barrier {}",
            s.barrier_above_endpoints.map(num).unwrap_or_default()
        ));
    }
    parts.push(format!("{} local loss minima", s.loss_local_minima));
    if let Some(c) = &s.cliff {
        if c.sharp {
            let what = if c.change < 0.0 {
                "cliff: a drop"
            } else {
                "sharp rise"
            };
            parts.push(format!(
                "{what} of {} between a = {} and {}",
                num(c.change.abs()),
                num(c.from_a),
                num(c.to_a)
            ));
        }
    }
    if let Some(check) = &s.at_one {
        if let Some(ok) = check.agrees {
            parts.push(if ok {
                "a = 1 matches the trained model".into()
            } else {
                "a = 1 DISAGREES with the trained model".to_string()
            });
        }
    }
    parts.join("; ")
}

/// The data summary a worker sent for any curve of the job.
fn data_summary(results: &pb::JobResults) -> Option<pb::DataSummary> {
    results.data
}

/// Training metric good, heldout at chance: the epoch of `group` where
/// the mean training metric is highest.
fn generalization_flag(
    results: &pb::JobResults,
    group: &str,
    metric: MetricKind,
    chance: Option<f64>,
) -> Option<RedFlag> {
    let chance = chance?;
    let agg = results.aggregates.iter().find(|a| a.group == group)?;
    let best = (0..agg.x.len())
        .filter(|&i| agg.train_mean[i].is_finite() && agg.heldout_mean[i].is_finite())
        .max_by(|&i, &j| agg.train_mean[i].total_cmp(&agg.train_mean[j]))?;
    flag_train_good_heldout_chance(metric, agg.train_mean[best], agg.heldout_mean[best], chance)
}

/// The model predicts one class: where `group`'s mean heldout metric peaks
/// (`at_peak`: a ramp, whose last epochs may have diverged) or at the end
/// of its runs (a trained model).
fn single_class_flag(
    results: &pb::JobResults,
    group: &str,
    classes: Option<u32>,
    at_peak: bool,
) -> Option<RedFlag> {
    let classes = classes? as usize;
    let curves = group_curves(results, group);
    let peak_x = if at_peak {
        let agg = results.aggregates.iter().find(|a| a.group == group)?;
        let i = (0..agg.x.len())
            .filter(|&i| agg.x[i] > 0.0 && agg.heldout_mean[i].is_finite())
            .max_by(|&i, &j| agg.heldout_mean[i].total_cmp(&agg.heldout_mean[j]))?;
        Some(agg.x[i])
    } else {
        None
    };
    let fractions: Vec<f64> = curves
        .into_iter()
        .filter_map(|(_, c)| {
            let point = match peak_x {
                Some(x) => c.points.iter().find(|p| p.x.to_bits() == x.to_bits()),
                None => c.points.last(),
            };
            point?.heldout.as_ref()?.majority_fraction
        })
        .collect();
    let mean = decisions::common::mean(&fractions)?;
    flag_single_class_fraction(mean, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_epochs_are_the_first_within_delta_of_the_best() {
        let x: Vec<f64> = (0..8).map(f64::from).collect();
        let curves = SeedCurves::new(
            x,
            vec![
                vec![0.1, 0.5, 0.8, 0.90, 0.95, 0.960, 0.950, 0.96],
                vec![0.1, 0.5, 0.8, 0.92, 0.95, 0.958, 0.962, 0.96],
            ],
        );
        // Means: … 0.91, 0.95, 0.959, 0.956, 0.96: best 0.96 at epoch 7;
        // epoch 5 (0.959) is within 0.002 of it.
        let (e, m) = recommended_epochs(&curves, 0.002).unwrap();
        assert_eq!(e, 5);
        assert!((m - 0.959).abs() < 1e-12);
        assert_eq!(recommended_epochs(&curves, 0.0).unwrap().0, 7);
        assert_eq!(recommended_epochs(&curves, 0.04).unwrap().0, 4);
        // A diverged seed (NaN) makes its epochs unusable, never a panic.
        let nan = SeedCurves::new(vec![0.0, 1.0], vec![vec![0.1, f64::NAN]]);
        assert_eq!(recommended_epochs(&nan, 0.01), None);
    }
}
