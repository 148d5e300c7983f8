//! A folder of SEM images (TIFF/PNG, any bit depth) plus a CSV sample table → [`Dataset`].
//!
//! The table has one line per sample with the columns [`REQUIRED_COLUMNS`] (any order, extra
//! columns ignored) and optionally `images`: the sample's image files, relative to the folder,
//! separated by `;`. Without an `images` column a file belongs to the sample whose id is its whole
//! stem or the part before `_`, `-` or `.` (`S07_2.tif` → `S07`; the longest matching id wins).
//!
//! Every failure names the table line and column or the image file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Sample, SemImage};
use super::{ConductivityError, Result};
use crate::frame::PixelType;

pub const REQUIRED_COLUMNS: [&str; 5] = ["sample_id", "x", "y", "T1_c", "T2_c"];
pub const TARGET_COLUMN: &str = "conductivity_s_per_cm";
pub const IMAGES_COLUMN: &str = "images";
/// Smaller images cannot hold even the smallest useful crop.
pub const MIN_EDGE_PX: usize = 16;
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "tif", "tiff"];

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub images_dir: PathBuf,
    pub table: PathBuf,
    /// Training data needs a finite, positive conductivity on every line; data to predict may leave
    /// the column out or empty.
    pub require_target: bool,
}

/// One table line, parsed.
struct Row {
    line: u64,
    sample: Sample,
    images: Option<Vec<String>>,
}

pub fn import(opts: &ImportOptions) -> Result<Dataset> {
    let rows = read_table(&opts.table, opts.require_target)?;
    if !opts.images_dir.is_dir() {
        return Err(ConductivityError::Image { path: opts.images_dir.clone(), problem: "not a directory".into() });
    }
    let files = assign_files(&opts.images_dir, &opts.table, &rows)?;
    let mut images = Vec::new();
    for (s, (row, paths)) in rows.iter().zip(&files).enumerate() {
        if paths.is_empty() {
            return Err(ConductivityError::table(
                &opts.table,
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
            images.push(read_image(p, s)?);
        }
    }
    let ds = Dataset {
        samples: rows.into_iter().map(|r| r.sample).collect(),
        images,
        truth: None,
        source: format!("import of {} + {}", opts.images_dir.display(), opts.table.display()),
    };
    ds.check(&opts.table)?;
    Ok(ds)
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
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .chain(require_target.then_some(TARGET_COLUMN))
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Err(terr(
            Some(1),
            None,
            format!(
                "missing column{} {} (header has: {}; required: {}, {TARGET_COLUMN})",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                headers.iter().collect::<Vec<_>>().join(", "),
                REQUIRED_COLUMNS.join(", ")
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
        let num = |c: &str| -> Result<f64> {
            let v = field(c);
            let x: f64 = v.parse().map_err(|_| terr(Some(line), Some(c), format!("sample {id}: {v:?} is not a number")))?;
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
                let c: f64 = v
                    .parse()
                    .map_err(|_| terr(Some(line), Some(TARGET_COLUMN), format!("sample {id}: {v:?} is not a number")))?;
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

/// The image files of every row, in a stable order (listed order, else sorted by name).
fn assign_files(dir: &Path, table: &Path, rows: &[Row]) -> Result<Vec<Vec<PathBuf>>> {
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
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConductivityError::Image { path: dir.to_owned(), problem: format!("cannot list: {e}") })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    names.sort();
    let ids: BTreeMap<&str, usize> = rows.iter().enumerate().map(|(i, r)| (r.sample.id.as_str(), i)).collect();
    let mut out = vec![Vec::new(); rows.len()];
    for p in names {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let owner = ids
            .iter()
            .filter(|(id, _)| {
                stem == **id
                    || stem.strip_prefix(**id).is_some_and(|rest| rest.starts_with(['_', '-', '.']))
            })
            .max_by_key(|(id, _)| id.len())
            .map(|(_, &i)| i);
        match owner {
            Some(i) => out[i].push(p),
            None => tracing::warn!("{}: belongs to no sample in {} (ignored)", p.display(), table.display()),
        }
    }
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
                return Err(ConductivityError::Image { path: path.to_owned(), problem: "every pixel has the same value".into() });
            }
        }
    };
    Ok(SemImage { sample, width: w, height: h, pixels, source: path.display().to_string() })
}
