//! An RGB picture we draw pixels into directly, with text and chart elements from plotters on top,
//! saved as PNG. The font (DejaVu Sans) is embedded, so pictures look the same everywhere.
//!
//! Text is laid out and rasterised here ([`Backend`]), not by plotters' ab_glyph text: that draws
//! each glyph from the left edge of its ink box at a whole-pixel pen position, dropping the glyph's
//! side bearing, so letters with a large bearing (N, H) shift left and letters that overhang (T, f)
//! shift right ("SYN THETIC", "drif t").

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, ScaleFont, point};
use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontStyle as BackendFontStyle,
};

use super::{ReportError, write_atomic};

/// Font family name registered for all text.
pub const FONT: &str = "sans-serif";

/// matplotlib's "tab10" colours: what our users' own plots use for categories.
pub const TAB10: [plotters::style::RGBColor; 10] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(140, 86, 75),
    plotters::style::RGBColor(227, 119, 194),
    plotters::style::RGBColor(127, 127, 127),
    plotters::style::RGBColor(188, 189, 34),
    plotters::style::RGBColor(23, 190, 207),
];

/// Registers the embedded font once; text drawn before this would have no glyphs.
pub fn ensure_font() -> Result<(), ReportError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Draw("embedded font could not be loaded".into())) }
}

/// DejaVu Sans (bold or regular) for our own text layout.
fn face(bold: bool) -> Option<&'static FontRef<'static>> {
    static FACES: OnceLock<Option<[FontRef<'static>; 2]>> = OnceLock::new();
    let faces = FACES.get_or_init(|| {
        let regular = FontRef::try_from_slice(dejavu::sans::regular()).ok()?;
        let bold = FontRef::try_from_slice(dejavu::sans::bold()).ok()?;
        Some([regular, bold])
    });
    faces.as_ref().map(|f| &f[usize::from(bold)])
}

/// One line of text laid out at `size` px (plotters' size: the font's ascent − descent): each glyph
/// with its pen position (kerned advances, not rounded), and the advance width of the whole line.
pub struct Line {
    pub glyphs: Vec<(GlyphId, f32)>,
    pub advance: f32,
    size: f32,
    bold: bool,
}

impl Line {
    pub fn new(s: &str, size: f64, bold: bool) -> Option<Self> {
        let font = face(bold)?.as_scaled(size as f32);
        let (mut pen, mut prev, mut glyphs) = (0.0f32, None, Vec::with_capacity(s.len()));
        for c in s.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                pen += font.kern(p, id);
            }
            glyphs.push((id, pen));
            pen += font.h_advance(id);
            prev = Some(id);
        }
        Some(Self { glyphs, advance: pen, size: size as f32, bold })
    }

    /// Layout box (width, height) as plotters reports it: the advance width, and size / 1.24 high.
    pub fn box_size(&self) -> (u32, u32) {
        (self.advance.ceil().max(0.0) as u32, (self.size as f64 / 1.24) as u32)
    }

    /// Calls `ink(x, y, coverage)` for every pixel the line covers, with the pen starting at x = 0
    /// and the baseline at `baseline` (fractional positions are kept: glyphs are rasterised at their
    /// sub-pixel place, each at its own outline offset).
    pub fn rasterise(&self, baseline: f32, mut ink: impl FnMut(i32, i32, f32)) {
        let Some(font) = face(self.bold) else { return };
        for &(id, pen) in &self.glyphs {
            let glyph = id.with_scale_and_position(self.size, point(pen, baseline));
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                let (x0, y0) = (b.min.x as i32, b.min.y as i32);
                outline.draw(|x, y, c| {
                    if c > 0.0 {
                        ink(x0 + x as i32, y0 + y as i32, c.min(1.0));
                    }
                });
            }
        }
    }
}

/// plotters' bitmap backend with our own text layout (see the module notes); everything else is
/// passed through unchanged.
pub struct Backend<'a> {
    inner: BitMapBackend<'a>,
}

