//! Pure rendering of `JobService` answers for people and for files: status
//! pages, tables, one line per measurement, and the CSV export.
//!
//! Nothing here talks to the network or reads the clock (the current time is
//! a parameter), and nothing panics on odd wire data: a missing message or an
//! unknown enum value is shown as such (`?`, `unknown (7)`), never unwrapped.

use std::fmt::Write as _;

use ridgeline_common::proto::v1 as pb;

// ---------------------------------------------------------------- words

/// A job state in plain words: `queued`, `running`, `succeeded`, `failed`,
/// `cancelled` (`unknown (n)` for a value this client does not know).
pub fn job_state_word(state: i32) -> String {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued".into(),
        Ok(pb::JobState::Running) => "running".into(),
        Ok(pb::JobState::Succeeded) => "succeeded".into(),
        Ok(pb::JobState::Failed) => "failed".into(),
        Ok(pb::JobState::Cancelled) => "cancelled".into(),
        Ok(pb::JobState::Unspecified) | Err(_) => format!("unknown ({state})"),
    }
}

/// Whether a job in `state` will not change any more.
pub fn job_state_is_terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// A task state in plain words: `pending`, `running` (leased to a worker),
/// `done`, `failed`, `cancelled`.
pub fn task_state_word(state: i32) -> String {
    match pb::TaskState::try_from(state) {
        Ok(pb::TaskState::Pending) => "pending".into(),
        Ok(pb::TaskState::Leased) => "running".into(),
        Ok(pb::TaskState::Done) => "done".into(),
        Ok(pb::TaskState::Failed) => "failed".into(),
        Ok(pb::TaskState::Cancelled) => "cancelled".into(),
        Ok(pb::TaskState::Unspecified) | Err(_) => format!("unknown ({state})"),
    }
}

/// The job's state, with its error when it failed (`failed: <error>`).
pub fn job_state_line(s: &pb::JobStatus) -> String {
    let word = job_state_word(s.state);
    if s.error.trim().is_empty() {
        word
    } else {
        format!("{word}: {}", s.error.trim())
    }
}

/// `"name (kind)"`, or the kind alone for an unnamed job.
fn name_and_kind(name: &str, kind: &str) -> String {
    let kind = if kind.is_empty() { "?" } else { kind };
    if name.trim().is_empty() || name == kind {
        kind.to_string()
    } else {
        format!("{name} ({kind})")
    }
}

// ---------------------------------------------------------------- numbers and times

/// `x` with at most `decimals` decimals, trailing zeros removed
/// (`0.0500` → `0.05`, `1.0000` → `1`); `NaN`/`inf` as Rust writes them.
pub fn fmt_trim(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0
/// (not set).
pub fn fmt_time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration in milliseconds, short: `850ms`, `42s`, `3m 05s`, `2h 07m`,
/// `3d 04h`.
pub fn fmt_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long ago `then_ms` was, seen at `now_ms`: `12s ago`, `never` for 0.
pub fn fmt_ago(then_ms: i64, now_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".into();
    }
    if now_ms < then_ms {
        return "just now".into();
    }
    format!("{} ago", fmt_duration(now_ms - then_ms))
}

/// Bytes in binary units (`1.5 GiB`); `-` for 0 (unknown).
pub fn fmt_bytes(b: u64) -> String {
    if b == 0 {
        return "-".into();
    }
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{} {}", fmt_trim(v, 1), UNITS[u])
    }
}

// ---------------------------------------------------------------- tables

/// A plain-text table: a header row, then one row per entry, columns
/// left-aligned and separated by two spaces, no trailing spaces. Widths
/// count characters, not bytes (μ, …).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.take(cols).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            if i + 1 < cols {
                let pad = widths[i].saturating_sub(c.chars().count());
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Done and total tasks over all stages of a job.
pub fn job_progress(s: &pb::JobStatus) -> (u64, u64) {
    s.stages.iter().fold((0, 0), |(d, t), st| {
        (d + u64::from(st.done), t + u64::from(st.total))
    })
}

/// One stage: `"train: 4/9 (running 2, failed 0)"`.
pub fn format_stage(st: &pb::StageProgress) -> String {
    format!(
        "{}: {}/{} (running {}, failed {})",
        if st.stage.is_empty() { "?" } else { &st.stage },
        st.done,
        st.total,
        st.running,
        st.failed
    )
}

// ---------------------------------------------------------------- status, list, workers

