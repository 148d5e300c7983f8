//! Progress bars for long work, hidden when stderr is not a terminal (logs, CI, tests).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar counting items (`frames`, `patches`, ...).
pub fn items_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta}}] {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// A bar counting bytes (downloads); `len` may be unknown.
pub fn bytes_bar(len: Option<u64>, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, target());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}
