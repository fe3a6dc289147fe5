//! The report on hand-built results: a whole procedure, a procedure cut
//! short, single-tool jobs, diverged runs, hostile names.

use ridgeline_common::proto::v1 as pb;

use super::*;
use crate::client::render::CSV_HEADER;

const ID: &str = "0b6f6c2e-1111-4a4a-8888-000000000001";

fn metrics(loss: f64, metric: f64) -> Option<pb::Metrics> {
    Some(pb::Metrics {
        loss,
        metric,
        accuracy: Some(metric),
        ..Default::default()
    })
}

/// A group of `seeds` curves: point i at `x[i]`, with LR `lr(x)`,
/// momentum `mu(x)` and heldout metric `f(x, seed)` (train 0.05 above), and
/// its aggregate over seeds, as the coordinator computes it.
fn group(
    r: &mut pb::JobResults,
    name: &str,
    seeds: u64,
    x: &[f64],
    lr: impl Fn(f64) -> f64,
    mu: impl Fn(f64) -> f64,
    f: impl Fn(f64, u64) -> f64,
) {
    let mut agg = pb::Aggregate {
        group: name.into(),
        ..Default::default()
    };
    for &xi in x {
        let vals: Vec<f64> = (0..seeds).map(|s| f(xi, s)).collect();
        let train: Vec<f64> = vals.iter().map(|v| v + 0.05).collect();
        let (hm, hs) = crate::analysis::mean_std(&vals);
        let (tm, ts) = crate::analysis::mean_std(&train);
        agg.x.push(xi);
        agg.heldout_mean.push(hm);
        agg.heldout_std.push(hs);
        agg.train_mean.push(tm);
        agg.train_std.push(ts);
        agg.n.push(seeds as u32);
    }
    for s in 0..seeds {
        r.curves.push(pb::Curve {
            curve: format!("{name},seed={s}"),
            points: x
                .iter()
                .map(|&xi| pb::CurvePoint {
                    x: xi,
                    lr: lr(xi),
                    momentum: mu(xi),
                    train: metrics(1.0 - f(xi, s), f(xi, s) + 0.05),
                    heldout: metrics(1.0 - f(xi, s), f(xi, s)),
                })
                .collect(),
            end: Some(pb::RunEnd {
                kind: pb::run_end::Kind::Completed as i32,
                epoch: x.len() as u32,
                ..Default::default()
            }),
        });
    }
    r.aggregates.push(agg);
}

fn decision(step: &str, title: &str, summary: &str, json: serde_json::Value) -> pb::Decision {
    pb::Decision {
        step: step.into(),
        title: title.into(),
        summary: summary.into(),
        thoughts: format!("Thoughts on {step}."),
        confidence: "clear".into(),
        json: json.to_string(),
        red_flags: vec![],
        unix_ms: 1_700_000_000_000,
    }
}

const TOML: &str = "# Chosen by Ridgeline\nepochs = 20\n\n[optimizer]\nkind = \"sgd\"\nlr = 0.3\nmomentum = 0.9\n\n[schedule.lr]\nkind = \"constant\"\n";

fn epochs(n: usize) -> Vec<f64> {
    (1..=n).map(|e| e as f64).collect()
}

fn line(from: f64, to: f64, k: usize) -> Vec<f64> {
    (0..k)
        .map(|i| from + (to - from) * i as f64 / (k - 1) as f64)
        .collect()
}

/// LR of the ramp at epoch e: 1e-4 · 10^(e/2).
fn ramp_lr(e: f64) -> f64 {
    1e-4 * 10f64.powf(e / 2.0)
}

