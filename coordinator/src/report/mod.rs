//! A job's report: one self-contained HTML page with inline SVG figures
//! (no scripts, no network, no external style sheets or fonts), the data
//! beside it, and a gallery of final line searches across jobs (SPEC §5).
//!
//! ```text
//! report/<job>/report.html        red flags, the recommendation, one section per step
//!             /curves.csv         every measurement and every mean over seeds
//!             /results.json       the same, with how each run ended
//!             /decisions.json     every decision with all its numbers
//!             /recommended.toml   paste-ready (procedure jobs, once decided)
//!             /recommended.json
//! gallery/gallery.html            one thumbnail per final line search → <job>/report.html
//! ```
//!
//! Everything here is a pure function of the `JobStatus` and `JobResults`
//! the coordinator answers (GetJob, GetResults) apart from [`write_report`]
//! and [`write_gallery`], which write files. A step that was skipped or
//! left undetermined, a decision with missing fields, diverged runs (NaN):
//! the page still renders, with a gap or a note where something is
//! missing. All text from the job (its name, curve names, Thoughts) is
//! escaped.
//!
//! * [`svg`]: the plots; [`html`]: escaping and the page shell;
//! * [`figures`]: curves of a group, on the axis a step is read against,
//!   with its decision's marks;
//! * [`files`]: the data files; [`gallery`]: the gallery page.

pub mod figures;
pub mod files;
pub mod gallery;
pub mod html;
pub mod svg;

use std::fmt::Write as _;

use ridgeline_common::procedure::groups;
use ridgeline_common::proto::v1 as pb;
use serde_json::Value;

pub use files::write_report;
pub use gallery::{gallery_entry, gallery_html, write_gallery, GalleryEntry};

use crate::client::render;
use figures::{
    add_group, caption, decision_json, group_data, group_names, new_plot, num, GroupData, XAxis,
};
use html::{confidence_badge, escape, kv_table};

/// The step a decision belongs to (1-7; `None` for the recommendation and
/// decisions this version does not know).
pub fn step_of_decision(step: &str) -> Option<u8> {
    match step {
        "initial_line_search" => Some(1),
        "lr" => Some(2),
        "momentum" | "momentum_confirm" => Some(3),
        "plateau" | "decay" => Some(4),
        "cyclical" => Some(5),
        "final_line_search" => Some(7),
        s if s.starts_with("variant_lr:") || s.starts_with("variant:") => Some(6),
        _ => None,
    }
}

/// The step a procedure job's group of curves belongs to.
pub fn step_of_group(group: &str) -> Option<u8> {
    match group {
        groups::INITIAL_LINE_SEARCH => Some(1),
        groups::LR_RAMP => Some(2),
        groups::MOMENTUM_RAMP | groups::CONFIRM_WITH | groups::CONFIRM_WITHOUT => Some(3),
        groups::CONVERGE | groups::DECAY => Some(4),
        groups::CYCLICAL => Some(5),
        groups::FINAL_LINE_SEARCH => Some(7),
        g if g.starts_with("variant_ramp:") || g.starts_with("variant:") => Some(6),
        _ => None,
    }
}

const STEP_TITLES: [&str; 7] = [
    "Step 1 · Initial line search",
    "Step 2 · Learning rate (LR ramp)",
    "Step 3 · Momentum",
    "Step 4 · Learning-rate decay",
    "Step 5 · Cyclical learning rate",
    "Step 6 · Other optimizers",
    "Step 7 · Final line search",
];

/// A job's display name: its name, or `job <id>`.
fn display_name(status: &pb::JobStatus, results: &pb::JobResults) -> String {
    [status.name.trim(), results.name.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("job {}", first_nonempty(&status.job_id, &results.job_id)))
}

fn first_nonempty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// The job's kind (the status's, else the results').
fn job_kind<'a>(status: &'a pb::JobStatus, results: &'a pb::JobResults) -> &'a str {
    first_nonempty(&status.kind, &results.kind)
}

/// The last paragraph of a written report: what lies beside it.
pub const DATA_NOTE: &str = "<p class=\"muted\">Data beside this page: curves.csv (every \
    measurement and every mean over seeds), results.json, decisions.json.</p>";

