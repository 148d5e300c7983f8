//! Image files as series, through [`crate::imagefile`]: a multi-page TIFF or 3-D `.npy` (or a
//! single PNG/TIFF/`.npy` image) is a [`Layout::TiffStack`]; a directory of TIFF/PNG/`.npy` files
//! is a [`Layout::ImageFolder`], one frame per file in name order (numbers in names compare as
//! numbers, so `frame_2` comes before `frame_10`). Image files carry no dose metadata.

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::decode::DoseHeader;
use crate::frame::Frame;
use crate::imagefile;
use crate::limits;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError, SourceFrame, SourceInfo};

use super::{file_stem, note_missing_dose};

const EXTENSIONS: [&str; 4] = ["tif", "tiff", "png", "npy"];

/// What an image file is, by its first bytes (`None`: not an image file we read).
fn image_kind(path: &Path) -> Result<Option<&'static str>, ReadError> {
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut head))
        .map_err(|e| ReadError::new(path, None, format!("cannot read: {e}")))?;
    let kind = match &head[..] {
        [b'I', b'I', 42 | 43, 0, ..] | [b'M', b'M', 0, 42 | 43, ..] => "TIFF",
        [0x89, b'P', b'N', b'G', ..] => "PNG",
        [0x93, b'N', b'U', b'M', b'P', b'Y', ..] => ".npy",
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// Whether `path` starts like a TIFF, PNG or `.npy` file.
pub(super) fn is_image_file(path: &Path) -> Result<bool, ReadError> {
    Ok(image_kind(path)?.is_some())
}

fn image_notes() -> Vec<String> {
    let mut notes = vec!["image files carry no dose metadata".to_string()];
    note_missing_dose(&DoseHeader::default(), &mut notes);
    notes
}

/// A TIFF stack, `.npy` array or single image, read whole (image files are bounded by
/// [`limits::MAX_IMAGE_FILE_BYTES`]).
pub(super) fn open_file(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let kind = image_kind(path)?.unwrap_or("image");
    if kind == "TIFF" && crate::microscope::detect(path).ok().flatten().is_none() {
        return open_tiff(path, opts);
    }
    let frames: Vec<Frame> =
        imagefile::read_frames(path, opts.mask_gaps)?.into_iter().map(|l| l.frame).collect();
    let Some(first) = frames.first() else { return Err(ReadError::new(path, None, "contains no images")) };
    if let Some((i, f)) =
        frames.iter().enumerate().find(|(_, f)| (f.width(), f.height()) != (first.width(), first.height()))
    {
        return Err(ReadError::new(
            path,
            None,
            format!(
                "page {i} is {}×{} px, page 0 is {}×{}: a series needs one size",
                f.width(),
                f.height(),
                first.width(),
                first.height()
            ),
        ));
    }
    let info = SourceInfo {
        path: path.to_owned(),
        layout: Layout::TiffStack,
        dataset: match frames.len() {
            1 => format!("{kind}, 1 image"),
            n => format!("{kind}, {n} images"),
        },
        series: file_stem(path),
        frames: frames.len(),
        width: first.width(),
        height: first.height(),
        dtype: first.dtype(),
        dose: DoseHeader::default(),
        notes: image_notes(),
        scan_shape: None,
    };
    Ok(Box::new(StackSource { info, frames }))
}

/// A TIFF stack, read page by page when asked: one page in memory however many the file holds.
fn open_tiff(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| ReadError::new(path, None, format!("cannot open: {e}")))?;
    if meta.len() > limits::MAX_IMAGE_FILE_BYTES {
        return Err(ReadError::new(
            path,
            None,
            format!("file of {} bytes exceeds the {} byte limit", meta.len(), limits::MAX_IMAGE_FILE_BYTES),
        ));
    }
    let mut pages = imagefile::TiffPages::open(path, opts.mask_gaps)?;
    let first = pages.read(0)?;
    let n = pages.pages();
    let info = SourceInfo {
        path: path.to_owned(),
        layout: Layout::TiffStack,
        dataset: match n {
            1 => "TIFF, 1 image".to_string(),
            n => format!("TIFF, {n} images"),
        },
        series: file_stem(path),
        frames: n,
        width: first.width(),
        height: first.height(),
        dtype: first.dtype(),
        dose: DoseHeader::default(),
        notes: image_notes(),
        scan_shape: None,
    };
    Ok(Box::new(TiffSource { info, pages, first: Some(first) }))
}