/// A whole procedure job (all seven steps, one variant), succeeded.
fn procedure() -> (pb::JobStatus, pb::JobResults) {
    let status = pb::JobStatus {
        job_id: ID.into(),
        name: "glyph CNN".into(),
        kind: "procedure".into(),
        state: pb::JobState::Succeeded as i32,
        created_unix_ms: 1_700_000_000_000,
        finished_unix_ms: 1_700_000_600_000,
        epochs_trained: 321,
        ..Default::default()
    };
    let mut r = pb::JobResults {
        job_id: ID.into(),
        kind: "procedure".into(),
        metric: "accuracy".into(),
        name: "glyph CNN".into(),
        epochs_trained: 321,
        ..Default::default()
    };
    let zero = |_| 0.0;
    let noise = |s: u64| 0.01 * s as f64;
    group(
        &mut r,
        "initial_line_search",
        2,
        &line(-1.0, 1.0, 21),
        zero,
        zero,
        |a, s| 0.5 - 0.3 * a * a + noise(s),
    );
    group(&mut r, "lr_ramp", 3, &epochs(10), ramp_lr, zero, |e, s| {
        if e <= 7.0 {
            0.1 + 0.1 * e + noise(s)
        } else {
            0.2 + noise(s)
        }
    });
    group(
        &mut r,
        "momentum_ramp",
        3,
        &epochs(8),
        |_| 0.3,
        |e| 1.0 - 0.5f64.powf(e),
        |e, s| 0.6 + 0.03 * e + noise(s),
    );
    let rising = |top: f64| move |e: f64, s: u64| top - 0.4 * (-e / 3.0).exp() + 0.01 * s as f64;
    group(
        &mut r,
        "confirm_momentum",
        3,
        &epochs(5),
        |_| 0.3,
        |_| 0.9,
        rising(0.85),
    );
    group(
        &mut r,
        "confirm_no_momentum",
        3,
        &epochs(5),
        |_| 0.3,
        zero,
        rising(0.8),
    );
    group(
        &mut r,
        "converge",
        3,
        &epochs(20),
        |_| 0.3,
        |_| 0.9,
        rising(0.9),
    );
    group(
        &mut r,
        "decay",
        3,
        &epochs(20),
        |e| 0.3 * 0.93f64.powf(e),
        |_| 0.9,
        rising(0.9),
    );
    group(
        &mut r,
        "cyclical",
        3,
        &epochs(20),
        |_| 0.3,
        |_| 0.9,
        rising(0.89),
    );
    group(
        &mut r,
        "variant_ramp:adam",
        3,
        &epochs(10),
        |e| 1e-5 * 10f64.powf(e / 2.0),
        |_| 0.9,
        |e, s| 0.1 + 0.05 * e + noise(s),
    );
    group(
        &mut r,
        "variant:adam",
        3,
        &epochs(20),
        |_| 1e-3,
        |_| 0.9,
        rising(0.88),
    );
    group(
        &mut r,
        "final_line_search",
        2,
        &line(-0.5, 1.5, 21),
        zero,
        zero,
        |a, s| 0.1 + 0.8 * (1.0 - (a - 1.0) * (a - 1.0)).max(0.0) + noise(s),
    );
    r.decisions = vec![
        decision(
            "initial_line_search",
            "Step 1 · initial line search",
            "peak at a = 0, rough",
            serde_json::json!({"kind": "initial", "n_points": 21, "n_seeds": 2,
                "metric_peak": {"a": 0.0, "value": 0.505},
                "cliff": {"from_a": 0.8, "to_a": 0.9, "change": -0.05, "sharp": false},
                "has_barrier": false, "loss_minima_at": [], "thoughts": "…"}),
        ),
        decision(
            "lr",
            "Step 2 · learning rate",
            "lr = 0.3 (steady region 0.05-0.8)",
            serde_json::json!({"lr": 0.3, "region": {"lo": 0.05, "hi": 0.8}, "cliff_lr": 1.0,
                "confidence": "clear", "reasons": [],
                "fastai": {"steep": 0.1, "valley": 0.2, "minimum_div_10": 0.05,
                           "points_used": 8, "smoothing_beta": 0.9},
                "fastai_ratio": 2.0, "thoughts": "…"}),
        ),
        decision(
            "momentum",
            "Step 3 · momentum",
            "μ = 0.9",
            serde_json::json!({"momentum": 0.9, "lr": 0.3, "region": {"lo": 0.5, "hi": 0.95},
                "cliff_momentum": null}),
        ),
        decision(
            "momentum_confirm",
            "Step 3 · momentum helps",
            "μ = 0.9 beats μ = 0",
            serde_json::json!({"momentum": 0.9, "tested_momentum": 0.9, "lr": 0.3, "helps": true}),
        ),
        decision(
            "plateau",
            "Step 4 · M",
            "M = 6",
            serde_json::json!({"m": 6, "m_epoch": 6.0, "decay_factor": 0.935}),
        ),
        decision(
            "decay",
            "Step 4 · decay",
            "decay does not help",
            serde_json::json!({"helps": false}),
        ),
        decision(
            "cyclical",
            "Step 5 · cyclical",
            "cyclical does not help",
            serde_json::json!({"helps": false}),
        ),
        decision(
            "variant_lr:adam",
            "Step 6 · Adam's learning rate",
            "lr = 1e-3",
            serde_json::json!({"lr": 1e-3, "region": {"lo": 3e-4, "hi": 3e-3}}),
        ),
        decision(
            "variant:adam",
            "Step 6 · Adam",
            "Adam does not beat SGD",
            serde_json::json!({"helps": false}),
        ),
        decision(
            "final_line_search",
            "Step 7 · final line search",
            "monotone from θ0 to the trained weights, no barrier",
            serde_json::json!({"kind": "final", "metric_peak": {"a": 1.0, "value": 0.905},
                "has_barrier": false, "at_one": {"metric_trained": 0.9, "agrees": true}}),
        ),
        decision(
            "recommendation",
            "Recommendation",
            "SGD, lr 0.3, μ 0.9, constant, 20 epochs",
            serde_json::json!({"optimizer": {"kind": "sgd"}, "lr": 0.3, "momentum": 0.9,
                "schedule": {"kind": "constant"}, "epochs": 20, "toml": TOML}),
        ),
    ];
    (status, r)
}

