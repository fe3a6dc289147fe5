//! `coordinator watch`: follows a job's event stream with one progress bar
//! per stage and one printed line per measurement, until the job ends.
//!
//! The stream starts with a snapshot of the job (which names every task and
//! its stage), then replays every stored event from the beginning, then
//! carries live events. A `Board` keeps the latest state of every task, so
//! the bars converge to the truth whatever the order in which history is
//! replayed; measurement lines are printed above the bars (to stdout, so they
//! can be piped or saved). When stderr is not a terminal the bars are hidden
//! and each finished task prints its stage's progress instead.

use std::collections::{HashMap, HashSet};

use anyhow::anyhow;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ridgeline_common::auth::JobClient;
use ridgeline_common::proto::v1 as pb;

use super::render::{
    format_event, format_stage, format_task_failure, format_watch_header, job_state_is_terminal,
    job_state_word,
};
use super::rpc_error;

/// A task as the board knows it.
#[derive(Debug, Clone)]
struct TaskEntry {
    stage: usize,
    state: i32,
    label: String,
}

/// One stage's counts as shown on its bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StageCounts {
    pub done: u32,
    pub total: u32,
    pub running: u32,
    pub failed: u32,
}

/// The latest known state of every task of a job, by stage: what the
/// progress bars show.
#[derive(Debug, Clone, Default)]
pub(crate) struct Board {
    stages: Vec<String>,
    /// The stage's counts from the snapshot, used for a stage whose tasks
    /// the snapshot did not list.
    reported: Vec<StageCounts>,
    tasks: HashMap<String, TaskEntry>,
}

/// What applying a task event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The task's stage (an index into [`Board::stages`]) changed counts.
    Stage(usize),
    /// The board does not know this task.
    Unknown,
}

impl Board {
    /// A board from a job status (the stream's snapshot, or a fresh
    /// `GetJob`).
    pub(crate) fn from_status(s: &pb::JobStatus) -> Self {
        let mut b = Board::default();
        b.merge(s);
        b
    }

    /// Learns the stages and tasks of `s` the board does not know yet; the
    /// tasks it knows keep their latest state.
    pub(crate) fn merge(&mut self, s: &pb::JobStatus) {
        for st in &s.stages {
            let i = self.stage_index(&st.stage);
            self.reported[i] = StageCounts {
                done: st.done,
                total: st.total,
                running: st.running,
                failed: st.failed,
            };
        }
        for t in &s.tasks {
            if self.tasks.contains_key(&t.task_id) {
                continue;
            }
            let stage = self.stage_index(&t.stage);
            self.tasks.insert(
                t.task_id.clone(),
                TaskEntry {
                    stage,
                    state: t.state,
                    label: t.label.clone(),
                },
            );
        }
    }

    fn stage_index(&mut self, name: &str) -> usize {
        match self.stages.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.stages.push(name.to_string());
                self.reported.push(StageCounts::default());
                self.stages.len() - 1
            }
        }
    }

    /// The stages, in the job's order.
    pub(crate) fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Records a task's new state.
    pub(crate) fn apply(&mut self, t: &pb::TaskEvent) -> Applied {
        match self.tasks.get_mut(&t.task_id) {
            Some(e) => {
                e.state = t.state;
                Applied::Stage(e.stage)
            }
            None => Applied::Unknown,
        }
    }

    /// The label of a task (empty when unknown).
    pub(crate) fn label(&self, task_id: &str) -> &str {
        self.tasks.get(task_id).map_or("", |e| e.label.as_str())
    }

    /// The counts of stage `i`: from its tasks' latest states, or as the
    /// snapshot reported them when it listed none of its tasks.
    pub(crate) fn counts(&self, i: usize) -> StageCounts {
        let mut c = StageCounts::default();
        let mut known = 0u32;
        for e in self.tasks.values().filter(|e| e.stage == i) {
            known += 1;
            match pb::TaskState::try_from(e.state) {
                Ok(pb::TaskState::Done) => c.done += 1,
                Ok(pb::TaskState::Leased) => c.running += 1,
                Ok(pb::TaskState::Failed) => c.failed += 1,
                _ => {}
            }
        }
        let reported = self.reported.get(i).copied().unwrap_or_default();
        if known == 0 {
            return reported;
        }
        c.total = known.max(reported.total);
        c
    }

    /// Stage `i` as a [`pb::StageProgress`] (for printing).
    fn progress(&self, i: usize) -> pb::StageProgress {
        let c = self.counts(i);
        pb::StageProgress {
            stage: self.stages.get(i).cloned().unwrap_or_default(),
            total: c.total,
            done: c.done,
            running: c.running,
            failed: c.failed,
            cancelled: 0,
        }
    }
}

