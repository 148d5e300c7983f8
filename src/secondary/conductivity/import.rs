//! A folder of SEM images (TIFF 8/16-bit incl. palette, PNG, JPEG) plus a CSV sample table, or the
//! conductivity in the file names → [`Dataset`].
//!
//! The table has one line per sample with `sample_id` and, for training, [`TARGET_COLUMN`] (any
//! order, extra columns ignored). The descriptor columns [`DESCRIPTOR_COLUMNS`] are all present or
//! all absent: image-only models need none, and an empty cell means "not known" for that sample.
//! Optionally `images`: the sample's image files, relative to the folder, separated by `;`. Without
//! an `images` column a file belongs to the sample whose id is its whole stem or the part before
//! `_`, `-`, `.`, a space or `(` (`S07_2.tif` → `S07`, `2.01e-5 (2).tif` → `2.01e-5`; the longest
//! matching id wins). A file that belongs to no sample is an error naming it (or skipped, when
//! asked).
//!
//! Without a table ([`ImportOptions::table`] `None`) the sample id is the leading number of each
//! file name and is the conductivity in S/cm (`2.01e-5 (2).tif` → sample `2.01e-5`, σ = 2.01e-5).
//!
//! Each image's burnt-in annotation band is found ([`super::infobar`]) and cut off, or a fixed
//! number of bottom rows is cut (`crop_rows`), and every cut is reported.
//!
//! Every failure names the table line and column or the image file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Sample, SemImage};
use super::infobar::{self, Band, Edge};
use super::{ConductivityError, Result};
use crate::frame::PixelType;

pub const ID_COLUMN: &str = "sample_id";
pub const DESCRIPTOR_COLUMNS: [&str; 4] = ["x", "y", "T1_c", "T2_c"];
pub const TARGET_COLUMN: &str = "conductivity_s_per_cm";
pub const IMAGES_COLUMN: &str = "images";
/// Smaller images cannot hold even the smallest useful crop.
pub const MIN_EDGE_PX: usize = 16;
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "tif", "tiff", "jpg", "jpeg"];

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub images_dir: PathBuf,
    /// The sample table; `None`: each file name starts with the conductivity in S/cm.
    pub table: Option<PathBuf>,
    /// Training data needs a finite, positive conductivity on every line; data to predict may leave
    /// the column out or empty.
    pub require_target: bool,
    /// `None`: find and cut each image's annotation band; `Some(n)`: cut the bottom `n` rows of
    /// every image (`Some(0)`: keep every row).
    pub crop_rows: Option<usize>,
    /// Leave out image files that belong to no sample (listed in the report) instead of failing.
    pub skip_unmatched: bool,
}

/// What the import did beyond reading: bands cut, files left out.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImportNotes {
    /// (file, band) per image whose rows were cut.
    pub cropped: Vec<(String, Band)>,
    pub unmatched: Vec<String>,
    /// (file, pixel size in nm, where it was read) for the images whose metadata gives one.
    pub pixel_size_nm: Vec<(String, f64, &'static str)>,
}

/// One table line, parsed.
struct Row {
    line: u64,
    sample: Sample,
    images: Option<Vec<String>>,
}

