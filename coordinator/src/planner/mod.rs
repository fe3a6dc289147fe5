//! The planner: turns a validated job into tasks. Single-tool jobs are
//! planned whole at submit; a `procedure` job is a DAG of stages
//! ([`procedure`]) whose later stages are planned as decisions come in.
//!
//! ```text
//! JobSpec ──► runs (configuration × seed) ──► chunks of `chunk_epochs` epochs,
//!         │                                   each `after` the previous one
//!         └─► line searches (one per seed) ─► blocks of `points_per_task` points
//! ```
//!
//! Chunks of one run go in order (each starts from its predecessor's
//! checkpoint, filled in by the scheduler at lease time); everything else is
//! independent, so runs of different seeds and configurations, and blocks of
//! points, spread over all workers at once.

use ridgeline_common::job::{DirectionKind, JobKind, JobSpec};
use ridgeline_common::task::{DirectionSpec, LineSearchTask, TaskSpec, TrainTask};
use ridgeline_common::{RunSpec, ScheduleSpec, TaskId};

pub mod procedure;

/// A task as the planner creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    pub id: TaskId,
    pub stage: String,
    /// For people: "seed=1, epochs 0-3" or "seed=1, points 0-7".
    pub label: String,
    pub curve: String,
    /// The task that must be done before this one starts.
    pub after: Option<TaskId>,
    /// Whether this task ends its run (the last chunk, or a line search).
    pub last_chunk: bool,
    pub spec: TaskSpec,
}

/// All tasks of `job` known at submit, in the order they should be handed
/// out. For a `procedure` job these are its first stages; the rest come
/// from [`procedure::ready_stages`] as decisions are made.
pub fn plan(job: &JobSpec) -> Vec<PlannedTask> {
    let stage = job.kind.as_str().to_string();
    match job.kind {
        JobKind::Procedure => {
            procedure::ready_stages(job, &procedure::Choices::default(), &Default::default())
        }
        JobKind::LineSearch => {
            let Some(ls) = &job.line_search else {
                return vec![];
            };
            let mut out = vec![];
            for seed in job.seeds() {
                // θ0 comes from the run's seed; the direction from its own
                // seed stream (derived inside the engine from this number
                // and the parameter name), so replicates differ in both.
                let run = job.base_run(
                    ScheduleSpec::constant(ls.trained_lr, None),
                    ls.trained_epochs.max(1),
                    seed,
                );
                let direction = match ls.direction {
                    DirectionKind::Random => DirectionSpec::Random {
                        seed,
                        filter_normalize: ls.filter_normalize,
                        include_biases: ls.include_biases,
                    },
                    DirectionKind::Trained => DirectionSpec::Trained {
                        subset: ls.trained_subset,
                        epochs: ls.trained_epochs,
                        lr: ls.trained_lr,
                    },
                };
                out.extend(line_search_blocks(
                    &stage,
                    &format!("seed={seed}"),
                    &run,
                    &direction,
                    &ls.alphas(),
                    ls.points_per_task,
                ));
            }
            out
        }
        _ => job
            .runs()
            .into_iter()
            .flat_map(|run| chunked_run(&stage, &run.curve, &run.spec, job.chunk_epochs, None))
            .collect(),
    }
}

/// One run cut into chunks of `chunk_epochs` epochs, each `after` the one
/// before (the first after `after`, when given).
pub fn chunked_run(
    stage: &str,
    curve: &str,
    run: &RunSpec,
    chunk_epochs: usize,
    after: Option<TaskId>,
) -> Vec<PlannedTask> {
    let mut out = vec![];
    let mut prev = after;
    let mut from = 0;
    while from < run.epochs {
        let to = (from + chunk_epochs.max(1)).min(run.epochs);
        let id = TaskId::new();
        out.push(PlannedTask {
            id,
            stage: stage.to_string(),
            label: format!("{curve}, epochs {from}-{to}"),
            curve: curve.to_string(),
            after: prev,
            last_chunk: to == run.epochs,
            spec: TaskSpec::Train(TrainTask {
                curve: curve.to_string(),
                run: run.clone(),
                from_epoch: from,
                to_epoch: to,
                checkpoint: None,
            }),
        });
        prev = Some(id);
        from = to;
    }
    out
}

