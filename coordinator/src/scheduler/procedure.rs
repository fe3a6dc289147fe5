//! A procedure job moving through its DAG. After the last open task of a
//! stage completes (in the same transaction, so a restart never sees half
//! of it), [`advance`] repeats until nothing changes:
//!
//! 1. make every decision whose stages are complete (`analysis::steps`),
//!    storing each with an event;
//! 2. plan every stage those decisions release (`planner::procedure`);
//!
//! and when no task is left open, stores the recommendation and finishes
//! the job.

use std::collections::{BTreeMap, BTreeSet};

use ridgeline_common::job::JobSpec;
use ridgeline_common::proto::v1 as pb;
use rusqlite::{OptionalExtension, Transaction};

use super::transitions::finish_job;
use super::{insert_tasks, task_event, Published};
use crate::analysis::{self, steps};
use crate::error::{CoordError, Result};
use crate::planner::procedure::{ready_stages, Choice, Choices};
use crate::store::{self, TaskRow};

/// Advances `job_id` if it is a running procedure job, after a task of its
/// stage `stage` ended; returns `false` for any other job (the caller
/// finishes it the usual way).
pub(super) fn advance(
    tx: &Transaction,
    job_id: &str,
    stage: &str,
    now: i64,
    published: &mut Vec<Published>,
) -> Result<bool> {
    // Its kind first: most completions are not a procedure's, and need
    // not read the job's spec.
    let kind: Option<String> =
        store::one(tx, "SELECT kind FROM jobs WHERE id = ?1", [job_id], |r| {
            r.get(0)
        })
        .optional()?;
    if kind.as_deref() != Some("procedure") {
        return Ok(false);
    }
    // Every decision waits for whole stages, every stage planned waits for
    // a decision, and the job ends with its last task: while the stage of
    // the task that ended has tasks open, nothing can follow from it. (The
    // round below reads all the job's tasks, decisions and measurements:
    // run on every completion it cost ~1 ms each in the demo, and grew
    // with the job.)
    let stage_open: bool = store::one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1 AND state IN ('pending', 'leased') AND stage = ?2)",
        [job_id, stage],
        |r| r.get(0),
    )?;
    if stage_open {
        return Ok(true);
    }
    let Some(job) = store::get_job(tx, job_id)? else {
        return Ok(false);
    };
    if super::is_terminal(&job.state) {
        return Ok(true);
    }
    let spec: JobSpec = serde_json::from_str(&job.spec)
        .map_err(|e| CoordError::Storage(format!("job {job_id} has a corrupt spec: {e}")))?;
    let p = spec.procedure_section();
    let publish = |published: &mut Vec<Published>, ev: pb::JobEvent| {
        published.push(Published {
            job_id: job_id.to_string(),
            event: ev,
        })
    };
    // Each round makes at least one decision or plans at least one stage;
    // there are fewer than 100 of either.
    for _ in 0..200 {
        let tasks = store::job_tasks(tx, job_id)?;
        let stored = store::job_decisions(tx, job_id)?;
        let mut parsed = vec![];
        for d in &stored {
            let c: Choice = serde_json::from_str(&d.choice).map_err(|e| {
                CoordError::Storage(format!(
                    "decision {} of job {job_id} is corrupt: {e}",
                    d.step
                ))
            })?;
            parsed.push((d.step.as_str(), c));
        }
        let mut choices = Choices::from_decisions(parsed.iter().map(|(s, c)| (*s, c)));
        if let Some(group) = choices.final_group(&p) {
            choices.final_checkpoints = final_checkpoints(&tasks, &group);
        }
        let made: BTreeSet<String> = stored.iter().map(|d| d.step.clone()).collect();
        let raised: BTreeSet<String> = stored
            .iter()
            .flat_map(|d| d.decision.red_flags.iter().map(|f| f.code.clone()))
            .collect();
        let status = stage_status(&tasks);
        let complete = |stage: &str| status.get(stage).is_some_and(|(_, open)| *open == 0);
        let results =
            analysis::results(job_id, &job.kind, "", store::job_measurements(tx, job_id)?);

        let new = steps::decide(&steps::Inputs {
            job: &spec,
            results: &results,
            complete: &complete,
            made: &made,
            choices: &choices,
            raised: &raised,
        });
        if !new.is_empty() {
            for m in new {
                record(tx, job_id, m, now, published, &publish)?;
            }
            continue;
        }

        let planned: BTreeSet<String> = status.keys().cloned().collect();
        let next = ready_stages(&spec, &choices, &planned);
        if !next.is_empty() {
            let first = tasks.iter().map(|t| t.ordinal).max().map_or(0, |o| o + 1);
            insert_tasks(tx, job_id, first, &next, now)?;
            let stages: BTreeSet<&str> = next.iter().map(|t| t.stage.as_str()).collect();
            tracing::info!(%job_id, ?stages, tasks = next.len(), "stages released");
            for t in store::job_tasks(tx, job_id)?
                .iter()
                .filter(|t| t.ordinal >= first)
            {
                let ev = store::append_event(tx, job_id, now, task_event(t, "pending", "planned"))?;
                publish(published, ev);
            }
            continue;
        }

        let open = tasks
            .iter()
            .filter(|t| t.state == "pending" || t.state == "leased")
            .count();
        if open == 0 {
            if !choices.recommended {
                let epochs: i64 = store::one(
                    tx,
                    "SELECT epochs_trained FROM jobs WHERE id = ?1",
                    [job_id],
                    |r| r.get(0),
                )?;
                let m = steps::recommend(&spec, job_id, &results, &choices, epochs as u64);
                record(tx, job_id, m, now, published, &publish)?;
            }
            finish_job(tx, job_id, "succeeded", "", now, published)?;
        }
        return Ok(true);
    }
    Err(CoordError::Internal(format!(
        "job {job_id}: the procedure did not settle"
    )))
}