/// A job's status page: id, name and kind, state (with the error of a
/// failed job), times, epochs trained, per-stage progress, and a table of
/// its tasks (label, state, attempt, worker), followed by the errors of
/// tasks that have one.
pub fn format_status(s: &pb::JobStatus) -> String {
    let mut out = String::new();
    let (done, total) = job_progress(s);
    let _ = writeln!(out, "job       {}", s.job_id);
    let _ = writeln!(out, "name      {}", name_and_kind(&s.name, &s.kind));
    let _ = writeln!(out, "state     {}", job_state_line(s));
    let _ = writeln!(out, "created   {}", fmt_time(s.created_unix_ms));
    if s.finished_unix_ms > 0 {
        let took = if s.created_unix_ms > 0 {
            format!(
                " (took {})",
                fmt_duration(s.finished_unix_ms - s.created_unix_ms)
            )
        } else {
            String::new()
        };
        let _ = writeln!(out, "finished  {}{took}", fmt_time(s.finished_unix_ms));
    }
    let _ = writeln!(out, "progress  {done}/{total} tasks");
    let _ = writeln!(out, "epochs    {} trained", s.epochs_trained);
    if !s.stages.is_empty() {
        out.push_str("\nstages\n");
        for st in &s.stages {
            let _ = writeln!(out, "  {}", format_stage(st));
        }
    }
    if !s.tasks.is_empty() {
        out.push_str("\ntasks\n");
        let rows: Vec<Vec<String>> = s
            .tasks
            .iter()
            .map(|t| {
                vec![
                    task_label(t),
                    task_state_word(t.state),
                    t.attempt.to_string(),
                    if t.worker_id.is_empty() {
                        "-".into()
                    } else {
                        t.worker_id.clone()
                    },
                ]
            })
            .collect();
        for l in table(&["LABEL", "STATE", "ATTEMPT", "WORKER"], &rows).lines() {
            let _ = writeln!(out, "  {l}");
        }
        let errors: Vec<&pb::TaskStatus> = s
            .tasks
            .iter()
            .filter(|t| !t.error.trim().is_empty())
            .collect();
        if !errors.is_empty() {
            out.push_str("\ntask errors\n");
            for t in errors {
                let _ = writeln!(
                    out,
                    "  {} (attempt {}): {}",
                    task_label(t),
                    t.attempt,
                    t.error.trim()
                );
            }
        }
    }
    out
}

/// A task's label, or its id when it has none.
fn task_label(t: &pb::TaskStatus) -> String {
    if t.label.is_empty() {
        t.task_id.clone()
    } else {
        t.label.clone()
    }
}

/// A table of jobs: id, name, kind, state, progress (done/total tasks),
/// created time; `no jobs` when there are none.
pub fn format_jobs(jobs: &[pb::JobStatus]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let (done, total) = job_progress(j);
            vec![
                j.job_id.clone(),
                if j.name.trim().is_empty() {
                    "-".into()
                } else {
                    j.name.clone()
                },
                j.kind.clone(),
                job_state_word(j.state),
                format!("{done}/{total}"),
                fmt_time(j.created_unix_ms),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "KIND", "STATE", "PROGRESS", "CREATED"],
        &rows,
    )
}

/// A table of workers: id, name, device, slots, running tasks, tasks done,
/// memory, state, and when it was last seen (relative to `now_ms`);
/// `no workers` when there are none.
pub fn format_workers(workers: &[pb::WorkerInfo], now_ms: i64) -> String {
    if workers.is_empty() {
        return "no workers\n".into();
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.name.clone(),
                w.device.clone(),
                w.slots.to_string(),
                w.running.to_string(),
                w.tasks_done.to_string(),
                fmt_bytes(w.memory_bytes),
                w.state.clone(),
                fmt_ago(w.last_seen_unix_ms, now_ms),
            ]
        })
        .collect();
    let out = table(
        &[
            "ID",
            "NAME",
            "DEVICE",
            "SLOTS",
            "RUNNING",
            "DONE",
            "MEMORY",
            "STATE",
            "LAST SEEN",
        ],
        &rows,
    );
    // Why a quarantined worker gets no work, under the table.
    let mut out = out;
    for w in workers.iter().filter(|w| !w.quarantine_reason.is_empty()) {
        let _ = writeln!(
            out,
            "{} quarantined for {}: {}",
            w.worker_id,
            fmt_duration_ms(w.quarantined_until_unix_ms - now_ms),
            w.quarantine_reason
        );
    }
    out
}

