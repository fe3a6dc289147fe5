//! CSV files: a header row, one label column, every other column a numeric
//! feature.
//!
//! Cells are trimmed of surrounding whitespace. Every cell must be present
//! and (for features) a finite number; a bad cell is reported with its line
//! (1-based, the header being line 1), its column and its text, and a row of
//! the wrong width with its line. Nothing here panics on file content.
//!
//! Labels decide the task unless the spec fixes it: non-negative integers
//! give classification, other numbers regression, and text (e.g. `setosa`)
//! classification with classes numbered in sorted order of the label text.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use ridgeline_common::spec::CsvSpec;
use ridgeline_common::Task;

use crate::engine::data::{DataError, RawDataset, RawSplit, Targets};

/// Loads `spec.path`. Features become f32 inputs of shape `[features]`; the
/// label column becomes class indices or a single regression target.
/// `heldout` is `None`: the caller holds out part of the rows.
pub fn load(spec: &CsvSpec) -> Result<RawDataset, DataError> {
    let path = spec.path.as_path();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows of the wrong width are checked below, so the error can say
        // which line and how many fields, in this loader's words.
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(file);

    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // A UTF-8 byte order mark (as Excel writes) would otherwise stick
            // to the first column's name.
            let h = if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                h
            };
            h.trim().to_string()
        })
        .collect();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(DataError::format(
            path,
            "the file is empty: a header row naming the columns is required",
        ));
    }

    let label_name = spec.label_column.trim();
    let Some(label_col) = headers.iter().position(|h| h == label_name) else {
        return Err(DataError::format(
            path,
            format!(
                "no column named '{label_name}' (the label column); columns are: {}",
                quoted_list(&headers)
            ),
        ));
    };
    let label_count = headers.iter().filter(|h| *h == label_name).count();
    if label_count > 1 {
        return Err(DataError::format(
            path,
            format!("the label column '{label_name}' appears {label_count} times in the header"),
        ));
    }
    let n_features = headers.len() - 1;
    if n_features == 0 {
        return Err(DataError::format(
            path,
            format!("no feature columns: the only column is the label column '{label_name}'"),
        ));
    }
    // Duplicate feature names are allowed (they are only used in messages),
    // but an empty one would make messages unreadable: name it by position.
    let col_names: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if h.is_empty() {
                format!("#{}", i + 1)
            } else {
                h.clone()
            }
        })
        .collect();

    let mut x: Vec<f32> = Vec::new();
    // (line, text) of each label, kept until the task is known.
    let mut labels: Vec<(u64, String)> = Vec::new();
    let mut record = ::csv::StringRecord::new();
    // The header is line 1; used only if the reader cannot tell a position.
    let mut fallback_line = 1u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, e)),
        }
        fallback_line += 1;
        // The line where the record starts; it differs from a row count when
        // quoted cells span lines.
        let line = record.position().map_or(fallback_line, |p| p.line());
        if record.len() != headers.len() {
            return Err(DataError::format(
                path,
                format!(
                    "line {line} has {} fields but the header has {} columns",
                    record.len(),
                    headers.len()
                ),
            ));
        }
        for (col, (cell, name)) in record.iter().zip(&col_names).enumerate() {
            if col == label_col {
                if cell.is_empty() {
                    return Err(DataError::format(
                        path,
                        format!("column '{name}' line {line}: the label is empty"),
                    ));
                }
                labels.push((line, cell.to_string()));
                continue;
            }
            x.push(parse_feature(cell).map_err(|why| {
                DataError::format(path, format!("column '{name}' line {line}: {why}"))
            })?);
        }
    }
    if labels.is_empty() {
        return Err(DataError::format(
            path,
            "the file has a header but no data rows",
        ));
    }

    let (task, targets, outputs) = targets(path, label_name, &labels, spec.task)?;
    let raw = RawDataset {
        name: format!("csv({})", file_name(path)),
        task,
        input_shape: vec![n_features],
        outputs,
        train: RawSplit { x, y: targets },
        heldout: None,
    };
    raw.check()?;
    Ok(raw)
}

/// Parses one feature cell (already trimmed), explaining any refusal.
fn parse_feature(cell: &str) -> Result<f32, String> {
    if cell.is_empty() {
        return Err("empty cell (every feature needs a number)".into());
    }
    match cell.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        // Rust accepts "NaN", "inf" and overflowing values such as "1e39";
        // none is usable as an input.
        Ok(_) => Err(format!(
            "'{cell}' is not a finite number (or is beyond f32's range)"
        )),
        Err(_) => Err(format!("'{cell}' is not a number")),
    }
}

/// A label as a class index, if it is a non-negative integer within u32
/// (`3` or `3.0`; spreadsheets often write integers as floats).
fn class_index(text: &str) -> Option<u32> {
    if let Ok(v) = text.parse::<u32>() {
        return Some(v);
    }
    let v = text.parse::<f64>().ok()?;
    (v.is_finite() && v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v))
        .then_some(v as u32)
}