/// The `<svg …>…</svg>` elements of a page.
fn svgs(html: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = html;
    while let Some(i) = rest.find("<svg") {
        let Some(j) = rest[i..].find("</svg>") else {
            break;
        };
        out.push(&rest[i..i + j + 6]);
        rest = &rest[i + j + 6..];
    }
    out
}

/// The text of section `step-n` of a report.
fn section(html: &str, n: u8) -> &str {
    let start = html
        .find(&format!("id=\"step-{n}\""))
        .unwrap_or_else(|| panic!("no step {n}"));
    let end = html[start..].find("</section>").expect("section ends") + start;
    &html[start..end]
}

/// A number attribute of an element's text (from after its tag name).
fn attr(element: &str, name: &str) -> f64 {
    let key = format!(" {name}=\"");
    let padded = format!(" {element}");
    let i = padded
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + key.len();
    let element = padded.as_str();
    let j = element[i..].find('"').expect("closing quote") + i;
    element[i..j].parse().expect("a number")
}

#[test]
fn a_procedure_has_one_figure_per_plot_of_each_step() {
    let (status, r) = procedure();
    let html = report_html(&status, &r);
    assert!(html.starts_with("<!DOCTYPE html>"));
    // 1 + 1 + (ramp + confirmation) + 1 + 1 + (Adam's ramp + run) + 1.
    assert_eq!(svgs(&html).len(), 9);
    for (step, figures) in [(1, 1), (2, 1), (3, 2), (4, 1), (5, 1), (6, 2), (7, 1)] {
        let s = section(&html, step);
        assert_eq!(s.matches("<svg").count(), figures, "step {step}");
        assert!(!s.contains("Not run"), "step {step}");
    }
    // Each decision in its step, with its Thoughts and confidence.
    assert!(section(&html, 2).contains("lr = 0.3 (steady region 0.05-0.8)"));
    assert!(section(&html, 2).contains("<em>Thoughts:</em> Thoughts on lr."));
    assert!(section(&html, 3).contains("Thoughts on momentum_confirm."));
    assert!(section(&html, 6).contains("Adam does not beat SGD"));
    assert!(section(&html, 7).contains("no barrier"));
    assert!(html.contains("<span class=\"badge clear\">clear</span>"));
    // Title, cost, no red flags, the recommendation's TOML in a <pre>.
    assert!(html.contains("<h1>glyph CNN</h1>"));
    assert!(html.contains("cost 321 epochs trained"));
    assert!(html.contains("state <b>succeeded</b>"));
    assert!(html.contains("<h2>No red flags</h2>"));
    assert!(html.contains(&format!("<pre>{}</pre>", html::escape(TOML))));
    // The red flags come before the recommendation, which comes before step 1.
    let flags = html.find("No red flags").expect("flags box");
    let rec = html.find("Paste-ready").expect("recommendation box");
    assert!(flags < rec && rec < html.find("id=\"step-1\"").expect("step 1"));
    // Step 5 compares cyclical with both schedules; step 6 compares Adam
    // with the chosen SGD configuration (neither decay nor cyclical helped).
    let s5 = section(&html, 5);
    assert!(s5.contains("cyclical · heldout") && s5.contains("constant lr · heldout"));
    let s6 = svgs(section(&html, 6))[1];
    assert!(
        s6.contains("SGD · heldout") && s6.contains("adam · heldout"),
        "{s6}"
    );
    // M on the step 4 plot; the momentum ramp against μ with the choice.
    assert!(section(&html, 4).contains("M = 6 (plateau)"));
    let s3 = svgs(section(&html, 3))[0];
    assert!(
        s3.contains("chosen μ = 0.9") && s3.contains("momentum μ"),
        "{s3}"
    );
    // The final line search shows the trained model's figure at a = 1.
    assert!(section(&html, 7).contains("trained model&#39;s own figure"));
}