struct TiffSource {
    info: SourceInfo,
    pages: imagefile::TiffPages<std::io::BufReader<std::fs::File>>,
    /// Page 0, decoded at open to learn the series' size; handed out once.
    first: Option<Frame>,
}

impl FrameSource for TiffSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let frame = match (i, self.first.take()) {
            (0, Some(f)) => f,
            _ => self.pages.read(i)?,
        };
        if (frame.width(), frame.height()) != (self.info.width, self.info.height) {
            return Err(ReadError::new(
                &self.info.path,
                None,
                format!(
                    "page {i} is {}×{} px, page 0 is {}×{}: a series needs one size",
                    frame.width(),
                    frame.height(),
                    self.info.width,
                    self.info.height
                ),
            ));
        }
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}

struct StackSource {
    info: SourceInfo,
    frames: Vec<Frame>,
}

impl FrameSource for StackSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let frame = self.frames.get(i).cloned().ok_or_else(|| {
            ReadError::new(&self.info.path, None, format!("frame {i} is out of range ({} frames)", self.info.frames))
        })?;
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}

/// A folder of images, one frame per file. The first is read to learn the frame size; the
/// others when asked for.
pub(super) fn open_folder(dir: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let files = image_files(dir)?;
    let Some(first_path) = files.first() else {
        return Err(ReadError::new(dir, None, "folder holds no TIFF, PNG or .npy images"));
    };
    let first = single_frame(first_path, opts.mask_gaps)?;
    let mut notes = image_notes();
    notes.push(format!("{} files in name order, from {}", files.len(), file_name(first_path)));
    let info = SourceInfo {
        path: dir.to_owned(),
        layout: Layout::ImageFolder,
        dataset: format!("{} image files", files.len()),
        series: file_stem(dir),
        frames: files.len(),
        width: first.width(),
        height: first.height(),
        dtype: first.dtype(),
        dose: DoseHeader::default(),
        notes,
        scan_shape: None,
    };
    Ok(Box::new(FolderSource { info, files, mask_gaps: opts.mask_gaps }))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Image files in `dir` (by extension; hidden files skipped), in natural name order.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ReadError::new(dir, None, format!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReadError::new(dir, None, format!("cannot list: {e}")))?;
        let path = entry.path();
        let name = file_name(&path);
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.starts_with('.') || !EXTENSIONS.contains(&ext.as_str()) || !path.is_file() {
            continue;
        }
        files.push(path);
        if files.len() > limits::MAX_PAGES {
            return Err(ReadError::new(dir, None, format!("more than {} image files", limits::MAX_PAGES)));
        }
    }
    files.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)));
    Ok(files)
}

/// The one frame of an image file in a folder.
fn single_frame(path: &Path, mask_gaps: bool) -> Result<Frame, ReadError> {
    let mut frames = imagefile::read_frames(path, mask_gaps)?;
    if frames.len() != 1 {
        return Err(ReadError::new(
            path,
            None,
            format!("holds {} images; a folder series needs one image per file", frames.len()),
        ));
    }
    frames.pop().map(|l| l.frame).ok_or_else(|| ReadError::new(path, None, "contains no images"))
}

struct FolderSource {
    info: SourceInfo,
    files: Vec<PathBuf>,
    mask_gaps: bool,
}

impl FrameSource for FolderSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let path = self.files.get(i).ok_or_else(|| {
            ReadError::new(&self.info.path, None, format!("frame {i} is out of range ({} frames)", self.info.frames))
        })?;
        let frame = single_frame(path, self.mask_gaps)?;
        if (frame.width(), frame.height()) != (self.info.width, self.info.height) {
            return Err(ReadError::new(
                path,
                None,
                format!(
                    "is {}×{} px, the folder's first image {}×{}: a series needs one size",
                    frame.width(),
                    frame.height(),
                    self.info.width,
                    self.info.height
                ),
            ));
        }
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}

/// Name order with digit runs compared as numbers (`a2` < `a10`); ties broken by plain order.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.chars().next(), y.chars().next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (nx, rx) = split_digits(x);
                let (ny, ry) = split_digits(y);
                let (tx, ty) = (nx.trim_start_matches('0'), ny.trim_start_matches('0'));
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                (x, y) = (rx, ry);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                (x, y) = (&x[c.len_utf8()..], &y[d.len_utf8()..]);
            }
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["f10.png", "f2.png", "f1.png", "f02.png", "g.png", "F3.png"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["F3.png", "f1.png", "f02.png", "f2.png", "f10.png", "g.png"]);
    }
}