type BackendResult<T> = Result<T, DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl<'a> Backend<'a> {
    pub fn with_buffer(rgb: &'a mut [u8], size: (u32, u32)) -> Self {
        Self { inner: BitMapBackend::with_buffer(rgb, size) }
    }

    fn line<S: BackendTextStyle>(text: &str, style: &S) -> Option<Line> {
        Line::new(text, style.size(), matches!(style.style(), BackendFontStyle::Bold))
    }
}

impl DrawingBackend for Backend<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult<()> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult<()> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult<()> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> BackendResult<()> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<()> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<()> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<()> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<()> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> BackendResult<()> {
        self.inner.blit_bitmap(pos, size, src)
    }

    /// As plotters places text (anchor, rotation, the baseline `size / 2` below the box top), with
    /// each glyph at its own offset and sub-pixel pen position.
    fn draw_text<S: BackendTextStyle>(&mut self, text: &str, style: &S, pos: BackendCoord) -> BackendResult<()> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let Some(line) = Self::line(text, style) else {
            return Err(DrawingErrorKind::FontError("embedded font could not be loaded".into()));
        };
        let (w, h) = line.box_size();
        let (w, h) = (w as i32, h as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        let (cw, ch) = self.get_size();
        let mut result = Ok(());
        line.rasterise(style.size() as f32 / 2.0, |x, y, c| {
            let (x, y) = trans.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if result.is_ok() && x >= 0 && y >= 0 && x < cw as i32 && y < ch as i32 {
                result = self.inner.draw_pixel((x, y), BackendColor { alpha: color.alpha * c as f64, rgb: color.rgb });
            }
        });
        result
    }

    fn estimate_text_size<S: BackendTextStyle>(&self, text: &str, style: &S) -> BackendResult<(u32, u32)> {
        Self::line(text, style)
            .map(|l| l.box_size())
            .ok_or_else(|| DrawingErrorKind::FontError("embedded font could not be loaded".into()))
    }
}

pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

pub type Area<'a> = DrawingArea<Backend<'a>, Shift>;

impl Canvas {
    pub fn new(width: u32, height: u32, background: [u8; 3]) -> Self {
        let rgb = background.iter().copied().cycle().take(width as usize * height as usize * 3).collect();
        Self { width, height, rgb }
    }