#[test]
fn the_lr_ramp_marks_the_chosen_lr_inside_the_steady_region() {
    let (status, r) = procedure();
    let html = report_html(&status, &r);
    let fig = svgs(section(&html, 2))[0];
    assert!(fig.contains("learning rate (log scale)"), "{fig}");
    assert!(fig.contains("chosen lr = 0.3"), "{fig}");
    assert!(fig.contains("steady region 0.05–0.8"), "{fig}");
    assert!(fig.contains("cliff at lr = 1"), "{fig}");
    assert!(fig.contains("fastai valley = 0.2"), "{fig}");
    // Geometry: the chosen LR's line lies inside the shaded region, on a
    // log axis (0.3 is 78% of the way from 0.05 to 0.8 in log10, 31% in
    // linear units).
    let line = fig
        .split("<line ")
        .find(|l| l.contains(&format!("stroke=\"{}\"", svg::CHOSEN)))
        .expect("the chosen LR's line");
    let region = fig
        .split("<rect ")
        .find(|r| r.contains(&format!("fill=\"{}\"", svg::STEADY)) && r.contains("0.13"))
        .expect("the steady region");
    let (x, lo, w) = (attr(line, "x1"), attr(region, "x"), attr(region, "width"));
    let at = (x - lo) / w;
    let want = (0.3f64.log10() - 0.05f64.log10()) / (0.8f64.log10() - 0.05f64.log10());
    assert!((at - want).abs() < 0.02, "at {at}, want {want}");

    // Without the decision, no marks.
    let mut r2 = r.clone();
    r2.decisions.retain(|d| d.step != "lr");
    let html = report_html(&status, &r2);
    let fig = svgs(section(&html, 2))[0];
    assert!(!fig.contains("chosen lr") && !fig.contains("steady region"));
    assert!(section(&html, 2).matches("<svg").count() == 1);
}

