//! Hand-written SVG line plots in the manner of matplotlib's defaults: a
//! framed axes box, outward ticks with labels, a light grid, the tab10
//! colours, a legend in the emptiest corner.
//!
//! A [`Plot`] is data (series, bands, vertical lines, shaded spans, point
//! marks); [`Plot::render`] turns it into one `<svg>` element with no
//! scripts, no external references, and no element ids (many plots share
//! one HTML page). Non-finite values (a diverged run's NaN) and, on a log
//! axis, non-positive x values are left out: a line breaks around them.

use std::fmt::Write as _;

use super::html::escape;

/// matplotlib's default colour cycle (tab10).
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Colour of the chosen value's line.
pub const CHOSEN: &str = "#222222";
/// Colour of cliffs and divergence.
pub const DANGER: &str = "#d62728";
/// Colour of the steady region.
pub const STEADY: &str = "#2ca02c";

/// The colour of the `i`-th series.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// How the x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Linear,
    /// Base 10; values ≤ 0 cannot be shown and are skipped.
    Log,
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stroke {
    #[default]
    Solid,
    Dashed,
    Dotted,
}

impl Stroke {
    fn dasharray(self) -> &'static str {
        match self {
            Stroke::Solid => "",
            Stroke::Dashed => r#" stroke-dasharray="6 3""#,
            Stroke::Dotted => r#" stroke-dasharray="1.5 2.5""#,
        }
    }
}

/// One line, with an optional band (e.g. mean ± 1 std).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend text; an empty label keeps the series out of the legend.
    pub label: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
    /// `(x, lo, hi)`: shaded between lo and hi.
    pub band: Vec<(f64, f64, f64)>,
    pub stroke: Stroke,
    pub width: f64,
    pub opacity: f64,
    /// A small circle at every point (for short curves).
    pub markers: bool,
}

impl Series {
    pub fn line(label: impl Into<String>, color: &str, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            color: color.into(),
            points,
            width: 1.8,
            opacity: 1.0,
            ..Default::default()
        }
    }
}

/// A vertical line across the axes (a chosen value, a cliff).
#[derive(Debug, Clone)]
pub struct VLine {
    pub x: f64,
    pub label: String,
    pub color: String,
    pub stroke: Stroke,
}

/// A shaded vertical span (a steady region, a cliff step).
#[derive(Debug, Clone)]
pub struct Span {
    pub lo: f64,
    pub hi: f64,
    pub label: String,
    pub color: String,
}

/// The shape of a point mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkShape {
    /// ×: a divergence.
    Cross,
    /// ◆: a reference value (the trained model's own figure).
    Diamond,
    /// ●: a peak.
    Dot,
}

/// A single marked point.
#[derive(Debug, Clone)]
pub struct Mark {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub color: String,
    pub shape: MarkShape,
}

/// One figure.
#[derive(Debug, Clone)]
pub struct Plot {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub xscale: Scale,
    pub series: Vec<Series>,
    pub vlines: Vec<VLine>,
    pub spans: Vec<Span>,
    pub marks: Vec<Mark>,
    pub width: f64,
    pub height: f64,
    pub legend: bool,
    /// Smaller fonts and margins (the gallery's thumbnails).
    pub compact: bool,
}

impl Default for Plot {
    fn default() -> Self {
        Plot {
            title: String::new(),
            xlabel: String::new(),
            ylabel: String::new(),
            xscale: Scale::Linear,
            series: vec![],
            vlines: vec![],
            spans: vec![],
            marks: vec![],
            width: 640.0,
            height: 380.0,
            legend: true,
            compact: false,
        }
    }
}

/// A number for an SVG attribute: one decimal is plenty at screen scale.
fn n(v: f64) -> String {
    let s = format!("{v:.1}");
    if s == "-0.0" {
        "0.0".into()
    } else {
        s
    }
}

