//! The files of a report: the page, the curves (through the `export`
//! command's own CSV and JSON writers), the decisions, and the
//! recommendation ready to paste.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ridgeline_common::proto::v1 as pb;
use serde_json::{json, Map, Value};

use super::figures::decision_json;
use crate::client::{json as results_json, render};

/// Writes report.html, curves.csv, results.json, decisions.json and, when
/// the job has a "recommendation" decision, recommended.toml and
/// recommended.json into `dir` (created if missing). Returns the paths
/// written.
pub fn write_report(
    dir: &Path,
    status: &pb::JobStatus,
    results: &pb::JobResults,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = vec![];
    let mut put = |name: &str, text: &str| -> std::io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
        Ok(())
    };
    put("report.html", &super::report_html(status, results))?;
    put("curves.csv", &render::results_to_csv(results))?;
    put(
        "results.json",
        &results_json::results_to_json(results).map_err(std::io::Error::other)?,
    )?;
    put("decisions.json", &decisions_to_json(&results.decisions))?;
    if let Some(d) = results
        .decisions
        .iter()
        .rev()
        .find(|d| d.step == "recommendation")
    {
        if let Some(v) = decision_json(d) {
            if let Some(toml) = recommended_toml(&v) {
                put("recommended.toml", &toml)?;
            }
            put("recommended.json", &recommended_json(&v))?;
        }
    }
    Ok(written)
}

/// Every decision, with its JSON parsed (kept as a string when it is not
/// valid JSON), pretty-printed.
pub fn decisions_to_json(decisions: &[pb::Decision]) -> String {
    let list: Vec<Value> = decisions
        .iter()
        .map(|d| {
            json!({
                "step": d.step,
                "title": d.title,
                "summary": d.summary,
                "thoughts": d.thoughts,
                "confidence": d.confidence,
                "red_flags": d.red_flags.iter().map(|f| json!({
                    "code": f.code, "title": f.title, "detail": f.detail,
                })).collect::<Vec<_>>(),
                "unix_ms": d.unix_ms,
                "decision": decision_json(d).unwrap_or_else(|| Value::String(d.json.clone())),
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&Value::Array(list)).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// The recommendation without its `toml` text, pretty-printed.
pub fn recommended_json(v: &Value) -> String {
    let mut v = v.clone();
    if let Value::Object(o) = &mut v {
        o.remove("toml");
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// The paste-ready TOML: the recommendation's `toml` field verbatim, or,
/// when it has none, its other fields written as TOML here (`None` when
/// the recommendation is not a JSON object).
pub fn recommended_toml(v: &Value) -> Option<String> {
    if let Some(t) = v.get("toml").and_then(Value::as_str) {
        let mut t = t.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        return Some(t);
    }
    let o = v.as_object()?;
    let mut o = o.clone();
    o.remove("toml");
    let mut s = String::from("# The chosen hyperparameters (written by the report).\n");
    write_table(&mut s, &[], &o);
    Some(s)
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An inline TOML value (`None` for null, which TOML cannot say).
fn toml_inline(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                let f = n.as_f64()?;
                // TOML floats need a dot or an exponent.
                let s = format!("{f:?}");
                Some(s)
            }
        }
        Value::String(s) => Some(toml_string(s)),
        Value::Array(a) => Some(format!(
            "[{}]",
            a.iter()
                .filter_map(toml_inline)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Value::Object(o) => Some(format!(
            "{{ {} }}",
            o.iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", toml_key(k), toml_inline(v)?)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A table: its plain values first, then its sub-tables as `[a.b]`.
fn write_table(s: &mut String, path: &[String], o: &Map<String, Value>) {
    for (k, v) in o {
        if v.is_object() {
            continue;
        }
        if let Some(t) = toml_inline(v) {
            let _ = writeln!(s, "{} = {t}", toml_key(k));
        }
    }
    for (k, v) in o {
        if let Value::Object(sub) = v {
            let mut p = path.to_vec();
            p.push(toml_key(k));
            let _ = writeln!(s, "\n[{}]", p.join("."));
            write_table(s, &p, sub);
        }
    }
}
