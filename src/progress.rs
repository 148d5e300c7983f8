//! Progress bars for long work, hidden when stderr is not a terminal (logs, CI, tests), and the
//! log writer that lifts them while a log line is printed (a line never lands inside a bar).

use std::io::Write;
use std::sync::LazyLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every bar of the process, so log lines can be printed above them.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| MultiProgress::with_draw_target(target()));

/// The log's writer: stderr, with the bars lifted while a line is written.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

/// One log event, buffered and written at once when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        // A log line that cannot be written has nowhere else to go.
        BARS.suspend(|| {
            let _ = std::io::stderr().write_all(&bytes);
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::with_capacity(256))
    }
}

fn target() -> ProgressDrawTarget {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar counting items (`frames`, `patches`, ...).
pub fn items_bar(len: u64, what: &str) -> ProgressBar {
    let bar = BARS.add(ProgressBar::new(len));
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta}}] {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// A bar counting bytes (downloads); `len` may be unknown.
pub fn bytes_bar(len: Option<u64>, what: &str) -> ProgressBar {
    let bar = BARS.add(match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    });
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}