/// The value range of the finite numbers in `it` (`None` if none).
fn range(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    it.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// "Nice" steps of 1, 2, 2.5 or 5 × 10^k, about `target` of them over
/// `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![lo], 1.0);
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    let mut ticks = vec![];
    let mut k = first;
    while k <= last + 1e-9 && ticks.len() < 50 {
        let t = k * step;
        // Avoid -0 and 0.30000000000000004.
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        k += 1.0;
    }
    (ticks, step)
}

/// A tick label for a linear axis with ticks `step` apart, with a proper
/// minus sign.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        // 0.25 needs 2 decimals, 0.2 needs 1.
        let mut d = (-step.log10().floor()) as usize;
        while d < 8
            && ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-6
        {
            d += 1;
        }
        d
    };
    let big = v.abs() >= 1e5 && v != 0.0;
    let s = if big {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    };
    if let Some(rest) = s.strip_prefix('-') {
        if rest.chars().all(|c| c == '0' || c == '.') {
            rest.to_string()
        } else {
            format!("\u{2212}{rest}")
        }
    } else {
        s
    }
}

/// A value for people: 3 significant digits, scientific when tiny or huge.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else {
            "inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        // 1.50e-3 → 1.5e-3
        match s.split_once('e') {
            Some((m, e)) => {
                let m = if m.contains('.') {
                    m.trim_end_matches('0').trim_end_matches('.')
                } else {
                    m
                };
                format!("{m}e{e}")
            }
            None => s,
        }
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        crate::client::render::fmt_trim(v, decimals)
    }
}

/// Where the axes box lies inside the figure, and the data ranges.
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    log: bool,
}

impl Frame {
    /// The axis coordinate of x (`None` when it cannot be shown).
    fn xc(&self, x: f64) -> Option<f64> {
        if !x.is_finite() {
            return None;
        }
        if self.log {
            (x > 0.0).then(|| x.log10())
        } else {
            Some(x)
        }
    }

    fn px(&self, x: f64) -> Option<f64> {
        let c = self.xc(x)?;
        Some(self.left + (c - self.x0) / (self.x1 - self.x0) * (self.right - self.left))
    }

    fn py(&self, y: f64) -> Option<f64> {
        if !y.is_finite() {
            return None;
        }
        Some(self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top))
    }

    fn clamp_x(&self, px: f64) -> f64 {
        px.clamp(self.left, self.right)
    }
}