/// The whole report as one HTML page.
pub fn report_html(status: &pb::JobStatus, results: &pb::JobResults) -> String {
    let name = display_name(status, results);
    let kind = job_kind(status, results);
    let mut b = String::with_capacity(64 * 1024);
    let _ = write!(b, "<h1>{}</h1>", escape(&name));
    b.push_str(&meta_line(status, results));
    b.push_str(&red_flags_box(&results.decisions));
    if kind == "procedure" {
        b.push_str(&recommendation_box(status, results));
        b.push_str(&procedure_sections(results));
    } else {
        b.push_str(&generic_sections(results, kind));
    }
    b.push_str(&final_values(results));
    b.push_str(DATA_NOTE);
    html::page(&format!("{name} · Ridgeline report"), &b)
}

/// Id, kind, state, metric, cost and times, on one line.
fn meta_line(status: &pb::JobStatus, results: &pb::JobResults) -> String {
    let id = first_nonempty(&status.job_id, &results.job_id);
    let state = if status.state == 0 && status.job_id.is_empty() {
        "unknown".to_string()
    } else {
        render::job_state_line(status)
    };
    let epochs = if status.epochs_trained > 0 {
        status.epochs_trained
    } else {
        results.epochs_trained
    };
    let mut parts = vec![
        format!("job <code>{}</code>", escape(id)),
        format!("kind {}", escape(job_kind(status, results))),
        format!("state <b>{}</b>", escape(&state)),
        format!("metric {}", escape(&figures::metric_name(&results.metric))),
        format!("cost {epochs} epochs trained"),
    ];
    if status.created_unix_ms > 0 {
        parts.push(format!(
            "submitted {}",
            escape(&render::fmt_time(status.created_unix_ms))
        ));
    }
    if status.finished_unix_ms > 0 && status.created_unix_ms > 0 {
        parts.push(format!(
            "took {}",
            escape(&render::fmt_duration(
                status.finished_unix_ms - status.created_unix_ms
            ))
        ));
    }
    let mut s = String::from("<p class=\"meta\">");
    for p in parts {
        let _ = write!(s, "<span>{p}</span> ");
    }
    s.push_str("</p>");
    s
}

/// Every red flag of every decision, or a note that there are none.
fn red_flags_box(decisions: &[pb::Decision]) -> String {
    let flags: Vec<(&pb::Decision, &pb::RedFlag)> = decisions
        .iter()
        .flat_map(|d| d.red_flags.iter().map(move |f| (d, f)))
        .collect();
    if flags.is_empty() {
        return "<section class=\"box noflags\"><h2>No red flags</h2><p>None of the checks \
                for bugs (metric at θ0 far from chance, NaN at a small LR, no LR improving the \
                metric, a single predicted class, training good but heldout at chance, the \
                final line search disagreeing with the trained model, heldout overlapping \
                training) fired.</p></section>"
            .into();
    }
    let mut s = format!(
        "<section class=\"box flags\"><h2>RED FLAGS ({})</h2><ul>",
        flags.len()
    );
    for (d, f) in flags {
        let title = if f.title.trim().is_empty() {
            &f.code
        } else {
            &f.title
        };
        let from = first_nonempty(&d.title, &d.step);
        let _ = write!(
            s,
            "<li><span class=\"flag\">{}</span> <span class=\"muted\">({})</span>: {}</li>",
            escape(title),
            escape(from),
            escape(&f.detail)
        );
    }
    s.push_str("</ul></section>");
    s
}

/// A JSON value in a table cell: a number or string as such, an object by
/// its name (`name`, `kind` or `type`) and its other fields compactly.
fn value_cell(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Number(x) => x
            .as_f64()
            .map(svg::fmt_value)
            .unwrap_or_else(|| x.to_string()),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) => {
            let name = ["name", "kind", "type"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str));
            let rest: Vec<String> = o
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "name" | "kind" | "type"))
                .map(|(k, v)| format!("{k} = {}", value_cell(v)))
                .collect();
            match (name, rest.is_empty()) {
                (Some(n), true) => n.to_string(),
                (Some(n), false) => format!("{n} ({})", rest.join(", ")),
                (None, _) => rest.join(", "),
            }
        }
        Value::Array(a) => a.iter().map(value_cell).collect::<Vec<_>>().join(", "),
    }
}