/// One line search cut into blocks of `per_task` points (independent
/// tasks).
pub fn line_search_blocks(
    stage: &str,
    curve: &str,
    run: &RunSpec,
    direction: &DirectionSpec,
    alphas: &[f64],
    per_task: usize,
) -> Vec<PlannedTask> {
    let indexed: Vec<(u32, f64)> = alphas
        .iter()
        .enumerate()
        .map(|(i, &a)| (i as u32, a))
        .collect();
    indexed
        .chunks(per_task.max(1))
        .map(|block| {
            let (first, last) = (block[0].0, block[block.len() - 1].0);
            PlannedTask {
                id: TaskId::new(),
                stage: stage.to_string(),
                label: format!("{curve}, points {first}-{last}"),
                curve: curve.to_string(),
                after: None,
                last_chunk: true,
                spec: TaskSpec::LineSearch(LineSearchTask {
                    curve: curve.to_string(),
                    run: run.clone(),
                    direction: direction.clone(),
                    points: block.to_vec(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ridgeline_common::job::JobFormat;

    use super::*;

    const RAMP: &str = r#"
kind = "lr_ramp"
replicates = 2
chunk_epochs = 2
[data.source]
kind = "tabular"
[model]
kind = "mlp"
hidden = [8]
[lr_ramp]
start = 1e-3
end = 1.0
epochs = 5
"#;

    #[test]
    fn runs_are_cut_into_ordered_chunks() {
        let job = JobSpec::parse(RAMP, JobFormat::Toml).unwrap();
        let tasks = plan(&job);
        assert_eq!(tasks.len(), 2 * 3, "2 seeds × chunks 0-2, 2-4, 4-5");
        assert_eq!(tasks[0].after, None);
        assert_eq!(tasks[1].after, Some(tasks[0].id));
        assert_eq!(tasks[2].after, Some(tasks[1].id));
        assert!(tasks[2].last_chunk && !tasks[1].last_chunk);
        assert_eq!(tasks[3].after, None, "the second seed starts at once");
        assert_eq!(tasks[5].label, "seed=1, epochs 4-5");
    }

    #[test]
    fn line_search_points_are_blocked_per_seed() {
        let job = JobSpec::parse(
            &RAMP
                .replace("kind = \"lr_ramp\"", "kind = \"line_search\"")
                .replace(
                    "[lr_ramp]\nstart = 1e-3\nend = 1.0\nepochs = 5",
                    "[line_search]\npoints = 11\npoints_per_task = 4",
                ),
            JobFormat::Toml,
        )
        .unwrap();
        let tasks = plan(&job);
        assert_eq!(tasks.len(), 2 * 3);
        let TaskSpec::LineSearch(ls) = &tasks[2].spec else {
            panic!()
        };
        let idx: Vec<u32> = ls.points.iter().map(|p| p.0).collect();
        assert_eq!(idx, vec![8, 9, 10]);
        for ((_, a), want) in ls.points.iter().zip([0.6, 0.8, 1.0]) {
            assert!((a - want).abs() < 1e-12);
        }
        assert!(tasks.iter().all(|t| t.after.is_none()));
    }

    /// The light reading of a stored spec that reports are checked against
    /// (`TaskShape`) agrees with the full one, for every kind of task.
    #[test]
    fn a_task_s_shape_reads_what_its_spec_says() {
        use ridgeline_common::task::{TaskKind, TaskShape};
        let search = RAMP
            .replace("kind = \"lr_ramp\"", "kind = \"line_search\"")
            .replace(
                "[lr_ramp]\nstart = 1e-3\nend = 1.0\nepochs = 5",
                "[line_search]\npoints = 11\npoints_per_task = 4",
            );
        let mut kinds = vec![];
        for text in [RAMP.to_string(), search] {
            let job = JobSpec::parse(&text, JobFormat::Toml).unwrap();
            for t in plan(&job) {
                let shape = TaskShape::from_json(&t.spec.to_json()).unwrap();
                match &t.spec {
                    TaskSpec::Train(tr) => {
                        assert_eq!(shape.kind, TaskKind::Train);
                        assert_eq!(
                            (shape.from_epoch, shape.to_epoch),
                            (tr.from_epoch, tr.to_epoch)
                        );
                        assert!(shape.points.is_empty());
                    }
                    TaskSpec::LineSearch(ls) => {
                        assert_eq!(shape.kind, TaskKind::LineSearch);
                        assert_eq!(shape.points, ls.points);
                    }
                }
                kinds.push(shape.kind);
            }
        }
        assert!(kinds.contains(&TaskKind::Train) && kinds.contains(&TaskKind::LineSearch));
    }
}