/// `95s`, `4m 10s`.
fn fmt_duration_ms(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {}s", s / 60, s % 60)
    }
}

// ---------------------------------------------------------------- events

/// The short name of the decision metric held in `m`: `acc`, `r2` or `r`
/// (Pearson), found by which of the named values it equals; `metric` when
/// none does.
pub fn metric_label(m: &pb::Metrics) -> &'static str {
    let same = |v: Option<f64>| v.is_some_and(|v| v.to_bits() == m.metric.to_bits());
    if same(m.accuracy) {
        "acc"
    } else if same(m.r2) {
        "r2"
    } else if same(m.pearson) {
        "r"
    } else {
        "metric"
    }
}

/// `"acc 0.9120"`, or `"? ?"` for a missing message.
fn metric_part(m: Option<&pb::Metrics>) -> String {
    match m {
        Some(m) => format!("{} {}", metric_label(m), fmt_trim(m.metric, 4)),
        None => "metric ?".into(),
    }
}

fn loss_part(m: Option<&pb::Metrics>) -> String {
    match m {
        Some(m) => format!("loss {}", fmt_trim(m.loss, 4)),
        None => "loss ?".into(),
    }
}

/// An epoch position: `3`, or `2.5` for a report every k batches.
fn fmt_epoch(progress: f64, epoch: u32) -> String {
    if progress.is_finite() && progress.fract() != 0.0 {
        fmt_trim(progress, 3)
    } else {
        epoch.to_string()
    }
}

/// One measurement, as `watch` prints it:
///
/// ```text
/// seed=0  epoch 3  lr 1.000e-2  μ 0.9  train acc 0.912  heldout acc 0.887 loss 0.3412
/// seed=0  a=-0.5  train acc 0.41  heldout acc 0.39 loss 1.7
/// seed=0  diverged in epoch 4 (step 1234): loss is NaN
/// ```
pub fn format_progress(p: &pb::Progress) -> Option<String> {
    let curve = if p.curve.is_empty() { "?" } else { &p.curve };
    match p.kind.as_ref()? {
        pb::progress::Kind::Epoch(e) => Some(format!(
            "{curve}  epoch {}  lr {:.3e}  μ {}  train {}  heldout {} {}",
            fmt_epoch(e.progress, e.epoch),
            e.lr,
            fmt_trim(e.momentum, 4),
            metric_part(e.train.as_ref()),
            metric_part(e.heldout.as_ref()),
            loss_part(e.heldout.as_ref()),
        )),
        pb::progress::Kind::Point(pt) => Some(format!(
            "{curve}  a={}  train {}  heldout {} {}",
            fmt_trim(pt.alpha, 4),
            metric_part(pt.train.as_ref()),
            metric_part(pt.heldout.as_ref()),
            loss_part(pt.heldout.as_ref()),
        )),
        pb::progress::Kind::End(end) => Some(format!("{curve}  {}", format_run_end(end))),
        // What the worker found in the data is for the red flags, not a
        // line per task.
        pb::progress::Kind::Data(_) => None,
    }
}

/// A decision, as `watch` prints it:
///
/// ```text
/// decided  Step 2 · learning rate: lr = 0.3 (steady region 0.05-0.8) [weak]
///   RED FLAG  No LR improves the metric: …
/// ```
pub fn format_decision(d: &pb::Decision) -> String {
    let mut s = format!("decided  {}: {}", d.title, d.summary);
    if !d.confidence.is_empty() && d.confidence != "clear" {
        let _ = write!(s, " [{}]", d.confidence);
    }
    for f in &d.red_flags {
        let _ = write!(s, "\n  RED FLAG  {}: {}", f.title, f.detail);
    }
    s
}

/// How a run ended: `completed after epoch 6`, `diverged in epoch 4
/// (step 1234): <reason>`, `stopped after epoch 2`.
pub fn format_run_end(e: &pb::RunEnd) -> String {
    match pb::run_end::Kind::try_from(e.kind) {
        Ok(pb::run_end::Kind::Completed) => format!("completed after epoch {}", e.epoch),
        Ok(pb::run_end::Kind::Diverged) => {
            let mut s = format!("diverged in epoch {} (step {})", e.epoch, e.step);
            if !e.reason.trim().is_empty() {
                let _ = write!(s, ": {}", e.reason.trim());
            }
            s
        }
        Ok(pb::run_end::Kind::Stopped) => format!("stopped after epoch {}", e.epoch),
        Ok(pb::run_end::Kind::Unspecified) | Err(_) => {
            format!("ended ({}) at epoch {}", e.kind, e.epoch)
        }
    }
}

