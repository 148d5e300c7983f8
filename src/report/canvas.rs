//! An RGB picture we draw pixels into directly, with text and chart elements from plotters on top,
//! saved as PNG. The font (DejaVu Sans) is embedded, so pictures look the same everywhere.

use std::path::Path;
use std::sync::OnceLock;

use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{ReportError, write_atomic};

/// Font family name registered for all text.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font once; text drawn before this would have no glyphs.
pub fn ensure_font() -> Result<(), ReportError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Draw("embedded font could not be loaded".into())) }
}

pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

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
        let root = BitMapBackend::with_buffer(&mut self.rgb, size).into_drawing_area();
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
