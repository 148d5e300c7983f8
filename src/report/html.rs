//! One self-contained HTML report: inline CSS, PNGs embedded as data: URIs, no scripts and no links
//! to fetch, so the single file can be mailed, archived or printed as it is.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use super::{ReportError, write_atomic};

pub struct Report<'a> {
    pub title: String,
    pub subtitle: String,
    pub sections: Vec<Section<'a>>,
}

pub enum Section<'a> {
    Paragraphs {
        heading: String,
        paragraphs: Vec<String>,
    },
    Table {
        heading: String,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// A PNG file embedded as a data: URI.
    Image {
        heading: String,
        caption: String,
        png: &'a Path,
    },
    /// Several PNGs side by side (e.g. per-frame overlays), each with a caption.
    Gallery {
        heading: String,
        images: Vec<(String, &'a Path)>,
    },
    /// Raw JSON shown in a collapsible <details> block.
    Json {
        heading: String,
        value: &'a serde_json::Value,
    },
}

const STYLE: &str = "\
body{font-family:'DejaVu Sans',system-ui,sans-serif;color:#111;background:#fff;max-width:1100px;margin:0 auto;\
padding:1.5em;line-height:1.45}
h1{font-size:1.6em;margin:0 0 .2em}
.subtitle{color:#444;margin:0 0 1.5em}
h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
figure{margin:0 0 1em}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#444;font-size:.9em;margin-top:.3em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1em}
table{border-collapse:collapse;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em;white-space:pre-wrap;\
word-break:break-all}
details summary{cursor:pointer;color:#333}
@media print{body{max-width:none;padding:0}h2{break-after:avoid}figure,tr{break-inside:avoid}\
.gallery{grid-template-columns:1fr 1fr}details::details-content{content-visibility:visible;display:block}}
";

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An io error about `path`, read while building the report.
fn read_error(path: &Path, kind: std::io::ErrorKind, what: String) -> ReportError {
    ReportError::Read { path: path.to_owned(), source: std::io::Error::new(kind, what) }
}

/// The PNG at `path` as a data: URI, with its pixel size from the header (so the browser lays the
/// page out before decoding). Anything but a readable PNG is an error: a broken picture in a report
/// is worse than no report.
fn png_data_uri(path: &Path) -> Result<(String, (u32, u32)), ReportError> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let bytes =
        std::fs::read(path).map_err(|e| read_error(path, e.kind(), format!("image for the HTML report: {e}")))?;
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return Err(read_error(path, std::io::ErrorKind::InvalidData, "not a PNG file".into()));
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok((format!("data:image/png;base64,{b64}"), (be(16), be(20))))
}

fn figure(out: &mut String, caption: &str, png: &Path) -> Result<(), ReportError> {
    let (uri, (w, h)) = png_data_uri(png)?;
    let alt = escape(caption);
    let _ = write!(out, "<figure><img src=\"{uri}\" width=\"{w}\" height=\"{h}\" alt=\"{alt}\">");
    if !caption.is_empty() {
        let _ = write!(out, "<figcaption>{alt}</figcaption>");
    }
    out.push_str("</figure>\n");
    Ok(())
}

/// Numbers are right-aligned so columns of values line up.
fn cell(out: &mut String, text: &str) {
    let numeric = text.trim().trim_end_matches('%').parse::<f64>().is_ok();
    let class = if numeric { " class=\"num\"" } else { "" };
    let _ = write!(out, "<td{class}>{}</td>", escape(text));
}

fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    out.push_str("<table>\n");
    if !header.is_empty() {
        out.push_str("<thead><tr>");
        for h in header {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            cell(out, c);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn section(out: &mut String, s: &Section<'_>) -> Result<(), ReportError> {
    let heading = match s {
        Section::Paragraphs { heading, .. }
        | Section::Table { heading, .. }
        | Section::Image { heading, .. }
        | Section::Gallery { heading, .. }
        | Section::Json { heading, .. } => heading,
    };
    out.push_str("<section>\n");
    if !heading.is_empty() && !matches!(s, Section::Json { .. }) {
        let _ = writeln!(out, "<h2>{}</h2>", escape(heading));
    }
    match s {
        Section::Paragraphs { paragraphs, .. } => {
            for p in paragraphs {
                let _ = writeln!(out, "<p>{}</p>", escape(p));
            }
        }
        Section::Table { header, rows, .. } => table(out, header, rows),
        Section::Image { caption, png, .. } => figure(out, caption, png)?,
        Section::Gallery { images, .. } => {
            out.push_str("<div class=\"gallery\">\n");
            for (caption, png) in images {
                figure(out, caption, png)?;
            }
            out.push_str("</div>\n");
        }
        Section::Json { value, .. } => {
            // The heading is the summary line, so the block folds away under it.
            let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(cannot show JSON: {e})"));
            let _ = writeln!(out, "<details><summary><h2 style=\"display:inline\">{}</h2></summary>", escape(heading));
            let _ = writeln!(out, "<pre>{}</pre></details>", escape(&text));
        }
    }
    out.push_str("</section>\n");
    Ok(())
}

/// The whole page as a string.
pub fn render(report: &Report<'_>) -> Result<String, ReportError> {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", escape(&report.title));
    let _ = writeln!(out, "<style>\n{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(out, "<h1>{}</h1>", escape(&report.title));
    if !report.subtitle.is_empty() {
        let _ = writeln!(out, "<p class=\"subtitle\">{}</p>", escape(&report.subtitle));
    }
    for s in &report.sections {
        section(&mut out, s)?;
    }
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

/// Writes the report to `path` (atomically). A missing or unreadable PNG is an error naming it.
pub fn write(report: &Report<'_>, path: &Path) -> Result<(), ReportError> {
    let page = render(report)?;
    write_atomic(path, page.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::report::canvas::Canvas;

    fn png(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        Canvas::new(3, 2, [10, 200, 30]).save_png(&path).expect("png");
        path
    }

    #[test]
    fn report_embeds_png_and_escapes_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = png(dir.path(), "a.png");
        let b = png(dir.path(), "b.png");
        let json = serde_json::json!({"note": "<script>alert(1)</script>", "dose": 12.5});
        let report = Report {
            title: "run <script>alert('x')</script>".into(),
            subtitle: "a & b".into(),
            sections: vec![
                Section::Paragraphs { heading: "summary".into(), paragraphs: vec!["<script>evil()</script>".into()] },
                Section::Table {
                    heading: "alarms".into(),
                    header: vec!["dose".into(), "what".into()],
                    rows: vec![vec!["1200".into(), "<b>".into()]],
                },
                Section::Image { heading: "map".into(), caption: "critical dose \"map\"".into(), png: &a },
                Section::Gallery { heading: "frames".into(), images: vec![("f1".into(), &a), ("f2".into(), &b)] },
                Section::Json { heading: "summary.json".into(), value: &json },
            ],
        };
        let out = dir.path().join("report.html");
        write(&report, &out).expect("write");
        let html = std::fs::read_to_string(&out).expect("read");
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&a).expect("png bytes"));
        assert!(html.contains(&format!("src=\"data:image/png;base64,{b64}\"")));
        assert_eq!(html.matches("data:image/png;base64,").count(), 3);
        assert!(!html.to_lowercase().contains("<script"), "unescaped script tag");
        assert!(html.contains("run &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;script&gt;evil()&lt;/script&gt;"));
        assert!(html.contains("<td class=\"num\">1200</td><td>&lt;b&gt;</td>"));
        assert!(html.contains("alt=\"critical dose &quot;map&quot;\""));
        assert!(html.contains("width=\"3\" height=\"2\""));
        assert!(html.contains("<details>"));
        assert!(!html.contains("http://") && !html.contains("https://"), "external link");
    }

    #[test]
    fn missing_or_non_png_image_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.png");
        let report = Report {
            title: "t".into(),
            subtitle: String::new(),
            sections: vec![Section::Image { heading: "h".into(), caption: "c".into(), png: &missing }],
        };
        let out = dir.path().join("report.html");
        let err = write(&report, &out).expect_err("missing image");
        assert!(matches!(&err, ReportError::Read { path, .. } if path == &missing), "{err:?}");
        assert!(err.to_string().contains("nope.png"));
        assert!(!out.exists(), "no report written");

        let text = dir.path().join("text.png");
        std::fs::write(&text, "not a png").expect("write");
        let report = Report {
            title: "t".into(),
            subtitle: String::new(),
            sections: vec![Section::Gallery { heading: "g".into(), images: vec![("c".into(), &text)] }],
        };
        let err = write(&report, &out).expect_err("not a png");
        assert!(err.to_string().contains("text.png") && err.to_string().contains("not a PNG"), "{err}");
    }
}