/// Decides the task and converts the labels: `(task, targets, outputs)`.
fn targets(
    path: &Path,
    label_name: &str,
    labels: &[(u64, String)],
    task: Option<Task>,
) -> Result<(Task, Targets, usize), DataError> {
    let classes: Option<Vec<u32>> = labels.iter().map(|(_, t)| class_index(t)).collect();
    let regression = |labels: &[(u64, String)]| -> Result<(Task, Targets, usize), DataError> {
        let data = labels
            .iter()
            .map(|(line, t)| match t.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(v),
                Ok(_) => Err(DataError::format(
                    path,
                    format!("column '{label_name}' line {line}: label '{t}' is not a finite number"),
                )),
                Err(_) => Err(DataError::format(
                    path,
                    format!("column '{label_name}' line {line}: label '{t}' is not a number (the task is regression)"),
                )),
            })
            .collect::<Result<Vec<f32>, _>>()?;
        Ok((Task::Regression, Targets::Values { data, width: 1 }, 1))
    };

    match (task, classes) {
        (Some(Task::Regression), _) => regression(labels),
        (Some(Task::Classification) | None, Some(classes)) => {
            let max = classes.iter().copied().max().unwrap_or(0);
            let outputs = (max as usize)
                .checked_add(1)
                .ok_or_else(|| DataError::format(path, format!("label {max} is too large")))?;
            Ok((Task::Classification, Targets::Classes(classes), outputs))
        }
        // Numbers that are not all class indices: a regression target…
        (None, None) if labels.iter().all(|(_, t)| t.parse::<f64>().is_ok()) => regression(labels),
        // …otherwise (text labels, or classification asked for labels like
        // -1/1) each distinct text is a class, numbered in sorted order so
        // the numbering does not depend on row order.
        (Some(Task::Classification) | None, None) => {
            let names: BTreeSet<&str> = labels.iter().map(|(_, t)| t.as_str()).collect();
            let index: BTreeMap<&str, u32> = names.into_iter().zip(0u32..).collect();
            let classes = labels
                .iter()
                .map(|(_, t)| index.get(t.as_str()).copied().unwrap_or(0))
                .collect();
            // A mostly numeric column with a few stray words is more likely
            // a typo than a categorical label: say so.
            let numeric = labels
                .iter()
                .filter(|(_, t)| t.parse::<f64>().is_ok())
                .count();
            if numeric > 0 && numeric < labels.len() {
                tracing::warn!(
                    file = %path.display(),
                    "label column '{label_name}' mixes numbers ({numeric} rows) and text ({} rows); \
                     treating every distinct label text as a class",
                    labels.len() - numeric
                );
            }
            const SHOWN: usize = 20;
            let mut shown: Vec<String> = index
                .iter()
                .take(SHOWN)
                .map(|(t, i)| format!("{i}={t}"))
                .collect();
            if index.len() > SHOWN {
                shown.push(format!("… ({} more)", index.len() - SHOWN));
            }
            tracing::info!(
                file = %path.display(),
                "text labels in column '{label_name}' numbered as classes: {}",
                shown.join(", ")
            );
            Ok((Task::Classification, Targets::Classes(classes), index.len()))
        }
    }
}

/// Converts a csv crate error, keeping I/O errors as such. Its message
/// already gives the line and field (e.g. of invalid UTF-8).
fn csv_error(path: &Path, e: ::csv::Error) -> DataError {
    let message = e.to_string();
    match e.into_kind() {
        ::csv::ErrorKind::Io(io) => DataError::io(path, io),
        _ => DataError::format(path, message),
    }
}