/// The progress bars, one per stage of the board.
struct Bars {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: vec![],
        }
    }

    fn hidden(&self) -> bool {
        self.multi.is_hidden()
    }

    /// Prints a line to stdout above the bars.
    fn println(&self, line: &str) {
        self.multi.suspend(|| println!("{line}"));
    }

    /// Adds bars for new stages and redraws every bar from the board.
    fn sync(&mut self, board: &Board) {
        let width = board
            .stages()
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>{width}}} [{{bar:32.cyan/blue}}] {{pos:>4}}/{{len:<4}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        while self.bars.len() < board.stages().len() {
            let i = self.bars.len();
            // Styled before it is added, so it never shows the default look.
            let c = board.counts(i);
            let bar = ProgressBar::new(u64::from(c.total))
                .with_position(u64::from(c.done))
                .with_style(style.clone())
                .with_prefix(board.stages()[i].clone());
            self.bars.push(self.multi.add(bar));
        }
        for (i, bar) in self.bars.iter().enumerate() {
            bar.set_style(style.clone());
            self.update(board, i);
        }
    }

    fn update(&self, board: &Board, i: usize) {
        if let Some(bar) = self.bars.get(i) {
            let c = board.counts(i);
            let msg = format!("running {}, failed {}", c.running, c.failed);
            if bar.message() != msg {
                bar.set_message(msg);
            }
            if bar.length() != Some(u64::from(c.total)) {
                bar.set_length(u64::from(c.total));
            }
            if bar.position() != u64::from(c.done) {
                bar.set_position(u64::from(c.done));
            }
        }
    }

    /// Takes the bars off the screen and prints each stage's final counts in
    /// their place (also when the bars were hidden, for logs).
    fn finish(&self, board: &Board) {
        for b in &self.bars {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
        for i in 0..board.stages().len() {
            println!("{}", format_stage(&board.progress(i)));
        }
    }
}

/// Follows job `job` until it ends: `Ok` when it succeeded, an error (so a
/// non-zero exit) when it failed or was cancelled, or when the stream broke
/// off before the job ended.
pub(crate) async fn watch(client: &mut JobClient, url: &str, job: &str) -> anyhow::Result<()> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_string(),
        })
        .await
        .map_err(|s| rpc_error(&s, url, Some(job)))?
        .into_inner();
    let mut bars = Bars::new();
    let mut board = Board::default();
    let mut state = pb::JobState::Unspecified as i32;
    let mut error = String::new();
    let mut last_seq = 0u64;
    // Tasks we already asked the coordinator about (at most once each).
    let mut refreshed: HashSet<String> = HashSet::new();

    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(s) => {
                bars.finish(&board);
                return Err(rpc_error(&s, url, Some(job)));
            }
        };
        // Snapshots carry seq 0; logged events count from 1 without gaps.
        if ev.seq != 0 {
            if ev.seq <= last_seq {
                continue;
            }
            last_seq = ev.seq;
        }
        let Some(kind) = ev.kind.as_ref() else {
            continue;
        };
        match kind {
            pb::job_event::Kind::Snapshot(s) => {
                bars.println(&format_watch_header(s));
                board = Board::from_status(s);
                state = s.state;
                error.clone_from(&s.error);
                bars.sync(&board);
            }
            pb::job_event::Kind::Task(t) => {
                let mut applied = board.apply(t);
                if applied == Applied::Unknown && refreshed.insert(t.task_id.clone()) {
                    // A task the snapshot did not list: learn its stage.
                    if let Ok(s) = client
                        .get_job(pb::GetJobRequest {
                            job_id: job.to_string(),
                        })
                        .await
                    {
                        board.merge(s.get_ref());
                        bars.sync(&board);
                        applied = board.apply(t);
                    }
                }
                if let Some(line) = format_task_failure(t, board.label(&t.task_id)) {
                    bars.println(&line);
                }
                if let Applied::Stage(i) = applied {
                    bars.update(&board, i);
                    if bars.hidden() && pb::TaskState::try_from(t.state) == Ok(pb::TaskState::Done)
                    {
                        bars.println(&format_stage(&board.progress(i)));
                    }
                }
            }
            pb::job_event::Kind::Progress(_) | pb::job_event::Kind::Decision(_) => {
                if let Some(line) = format_event(&ev) {
                    bars.println(&line);
                }
            }
            pb::job_event::Kind::Job(j) => {
                if let Some(line) = format_event(&ev) {
                    bars.println(&line);
                }
                state = j.state;
                if !j.message.trim().is_empty() {
                    error.clone_from(&j.message);
                }
                if job_state_is_terminal(state) {
                    break;
                }
            }
        }
    }
    bars.finish(&board);
    outcome(job, state, &error)
}

