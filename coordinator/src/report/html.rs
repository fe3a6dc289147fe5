//! HTML building blocks: escaping, the page shell with its inline style
//! sheet, and small pieces (a key-value table, a confidence badge).

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A path segment for a relative link: everything but unreserved URL
/// characters is percent-encoded (a job id is a UUID, but the link must
/// stay a relative link whatever the server sent).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The style sheet shared by the report and the gallery: black on white,
/// a serif-free system font, thin rules, nothing fetched from anywhere.
const STYLE: &str = r#"
:root { color-scheme: light; }
body { margin: 0; background: #ffffff; color: #1a1a1a;
  font: 15px/1.5 "DejaVu Sans", "Helvetica Neue", Helvetica, Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; font-weight: 600; margin: 8px 0 4px; }
h2 { font-size: 19px; font-weight: 600; margin: 36px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid #d0d0d0; }
h3 { font-size: 16px; font-weight: 600; margin: 18px 0 4px; }
p { margin: 6px 0; }
.meta { color: #555; font-size: 13px; margin: 0 0 18px; }
.meta span { margin-right: 18px; white-space: nowrap; }
.box { border: 1px solid #d0d0d0; border-radius: 4px; padding: 10px 16px; margin: 14px 0; }
.flags { border-color: #d62728; background: #fff5f5; }
.flags h2, .noflags h2, .rec h2 { border: none; margin: 2px 0 6px; padding: 0; font-size: 17px; }
.flags h2 { color: #b01c1d; }
.flags li { margin: 4px 0; }
.noflags { border-color: #2ca02c; background: #f5fbf5; }
.rec { border-color: #1f77b4; background: #f6f9fc; }
pre { background: #fafafa; border: 1px solid #e0e0e0; border-radius: 3px; padding: 8px 12px;
  overflow-x: auto; font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 12px 3px 0; text-align: left;
  vertical-align: top; }
th { font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 13px; margin-top: 2px; }
.decision { border-left: 3px solid #d0d0d0; padding: 2px 0 2px 12px; margin: 12px 0; }
.decision .summary { font-weight: 600; }
.thoughts { color: #333; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 6px;
  border-radius: 3px; margin-left: 6px; vertical-align: 1px; }
.clear { background: #e3f3e3; color: #1b6e1b; }
.weak { background: #fff0d9; color: #8a5300; }
.undetermined { background: #eeeeee; color: #555; }
.flag { color: #b01c1d; font-weight: 600; }
.muted { color: #777; }
details summary { cursor: pointer; color: #555; font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 18px; }
.card { border: 1px solid #d8d8d8; border-radius: 4px; padding: 8px 10px; }
.card a { color: #1a1a1a; text-decoration: none; }
.card a:hover .name { text-decoration: underline; }
.card .name { font-weight: 600; }
.card .shape { font-size: 13px; color: #444; }
.card .sub { font-size: 12px; color: #777; }
"#;

/// A whole page: `<!DOCTYPE html>`, the title, the style sheet, `body`
/// inside a `<main>`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// `clear`, `weak` or `undetermined` as a small coloured badge (anything
/// else as grey text; empty as nothing).
pub fn confidence_badge(confidence: &str) -> String {
    let c = confidence.trim();
    if c.is_empty() {
        return String::new();
    }
    let class = match c {
        "clear" | "weak" | "undetermined" => c,
        _ => "undetermined",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, escape(c))
}

/// A two-column table of already-escaped HTML cells.
pub fn kv_table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(url_segment("ab-12_xY"), "ab-12_xY");
        assert_eq!(url_segment("../a b\"<"), "%2E%2E%2Fa%20b%22%3C");
    }
}