pub fn import(opts: &ImportOptions) -> Result<(Dataset, ImportNotes)> {
    if !opts.images_dir.is_dir() {
        return Err(ConductivityError::Image { path: opts.images_dir.clone(), problem: "not a directory".into() });
    }
    let mut notes = ImportNotes::default();
    let (rows, files, where_) = match &opts.table {
        Some(table) => {
            let rows = read_table(table, opts.require_target)?;
            let files = assign_files(&opts.images_dir, table, &rows, opts.skip_unmatched, &mut notes)?;
            (rows, files, table.clone())
        }
        None => {
            let (rows, files) = samples_from_names(&opts.images_dir, opts.skip_unmatched, &mut notes)?;
            (rows, files, opts.images_dir.clone())
        }
    };
    let mut images = Vec::new();
    for (s, (row, paths)) in rows.iter().zip(&files).enumerate() {
        if paths.is_empty() {
            return Err(ConductivityError::table(
                &where_,
                Some(row.line),
                None,
                format!(
                    "sample {} has no images in {} (name them {}_1.png, {}_2.tif, … or list them in an `{IMAGES_COLUMN}` column)",
                    row.sample.id,
                    opts.images_dir.display(),
                    row.sample.id,
                    row.sample.id
                ),
            ));
        }
        for p in paths {
            let mut im = read_image(p, s)?;
            if let Some(band) = cut_band(&mut im, opts.crop_rows)? {
                notes.cropped.push((im.source.clone(), band));
            }
            if let Some(ps) = crate::imagefile::sem_pixel_size(p) {
                notes.pixel_size_nm.push((im.source.clone(), ps.metres * 1e9, ps.source));
            }
            images.push(im);
        }
    }
    let ds = Dataset {
        samples: rows.into_iter().map(|r| r.sample).collect(),
        images,
        truth: None,
        source: format!("import of {} + {}", opts.images_dir.display(), where_.display()),
    };
    ds.check(&where_)?;
    Ok((ds, notes))
}

/// Cuts the annotation band (found, or the `crop_rows` bottom rows) and says so.
pub fn cut_band(im: &mut SemImage, crop_rows: Option<usize>) -> Result<Option<Band>> {
    let band = match crop_rows {
        Some(0) => return Ok(None),
        Some(n) => Band { edge: Edge::Bottom, rows: n },
        None => match infobar::detect(&im.pixels, im.width, im.height) {
            Some(b) => b,
            None => return Ok(None),
        },
    };
    if im.height < band.rows + MIN_EDGE_PX {
        return Err(ConductivityError::Image {
            path: im.source.clone().into(),
            problem: format!("cutting {} rows leaves less than {MIN_EDGE_PX} of its {} rows", band.rows, im.height),
        });
    }
    let (pixels, h) = infobar::crop(&im.pixels, im.width, im.height, band);
    tracing::warn!(
        "{}: cut a {}-row {} at the {} ({}×{} → {}×{} px){}",
        im.source,
        band.rows,
        if crop_rows.is_some() { "band (--crop-rows)" } else { "annotation band (info bar)" },
        band.edge,
        im.width,
        im.height,
        im.width,
        h,
        if crop_rows.is_some() { "" } else { "; --crop-rows N sets the rows yourself, 0 keeps them" }
    );
    im.pixels = pixels;
    im.height = h;
    Ok(Some(band))
}

/// No table: the leading number of each file name is the sample and its conductivity (S/cm).
fn samples_from_names(dir: &Path, skip: bool, notes: &mut ImportNotes) -> Result<(Vec<Row>, Vec<Vec<PathBuf>>)> {
    let mut rows: Vec<Row> = Vec::new();
    let mut files: Vec<Vec<PathBuf>> = Vec::new();
    let mut bad = Vec::new();
    for p in image_files(dir)? {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Some((id, sigma)) = leading_number(stem) else {
            bad.push(p);
            continue;
        };
        match rows.iter().position(|r| r.sample.id == id) {
            Some(k) => files[k].push(p),
            None => {
                rows.push(Row { line: 0, sample: Sample::image_only(id.to_owned(), Some(sigma)), images: None });
                files.push(vec![p]);
            }
        }
    }
    unmatched(dir, &bad, skip, "does not start with a conductivity in S/cm (like 2.01e-5 (2).tif)", notes)?;
    if rows.is_empty() {
        return Err(ConductivityError::Image {
            path: dir.to_owned(),
            problem: "no images named by their conductivity".into(),
        });
    }
    Ok((rows, files))
}

/// The longest leading part of `stem` that is a positive finite number: (that text, the number).
fn leading_number(stem: &str) -> Option<(&str, f64)> {
    (1..=stem.len())
        .rev()
        .filter(|&k| stem.is_char_boundary(k))
        .map(|k| &stem[..k])
        .find_map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).map(|v| (t, v)))
}

