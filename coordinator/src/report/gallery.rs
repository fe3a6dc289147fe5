//! The gallery of final line searches across jobs (the seed's closing
//! wish): one small plot per job, its name and shape, linking to the job's
//! own report at `<job_id>/report.html`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ridgeline_common::procedure::groups;
use ridgeline_common::proto::v1 as pb;

use super::html::{escape, url_segment};
use super::svg::{self, Plot, Series, Stroke, VLine};

/// One job with a final line search. Procedure jobs: group
/// "final_line_search"; line_search jobs: their own curves, group "all".
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryEntry {
    pub job_id: String,
    pub name: String,
    pub kind: String,
    pub metric: String,
    /// x = a, with heldout_mean/std over seeds.
    pub aggregate: pb::Aggregate,
    /// The line search's shape in words (may be empty).
    pub shape_summary: String,
}

/// Whether a job id can name a directory and a relative link as it is
/// (letters, digits, `-` and `_`; a UUID).
pub fn safe_job_dir(job_id: &str) -> bool {
    !job_id.is_empty()
        && job_id.len() <= 128
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The gallery entry of a job (`None` when it has no line search with
/// measurements).
pub fn gallery_entry(status: &pb::JobStatus, results: &pb::JobResults) -> Option<GalleryEntry> {
    let kind = if status.kind.is_empty() {
        results.kind.as_str()
    } else {
        status.kind.as_str()
    };
    let aggregate = match kind {
        "procedure" => results
            .aggregates
            .iter()
            .find(|a| a.group == groups::FINAL_LINE_SEARCH),
        "line_search" => results
            .aggregates
            .iter()
            .find(|a| a.group == "all")
            .or_else(|| results.aggregates.first()),
        _ => None,
    }?;
    if !aggregate.heldout_mean.iter().any(|v| v.is_finite()) {
        return None;
    }
    let decision = results
        .decisions
        .iter()
        .rev()
        .find(|d| d.step == groups::FINAL_LINE_SEARCH)
        .or_else(|| {
            results
                .decisions
                .iter()
                .rev()
                .find(|d| d.step.ends_with("line_search") && kind == "line_search")
        });
    let job_id = if status.job_id.is_empty() {
        results.job_id.clone()
    } else {
        status.job_id.clone()
    };
    let name = [status.name.trim(), results.name.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string();
    Some(GalleryEntry {
        job_id,
        name,
        kind: kind.to_string(),
        metric: results.metric.clone(),
        aggregate: aggregate.clone(),
        shape_summary: decision.map(|d| d.summary.clone()).unwrap_or_default(),
    })
}

/// The small plot of an entry.
fn thumbnail(e: &GalleryEntry) -> String {
    let a = &e.aggregate;
    let pts: Vec<(f64, f64)> =
        a.x.iter()
            .zip(&a.heldout_mean)
            .map(|(&x, &y)| (x, y))
            .collect();
    let band: Vec<(f64, f64, f64)> =
        a.x.iter()
            .zip(a.heldout_mean.iter().zip(&a.heldout_std))
            .enumerate()
            .filter(|(i, _)| a.n.get(*i).is_some_and(|&n| n >= 2))
            .map(|(_, (&x, (&m, &sd)))| (x, m - sd, m + sd))
            .collect();
    let mut line = Series::line("", svg::color(0), pts);
    line.band = band;
    line.width = 1.5;
    let mut p = Plot {
        series: vec![line],
        width: 300.0,
        height: 190.0,
        legend: false,
        compact: true,
        ..Default::default()
    };
    let fin = e.kind == "procedure";
    for x in if fin { vec![0.0, 1.0] } else { vec![0.0] } {
        p.vlines.push(VLine {
            x,
            label: String::new(),
            color: "#7f7f7f".into(),
            stroke: Stroke::Dotted,
        });
    }
    p.render()
}

/// The gallery page: a grid of cards, each linking to its job's report.
pub fn gallery_html(entries: &[GalleryEntry]) -> String {
    let mut b = String::from("<h1>Gallery of final line searches</h1>");
    let _ = write!(
        b,
        "<p class=\"meta\">{} job{}. Heldout metric along θ(a) = θ0 + a·(θ_final − θ0): a = 0 \
         is the initial network, a = 1 the trained one (dotted lines); line_search jobs along \
         their own direction. Mean over seeds, band ±1 std.</p>",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    );
    if entries.is_empty() {
        b.push_str("<p class=\"muted\">No job with a final line search yet.</p>");
    }
    b.push_str("<div class=\"grid\">");
    for e in entries {
        let name = if e.name.trim().is_empty() {
            format!("job {}", e.job_id)
        } else {
            e.name.clone()
        };
        let mut card = String::new();
        let _ = write!(
            card,
            "{}<div class=\"name\">{}</div><div class=\"sub\">{} · {} · {}</div>",
            thumbnail(e),
            escape(&name),
            escape(&e.kind),
            escape(&super::figures::metric_name(&e.metric)),
            escape(&e.job_id)
        );
        if !e.shape_summary.trim().is_empty() {
            let _ = write!(
                card,
                "<div class=\"shape\">{}</div>",
                escape(&e.shape_summary)
            );
        }
        if safe_job_dir(&e.job_id) {
            let _ = write!(
                b,
                "<div class=\"card\"><a href=\"{}/report.html\">{card}</a></div>",
                url_segment(&e.job_id)
            );
        } else {
            let _ = write!(b, "<div class=\"card\">{card}</div>");
        }
    }
    b.push_str("</div>");
    super::html::page("Ridgeline · gallery of final line searches", &b)
}

/// Writes `dir/gallery.html` (creating `dir`); returns its path.
pub fn write_gallery(dir: &Path, entries: &[GalleryEntry]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("gallery.html");
    std::fs::write(&path, gallery_html(entries))?;
    Ok(path)
}