/// The line `watch` prints for an event: one per measurement (see
/// [`format_progress`]) and one per job state change (`job failed: …`).
/// Snapshots and task events give `None`: `watch` shows them as progress
/// bars (and task failures with [`format_task_failure`], which needs the
/// task's label).
pub fn format_event(ev: &pb::JobEvent) -> Option<String> {
    match ev.kind.as_ref()? {
        pb::job_event::Kind::Progress(p) => format_progress(p),
        pb::job_event::Kind::Job(j) => {
            let word = job_state_word(j.state);
            Some(if j.message.trim().is_empty() {
                format!("job {word}")
            } else {
                format!("job {word}: {}", j.message.trim())
            })
        }
        pb::job_event::Kind::Decision(d) => Some(format_decision(d)),
        pb::job_event::Kind::Snapshot(_) | pb::job_event::Kind::Task(_) => None,
    }
}

/// A failed task attempt: `task seed=1, epochs 0-2 failed (attempt 2, worker
/// w1): out of memory`; `None` for any other task event.
pub fn format_task_failure(t: &pb::TaskEvent, label: &str) -> Option<String> {
    if pb::TaskState::try_from(t.state) != Ok(pb::TaskState::Failed) {
        return None;
    }
    let label = if label.is_empty() { &t.task_id } else { label };
    let mut s = format!("task {label} failed (attempt {}", t.attempt);
    if !t.worker_id.is_empty() {
        let _ = write!(s, ", worker {}", t.worker_id);
    }
    s.push(')');
    if !t.message.trim().is_empty() {
        let _ = write!(s, ": {}", t.message.trim());
    }
    Some(s)
}

/// The first line of `watch`: `job <id>  <name> (<kind>)  <state>`.
pub fn format_watch_header(s: &pb::JobStatus) -> String {
    format!(
        "job {}  {}  {}",
        s.job_id,
        name_and_kind(&s.name, &s.kind),
        job_state_line(s)
    )
}

// ---------------------------------------------------------------- CSV

/// The CSV header of [`results_to_csv`].
pub const CSV_HEADER: &str =
    "curve,x,lr,momentum,train_loss,train_metric,heldout_loss,heldout_metric,heldout_std,train_std,n";