/// The recommendation: its key numbers and the paste-ready TOML.
fn recommendation_box(status: &pb::JobStatus, results: &pb::JobResults) -> String {
    let Some(d) = results
        .decisions
        .iter()
        .rev()
        .find(|d| d.step == "recommendation")
    else {
        let why = if render::job_state_is_terminal(status.state) {
            format!(
                "The job ended ({}) without a recommendation.",
                render::job_state_line(status)
            )
        } else {
            "The job has not made its recommendation yet.".to_string()
        };
        return format!(
            "<section class=\"box rec\"><h2>Recommendation</h2><p class=\"muted\">{}</p></section>",
            escape(&why)
        );
    };
    let mut s = String::from("<section class=\"box rec\"><h2>Recommendation");
    s.push_str(&confidence_badge(&d.confidence));
    s.push_str("</h2>");
    if !d.summary.trim().is_empty() {
        let _ = write!(s, "<p class=\"summary\">{}</p>", escape(&d.summary));
    }
    let v = decision_json(d);
    if let Some(v) = &v {
        let rows: Vec<(String, String)> = ["optimizer", "lr", "momentum", "schedule", "epochs"]
            .iter()
            .filter_map(|k| {
                let x = v.get(*k)?;
                Some((escape(k), escape(&value_cell(x))))
            })
            .collect();
        if !rows.is_empty() {
            s.push_str(&kv_table(&rows));
        }
    }
    match v.as_ref().and_then(files::recommended_toml) {
        Some(toml) => {
            let _ = write!(
                s,
                "<p>Paste-ready (also in recommended.toml and recommended.json):</p><pre>{}</pre>",
                escape(&toml)
            );
        }
        None => s.push_str(
            "<p class=\"muted\">The recommendation's numbers could not be read (see \
             decisions.json).</p>",
        ),
    }
    if !d.thoughts.trim().is_empty() {
        let _ = write!(
            s,
            "<p class=\"thoughts\"><em>Thoughts:</em> {}</p>",
            escape(&d.thoughts)
        );
    }
    s.push_str("</section>");
    s
}

/// One decision: title, confidence, summary, Thoughts, its red flags and
/// (folded) all its numbers.
fn decision_block(d: &pb::Decision) -> String {
    let mut s = String::from("<div class=\"decision\">");
    let title = first_nonempty(&d.title, &d.step);
    let _ = write!(
        s,
        "<h3>{}{}</h3>",
        escape(title),
        confidence_badge(&d.confidence)
    );
    if !d.summary.trim().is_empty() {
        let _ = write!(s, "<p class=\"summary\">{}</p>", escape(&d.summary));
    }
    if !d.thoughts.trim().is_empty() {
        let _ = write!(
            s,
            "<p class=\"thoughts\"><em>Thoughts:</em> {}</p>",
            escape(&d.thoughts)
        );
    }
    for f in &d.red_flags {
        let _ = write!(
            s,
            "<p><span class=\"flag\">RED FLAG {}</span>: {}</p>",
            escape(first_nonempty(&f.title, &f.code)),
            escape(&f.detail)
        );
    }
    let numbers = match decision_json(d) {
        Some(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| d.json.clone()),
        None => d.json.clone(),
    };
    if !numbers.trim().is_empty() {
        let _ = write!(
            s,
            "<details><summary>All numbers</summary><pre>{}</pre></details>",
            escape(&numbers)
        );
    }
    s.push_str("</div>");
    s
}

/// A figure with its caption.
fn figure(plot: &svg::Plot, caption: &str) -> String {
    format!(
        "<figure>{}<figcaption>{}</figcaption></figure>",
        plot.render(),
        escape(caption)
    )
}

/// The last decision of a step (later ones supersede earlier ones).
fn find<'a>(r: &'a pb::JobResults, step: &str) -> Option<&'a pb::Decision> {
    r.decisions.iter().rev().find(|d| d.step == step)
}

fn find_json(r: &pb::JobResults, step: &str) -> Option<Value> {
    find(r, step).and_then(decision_json)
}

