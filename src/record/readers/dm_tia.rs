//! Gatan DigitalMicrograph DM3/DM4 and FEI / Thermo Fisher TIA `.emi`/`.ser` files as series,
//! through [`crate::microscope`]: a 2-D image is one frame, a 3-D stack `[n, y, x]` is n frames;
//! of a file with several images, the first that is not refused (and a note says which). u8,
//! u16 and u32 pixels keep their type; other types are converted to f32, with a note.
//!
//! Dose inputs from the file's metadata: the pixel size (nm → Å), the scan dwell time (µs) and
//! the probe current (nA → pA), where the file records them; one note names the format and the
//! pixel size found, and each missing input gets its own note.

use std::path::Path;

use crate::decode::DoseHeader;
use crate::microscope::{self, Format, Opened};
use crate::record::{FrameSource, Layout, OpenOptions, ReadError, SourceFrame, SourceInfo};

use super::{file_stem, note_missing_dose};

/// Opens a DM or TIA file that [`microscope::detect`] recognised as `format`.
pub(super) fn open(path: &Path, format: Format, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let opened = microscope::open(path, format).map_err(|p| ReadError::new(path, None, p))?;
    // The first frame is converted now, so a file whose pixels cannot be a frame fails at open.
    opened.frame(0, opts.mask_gaps).map_err(|p| ReadError::new(path, None, p))?;
    let img = &opened.image;
    let dose = DoseHeader {
        beam_current_pa: img.beam_current_na().map(|na| na * 1000.0),
        dwell_time_us: img.dwell_time_us(),
        pixel_size_a: img.pixel_size_nm().map(|nm| nm * 10.0),
    };
    let mut notes = vec![opened.metadata_note()];
    notes.extend(opened.notes.iter().cloned());
    note_missing_dose(&dose, &mut notes);
    let layout = match format {
        Format::Dm => Layout::GatanDm,
        Format::TiaSer | Format::TiaEmi => Layout::TiaSer,
    };
    let shape: Vec<String> = img.shape.iter().map(usize::to_string).collect();
    let info = SourceInfo {
        path: path.to_owned(),
        layout,
        dataset: format!(
            "{} image {} of {}, {} {}",
            opened.format_name,
            opened.index,
            opened.images_in_file,
            shape.join("×"),
            img.pixels.dtype_name()
        ),
        series: file_stem(path),
        frames: opened.frames(),
        width: opened.width(),
        height: opened.height(),
        dtype: opened.pixel_type(),
        dose,
        notes,
        scan_shape: None,
    };
    Ok(Box::new(MicroscopeSource { info, opened, mask_gaps: opts.mask_gaps }))
}

/// The image, held whole (files are bounded by the image-file limit), cut into frames when read.
struct MicroscopeSource {
    info: SourceInfo,
    opened: Opened,
    mask_gaps: bool,
}

impl FrameSource for MicroscopeSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let frame = self.opened.frame(i, self.mask_gaps).map_err(|p| ReadError::new(&self.info.path, None, p))?;
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}