/// Splits points into runs of drawable points (a gap at every one that is
/// not).
fn segments(points: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut cur = vec![];
    for p in points {
        match p {
            Some(p) => cur.push(*p),
            None => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn path_d(seg: &[(f64, f64)]) -> String {
    let mut d = String::with_capacity(seg.len() * 14);
    for (i, (x, y)) in seg.iter().enumerate() {
        let _ = write!(d, "{}{},{}", if i == 0 { "M" } else { " L" }, n(*x), n(*y));
    }
    d
}

impl Plot {
    /// The data ranges: x on the axis' own coordinate (log10 for a log
    /// axis), y over lines, bands and marks; `None` with nothing to show.
    fn ranges(&self) -> Option<((f64, f64), (f64, f64))> {
        let log = self.xscale == Scale::Log;
        let xc = |x: f64| -> Option<f64> {
            if !x.is_finite() {
                None
            } else if log {
                (x > 0.0).then(|| x.log10())
            } else {
                Some(x)
            }
        };
        let shown = |x: f64, y: f64| xc(x).is_some() && y.is_finite();
        let data_x = range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| shown(p.0, p.1)).map(|p| p.0))
                .chain(self.marks.iter().filter(|m| shown(m.x, m.y)).map(|m| m.x))
                .filter_map(xc),
        )?;
        // Lines and spans widen the x range a little at most (a fastai
        // suggestion far outside the ramp should not squash the data).
        let width = (data_x.1 - data_x.0).max(1e-9);
        let near = |c: f64| c >= data_x.0 - 0.25 * width && c <= data_x.1 + 0.25 * width;
        let extra = self
            .vlines
            .iter()
            .map(|v| v.x)
            .chain(self.spans.iter().flat_map(|s| [s.lo, s.hi]))
            .filter_map(xc)
            .filter(|c| near(*c));
        let (mut x0, mut x1) = range(std::iter::once(data_x.0).chain([data_x.1]).chain(extra))?;
        let y = range(
            self.series
                .iter()
                .flat_map(|s| {
                    s.points
                        .iter()
                        .filter(|p| xc(p.0).is_some())
                        .map(|p| p.1)
                        .chain(
                            s.band
                                .iter()
                                .filter(|b| xc(b.0).is_some())
                                .flat_map(|b| [b.1, b.2]),
                        )
                })
                .chain(self.marks.iter().filter(|m| xc(m.x).is_some()).map(|m| m.y)),
        )?;
        let (mut y0, mut y1) = y;
        if x1 - x0 < 1e-12 {
            let pad = if x0.abs() > 0.0 { x0.abs() * 0.1 } else { 0.5 };
            x0 -= pad;
            x1 += pad;
        } else {
            // Small margins, as matplotlib's.
            let pad = (x1 - x0) * 0.03;
            x0 -= pad;
            x1 += pad;
        }
        if y1 - y0 < 1e-12 {
            let pad = if y0.abs() > 0.0 { y0.abs() * 0.1 } else { 0.5 };
            y0 -= pad;
            y1 += pad;
        } else {
            let pad = (y1 - y0) * 0.06;
            y0 -= pad;
            y1 += pad;
        }
        Some(((x0, x1), (y0, y1)))
    }

    /// The plot as one `<svg>` element.
    pub fn render(&self) -> String {
        let (w, h) = (self.width, self.height);
        let font = if self.compact { 9.0 } else { 11.0 };
        let title_h = if self.title.is_empty() {
            8.0
        } else if self.compact {
            18.0
        } else {
            26.0
        };
        let (left, right, top, bottom) = if self.compact {
            (38.0, w - 8.0, title_h, h - 26.0)
        } else {
            (64.0, w - 16.0, title_h + 4.0, h - 46.0)
        };
        // The body first: a legend below the axes makes the figure taller.
        let mut s = String::with_capacity(8192);
        if !self.title.is_empty() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="{}">{}</text>"#,
                n((left + right) / 2.0),
                n(title_h - if self.compact { 6.0 } else { 9.0 }),
                font + if self.compact { 1.0 } else { 2.0 },
                escape(&self.title)
            );
        }
        let Some(((x0, x1), (y0, y1))) = self.ranges() else {
            let _ = write!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="black" stroke-width="0.8"/><text x="{}" y="{}" text-anchor="middle" fill="#777">no data to plot</text>"##,
                n(left),
                n(top),
                n(right - left),
                n(bottom - top),
                n((left + right) / 2.0),
                n((top + bottom) / 2.0)
            );
            return self.wrap(h, font, &s);
        };
        let f = Frame {
            left,
            right,
            top,
            bottom,
            x0,
            x1,
            y0,
            y1,
            log: self.xscale == Scale::Log,
        };

        // Ticks (and their grid lines).
        let target = if self.compact { 4 } else { 7 };
        let (yticks, ystep) = nice_ticks(y0, y1, if self.compact { 4 } else { 6 });
        let xticks: Vec<(f64, String, bool)> = if f.log {
            log_ticks(x0, x1, target)
        } else {
            let (t, step) = nice_ticks(x0, x1, target);
            t.into_iter()
                .map(|v| (v, tick_label(v, step), true))
                .collect()
        };
        s.push_str(r##"<g stroke="#e8e8e8" stroke-width="0.8">"##);
        for &yt in &yticks {
            if let Some(py) = f.py(yt) {
                let _ = write!(
                    s,
                    r#"<line x1="{}" x2="{}" y1="{}" y2="{}"/>"#,
                    n(left),
                    n(right),
                    n(py),
                    n(py)
                );
            }
        }
        for (c, _, major) in &xticks {
            if !major {
                continue;
            }
            let px = left + (c - x0) / (x1 - x0) * (right - left);
            let _ = write!(
                s,
                r#"<line x1="{}" x2="{}" y1="{}" y2="{}"/>"#,
                n(px),
                n(px),
                n(top),
                n(bottom)
            );
        }
        s.push_str("</g>");

        // Spans under everything else.
        for sp in &self.spans {
            let (Some(a), Some(b)) = (f.px(sp.lo), f.px(sp.hi)) else {
                continue;
            };
            let (a, b) = (f.clamp_x(a.min(b)), f.clamp_x(a.max(b)));
            if b - a < 0.5 {
                continue;
            }
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="0.13"/>"#,
                n(a),
                n(top),
                n(b - a),
                n(bottom - top),
                escape(&sp.color)
            );
        }

        // Bands, then lines.
        for se in &self.series {
            let pts: Vec<Option<(f64, f64, f64)>> = se
                .band
                .iter()
                .map(|&(x, lo, hi)| Some((f.px(x)?, f.py(lo)?, f.py(hi)?)))
                .collect();
            let mut cur: Vec<(f64, f64, f64)> = vec![];
            let flush = |cur: &mut Vec<(f64, f64, f64)>, s: &mut String| {
                if cur.len() >= 2 {
                    let mut d = String::new();
                    for (i, (x, _, hi)) in cur.iter().enumerate() {
                        let _ =
                            write!(d, "{}{},{}", if i == 0 { "M" } else { " L" }, n(*x), n(*hi));
                    }
                    for (x, lo, _) in cur.iter().rev() {
                        let _ = write!(d, " L{},{}", n(*x), n(*lo));
                    }
                    d.push_str(" Z");
                    let _ = write!(
                        s,
                        r#"<path d="{d}" fill="{}" fill-opacity="{}" stroke="none"/>"#,
                        escape(&se.color),
                        n2(0.18 * se.opacity)
                    );
                }
                cur.clear();
            };
            for p in pts {
                match p {
                    Some(p) => cur.push(p),
                    None => flush(&mut cur, &mut s),
                }
            }
            flush(&mut cur, &mut s);
        }
        for se in &self.series {
            let pts: Vec<Option<(f64, f64)>> = se
                .points
                .iter()
                .map(|&(x, y)| Some((f.px(x)?, f.py(y)?)))
                .collect();
            for seg in segments(&pts) {
                if seg.len() == 1 || se.markers {
                    for (x, y) in &seg {
                        let _ = write!(
                            s,
                            r#"<circle cx="{}" cy="{}" r="{}" fill="{}" fill-opacity="{}"/>"#,
                            n(*x),
                            n(*y),
                            if self.compact { 1.5 } else { 2.5 },
                            escape(&se.color),
                            n2(se.opacity)
                        );
                    }
                }
                if seg.len() >= 2 {
                    let _ = write!(
                        s,
                        r#"<path d="{}" fill="none" stroke="{}" stroke-width="{}" stroke-opacity="{}" stroke-linejoin="round"{}/>"#,
                        path_d(&seg),
                        escape(&se.color),
                        n(se.width),
                        n2(se.opacity),
                        se.stroke.dasharray()
                    );
                }
            }
        }

        // Vertical lines (named in the legend).
        for v in &self.vlines {
            let Some(px) = f.px(v.x) else { continue };
            if px < left - 0.5 || px > right + 0.5 {
                continue;
            }
            let _ = write!(
                s,
                r#"<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="1.3"{}/>"#,
                n(px),
                n(px),
                n(top),
                n(bottom),
                escape(&v.color),
                v.stroke.dasharray()
            );
        }

        // Marks.
        for m in &self.marks {
            let (Some(px), Some(py)) = (f.px(m.x), f.py(m.y)) else {
                continue;
            };
            let c = escape(&m.color);
            let r = if self.compact { 3.0 } else { 5.0 };
            match m.shape {
                MarkShape::Cross => {
                    let _ = write!(
                        s,
                        r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{c}" stroke-width="2.2"/>"#,
                        n(px - r),
                        n(py - r),
                        n(px + r),
                        n(py + r),
                        n(px - r),
                        n(py + r),
                        n(px + r),
                        n(py - r)
                    );
                }
                MarkShape::Diamond => {
                    let _ = write!(
                        s,
                        r#"<path d="M{},{} L{},{} L{},{} L{},{} Z" fill="{c}" stroke="white" stroke-width="0.8"/>"#,
                        n(px),
                        n(py - r),
                        n(px + r),
                        n(py),
                        n(px),
                        n(py + r),
                        n(px - r),
                        n(py)
                    );
                }
                MarkShape::Dot => {
                    let _ = write!(
                        s,
                        r#"<circle cx="{}" cy="{}" r="{}" fill="{c}" stroke="white" stroke-width="0.8"/>"#,
                        n(px),
                        n(py),
                        r - 1.0
                    );
                }
            }
        }

        // The frame, ticks and labels.
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="black" stroke-width="0.8"/>"#,
            n(left),
            n(top),
            n(right - left),
            n(bottom - top)
        );
        s.push_str(r#"<g stroke="black" stroke-width="0.8">"#);
        for &yt in &yticks {
            if let Some(py) = f.py(yt) {
                let _ = write!(
                    s,
                    r#"<line x1="{}" x2="{}" y1="{}" y2="{}"/>"#,
                    n(left - 3.5),
                    n(left),
                    n(py),
                    n(py)
                );
            }
        }
        for (c, _, major) in &xticks {
            let px = left + (c - x0) / (x1 - x0) * (right - left);
            let len = if *major { 3.5 } else { 2.0 };
            let _ = write!(
                s,
                r#"<line x1="{}" x2="{}" y1="{}" y2="{}"/>"#,
                n(px),
                n(px),
                n(bottom),
                n(bottom + len)
            );
        }
        s.push_str("</g>");
        for &yt in &yticks {
            if let Some(py) = f.py(yt) {
                let _ = write!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                    n(left - 6.0),
                    n(py + font * 0.35),
                    escape(&tick_label(yt, ystep))
                );
            }
        }
        for (c, label, _) in &xticks {
            if label.is_empty() {
                continue;
            }
            let px = left + (c - x0) / (x1 - x0) * (right - left);
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                n(px),
                n(bottom + 5.0 + font),
                label
            );
        }
        if !self.compact {
            if !self.xlabel.is_empty() {
                let _ = write!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                    n((left + right) / 2.0),
                    n(h - 10.0),
                    escape(&self.xlabel)
                );
            }
            if !self.ylabel.is_empty() {
                let (cx, cy) = (16.0, (top + bottom) / 2.0);
                let _ = write!(
                    s,
                    r#"<text x="{cx}" y="{}" text-anchor="middle" transform="rotate(-90 {cx} {})">{}</text>"#,
                    n(cy),
                    n(cy),
                    escape(&self.ylabel)
                );
            }
        }
        let extra = if self.legend {
            self.legend_into(&mut s, &f, font)
        } else {
            0.0
        };
        self.wrap(h + extra, font, &s)
    }

    /// The `<svg>` element around `body`, `height` tall, on white.
    fn wrap(&self, height: f64, font: f64, body: &str) -> String {
        let w = self.width;
        let h = n(height);
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{font}"><rect x="0" y="0" width="{w}" height="{h}" fill="white"/>{body}</svg>"#,
            escape(&self.title)
        )
    }

    /// The legend: inside the axes, in a corner where it hides no data;
    /// otherwise (or when it is long) in columns below the axes. Returns
    /// the height it adds to the figure.
    fn legend_into(&self, s: &mut String, f: &Frame, font: f64) -> f64 {
        enum Key<'a> {
            Line(&'a Series),
            Span(&'a Span),
            VLine(&'a VLine),
            Mark(&'a Mark),
        }
        let mut keys: Vec<(String, Key)> = vec![];
        for se in &self.series {
            if !se.label.is_empty() {
                keys.push((se.label.clone(), Key::Line(se)));
            }
        }
        for sp in &self.spans {
            if !sp.label.is_empty() {
                keys.push((sp.label.clone(), Key::Span(sp)));
            }
        }
        for v in &self.vlines {
            if !v.label.is_empty() && f.px(v.x).is_some_and(|p| p >= f.left && p <= f.right) {
                keys.push((v.label.clone(), Key::VLine(v)));
            }
        }
        let mut seen_marks: Vec<&str> = vec![];
        for m in &self.marks {
            let drawn = f.px(m.x).is_some() && f.py(m.y).is_some();
            if drawn && !m.label.is_empty() && !seen_marks.contains(&m.label.as_str()) {
                seen_marks.push(&m.label);
                keys.push((m.label.clone(), Key::Mark(m)));
            }
        }
        if keys.is_empty() {
            return 0.0;
        }
        let row = font + 5.0;
        let longest = keys.iter().map(|k| k.0.chars().count()).max().unwrap_or(0) as f64;
        let bw = (34.0 + longest * font * 0.58).min((f.right - f.left) * 0.7);
        let bh = row * keys.len() as f64 + 6.0;
        // What the lines pass through, sampled along each segment.
        let mut drawn: Vec<(f64, f64)> = vec![];
        for se in &self.series {
            let pts: Vec<Option<(f64, f64)>> = se
                .points
                .iter()
                .map(|&(x, y)| Some((f.px(x)?, f.py(y)?)))
                .collect();
            for seg in segments(&pts) {
                drawn.push(seg[0]);
                for w in seg.windows(2) {
                    for k in 1..=8 {
                        let t = f64::from(k) / 8.0;
                        drawn.push((
                            w[0].0 + t * (w[1].0 - w[0].0),
                            w[0].1 + t * (w[1].1 - w[0].1),
                        ));
                    }
                }
            }
        }
        let corners = [
            (f.right - bw - 6.0, f.top + 6.0),
            (f.left + 6.0, f.top + 6.0),
            (f.right - bw - 6.0, f.bottom - bh - 6.0),
            (f.left + 6.0, f.bottom - bh - 6.0),
        ];
        let inside = (keys.len() <= 6 && bh < (f.bottom - f.top) * 0.6)
            .then(|| {
                corners.into_iter().find(|c| {
                    !drawn.iter().any(|&(px, py)| {
                        px >= c.0 - 2.0
                            && px <= c.0 + bw + 2.0
                            && py >= c.1 - 2.0
                            && py <= c.1 + bh + 2.0
                    })
                })
            })
            .flatten();
        // Below the axes: as many columns as fit.
        let below_top = f.bottom + if self.compact { 24.0 } else { 46.0 };
        let (cols, extra) = match inside {
            Some(_) => (1, 0.0),
            None => {
                let cols =
                    (((f.right - f.left) / (bw + 8.0)).floor() as usize).clamp(1, keys.len());
                let rows = keys.len().div_ceil(cols);
                (cols, row * rows as f64 + 10.0)
            }
        };
        let per_col = keys.len().div_ceil(cols);
        let (lx, ly) = inside.unwrap_or((f.left, below_top));
        if inside.is_some() {
            let _ = write!(
                s,
                r##"<g class="legend"><rect x="{}" y="{}" width="{}" height="{}" fill="white" fill-opacity="0.85" stroke="#cccccc" stroke-width="0.8" rx="2"/>"##,
                n(lx),
                n(ly),
                n(bw),
                n(bh)
            );
        } else {
            s.push_str(r#"<g class="legend">"#);
        }
        for (i, (label, key)) in keys.iter().enumerate() {
            let (col, r) = (i / per_col, i % per_col);
            let cy = ly + 3.0 + row * (r as f64 + 0.5);
            let x0 = lx + col as f64 * (bw + 8.0);
            let (k0, k1) = (x0 + 6.0, x0 + 26.0);
            match key {
                Key::Line(se) => {
                    if !se.band.is_empty() {
                        let _ = write!(
                            s,
                            r#"<rect x="{}" y="{}" width="20" height="8" fill="{}" fill-opacity="{}"/>"#,
                            n(k0),
                            n(cy - 4.0),
                            escape(&se.color),
                            n2(0.18 * se.opacity)
                        );
                    }
                    let _ = write!(
                        s,
                        r#"<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="{}" stroke-opacity="{}"{}/>"#,
                        n(k0),
                        n(k1),
                        n(cy),
                        n(cy),
                        escape(&se.color),
                        n(se.width),
                        n2(se.opacity),
                        se.stroke.dasharray()
                    );
                }
                Key::Span(sp) => {
                    let _ = write!(
                        s,
                        r#"<rect x="{}" y="{}" width="20" height="9" fill="{}" fill-opacity="0.2"/>"#,
                        n(k0),
                        n(cy - 4.5),
                        escape(&sp.color)
                    );
                }
                Key::VLine(v) => {
                    let _ = write!(
                        s,
                        r#"<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="1.3"{}/>"#,
                        n(k0 + 10.0),
                        n(k0 + 10.0),
                        n(cy - 5.0),
                        n(cy + 5.0),
                        escape(&v.color),
                        v.stroke.dasharray()
                    );
                }
                Key::Mark(m) => {
                    let c = escape(&m.color);
                    let (mx, r) = (k0 + 10.0, 4.0);
                    match m.shape {
                        MarkShape::Cross => {
                            let _ = write!(
                                s,
                                r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{c}" stroke-width="2"/>"#,
                                n(mx - r),
                                n(cy - r),
                                n(mx + r),
                                n(cy + r),
                                n(mx - r),
                                n(cy + r),
                                n(mx + r),
                                n(cy - r)
                            );
                        }
                        MarkShape::Diamond => {
                            let _ = write!(
                                s,
                                r#"<path d="M{},{} L{},{} L{},{} L{},{} Z" fill="{c}"/>"#,
                                n(mx),
                                n(cy - r),
                                n(mx + r),
                                n(cy),
                                n(mx),
                                n(cy + r),
                                n(mx - r),
                                n(cy)
                            );
                        }
                        MarkShape::Dot => {
                            let _ = write!(
                                s,
                                r#"<circle cx="{}" cy="{}" r="3.5" fill="{c}"/>"#,
                                n(mx),
                                n(cy)
                            );
                        }
                    }
                }
            }
            let _ = write!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                n(k1 + 5.0),
                n(cy + font * 0.35),
                escape(label)
            );
        }
        s.push_str("</g>");
        extra
    }
}

/// An opacity with two decimals.
fn n2(v: f64) -> String {
    format!("{:.2}", v.clamp(0.0, 1.0))
}

/// Ticks of a log axis between the log10 coordinates `c0` and `c1`:
/// `(coordinate, label markup, major)`. Decades are labelled 10ⁿ (every
/// other one over many decades); within a single decade the 2× and 5×
/// multiples are labelled too; the other multiples are minor ticks.
fn log_ticks(c0: f64, c1: f64, target: usize) -> Vec<(f64, String, bool)> {
    let mut out = vec![];
    let (d0, d1) = (c0.floor() as i64, c1.ceil() as i64);
    let decades = (d1 - d0).max(1);
    let every = ((decades as f64) / target as f64).ceil().max(1.0) as i64;
    let narrow = c1 - c0 < 1.2;
    for d in d0..=d1 {
        for m in 1..10 {
            let c = d as f64 + (m as f64).log10();
            if c < c0 - 1e-9 || c > c1 + 1e-9 {
                continue;
            }
            if m == 1 {
                let label = if d.rem_euclid(every) == 0 {
                    decade_label(d)
                } else {
                    String::new()
                };
                out.push((c, label, true));
            } else if narrow && (m == 2 || m == 5) {
                out.push((c, fmt_value(m as f64 * 10f64.powi(d as i32)), true));
            } else if decades <= 12 {
                out.push((c, String::new(), false));
            }
        }
    }
    out
}

/// `10` with the exponent as a superscript (SVG markup; the exponent is a
/// number, so nothing to escape).
fn decade_label(d: i64) -> String {
    match d {
        0 => "1".into(),
        1 => "10".into(),
        _ => {
            let e = if d < 0 {
                format!("\u{2212}{}", -d)
            } else {
                d.to_string()
            };
            format!(r#"10<tspan dy="-5" font-size="80%">{e}</tspan>"#)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_the_range_with_round_steps() {
        let (t, step) = nice_ticks(0.0, 1.0, 6);
        assert_eq!(step, 0.2);
        assert_eq!(t.len(), 6);
        assert_eq!(t[0], 0.0);
        assert!((t[5] - 1.0).abs() < 1e-12);
        let (t, step) = nice_ticks(-0.53, 1.53, 7);
        assert_eq!(step, 0.5);
        assert_eq!(t.first().copied(), Some(-0.5));
        assert_eq!(t.last().copied(), Some(1.5));
        assert_eq!(tick_label(-0.5, 0.5), "\u{2212}0.5");
        assert_eq!(tick_label(0.25, 0.25), "0.25");
        assert_eq!(tick_label(3.0, 1.0), "3");
        assert_eq!(fmt_value(0.00015), "1.5e-4");
        assert_eq!(fmt_value(0.3), "0.3");
        assert_eq!(fmt_value(1.234), "1.23");
    }

    #[test]
    fn log_axis_labels_decades() {
        let t = log_ticks(-4.1, 1.1, 7);
        let labels: Vec<&str> = t
            .iter()
            .filter(|t| !t.1.is_empty())
            .map(|t| t.1.as_str())
            .collect();
        assert_eq!(labels.len(), 6, "{labels:?}");
        assert!(labels[0].contains("\u{2212}4"), "{labels:?}");
        assert_eq!(labels[4], "1");
        assert_eq!(labels[5], "10");
        // Minor ticks between decades.
        assert!(t.iter().filter(|t| !t.2).count() > 20);
    }

    #[test]
    fn gaps_at_non_finite_values_and_no_nan_in_the_markup() {
        let p = Plot {
            series: vec![Series::line(
                "heldout",
                color(0),
                vec![
                    (1.0, 0.5),
                    (2.0, 0.6),
                    (3.0, f64::NAN),
                    (4.0, 0.7),
                    (5.0, f64::INFINITY),
                ],
            )],
            marks: vec![Mark {
                x: f64::NAN,
                y: 0.2,
                label: "diverged".into(),
                color: DANGER.into(),
                shape: MarkShape::Cross,
            }],
            ..Default::default()
        };
        let svg = p.render();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Two pieces: a line over epochs 1-2, and a lone point at 4.
        let line = format!("fill=\"none\" stroke=\"{}\"", color(0));
        assert_eq!(svg.matches(&line).count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        // The mark cannot be placed, and is not in the legend either.
        assert!(!svg.contains("diverged"), "{svg}");
    }

    #[test]
    fn a_log_axis_skips_non_positive_x_and_nothing_to_show_says_so() {
        let p = Plot {
            xscale: Scale::Log,
            series: vec![Series::line(
                "",
                color(0),
                vec![(0.0, 0.1), (1e-3, 0.2), (1e-2, 0.4), (1e-1, 0.5)],
            )],
            ..Default::default()
        };
        let svg = p.render();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains("<path d=\"M"), "{svg}");
        let empty = Plot {
            series: vec![Series::line("x", color(0), vec![(1.0, f64::NAN)])],
            ..Default::default()
        };
        assert!(empty.render().contains("no data to plot"));
    }
}