/// A job's results as CSV, one row per measurement, then one row per point of
/// every aggregate:
///
/// ```text
/// curve,x,lr,momentum,train_loss,train_metric,heldout_loss,heldout_metric,heldout_std,train_std,n
/// seed=0,1,0.01,0.9,0.41,0.88,0.45,0.86,,,
/// "lr=0.1,momentum=0.9,seed=1",1,0.1,0.9,…,,,
/// mean:all,1,,,,0.875,,0.861,0.012,0.010,3
/// ```
///
/// * Measurement rows: `curve` is the run's curve (`seed=1`,
///   `lr=0.1,momentum=0.9,seed=2`, quoted since it holds commas); `x` is
///   the epoch (fractional for reports every k batches) or, for line
///   searches, the position a; `lr`/`momentum` are those of the last step
///   (empty for line searches); losses and metrics are on the fixed
///   training subset and on the heldout split; the last three columns are
///   empty.
/// * Aggregate rows: `curve` is `mean:<group>` (the configuration, `all` for
///   a job with one); `train_metric`/`heldout_metric` are the means over
///   seeds, `heldout_std`/`train_std` the sample standard deviations, `n`
///   the number of seeds averaged; the other columns are empty.
///
/// Numbers are written in full precision; `NaN`/`inf` for a diverged run;
/// an empty cell where a value is missing. The metric is the job's decision
/// metric (accuracy, R² or Pearson r: see the JSON export's `metric`).
pub fn results_to_csv(r: &pb::JobResults) -> String {
    let line_search = r.kind == "line_search";
    let mut out =
        String::with_capacity(64 * (1 + r.curves.iter().map(|c| c.points.len()).sum::<usize>()));
    out.push_str(CSV_HEADER);
    out.push('\n');
    let num = |x: f64| x.to_string();
    let opt = |x: Option<f64>| x.map(num).unwrap_or_default();
    for c in &r.curves {
        for p in &c.points {
            let (lr, mu) = if line_search {
                (String::new(), String::new())
            } else {
                (num(p.lr), num(p.momentum))
            };
            let row = [
                csv_field(&c.curve),
                num(p.x),
                lr,
                mu,
                opt(p.train.as_ref().map(|m| m.loss)),
                opt(p.train.as_ref().map(|m| m.metric)),
                opt(p.heldout.as_ref().map(|m| m.loss)),
                opt(p.heldout.as_ref().map(|m| m.metric)),
                String::new(),
                String::new(),
                String::new(),
            ];
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    for a in &r.aggregates {
        let name = csv_field(&format!("mean:{}", a.group));
        for (i, &x) in a.x.iter().enumerate() {
            let row = [
                name.clone(),
                num(x),
                String::new(),
                String::new(),
                String::new(),
                opt(a.train_mean.get(i).copied()),
                String::new(),
                opt(a.heldout_mean.get(i).copied()),
                opt(a.heldout_std.get(i).copied()),
                opt(a.train_std.get(i).copied()),
                a.n.get(i).map(u32::to_string).unwrap_or_default(),
            ];
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

/// A CSV cell: quoted (with doubled quotes) when it holds a comma, a quote
/// or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(loss: f64, metric: f64) -> pb::Metrics {
        pb::Metrics {
            loss,
            metric,
            accuracy: Some(metric),
            r2: None,
            pearson: None,
            majority_fraction: None,
        }
    }

    fn stage(stage: &str, total: u32, done: u32, running: u32, failed: u32) -> pb::StageProgress {
        pb::StageProgress {
            stage: stage.into(),
            total,
            done,
            running,
            failed,
            cancelled: 0,
        }
    }

    fn task(
        label: &str,
        state: pb::TaskState,
        attempt: u32,
        worker: &str,
        error: &str,
    ) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: format!("t-{label}"),
            stage: "lr_ramp".into(),
            label: label.into(),
            state: state as i32,
            attempt,
            worker_id: worker.into(),
            error: error.into(),
            ..Default::default()
        }
    }

    // 2026-11-29 14:03:12 UTC
    const T0: i64 = 1_795_960_992_000;

    fn failed_job() -> pb::JobStatus {
        pb::JobStatus {
            job_id: "job-1".into(),
            name: "glyph CNN, LR ramp".into(),
            kind: "lr_ramp".into(),
            state: pb::JobState::Failed as i32,
            error: "task seed=1, epochs 0-2 failed 3 times: out of memory".into(),
            created_unix_ms: T0,
            finished_unix_ms: T0 + 148_000,
            stages: vec![stage("lr_ramp", 6, 4, 0, 1)],
            tasks: vec![
                task("seed=0, epochs 0-2", pb::TaskState::Done, 1, "w-a", ""),
                task(
                    "seed=1, epochs 0-2",
                    pb::TaskState::Failed,
                    3,
                    "w-b",
                    "out of memory",
                ),
                task("seed=0, epochs 3-5", pb::TaskState::Cancelled, 0, "", ""),
            ],
            epochs_trained: 12,
        }
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(fmt_time(T0), "2026-11-29 14:03:12 UTC");
        assert_eq!(fmt_time(0), "-");
        assert_eq!(fmt_time(1), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_duration(850), "850ms");
        assert_eq!(fmt_duration(42_000), "42s");
        assert_eq!(fmt_duration(185_000), "3m 05s");
        assert_eq!(fmt_duration(7_620_000), "2h 07m");
        assert_eq!(fmt_duration(-5), "0ms");
        assert_eq!(fmt_ago(T0, T0 + 12_000), "12s ago");
        assert_eq!(fmt_ago(0, T0), "never");
        assert_eq!(fmt_ago(T0 + 5, T0), "just now");
        assert_eq!(fmt_bytes(0), "-");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn numbers_are_trimmed() {
        assert_eq!(fmt_trim(0.05, 4), "0.05");
        assert_eq!(fmt_trim(1.0, 4), "1");
        assert_eq!(fmt_trim(-0.00001, 4), "0");
        assert_eq!(fmt_trim(f64::NAN, 4), "NaN");
        assert_eq!(fmt_trim(12.0, 0), "12");
    }

    #[test]
    fn tables_align_by_characters() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["μμμ".into(), "x".into(), "".into()],
                vec!["a".into(), "yyy".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A    BB   C\nμμμ  x\na    yyy  z\n");
    }

    #[test]
    fn a_failed_job_shows_its_error_stages_and_tasks() {
        let s = format_status(&failed_job());
        assert!(s.contains("name      glyph CNN, LR ramp (lr_ramp)"), "{s}");
        assert!(
            s.contains("state     failed: task seed=1, epochs 0-2 failed 3 times: out of memory"),
            "{s}"
        );
        assert!(s.contains("created   2026-11-29 14:03:12 UTC"), "{s}");
        assert!(
            s.contains("finished  2026-11-29 14:05:40 UTC (took 2m 28s)"),
            "{s}"
        );
        assert!(s.contains("epochs    12 trained"), "{s}");
        assert!(s.contains("  lr_ramp: 4/6 (running 0, failed 1)"), "{s}");
        assert!(
            s.contains("  LABEL               STATE      ATTEMPT  WORKER\n"),
            "{s}"
        );
        assert!(
            s.contains("  seed=1, epochs 0-2  failed     3        w-b\n"),
            "{s}"
        );
        assert!(
            s.contains("  seed=0, epochs 3-5  cancelled  0        -\n"),
            "{s}"
        );
        assert!(
            s.contains("task errors\n  seed=1, epochs 0-2 (attempt 3): out of memory"),
            "{s}"
        );
    }

    #[test]
    fn states_in_plain_words() {
        let mut j = failed_job();
        for (state, word) in [
            (pb::JobState::Queued, "queued"),
            (pb::JobState::Running, "running"),
            (pb::JobState::Succeeded, "succeeded"),
            (pb::JobState::Cancelled, "cancelled"),
        ] {
            j.state = state as i32;
            j.error.clear();
            assert_eq!(job_state_line(&j), word);
        }
        assert_eq!(job_state_word(42), "unknown (42)");
        assert_eq!(task_state_word(pb::TaskState::Leased as i32), "running");
        assert!(job_state_is_terminal(pb::JobState::Cancelled as i32));
        assert!(!job_state_is_terminal(pb::JobState::Running as i32));
        assert!(!job_state_is_terminal(17));
    }

    #[test]
    fn a_bare_status_does_not_panic() {
        let s = format_status(&pb::JobStatus::default());
        assert!(s.contains("state     unknown (0)"), "{s}");
        assert!(s.contains("progress  0/0 tasks"), "{s}");
        assert!(!s.contains("stages"), "{s}");
    }

    #[test]
    fn job_lists() {
        assert_eq!(format_jobs(&[]), "no jobs\n");
        let mut unnamed = failed_job();
        unnamed.job_id = "job-2".into();
        unnamed.name.clear();
        unnamed.state = pb::JobState::Running as i32;
        unnamed.stages.push(stage("extra", 3, 1, 1, 0));
        let t = format_jobs(&[failed_job(), unnamed]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert_eq!(
            lines[0], "ID     NAME                KIND     STATE    PROGRESS  CREATED",
            "{t}"
        );
        assert!(
            lines[1].contains("glyph CNN, LR ramp  lr_ramp  failed   4/6"),
            "{t}"
        );
        assert!(
            lines[2].contains("job-2  -                   lr_ramp  running  5/9"),
            "{t}"
        );
        assert!(lines[2].ends_with("2026-11-29 14:03:12 UTC"), "{t}");
    }

    #[test]
    fn worker_table() {
        assert_eq!(format_workers(&[], T0), "no workers\n");
        let w = pb::WorkerInfo {
            worker_id: "w-1".into(),
            name: "box".into(),
            device: "cuda:0".into(),
            slots: 2,
            memory_bytes: 8 << 30,
            state: "active".into(),
            last_seen_unix_ms: T0 - 3_000,
            running: 1,
            tasks_done: 17,
            ..Default::default()
        };
        let t = format_workers(std::slice::from_ref(&w), T0);
        assert_eq!(
            t,
            "ID   NAME  DEVICE  SLOTS  RUNNING  DONE  MEMORY  STATE   LAST SEEN\n\
             w-1  box   cuda:0  2      1        17    8 GiB   active  3s ago\n"
        );
        let q = pb::WorkerInfo {
            state: "quarantined".into(),
            quarantine_reason: "its last 3 task attempts failed; last: out of memory".into(),
            quarantined_until_unix_ms: T0 + 125_000,
            ..w
        };
        let t = format_workers(&[q], T0);
        assert!(
            t.ends_with(
                "w-1 quarantined for 2m 5s: its last 3 task attempts failed; last: out of memory\n"
            ),
            "{t}"
        );
    }

    fn progress(curve: &str, kind: pb::progress::Kind) -> pb::JobEvent {
        pb::JobEvent {
            seq: 7,
            unix_ms: T0,
            kind: Some(pb::job_event::Kind::Progress(pb::Progress {
                curve: curve.into(),
                kind: Some(kind),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn epoch_reports_and_points_are_one_line_each() {
        let e = progress(
            "seed=0",
            pb::progress::Kind::Epoch(pb::EpochReport {
                epoch: 3,
                step: 300,
                progress: 3.0,
                lr: 0.01,
                momentum: 0.9,
                batch_loss: Some(0.4),
                train: Some(acc(0.3, 0.912)),
                heldout: Some(acc(0.3412, 0.887)),
            }),
        );
        assert_eq!(
            format_event(&e).as_deref(),
            Some("seed=0  epoch 3  lr 1.000e-2  μ 0.9  train acc 0.912  heldout acc 0.887 loss 0.3412")
        );
        let r2 = pb::Metrics {
            loss: 0.5,
            metric: 0.25,
            accuracy: None,
            r2: Some(0.25),
            pearson: Some(0.6),
            majority_fraction: None,
        };
        let e = progress(
            "lr=0.1,seed=2",
            pb::progress::Kind::Epoch(pb::EpochReport {
                epoch: 2,
                progress: 2.5,
                lr: 0.1,
                train: Some(r2),
                heldout: None,
                ..Default::default()
            }),
        );
        assert_eq!(
            format_event(&e).as_deref(),
            Some("lr=0.1,seed=2  epoch 2.5  lr 1.000e-1  μ 0  train r2 0.25  heldout metric ? loss ?")
        );
        let p = progress(
            "seed=1",
            pb::progress::Kind::Point(pb::LinePoint {
                index: 4,
                alpha: -0.5,
                train: Some(acc(1.2, 0.41)),
                heldout: Some(acc(1.7, 0.39)),
            }),
        );
        assert_eq!(
            format_event(&p).as_deref(),
            Some("seed=1  a=-0.5  train acc 0.41  heldout acc 0.39 loss 1.7")
        );
    }

    #[test]
    fn run_ends_including_divergence() {
        let end = |kind: pb::run_end::Kind, reason: &str| {
            progress(
                "seed=2",
                pb::progress::Kind::End(pb::RunEnd {
                    kind: kind as i32,
                    epoch: 4,
                    step: 1234,
                    reason: reason.into(),
                }),
            )
        };
        assert_eq!(
            format_event(&end(pb::run_end::Kind::Diverged, "loss is NaN")).as_deref(),
            Some("seed=2  diverged in epoch 4 (step 1234): loss is NaN")
        );
        assert_eq!(
            format_event(&end(pb::run_end::Kind::Completed, "")).as_deref(),
            Some("seed=2  completed after epoch 4")
        );
        assert_eq!(
            format_event(&end(pb::run_end::Kind::Stopped, "")).as_deref(),
            Some("seed=2  stopped after epoch 4")
        );
        assert_eq!(
            format_run_end(&pb::RunEnd {
                kind: 9,
                epoch: 1,
                ..Default::default()
            }),
            "ended (9) at epoch 1"
        );
    }

    #[test]
    fn job_changes_task_failures_and_silent_events() {
        let job = |state: pb::JobState, message: &str| pb::JobEvent {
            seq: 9,
            unix_ms: T0,
            kind: Some(pb::job_event::Kind::Job(pb::JobStateChange {
                state: state as i32,
                message: message.into(),
            })),
        };
        assert_eq!(
            format_event(&job(pb::JobState::Failed, "task x failed 3 times")).as_deref(),
            Some("job failed: task x failed 3 times")
        );
        assert_eq!(
            format_event(&job(pb::JobState::Succeeded, "")).as_deref(),
            Some("job succeeded")
        );
        let t = pb::TaskEvent {
            task_id: "t1".into(),
            state: pb::TaskState::Failed as i32,
            attempt: 2,
            worker_id: "w-9".into(),
            message: "out of memory".into(),
        };
        assert_eq!(
            format_task_failure(&t, "seed=1, epochs 0-2").as_deref(),
            Some("task seed=1, epochs 0-2 failed (attempt 2, worker w-9): out of memory")
        );
        assert_eq!(
            format_task_failure(
                &pb::TaskEvent {
                    worker_id: String::new(),
                    ..t.clone()
                },
                ""
            )
            .as_deref(),
            Some("task t1 failed (attempt 2): out of memory")
        );
        let done = pb::TaskEvent {
            state: pb::TaskState::Done as i32,
            ..t.clone()
        };
        assert_eq!(format_task_failure(&done, "x"), None);
        let task_event = pb::JobEvent {
            seq: 3,
            unix_ms: T0,
            kind: Some(pb::job_event::Kind::Task(t)),
        };
        assert_eq!(format_event(&task_event), None);
        assert_eq!(format_event(&pb::JobEvent::default()), None);
        let empty_progress = pb::JobEvent {
            kind: Some(pb::job_event::Kind::Progress(pb::Progress::default())),
            ..Default::default()
        };
        assert_eq!(format_event(&empty_progress), None);
        assert_eq!(
            format_watch_header(&failed_job()),
            "job job-1  glyph CNN, LR ramp (lr_ramp)  failed: task seed=1, epochs 0-2 failed 3 times: out of memory"
        );
    }

    #[test]
    fn results_as_csv() {
        let point = |x: f64, lr: f64, held: f64| pb::CurvePoint {
            x,
            lr,
            momentum: 0.9,
            train: Some(acc(0.5, 0.8)),
            heldout: Some(acc(0.6, held)),
        };
        let r = pb::JobResults {
            job_id: "j".into(),
            kind: "grid".into(),
            metric: "accuracy".into(),
            curves: vec![
                pb::Curve {
                    curve: "lr=0.1,momentum=0.9,seed=0".into(),
                    points: vec![point(0.0, 0.1, 0.1), point(1.0, 0.1, 0.5)],
                    end: None,
                },
                pb::Curve {
                    curve: "lr=0.1,momentum=0.9,seed=1".into(),
                    points: vec![pb::CurvePoint {
                        heldout: Some(acc(f64::NAN, f64::NAN)),
                        train: None,
                        ..point(1.0, 0.1, 0.0)
                    }],
                    end: None,
                },
            ],
            aggregates: vec![pb::Aggregate {
                group: "lr=0.1,momentum=0.9".into(),
                x: vec![0.0, 1.0],
                heldout_mean: vec![0.1, 0.5],
                heldout_std: vec![0.0, 0.25],
                train_mean: vec![0.8],
                train_std: vec![],
                n: vec![1, 2],
            }],
            ..Default::default()
        };
        let csv = results_to_csv(&r);
        let want = format!(
            "{CSV_HEADER}\n\
             \"lr=0.1,momentum=0.9,seed=0\",0,0.1,0.9,0.5,0.8,0.6,0.1,,,\n\
             \"lr=0.1,momentum=0.9,seed=0\",1,0.1,0.9,0.5,0.8,0.6,0.5,,,\n\
             \"lr=0.1,momentum=0.9,seed=1\",1,0.1,0.9,,,NaN,NaN,,,\n\
             \"mean:lr=0.1,momentum=0.9\",0,,,,0.8,,0.1,0,,1\n\
             \"mean:lr=0.1,momentum=0.9\",1,,,,,,0.5,0.25,,2\n"
        );
        assert_eq!(csv, want);
        for line in csv.lines() {
            // Every row has as many cells as the header (quoted commas aside).
            let unquoted: String = line.split('"').step_by(2).collect();
            assert_eq!(unquoted.matches(',').count(), 10, "{line}");
        }
    }

    #[test]
    fn line_search_csv_leaves_lr_empty_and_empty_results_are_a_header() {
        let r = pb::JobResults {
            kind: "line_search".into(),
            curves: vec![pb::Curve {
                curve: "seed=0".into(),
                points: vec![pb::CurvePoint {
                    x: -0.25,
                    train: Some(acc(2.0, 0.3)),
                    heldout: Some(acc(2.5, 0.2)),
                    ..Default::default()
                }],
                end: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            results_to_csv(&r),
            format!("{CSV_HEADER}\nseed=0,-0.25,,,2,0.3,2.5,0.2,,,\n")
        );
        assert_eq!(
            results_to_csv(&pb::JobResults::default()),
            format!("{CSV_HEADER}\n")
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
