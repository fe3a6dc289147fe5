//! Property tests of the job-file parser and validator: whatever bytes a
//! user (or a broken tool) submits, parsing returns a job or an error that
//! names a field — it never panics — and a job that parses is one whose
//! every run is valid. The long variant runs more cases:
//! `PROPTEST_CASES=20000 cargo test -p ridgeline-common --test fuzz_job`.

use proptest::prelude::*;
use ridgeline_common::job::{JobFormat, JobSpec};

/// Cases per property: 2,048, or `$PROPTEST_CASES` for a long run (an
/// explicit `with_cases` would otherwise ignore the variable).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048)
}

/// Valid job files of every kind, to mutate.
const SEEDS: &[&str] = &[
    include_str!("../../examples/lr_ramp.toml"),
    include_str!("../../examples/line_search.toml"),
    include_str!("../../examples/momentum_ramp.toml"),
    include_str!("../../examples/train.toml"),
    include_str!("../../examples/compare.toml"),
    include_str!("../../examples/grid.toml"),
    include_str!("../../examples/procedure.toml"),
];

/// Values that break things: NaN, infinities, negatives, zero, huge
/// numbers, wrong types, empty strings.
const NASTY: &[&str] = &[
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "-0.0",
    "1e308",
    "1e-320",
    "18446744073709551616",
    "9999999999",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "true",
    "[1, -2]",
    "[0.0]",
    "\"../../etc/passwd\"",
];

fn check(text: &str) {
    for format in [JobFormat::Toml, JobFormat::Json] {
        match JobSpec::parse(text, format) {
            Ok(job) => {
                // Accepted: every run it makes is valid, and it survives
                // the store's JSON round trip.
                for run in job.runs() {
                    run.spec
                        .validate()
                        .expect("an accepted job makes valid runs");
                }
                let json = serde_json::to_string(&job).expect("serializes");
                let back = JobSpec::parse(&json, JobFormat::Json).expect("round trip");
                assert_eq!(back.kind, job.kind);
            }
            Err(e) => {
                assert!(!e.to_string().trim().is_empty(), "an error says something");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Replace the value on one `key = value` line with a nasty one.
    #[test]
    fn nasty_values_are_refused_or_valid(seed in 0..SEEDS.len(), line in 0usize..200, nasty in 0..NASTY.len()) {
        let text = SEEDS[seed];
        let lines: Vec<&str> = text.lines().collect();
        let i = line % lines.len();
        let mut out = String::new();
        for (j, l) in lines.iter().enumerate() {
            if j == i {
                if let Some((k, _)) = l.split_once('=') {
                    out.push_str(&format!("{k}= {}\n", NASTY[nasty]));
                    continue;
                }
            }
            out.push_str(l);
            out.push('\n');
        }
        check(&out);
    }

    /// Delete a line, duplicate a line, or cut the file short.
    #[test]
    fn damaged_files_never_panic(seed in 0..SEEDS.len(), at in 0usize..4000, op in 0u8..3) {
        let text = SEEDS[seed];
        let at = at % text.len().max(1);
        let at = (0..=at).rev().find(|&k| text.is_char_boundary(k)).unwrap_or(0);
        let damaged = match op {
            0 => text[..at].to_string(),
            1 => {
                let start = text[..at].rfind('\n').map_or(0, |p| p + 1);
                let end = text[at..].find('\n').map_or(text.len(), |p| at + p);
                format!("{}{}", &text[..start], &text[end..])
            }
            _ => {
                let start = text[..at].rfind('\n').map_or(0, |p| p + 1);
                let end = text[at..].find('\n').map_or(text.len(), |p| at + p);
                format!("{}\n{}", &text[..end], &text[start..])
            }
        };
        check(&damaged);
    }

    /// Arbitrary bytes (as text) and arbitrary JSON-ish text.
    #[test]
    fn random_text_never_panics(s in "\\PC{0,400}") {
        check(&s);
    }
}