    pub fn put(&mut self, x: u32, y: u32, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Mixes `c` into the pixel with weight `alpha` (0 = unchanged, 1 = replaced).
    pub fn blend(&mut self, x: u32, y: u32, c: [u8; 3], alpha: f32) {
        if x < self.width && y < self.height {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            for (dst, &src) in self.rgb[i..i + 3].iter_mut().zip(&c) {
                let old = *dst as f32;
                *dst = (old + alpha * (src as f32 - old)).round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// Draws with plotters on this canvas (text, axes, charts).
    pub fn draw<F>(&mut self, f: F) -> Result<(), ReportError>
    where
        F: FnOnce(&Area<'_>) -> Result<(), String>,
    {
        ensure_font()?;
        let size = (self.width, self.height);
        let root = Backend::with_buffer(&mut self.rgb, size).into_drawing_area();
        f(&root).map_err(ReportError::Draw)?;
        root.present().map_err(|e| ReportError::Draw(e.to_string()))
    }

    pub fn png_bytes(&self, path: &Path) -> Result<Vec<u8>, ReportError> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&self.rgb, self.width, self.height, image::ExtendedColorType::Rgb8)
            .map_err(|e| ReportError::Png { path: path.to_owned(), reason: e.to_string() })?;
        Ok(out)
    }

    pub fn save_png(&self, path: &Path) -> Result<(), ReportError> {
        write_atomic(path, &self.png_bytes(path)?)
    }
}

/// Even pixel sizes only: plotters places each glyph at `(size / 2 + glyph top) as i32`, which at an
/// odd size truncates digits and periods in opposite directions (a period floats mid-line).
pub fn even(size: f64) -> f64 {
    ((size / 2.0).round() * 2.0).max(2.0)
}

/// plotters' drawing errors as the `String` that [`Canvas::draw`] closures return.
pub fn draw_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Text helper for plotters closures: draws `s` with its top-left at (x, y).
///
/// (x, y) is the top of plotters' text box; the baseline is `size / 2` below it, so capitals reach
/// about 0.13 × size above `y`.
pub fn text(area: &Area<'_>, s: &str, x: i32, y: i32, size: f64, color: RGBColor) -> Result<(), String> {
    let size = even(size);
    area.draw(&Text::new(s.to_string(), (x, y), (FONT, size).into_font().color(&color))).map_err(|e| e.to_string())
}

/// Pixel size of `s` at `size` (for right-aligning and centring).
pub fn text_size(area: &Area<'_>, s: &str, size: f64) -> (u32, u32) {
    let size = even(size);
    area.estimate_text_size(s, &TextStyle::from((FONT, size).into_font()))
        .unwrap_or((s.len() as u32 * size as u32 / 2, size as u32))
}

/// Bold text, as [`text`].
pub fn bold_text(area: &Area<'_>, s: &str, x: i32, y: i32, size: f64, color: RGBColor) -> Result<(), String> {
    let font = FontDesc::new(FONT.into(), even(size), FontStyle::Bold);
    area.draw(&Text::new(s.to_string(), (x, y), font.color(&color))).map_err(|e| e.to_string())
}

/// Where [`scale_bar`] put the bar (canvas pixels) and how long it is.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleBar {
    pub length_nm: f64,
    pub label: String,
    /// Left end and top row of the white bar.
    pub x: u32,
    pub y: u32,
    /// Bar length and thickness in canvas pixels.
    pub px: u32,
    pub thickness: u32,
}

/// Bar thickness, and its distance from the image's left and bottom edges.
const BAR_THICK: u32 = 5;
const BAR_INSET_X: u32 = 14;
const BAR_INSET_Y: u32 = 16;
const BAR_LABEL_SIZE: f64 = 14.0;

/// A scale bar in the bottom-left corner of the image at `image` = (x, y, width, height) canvas
/// pixels, where one canvas pixel is `nm_per_px` nm: a white bar of a round length (1, 2 or
/// 5 × 10ⁿ nm, about a fifth of the image width) with its label above it, both on a dark backing.
/// `None` (nothing drawn) when the pixel size is unknown or the image too small for a bar.
pub fn scale_bar(
    c: &mut Canvas,
    image: (u32, u32, u32, u32),
    nm_per_px: Option<f64>,
) -> Result<Option<ScaleBar>, ReportError> {
    let (ix, iy, iw, ih) = image;
    let Some(nm_per_px) = nm_per_px.filter(|v| v.is_finite() && *v > 0.0) else { return Ok(None) };
    let Some(length_nm) = super::format::scale_bar_nm(iw as f64 * nm_per_px) else { return Ok(None) };
    let px = (length_nm / nm_per_px).round() as u32;
    if px == 0 || px + 2 * BAR_INSET_X > iw || ih < 48 {
        return Ok(None);
    }
    let label = format!("{} nm", super::format::sig(length_nm, 3));
    let label_w = Line::new(&label, BAR_LABEL_SIZE, true).map_or(0, |l| l.box_size().0);
    let (x, y) = (ix + BAR_INSET_X, iy + ih - BAR_INSET_Y);
    // Backing: from above the label's capitals to below the bar, a margin around both.
    let (bx0, by0) = (x - 6, y - 20);
    let (bx1, by1) = (x + px.max(label_w) + 6, (y + BAR_THICK + 6).min(iy + ih));
    for yy in by0..by1 {
        for xx in bx0..bx1.min(ix + iw) {
            c.blend(xx, yy, [0, 0, 0], 0.6);
        }
    }
    for yy in y..y + BAR_THICK {
        for xx in x..x + px {
            c.put(xx, yy, [255, 255, 255]);
        }
    }
    c.draw(|area| bold_text(area, &label, x as i32, y as i32 - 13, BAR_LABEL_SIZE, WHITE))?;
    Ok(Some(ScaleBar { length_nm, label, x, y, px, thickness: BAR_THICK }))
}