/// The result of `watch` for a job last seen in `state`.
pub(crate) fn outcome(job: &str, state: i32, error: &str) -> anyhow::Result<()> {
    let error = error.trim();
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Succeeded) => Ok(()),
        Ok(pb::JobState::Failed) if error.is_empty() => Err(anyhow!("job {job} failed")),
        Ok(pb::JobState::Failed) => Err(anyhow!("job {job} failed: {error}")),
        Ok(pb::JobState::Cancelled) => Err(anyhow!("job {job} was cancelled")),
        _ => Err(anyhow!(
            "the coordinator closed the event stream before job {job} ended (it is {}); run `watch` again",
            job_state_word(state)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> pb::JobStatus {
        let task = |id: &str, stage: &str, state: pb::TaskState| pb::TaskStatus {
            task_id: id.into(),
            stage: stage.into(),
            label: format!("label {id}"),
            state: state as i32,
            attempt: 1,
            worker_id: String::new(),
            error: String::new(),
            ..Default::default()
        };
        pb::JobStatus {
            job_id: "j".into(),
            stages: vec![
                pb::StageProgress {
                    stage: "train".into(),
                    total: 3,
                    done: 1,
                    running: 1,
                    failed: 0,
                    cancelled: 0,
                },
                pb::StageProgress {
                    stage: "line_search".into(),
                    total: 4,
                    done: 2,
                    running: 0,
                    failed: 0,
                    cancelled: 0,
                },
            ],
            tasks: vec![
                task("a", "train", pb::TaskState::Done),
                task("b", "train", pb::TaskState::Leased),
                task("c", "train", pb::TaskState::Pending),
            ],
            ..Default::default()
        }
    }

    fn event(id: &str, state: pb::TaskState) -> pb::TaskEvent {
        pb::TaskEvent {
            task_id: id.into(),
            state: state as i32,
            attempt: 1,
            worker_id: "w".into(),
            message: String::new(),
        }
    }

    #[test]
    fn the_board_follows_task_events() {
        let mut b = Board::from_status(&status());
        assert_eq!(b.stages(), ["train", "line_search"]);
        assert_eq!(
            b.counts(0),
            StageCounts {
                done: 1,
                total: 3,
                running: 1,
                failed: 0
            }
        );
        // A stage without listed tasks keeps the snapshot's counts.
        assert_eq!(b.counts(1).done, 2);
        assert_eq!(b.counts(1).total, 4);
        assert_eq!(
            b.apply(&event("b", pb::TaskState::Failed)),
            Applied::Stage(0)
        );
        assert_eq!(b.counts(0).failed, 1);
        assert_eq!(b.counts(0).running, 0);
        b.apply(&event("b", pb::TaskState::Leased));
        b.apply(&event("b", pb::TaskState::Done));
        b.apply(&event("c", pb::TaskState::Done));
        assert_eq!(
            b.counts(0),
            StageCounts {
                done: 3,
                total: 3,
                running: 0,
                failed: 0
            }
        );
        assert_eq!(b.apply(&event("zz", pb::TaskState::Done)), Applied::Unknown);
        assert_eq!(b.label("a"), "label a");
        assert_eq!(b.label("zz"), "");
        assert_eq!(b.counts(9), StageCounts::default());
    }

    #[test]
    fn merging_a_fresh_status_keeps_known_states_and_learns_new_tasks() {
        let mut b = Board::from_status(&status());
        b.apply(&event("c", pb::TaskState::Done));
        let mut fresh = status();
        fresh.tasks.push(pb::TaskStatus {
            task_id: "d".into(),
            stage: "report".into(),
            label: "label d".into(),
            state: pb::TaskState::Leased as i32,
            ..Default::default()
        });
        b.merge(&fresh);
        assert_eq!(b.stages(), ["train", "line_search", "report"]);
        assert_eq!(b.counts(0).done, 2, "c stays done");
        assert_eq!(b.apply(&event("d", pb::TaskState::Done)), Applied::Stage(2));
        assert_eq!(b.counts(2).done, 1);
        assert_eq!(b.counts(2).total, 1);
    }

    #[test]
    fn replaying_history_converges_to_the_latest_state() {
        let mut b = Board::from_status(&status());
        // History from the beginning: every task pending → running → done.
        for id in ["a", "b", "c"] {
            b.apply(&event(id, pb::TaskState::Pending));
            b.apply(&event(id, pb::TaskState::Leased));
        }
        b.apply(&event("a", pb::TaskState::Done));
        assert_eq!(b.counts(0).done, 1);
        assert_eq!(b.counts(0).running, 2);
    }

    #[test]
    fn outcomes() {
        assert!(outcome("j", pb::JobState::Succeeded as i32, "").is_ok());
        let e = outcome("j", pb::JobState::Failed as i32, "out of memory").unwrap_err();
        assert_eq!(e.to_string(), "job j failed: out of memory");
        let e = outcome("j", pb::JobState::Cancelled as i32, "").unwrap_err();
        assert_eq!(e.to_string(), "job j was cancelled");
        let e = outcome("j", pb::JobState::Running as i32, "").unwrap_err();
        assert!(
            e.to_string().contains("before job j ended (it is running)"),
            "{e}"
        );
    }
}