#[test]
fn names_and_texts_are_escaped() {
    let (mut status, mut r) = procedure();
    status.name = "<script>alert('x')</script> & co".into();
    r.decisions[1].thoughts = "<img src=x onerror=alert(1)>".into();
    r.decisions[1].red_flags.push(pb::RedFlag {
        code: "x".into(),
        title: "<b>bold</b>".into(),
        detail: "\"quoted\"".into(),
    });
    r.curves[0].curve = "<i>odd</i>,seed=0".into();
    let html = report_html(&status, &r);
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag got through");
    assert!(!lower.contains("<img"), "an img tag got through");
    assert!(!lower.contains("<b>bold") && !lower.contains("<i>odd"));
    assert!(html.contains("<h1>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</h1>"));
    assert!(html.contains("<title>&lt;script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // The red flag is at the top, escaped.
    assert!(html.contains("<h2>RED FLAGS (1)</h2>"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;") && html.contains("&quot;quoted&quot;"));
}

#[test]
fn the_page_fetches_nothing() {
    let (status, r) = procedure();
    for html in [
        report_html(&status, &r),
        gallery_html(&[gallery_entry(&status, &r).expect("entry")]),
    ] {
        let svg_ns = "xmlns=\"http://www.w3.org/2000/svg\"";
        assert!(html.contains(svg_ns));
        let rest = html.replace(svg_ns, "");
        for bad in [
            "http://", "https://", "<script", "<link", "<img", "@import", "url(", "src=",
            "<iframe", "//fonts",
        ] {
            assert!(!rest.contains(bad), "{bad}");
        }
    }
}

#[test]
fn diverged_runs_leave_gaps_and_a_mark() {
    let (status, mut r) = procedure();
    // Seed 2 of the LR ramp diverges at epoch 9: its loss and metric are
    // NaN from there; the means there are NaN, and an infinite one too.
    let c = r
        .curves
        .iter_mut()
        .find(|c| c.curve == "lr_ramp,seed=2")
        .expect("curve");
    for p in &mut c.points[8..] {
        p.heldout = metrics(f64::NAN, f64::NAN);
        p.train = metrics(f64::INFINITY, f64::NAN);
    }
    c.end = Some(pb::RunEnd {
        kind: pb::run_end::Kind::Diverged as i32,
        epoch: 9,
        step: 90,
        reason: "loss is NaN".into(),
    });
    let a = r
        .aggregates
        .iter_mut()
        .find(|a| a.group == "lr_ramp")
        .expect("aggregate");
    a.heldout_mean[8] = f64::NAN;
    a.heldout_mean[9] = f64::INFINITY;
    a.heldout_std[9] = f64::NAN;
    a.train_mean[8] = f64::NEG_INFINITY;
    a.heldout_mean[4] = f64::NAN;
    // A line search with a NaN point, and a group that is NaN throughout.
    r.aggregates[0].heldout_mean[3] = f64::NAN;
    let all_nan = pb::Aggregate {
        group: "converge".into(),
        x: vec![1.0, 2.0],
        heldout_mean: vec![f64::NAN; 2],
        heldout_std: vec![f64::NAN; 2],
        train_mean: vec![f64::NAN; 2],
        train_std: vec![f64::NAN; 2],
        n: vec![3, 3],
    };
    r.aggregates.retain(|a| a.group != "converge");
    r.aggregates.push(all_nan);

    let html = report_html(&status, &r);
    for s in svgs(&html) {
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
    }
    let fig = svgs(section(&html, 2))[0];
    assert!(fig.contains("seed diverged"), "{fig}");
    // The cross is drawn (at seed 2's last finite epoch, 8).
    let cross = format!("stroke=\"{}\" stroke-width=\"2.2\"", svg::DANGER);
    assert_eq!(fig.matches(&cross).count(), 1, "{fig}");
    // The heldout mean is NaN at epoch 5 and missing from epoch 9: its line
    // is drawn in two pieces (epochs 1-4 and 6-8).
    let heldout_paths = fig
        .split("<path d=\"M")
        .filter(|p| p.contains("stroke-opacity=\"1.00\"") && !p.contains("dasharray"))
        .count();
    assert_eq!(heldout_paths, 2, "{fig}");
    // Step 4 still draws decay; the all-NaN baseline is simply absent.
    let s4 = svgs(section(&html, 4))[0];
    assert!(s4.contains("decay · heldout") && !s4.contains("constant lr · heldout"));
    // Every step still renders.
    assert_eq!(svgs(&html).len(), 9);
}

#[test]
fn a_procedure_cut_short_still_renders() {
    let (mut status, mut r) = procedure();
    status.state = pb::JobState::Running as i32;
    status.finished_unix_ms = 0;
    let keep = |g: &str| g.starts_with("initial_line_search") || g.starts_with("lr_ramp");
    r.curves.retain(|c| keep(&c.curve));
    r.aggregates.retain(|a| keep(&a.group));
    // Step 1 undecided, step 2 decided with a decision missing most fields.
    r.decisions = vec![pb::Decision {
        step: "lr".into(),
        title: "Step 2 · learning rate".into(),
        summary: "undetermined".into(),
        confidence: "undetermined".into(),
        json: r#"{"lr": null, "region": {"lo": "x"}}"#.into(),
        ..Default::default()
    }];
    let html = report_html(&status, &r);
    assert_eq!(svgs(&html).len(), 2);
    assert_eq!(html.matches("Not run, or no results yet.").count(), 5);
    assert!(html.contains("has not made its recommendation yet"));
    assert!(html.contains("badge undetermined"));
    assert!(!svgs(&html)[1].contains("chosen lr"));
    // Garbage JSON in a decision, an empty job: still a page.
    r.decisions[0].json = "{not json".into();
    assert!(report_html(&status, &r).contains("{not json"));
    let empty = report_html(&pb::JobStatus::default(), &pb::JobResults::default());
    assert!(empty.contains("</html>") && svgs(&empty).is_empty());
    // A failed job says so where the recommendation would be.
    status.state = pb::JobState::Failed as i32;
    status.error = "task 7 failed: out of memory".into();
    let html = report_html(&status, &r);
    assert!(html.contains("ended (failed: task 7 failed: out of memory) without a recommendation"));
}

#[test]
fn single_tool_jobs_get_one_figure_per_group_and_no_steps() {
    let status = pb::JobStatus {
        job_id: ID.into(),
        name: "grid".into(),
        kind: "grid".into(),
        state: pb::JobState::Succeeded as i32,
        ..Default::default()
    };
    let mut r = pb::JobResults {
        job_id: ID.into(),
        kind: "grid".into(),
        metric: "r2".into(),
        ..Default::default()
    };
    for (i, lr) in [0.01, 0.1, 1.0].iter().enumerate() {
        group(
            &mut r,
            &format!("lr={lr},momentum=0.9"),
            2,
            &epochs(4),
            |_| *lr,
            |_| 0.9,
            |e, s| 0.1 * e + 0.05 * i as f64 + 0.01 * s as f64,
        );
    }
    let html = report_html(&status, &r);
    assert_eq!(svgs(&html).len(), 3);
    assert!(!html.contains("Step 1") && !html.contains("Recommendation"));
    assert!(html.contains("lr=0.1,momentum=0.9: R² against epoch"));
    // The table of final values names each group.
    assert!(html.contains("<td>lr=1,momentum=0.9</td>"));

    // An LR ramp job is read against the LR, on a log axis.
    let mut r = pb::JobResults {
        job_id: ID.into(),
        kind: "lr_ramp".into(),
        metric: "accuracy".into(),
        ..Default::default()
    };
    group(
        &mut r,
        "all",
        2,
        &epochs(6),
        ramp_lr,
        |_| 0.0,
        |e, _| 0.1 * e,
    );
    let html = report_html(&pb::JobStatus::default(), &r);
    let figs = svgs(&html);
    assert_eq!(figs.len(), 1);
    assert!(figs[0].contains("learning rate (log scale)"));
    assert!(html.contains(&format!("<h1>job {ID}</h1>")));
}

#[test]
fn the_files_are_written_and_the_recommendation_parses_back() {
    let (status, r) = procedure();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("new").join(ID);
    let paths = write_report(&out, &status, &r).expect("written");
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "report.html",
            "curves.csv",
            "results.json",
            "decisions.json",
            "recommended.toml",
            "recommended.json"
        ]
    );
    for p in &paths {
        assert!(p.starts_with(&out) && p.is_file(), "{}", p.display());
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);
    assert_eq!(read("report.html"), report_html(&status, &r));
    // The export's own CSV and JSON.
    let csv = read("curves.csv");
    assert!(csv.starts_with(&format!("{CSV_HEADER}\n")));
    assert!(csv.contains("lr_ramp,seed=0,") || csv.contains("\"lr_ramp,seed=0\","));
    assert!(csv.contains("mean:final_line_search"));
    let results: serde_json::Value = serde_json::from_str(&read("results.json")).expect("json");
    assert_eq!(results["job_id"], ID);
    assert_eq!(results["aggregates"].as_array().map(Vec::len), Some(11));
    // Every decision, its JSON parsed.
    let d: serde_json::Value = serde_json::from_str(&read("decisions.json")).expect("json");
    assert_eq!(d.as_array().map(Vec::len), Some(11));
    assert_eq!(d[1]["step"], "lr");
    assert_eq!(d[1]["decision"]["region"]["hi"], 0.8);
    assert_eq!(d[1]["thoughts"], "Thoughts on lr.");
    // recommended.toml: the decision's TOML verbatim, and valid TOML.
    let toml_text = read("recommended.toml");
    assert_eq!(toml_text, TOML);
    let t: toml::Table = toml::from_str(&toml_text).expect("valid TOML");
    assert_eq!(t["optimizer"]["lr"].as_float(), Some(0.3));
    assert_eq!(t["epochs"].as_integer(), Some(20));
    // recommended.json: the decision without its TOML.
    let j: serde_json::Value = serde_json::from_str(&read("recommended.json")).expect("json");
    assert_eq!(j["lr"], 0.3);
    assert_eq!(j["optimizer"]["kind"], "sgd");
    assert!(j.get("toml").is_none());

    // No recommendation: four files, and none left over from before if the
    // directory is new.
    let mut r2 = r.clone();
    r2.decisions.retain(|d| d.step != "recommendation");
    let out2 = dir.path().join("other");
    let paths = write_report(&out2, &status, &r2).expect("written");
    assert_eq!(paths.len(), 4);
    assert!(!out2.join("recommended.toml").exists());

    // A directory that cannot be created is an error, not a panic.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").expect("write");
    assert!(write_report(&blocker.join("sub"), &status, &r).is_err());
}

#[test]
fn a_recommendation_without_toml_text_is_written_as_toml_here() {
    let v = serde_json::json!({
        "optimizer": {"kind": "sgd", "nesterov": false},
        "lr": 0.3,
        "momentum": null,
        "schedule": {"kind": "power_decay", "a": 0.935, "steps": [1, 2]},
        "epochs": 20,
        "note": "line 1\n\"quoted\"",
        "weird key": 1e-5,
    });
    let text = files::recommended_toml(&v).expect("toml");
    let t: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(t["lr"].as_float(), Some(0.3));
    assert_eq!(t["epochs"].as_integer(), Some(20));
    assert_eq!(t["weird key"].as_float(), Some(1e-5));
    assert_eq!(t["note"].as_str(), Some("line 1\n\"quoted\""));
    assert_eq!(t["optimizer"]["kind"].as_str(), Some("sgd"));
    assert_eq!(t["schedule"]["a"].as_float(), Some(0.935));
    assert!(t.get("momentum").is_none(), "null has no TOML form");
    assert!(files::recommended_toml(&serde_json::json!([1, 2])).is_none());
}

#[test]
fn the_gallery_links_each_job_to_its_report() {
    let (status, r) = procedure();
    let proc_entry = gallery_entry(&status, &r).expect("a procedure with step 7");
    assert_eq!(proc_entry.aggregate.group, "final_line_search");
    assert_eq!(
        proc_entry.shape_summary,
        "monotone from θ0 to the trained weights, no barrier"
    );
    assert_eq!(proc_entry.metric, "accuracy");

    // A line_search job: its own curves.
    let ls_id = "0b6f6c2e-2222-4a4a-8888-000000000002";
    let ls_status = pb::JobStatus {
        job_id: ls_id.into(),
        name: "<b>tabular</b> MLP".into(),
        kind: "line_search".into(),
        state: pb::JobState::Succeeded as i32,
        ..Default::default()
    };
    let mut ls = pb::JobResults {
        job_id: ls_id.into(),
        kind: "line_search".into(),
        metric: "accuracy".into(),
        ..Default::default()
    };
    group(
        &mut ls,
        "all",
        1,
        &line(-1.0, 1.0, 11),
        |_| 0.0,
        |_| 0.0,
        |a, _| 0.5 - 0.2 * a,
    );
    let ls_entry = gallery_entry(&ls_status, &ls).expect("a line search");
    assert_eq!(ls_entry.aggregate.group, "all");
    assert_eq!(ls_entry.shape_summary, "");

    // Jobs without a final line search have no entry.
    let mut no7 = r.clone();
    no7.aggregates.retain(|a| a.group != "final_line_search");
    assert!(gallery_entry(&status, &no7).is_none());
    let ramp = pb::JobStatus {
        kind: "lr_ramp".into(),
        ..Default::default()
    };
    assert!(gallery_entry(&ramp, &ls).is_none());

    // An id that is not a plain name is shown but not linked.
    let mut odd = ls_entry.clone();
    odd.job_id = "../../etc".into();
    let html = gallery_html(&[proc_entry, ls_entry, odd]);
    assert_eq!(svgs(&html).len(), 3);
    assert_eq!(html.matches("<a href=").count(), 2);
    assert!(html.contains(&format!("<a href=\"{ID}/report.html\">")));
    assert!(html.contains(&format!("<a href=\"{ls_id}/report.html\">")));
    assert!(html.contains("&lt;b&gt;tabular&lt;/b&gt; MLP"));
    assert!(html.contains("no barrier"));
    assert!(!html.contains("etc/report.html"));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_gallery(&dir.path().join("g"), &[]).expect("written");
    assert_eq!(path, dir.path().join("g").join("gallery.html"));
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("No job with a final line search yet."));
}