/// Whether a comparison decision (`RunComparison`) adopted its candidate.
fn helps(r: &pb::JobResults, step: &str) -> bool {
    find_json(r, step)
        .and_then(|v| v.get("helps").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// The variants of step 6, from their groups and decisions, in order.
fn variants(r: &pb::JobResults, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let from_groups = names.iter().filter_map(|g| {
        g.strip_prefix("variant_ramp:")
            .or_else(|| g.strip_prefix("variant:"))
    });
    let from_decisions = r.decisions.iter().filter_map(|d| {
        d.step
            .strip_prefix("variant_lr:")
            .or_else(|| d.step.strip_prefix("variant:"))
    });
    for v in from_groups.chain(from_decisions) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// The figures of one step of a procedure job.
fn step_figures(r: &pb::JobResults, step: u8, names: &[String]) -> Vec<String> {
    let metric = &r.metric;
    let m = figures::metric_name(metric);
    let g = |name: &str| group_data(r, name).filter(GroupData::has_data);
    let mut out = vec![];
    match step {
        1 | 7 => {
            let (group, fin) = if step == 1 {
                (groups::INITIAL_LINE_SEARCH, false)
            } else {
                (groups::FINAL_LINE_SEARCH, true)
            };
            if let Some(data) = g(group) {
                let title = if fin {
                    format!("{m} from θ0 (a = 0) to the trained weights (a = 1) and beyond")
                } else {
                    format!("{m} along a line through θ0")
                };
                let mut p = new_plot(title, XAxis::A, metric);
                add_group(&mut p, &data, XAxis::A, "", svg::color(0));
                figures::line_search_marks(&mut p, find_json(r, group).as_ref(), fin);
                out.push(figure(&p, &caption(&[&data])));
            }
        }
        2 => {
            if let Some(data) = g(groups::LR_RAMP) {
                let mut p = new_plot(
                    format!("{m} as the learning rate grows (momentum 0)"),
                    XAxis::Lr,
                    metric,
                );
                add_group(&mut p, &data, XAxis::Lr, "", svg::color(0));
                if let Some(d) = find_json(r, "lr") {
                    figures::lr_marks(&mut p, &d);
                }
                out.push(figure(&p, &caption(&[&data])));
            }
        }
        3 => {
            if let Some(data) = g(groups::MOMENTUM_RAMP) {
                let lr = data.rows.iter().map(|r| r.lr).find(|x| x.is_finite());
                let title = match lr {
                    Some(lr) => format!("{m} as momentum grows (lr = {})", svg::fmt_value(lr)),
                    None => format!("{m} as momentum grows"),
                };
                let mut p = new_plot(title, XAxis::Momentum, metric);
                add_group(&mut p, &data, XAxis::Momentum, "", svg::color(0));
                if let Some(d) = find_json(r, "momentum") {
                    figures::momentum_marks(&mut p, &d);
                }
                out.push(figure(&p, &caption(&[&data])));
            }
            let with = g(groups::CONFIRM_WITH);
            let without = g(groups::CONFIRM_WITHOUT);
            if with.is_some() || without.is_some() {
                let mut p = new_plot(
                    format!("{m}: with momentum against without"),
                    XAxis::Epoch,
                    metric,
                );
                let mut shown = vec![];
                if let Some(d) = &without {
                    add_group(&mut p, d, XAxis::Epoch, "μ = 0", svg::color(7));
                    shown.push(d);
                }
                if let Some(d) = &with {
                    let mu = d
                        .rows
                        .iter()
                        .map(|r| r.momentum)
                        .find(|x| x.is_finite())
                        .or_else(|| {
                            find_json(r, "momentum_confirm")
                                .and_then(|v| num(&v, "/tested_momentum"))
                        });
                    let label = match mu {
                        Some(mu) => format!("μ = {}", svg::fmt_value(mu)),
                        None => "with momentum".into(),
                    };
                    add_group(&mut p, d, XAxis::Epoch, &label, svg::color(3));
                    shown.push(d);
                }
                out.push(figure(&p, &caption(&shown)));
            }
        }
        4 => {
            let converge = g(groups::CONVERGE);
            let decay = g(groups::DECAY);
            if converge.is_some() || decay.is_some() {
                let mut p = new_plot(
                    format!("{m}: power decay against a constant learning rate"),
                    XAxis::Epoch,
                    metric,
                );
                let mut shown = vec![];
                if let Some(d) = &converge {
                    add_group(&mut p, d, XAxis::Epoch, "constant lr", svg::color(0));
                    shown.push(d);
                }
                if let Some(d) = &decay {
                    add_group(&mut p, d, XAxis::Epoch, "decay", svg::color(1));
                    shown.push(d);
                }
                if let Some(d) = find_json(r, "plateau") {
                    figures::plateau_marks(&mut p, &d);
                }
                out.push(figure(&p, &caption(&shown)));
            }
        }
        5 => {
            if let Some(cyc) = g(groups::CYCLICAL) {
                let mut p = new_plot(
                    format!("{m}: cyclical learning rate against the schedules so far"),
                    XAxis::Epoch,
                    metric,
                );
                let mut shown = vec![];
                let converge = g(groups::CONVERGE);
                let decay = g(groups::DECAY);
                if let Some(d) = &converge {
                    add_group(&mut p, d, XAxis::Epoch, "constant lr", svg::color(0));
                    shown.push(d);
                }
                if let Some(d) = &decay {
                    add_group(&mut p, d, XAxis::Epoch, "decay", svg::color(1));
                    shown.push(d);
                }
                add_group(&mut p, &cyc, XAxis::Epoch, "cyclical", svg::color(2));
                shown.push(&cyc);
                out.push(figure(&p, &caption(&shown)));
            }
        }
        6 => {
            // The SGD configuration the variants are compared with.
            let (sgd_group, sgd_label) = if helps(r, "cyclical") {
                (groups::CYCLICAL, "SGD, cyclical")
            } else if helps(r, "decay") {
                (groups::DECAY, "SGD, decay")
            } else {
                (groups::CONVERGE, "SGD")
            };
            let (sgd, sgd_label) = match g(sgd_group) {
                Some(d) => (Some(d), sgd_label),
                None => (g(groups::CONVERGE), "SGD"),
            };
            for v in variants(r, names) {
                if let Some(data) = g(&groups::variant_ramp(&v)) {
                    let mut p = new_plot(
                        format!("{v}: {m} as its learning rate grows"),
                        XAxis::Lr,
                        metric,
                    );
                    add_group(&mut p, &data, XAxis::Lr, "", svg::color(4));
                    if let Some(d) = find_json(r, &format!("variant_lr:{v}")) {
                        figures::lr_marks(&mut p, &d);
                    }
                    out.push(figure(&p, &caption(&[&data])));
                }
                if let Some(data) = g(&groups::variant(&v)) {
                    let mut p = new_plot(
                        format!("{v} against the chosen SGD configuration"),
                        XAxis::Epoch,
                        metric,
                    );
                    let mut shown = vec![];
                    if let Some(s) = &sgd {
                        add_group(&mut p, s, XAxis::Epoch, sgd_label, svg::color(0));
                        shown.push(s);
                    }
                    add_group(&mut p, &data, XAxis::Epoch, &v, svg::color(4));
                    shown.push(&data);
                    out.push(figure(&p, &caption(&shown)));
                }
            }
        }
        _ => {}
    }
    out
}

/// Steps 1-7, then decisions and curves that belong to none of them.
fn procedure_sections(r: &pb::JobResults) -> String {
    let names = group_names(r);
    let mut s = String::new();
    for step in 1..=7u8 {
        let figs = step_figures(r, step, &names);
        let decisions: Vec<&pb::Decision> = r
            .decisions
            .iter()
            .filter(|d| step_of_decision(&d.step) == Some(step))
            .collect();
        let _ = write!(
            s,
            "<section class=\"step\" id=\"step-{step}\"><h2>{}</h2>",
            STEP_TITLES[usize::from(step - 1)]
        );
        if figs.is_empty() && decisions.is_empty() {
            s.push_str("<p class=\"muted\">Not run, or no results yet.</p>");
        }
        for f in figs {
            s.push_str(&f);
        }
        for d in decisions {
            s.push_str(&decision_block(d));
        }
        s.push_str("</section>");
    }
    let other_decisions: Vec<&pb::Decision> = r
        .decisions
        .iter()
        .filter(|d| d.step != "recommendation" && step_of_decision(&d.step).is_none())
        .collect();
    let other_groups: Vec<&String> = names
        .iter()
        .filter(|g| step_of_group(g).is_none())
        .collect();
    if !other_decisions.is_empty() || !other_groups.is_empty() {
        s.push_str("<section><h2>Other results</h2>");
        for g in other_groups {
            if let Some(data) = group_data(r, g).filter(GroupData::has_data) {
                s.push_str(&generic_figure(r, &data, XAxis::Epoch));
            }
        }
        for d in other_decisions {
            s.push_str(&decision_block(d));
        }
        s.push_str("</section>");
    }
    s
}

/// The x axis a single-tool job's curves are read against.
fn axis_of_kind(kind: &str) -> XAxis {
    match kind {
        "lr_ramp" => XAxis::Lr,
        "momentum_ramp" => XAxis::Momentum,
        "line_search" => XAxis::A,
        _ => XAxis::Epoch,
    }
}

/// One group's figure, titled with the group.
fn generic_figure(r: &pb::JobResults, data: &GroupData, axis: XAxis) -> String {
    let m = figures::metric_name(&r.metric);
    let title = if data.group == "all" {
        format!("{m} against {}", axis_short(axis))
    } else {
        format!("{}: {m} against {}", data.group, axis_short(axis))
    };
    let mut p = new_plot(title, axis, &r.metric);
    add_group(&mut p, data, axis, "", svg::color(0));
    match axis {
        XAxis::Lr => {
            if let Some(d) = find_json(r, "lr") {
                figures::lr_marks(&mut p, &d);
            }
        }
        XAxis::Momentum => {
            if let Some(d) = find_json(r, "momentum") {
                figures::momentum_marks(&mut p, &d);
            }
        }
        XAxis::A => figures::line_search_marks(&mut p, None, false),
        XAxis::Epoch => {}
    }
    figure(&p, &caption(&[data]))
}

fn axis_short(axis: XAxis) -> &'static str {
    match axis {
        XAxis::Epoch => "epoch",
        XAxis::Lr => "learning rate",
        XAxis::Momentum => "momentum",
        XAxis::A => "a",
    }
}

/// A single-tool job: one figure per group, then its decisions if any.
fn generic_sections(r: &pb::JobResults, kind: &str) -> String {
    let axis = axis_of_kind(kind);
    let mut s = String::from("<section><h2>Curves</h2>");
    let mut any = false;
    for g in group_names(r) {
        if let Some(data) = group_data(r, &g).filter(GroupData::has_data) {
            s.push_str(&generic_figure(r, &data, axis));
            any = true;
        }
    }
    if !any {
        s.push_str("<p class=\"muted\">No measurements yet.</p>");
    }
    s.push_str("</section>");
    if !r.decisions.is_empty() {
        s.push_str("<section><h2>Decisions</h2>");
        for d in &r.decisions {
            s.push_str(&decision_block(d));
        }
        s.push_str("</section>");
    }
    s
}

/// A table of each group's last and best heldout mean.
fn final_values(r: &pb::JobResults) -> String {
    let names = group_names(r);
    let mut rows = String::new();
    for g in &names {
        let Some(data) = group_data(r, g) else {
            continue;
        };
        let finite: Vec<&figures::Row> = data
            .rows
            .iter()
            .filter(|r| r.held_mean.is_finite())
            .collect();
        let last = data.rows.last();
        let best = finite
            .iter()
            .max_by(|a, b| a.held_mean.total_cmp(&b.held_mean));
        let pm = |r: &figures::Row| {
            if r.n >= 2 && r.held_std.is_finite() {
                format!(
                    "{} ± {}",
                    svg::fmt_value(r.held_mean),
                    svg::fmt_value(r.held_std)
                )
            } else {
                svg::fmt_value(r.held_mean)
            }
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(g),
            data.rows.len(),
            last.map(|r| format!("{} (x = {})", pm(r), svg::fmt_value(r.x)))
                .map(|t| escape(&t))
                .unwrap_or_default(),
            best.map(|r| format!("{} (x = {})", pm(r), svg::fmt_value(r.x)))
                .map(|t| escape(&t))
                .unwrap_or_else(|| "-".into()),
            data.seeds()
        );
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<section><h2>Heldout {} by group</h2><table><tr><th>group</th><th>points</th><th>last \
         (mean ± std)</th><th>best</th><th>seeds</th></tr>{rows}</table></section>",
        escape(&figures::metric_name(&r.metric))
    )
}

#[cfg(test)]
mod tests;