/// Files that belong to no sample: one error naming them, or (asked) a warning and the report.
fn unmatched(dir: &Path, bad: &[PathBuf], skip: bool, why: &str, notes: &mut ImportNotes) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = bad
        .iter()
        .map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()))
        .collect();
    let shown = if names.len() > 8 {
        format!("{}, … ({} in all)", names[..8].join(", "), names.len())
    } else {
        names.join(", ")
    };
    if !skip {
        return Err(ConductivityError::Image {
            path: dir.to_owned(),
            problem: format!(
                "{} image file{} {why}: {shown} (rename, list them in an `{IMAGES_COLUMN}` column, or pass --skip-unmatched)",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ),
        });
    }
    tracing::warn!("{}: left out {} image file(s) that {why}: {shown}", dir.display(), names.len());
    notes.unmatched.extend(names);
    Ok(())
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConductivityError::Image { path: dir.to_owned(), problem: format!("cannot list: {e}") })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    names.sort();
    Ok(names)
}

fn read_table(path: &Path, require_target: bool) -> Result<Vec<Row>> {
    let terr = |line: Option<u64>, col: Option<&str>, p: String| ConductivityError::table(path, line, col, p);
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .map_err(|e| terr(None, None, format!("cannot read: {e}")))?;
    let headers = rdr.headers().map_err(|e| terr(Some(1), None, format!("cannot read the header line: {e}")))?.clone();
    let index: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let has_descriptors = DESCRIPTOR_COLUMNS.iter().any(|c| index.contains_key(c));
    let missing: Vec<&str> = std::iter::once(ID_COLUMN)
        .chain(DESCRIPTOR_COLUMNS.iter().copied().filter(|_| has_descriptors))
        .chain(require_target.then_some(TARGET_COLUMN))
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Err(terr(
            Some(1),
            None,
            format!(
                "missing column{} {} (header has: {}; required: {ID_COLUMN}, {TARGET_COLUMN}; the descriptor columns {} come together, or leave all four out for image-only models)",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                headers.iter().collect::<Vec<_>>().join(", "),
                DESCRIPTOR_COLUMNS.join(", ")
            ),
        ));
    }
    let target_col = index.get(TARGET_COLUMN).copied();
    let images_col = index.get(IMAGES_COLUMN).copied();
    let mut rows = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line());
            terr(line, None, format!("malformed line: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = |c: &str| rec.get(index[c]).unwrap_or("");
        let id = field("sample_id").to_owned();
        if id.is_empty() {
            return Err(terr(Some(line), Some("sample_id"), "empty sample id".into()));
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(terr(Some(line), Some("sample_id"), format!("sample {id} already appears on line {first}")));
        }
        // An absent column or an empty cell: not known (NaN); models that need it say so.
        let num = |c: &str| -> Result<f64> {
            if !index.contains_key(c) {
                return Ok(f64::NAN);
            }
            let v = field(c);
            if v.is_empty() {
                return Ok(f64::NAN);
            }
            let x: f64 =
                v.parse().map_err(|_| terr(Some(line), Some(c), format!("sample {id}: {v:?} is not a number")))?;
            if !x.is_finite() {
                return Err(terr(Some(line), Some(c), format!("sample {id}: {v:?} is not a finite number")));
            }
            Ok(x)
        };
        let (x, y, t1_c, t2_c) = (num("x")?, num("y")?, num("T1_c")?, num("T2_c")?);
        let conductivity_s_per_cm = match target_col.map(|c| rec.get(c).unwrap_or("")) {
            None | Some("") if !require_target => None,
            None | Some("") => {
                return Err(terr(Some(line), Some(TARGET_COLUMN), format!("sample {id}: no conductivity given")));
            }
            Some(v) => {
                let c: f64 = v.parse().map_err(|_| {
                    terr(Some(line), Some(TARGET_COLUMN), format!("sample {id}: {v:?} is not a number"))
                })?;
                if !(c.is_finite() && c > 0.0) {
                    return Err(terr(
                        Some(line),
                        Some(TARGET_COLUMN),
                        format!("sample {id}: conductivity must be a positive finite number in S/cm, got {v:?}"),
                    ));
                }
                Some(c)
            }
        };
        let images = images_col.map(|c| {
            rec.get(c).unwrap_or("").split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        });
        rows.push(Row { line, sample: Sample { id, x, y, t1_c, t2_c, conductivity_s_per_cm }, images });
    }
    if rows.is_empty() {
        return Err(terr(None, None, "no sample lines after the header".into()));
    }
    Ok(rows)
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub fn is_image_file(p: &Path) -> bool {
    is_image(p)
}

/// The image files of every row, in a stable order (listed order, else sorted by name).
fn assign_files(
    dir: &Path,
    table: &Path,
    rows: &[Row],
    skip: bool,
    notes: &mut ImportNotes,
) -> Result<Vec<Vec<PathBuf>>> {
    if rows.iter().all(|r| r.images.is_some()) {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut v = Vec::new();
            for name in r.images.iter().flatten() {
                let p = dir.join(name);
                if !p.is_file() {
                    return Err(ConductivityError::table(
                        table,
                        Some(r.line),
                        Some(IMAGES_COLUMN),
                        format!("sample {}: image {} does not exist", r.sample.id, p.display()),
                    ));
                }
                v.push(p);
            }
            out.push(v);
        }
        return Ok(out);
    }
    let names = image_files(dir)?;
    let mut bad = Vec::new();
    let ids: BTreeMap<&str, usize> = rows.iter().enumerate().map(|(i, r)| (r.sample.id.as_str(), i)).collect();
    let mut out = vec![Vec::new(); rows.len()];
    for p in names {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let owner = ids
            .iter()
            .filter(|(id, _)| {
                stem == **id || stem.strip_prefix(**id).is_some_and(|rest| rest.starts_with(['_', '-', '.', ' ', '(']))
            })
            .max_by_key(|(id, _)| id.len())
            .map(|(_, &i)| i);
        match owner {
            Some(i) => out[i].push(p),
            None => bad.push(p),
        }
    }
    unmatched(dir, &bad, skip, &format!("belong to no sample_id of {}", table.display()), notes)?;
    Ok(out)
}

