//! The page and everything it loads, embedded in the binary: instrument PCs have no internet, and
//! the build has no npm step. uPlot 1.6.32 (MIT, © Leon Sorokin; `assets/uPlot.LICENSE`) draws the
//! damage-versus-dose curve; the frame overlay and the critical-dose map are plain canvas images.

pub const INDEX_HTML: &str = include_str!("assets/index.html");
const VIEW_JS: &str = include_str!("assets/view.js");
const VIEW_CSS: &str = include_str!("assets/view.css");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("assets/uPlot.LICENSE");

/// (content type, body) of the asset `name`.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "view.js" => ("text/javascript; charset=utf-8", VIEW_JS),
        "view.css" => ("text/css; charset=utf-8", VIEW_CSS),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        "uPlot.LICENSE" => ("text/plain; charset=utf-8", UPLOT_LICENSE),
        _ => return None,
    })
}