fn record(
    tx: &Transaction,
    job_id: &str,
    mut m: steps::Made,
    now: i64,
    published: &mut Vec<Published>,
    publish: &impl Fn(&mut Vec<Published>, pb::JobEvent),
) -> Result<()> {
    m.decision.unix_ms = now;
    let choice = serde_json::to_string(&m.choice)
        .map_err(|e| CoordError::Internal(format!("decision {}: {e}", m.step)))?;
    store::insert_decision(tx, job_id, &m.step, &choice, &m.decision)?;
    tracing::info!(%job_id, step = %m.step, summary = %m.decision.summary, "decided");
    let ev = store::append_event(tx, job_id, now, pb::job_event::Kind::Decision(m.decision))?;
    publish(published, ev);
    Ok(())
}

/// Per stage: (tasks, tasks still pending or leased).
fn stage_status(tasks: &[TaskRow]) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in tasks {
        let e = out.entry(t.stage.clone()).or_default();
        e.0 += 1;
        if t.state == "pending" || t.state == "leased" {
            e.1 += 1;
        }
    }
    out
}

/// The final checkpoint of each seed's run in `group`, once every run of
/// the group has ended; runs that diverged have none worth searching
/// towards.
fn final_checkpoints(tasks: &[TaskRow], group: &str) -> BTreeMap<u64, String> {
    let mine: Vec<&TaskRow> = tasks.iter().filter(|t| t.stage == group).collect();
    if mine.is_empty()
        || mine
            .iter()
            .any(|t| t.state == "pending" || t.state == "leased")
    {
        return BTreeMap::new();
    }
    mine.iter()
        .filter(|t| t.last_chunk && t.state == "done" && !t.checkpoint.is_empty())
        .filter_map(|t| {
            let seed = t.curve.rsplit_once(",seed=")?.1.parse().ok()?;
            Some((seed, t.checkpoint.clone()))
        })
        .collect()
}