/// Reads one image and scales it to gray 0..1: integers by their type's full range (8-bit SEM
/// images: /255), floats as they are when already in 0..1, else by their own min–max.
pub fn read_image(path: &Path, sample: usize) -> Result<SemImage> {
    let frames = crate::imagefile::read_frames(path, false)
        .map_err(|e| ConductivityError::Image { path: path.to_owned(), problem: e.problem })?;
    if frames.len() > 1 {
        tracing::warn!("{}: {} pages; using the first", path.display(), frames.len());
    }
    let Some(first) = frames.into_iter().next() else {
        return Err(ConductivityError::Image { path: path.to_owned(), problem: "contains no image".into() });
    };
    let f = first.frame;
    let (w, h) = (f.width(), f.height());
    if w < MIN_EDGE_PX || h < MIN_EDGE_PX {
        return Err(ConductivityError::Image {
            path: path.to_owned(),
            problem: format!("{w}×{h} px is smaller than the {MIN_EDGE_PX} px minimum edge"),
        });
    }
    let px = f.pixels();
    let pixels: Vec<f32> = match f.dtype() {
        PixelType::U8 => px.iter().map(|v| v / 255.0).collect(),
        PixelType::U16 => px.iter().map(|v| v / 65535.0).collect(),
        PixelType::U32 => px.iter().map(|&v| (v as f64 / u32::MAX as f64) as f32).collect(),
        PixelType::F32 => {
            let (lo, hi) = px.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            if lo >= 0.0 && hi <= 1.0 {
                px.to_vec()
            } else if hi > lo {
                tracing::warn!("{}: float pixels span {lo}..{hi}; scaled to 0..1 by their own range", path.display());
                px.iter().map(|v| (v - lo) / (hi - lo)).collect()
            } else {
                return Err(ConductivityError::Image {
                    path: path.to_owned(),
                    problem: "every pixel has the same value".into(),
                });
            }
        }
    };
    Ok(SemImage { sample, width: w, height: h, pixels, source: path.display().to_string() })
}