/// `'a', 'b', 'c'`.
fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file name of `path` (or the whole path if it has none).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn spec(path: PathBuf, label: &str, task: Option<Task>) -> CsvSpec {
        CsvSpec {
            path,
            label_column: label.into(),
            task,
        }
    }

    /// Loads `text` as `name` with label column `label`; the error text on
    /// failure.
    fn load_text(
        name: &str,
        text: &str,
        label: &str,
        task: Option<Task>,
    ) -> Result<RawDataset, String> {
        let d = tempfile::tempdir().unwrap();
        load(&spec(write(d.path(), name, text), label, task)).map_err(|e| e.to_string())
    }

    #[test]
    fn numeric_labels_give_classification() {
        let text = "a, label ,b\n1.5, 2 ,-3\n 4,0,5e-1 \n7,1,8\n";
        let raw = load_text("num.csv", text, "label", None).unwrap();
        assert_eq!(raw.name, "csv(num.csv)");
        assert_eq!(raw.task, Task::Classification);
        assert_eq!(raw.input_shape, vec![2]);
        assert_eq!(raw.outputs, 3);
        assert_eq!(raw.train.x, vec![1.5, -3.0, 4.0, 0.5, 7.0, 8.0]);
        assert_eq!(raw.train.y, Targets::Classes(vec![2, 0, 1]));
        assert!(raw.heldout.is_none());
        // Integers written as floats are class indices too; a BOM is ignored.
        let raw = load_text("f.csv", "\u{feff}y,x\n1.0,3\n0.0,4\n", "y", None).unwrap();
        assert_eq!(raw.train.y, Targets::Classes(vec![1, 0]));
        assert_eq!(raw.train.x, vec![3.0, 4.0]);
    }

    #[test]
    fn string_labels_are_numbered_in_sorted_order() {
        let text = "sl,sw,species\n5.1,3.5,setosa\n7.0,3.2,versicolor\n6.3,3.3,virginica\n4.9,3.0,setosa\n";
        let raw = load_text("iris.csv", text, "species", None).unwrap();
        assert_eq!(raw.task, Task::Classification);
        assert_eq!(raw.outputs, 3);
        assert_eq!(raw.train.y, Targets::Classes(vec![0, 1, 2, 0]));
        // Classification asked for with labels that are not class indices.
        let raw = load_text(
            "pm.csv",
            "x,y\n1,1\n2,-1\n3,1\n",
            "y",
            Some(Task::Classification),
        )
        .unwrap();
        assert_eq!(
            (raw.outputs, raw.train.y),
            (2, Targets::Classes(vec![1, 0, 1]))
        );
    }

    #[test]
    fn float_labels_give_regression() {
        let raw = load_text("reg.csv", "x1,x2,t\n1,2,0.5\n3,4,-1.25\n5,6,2\n", "t", None).unwrap();
        assert_eq!(raw.task, Task::Regression);
        assert_eq!(raw.outputs, 1);
        assert_eq!(raw.input_shape, vec![2]);
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![0.5, -1.25, 2.0],
                width: 1
            }
        );
        // Integer labels as regression when asked.
        let raw = load_text("ri.csv", "x,t\n1,3\n2,4\n", "t", Some(Task::Regression)).unwrap();
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![3.0, 4.0],
                width: 1
            }
        );
        // Regression refuses a text label, naming line and text.
        let err =
            load_text("rt.csv", "x,t\n1,3\n2,abc\n", "t", Some(Task::Regression)).unwrap_err();
        assert!(
            err.contains("rt.csv")
                && err.contains("column 't' line 3: label 'abc' is not a number"),
            "{err}"
        );
    }

    #[test]
    fn bad_number_names_line_and_column() {
        let err = load_text(
            "bad.csv",
            "petal,sepal,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n11,12,1\nabc,13,0\n",
            "y",
            None,
        )
        .unwrap_err();
        assert!(err.contains("bad.csv"), "{err}");
        assert!(
            err.contains("column 'petal' line 8: 'abc' is not a number"),
            "{err}"
        );
        let err = load_text("nan.csv", "a,y\nNaN,0\n", "y", None).unwrap_err();
        assert!(
            err.contains("nan.csv")
                && err.contains("column 'a' line 2: 'NaN' is not a finite number"),
            "{err}"
        );
    }

    #[test]
    fn empty_cells_are_errors() {
        let err = load_text("e.csv", "a,b,y\n1,2,0\n3, ,1\n", "y", None).unwrap_err();
        assert!(
            err.contains("e.csv") && err.contains("column 'b' line 3: empty cell"),
            "{err}"
        );
        let err = load_text("el.csv", "a,y\n1,0\n3,\n", "y", None).unwrap_err();
        assert!(
            err.contains("el.csv") && err.contains("column 'y' line 3: the label is empty"),
            "{err}"
        );
    }

    #[test]
    fn ragged_row_names_line() {
        let err = load_text("rag.csv", "a,b,y\n1,2,0\n3,4\n", "y", None).unwrap_err();
        assert!(err.contains("rag.csv"), "{err}");
        assert!(
            err.contains("line 3 has 2 fields but the header has 3 columns"),
            "{err}"
        );
        // Line numbers count the lines a quoted cell spans.
        let err = load_text("q.csv", "a,y\n\"1\n\",0\n1,2,3\n", "y", None).unwrap_err();
        assert!(
            err.contains("q.csv") && err.contains("line 4 has 3 fields"),
            "{err}"
        );
    }

    #[test]
    fn missing_label_column_lists_columns() {
        let err = load_text("m.csv", "a,b,c\n1,2,3\n", "label", None).unwrap_err();
        assert!(err.contains("m.csv"), "{err}");
        assert!(
            err.contains("no column named 'label'") && err.contains("columns are: 'a', 'b', 'c'"),
            "{err}"
        );
    }

    #[test]
    fn degenerate_files_are_errors() {
        let err = load_text("empty.csv", "", "y", None).unwrap_err();
        assert!(
            err.contains("empty.csv") && err.contains("header row"),
            "{err}"
        );
        let err = load_text("hdr.csv", "a,y\n", "y", None).unwrap_err();
        assert!(
            err.contains("hdr.csv") && err.contains("no data rows"),
            "{err}"
        );
        let err = load_text("only.csv", "y\n1\n", "y", None).unwrap_err();
        assert!(
            err.contains("only.csv") && err.contains("no feature columns"),
            "{err}"
        );
        let err = load_text("dup.csv", "y,a,y\n1,2,3\n", "y", None).unwrap_err();
        assert!(
            err.contains("dup.csv") && err.contains("appears 2 times"),
            "{err}"
        );
        let d = tempfile::tempdir().unwrap();
        let err = load(&spec(d.path().join("absent.csv"), "y", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.csv"), "{err}");
    }
}
