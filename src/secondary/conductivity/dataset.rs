//! The stage's dataset: SEM images of any size (≥ the crop), the sample table and which sample each
//! image shows, in one HDF5 file.
//!
//! Layout (documented for users in docs/conductivity.md):
//! - `/` attributes `format` = [`FORMAT`], `source` (what made the file).
//! - `/samples/{sample_id, x, y, T1_c, T2_c, conductivity_s_per_cm}`: one entry per sample (sample
//!   id as UTF-8 strings, the rest f64; conductivity NaN = not measured).
//! - `/images/NNNNNN`: one 2-D f32 dataset per image (height × width, gray 0..1), attributes
//!   `sample_index` and `source` (the file it was imported from).
//! - `/image_sample`: u64 per image, the row of `/samples` it belongs to.
//! - `/truth/…` (synthetic sets only): the hidden per-sample factors and per-image phase maps.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};

use super::{ConductivityError, Result, h5err};

pub const FORMAT: &str = "beamwatch-conductivity-dataset/1";

/// One pellet: composition x, y of Li(1+2x+y) Ca(x) Zr(2−x) Si(y) P(3−y) O12, first and second
/// heating temperatures (NaN: not known — image-only data), and the measured ionic conductivity at
/// 30 °C.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub id: String,
    pub x: f64,
    pub y: f64,
    pub t1_c: f64,
    pub t2_c: f64,
    /// `None` for samples whose conductivity is to be predicted.
    pub conductivity_s_per_cm: Option<f64>,
}

impl Sample {
    /// A sample known only by its images (and perhaps its conductivity).
    pub fn image_only(id: String, conductivity_s_per_cm: Option<f64>) -> Self {
        Self { id, x: f64::NAN, y: f64::NAN, t1_c: f64::NAN, t2_c: f64::NAN, conductivity_s_per_cm }
    }

    /// x, y, T1 and T2 are all known (models with descriptors need them).
    pub fn has_descriptors(&self) -> bool {
        [self.x, self.y, self.t1_c, self.t2_c].iter().all(|v| v.is_finite())
    }

    pub fn log10_conductivity(&self) -> Option<f64> {
        self.conductivity_s_per_cm.map(f64::log10)
    }
}

/// One SEM image (field of view) of a sample, gray values scaled to 0..1.
#[derive(Clone, Debug, PartialEq)]
pub struct SemImage {
    pub sample: usize,
    pub width: usize,
    pub height: usize,
    /// Row-major, `height × width`.
    pub pixels: Vec<f32>,
    /// Where it came from (file name, or `synthetic`).
    pub source: String,
}

/// What the synthetic generator knows and the images only show: for evaluating interpretability
/// and for the documentation's variance budget. Absent in imported data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Truth {
    /// Per sample: the pellet's hidden processing factor (standard normal), porosity (area
    /// fraction), mean grain size (px), β-phase area fraction, grain-boundary / bulk conductivity
    /// ratio, log10 bulk conductivity (S/cm) and log10 microstructure factor.
    pub hidden_factor: Vec<f64>,
    pub porosity: Vec<f64>,
    pub grain_px: Vec<f64>,
    pub beta_fraction: Vec<f64>,
    pub boundary_ratio: Vec<f64>,
    pub log10_bulk_s_per_cm: Vec<f64>,
    pub log10_microstructure_factor: Vec<f64>,
    /// Per image: the phase of every pixel (see [`super::synth::Phase`]).
    pub phase: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    pub images: Vec<SemImage>,
    pub truth: Option<Truth>,
    /// What made it (`import of DIR + TABLE`, `beamwatch conductivity synth …`).
    pub source: String,
}

impl Dataset {
    /// Indices of the images of sample `s`.
    pub fn images_of(&self, s: usize) -> Vec<usize> {
        self.images.iter().enumerate().filter(|(_, im)| im.sample == s).map(|(i, _)| i).collect()
    }

    /// Ids of the samples without all four descriptors (x, y, T1_c, T2_c).
    pub fn samples_without_descriptors(&self) -> Vec<&str> {
        self.samples.iter().filter(|s| !s.has_descriptors()).map(|s| s.id.as_str()).collect()
    }

    /// Smallest image edge, px (crops must fit).
    pub fn min_edge_px(&self) -> usize {
        self.images.iter().map(|im| im.width.min(im.height)).min().unwrap_or(0)
    }

    /// Consistency every consumer relies on: each image belongs to an existing sample, each sample has
    /// an image, pixels fill the stated size and are finite, descriptors are finite.
    pub fn check(&self, path: &Path) -> Result<()> {
        for (i, im) in self.images.iter().enumerate() {
            if im.sample >= self.samples.len() {
                return Err(ConductivityError::file(
                    path,
                    format!("image {i} ({}) names sample row {} but there are {} samples", im.source, im.sample, self.samples.len()),
                ));
            }
            if im.width == 0 || im.height == 0 || im.pixels.len() != im.width * im.height {
                return Err(ConductivityError::file(
                    path,
                    format!("image {i} ({}): {} values for {}×{} px", im.source, im.pixels.len(), im.width, im.height),
                ));
            }
            if let Some(k) = im.pixels.iter().position(|v| !v.is_finite()) {
                return Err(ConductivityError::file(
                    path,
                    format!("image {i} ({}): non-finite pixel at x={}, y={}", im.source, k % im.width, k / im.width),
                ));
            }
        }
        let mut counts = vec![0usize; self.samples.len()];
        for im in &self.images {
            counts[im.sample] += 1;
        }
        for (s, (sample, n)) in self.samples.iter().zip(&counts).enumerate() {
            if *n == 0 {
                return Err(ConductivityError::file(path, format!("sample {} (row {}) has no images", sample.id, s + 1)));
            }
            for (name, v) in [("x", sample.x), ("y", sample.y), ("T1_c", sample.t1_c), ("T2_c", sample.t2_c)] {
                // NaN = not known (image-only data); infinities are errors.
                if v.is_infinite() {
                    return Err(ConductivityError::file(path, format!("sample {}: {name} is {v}", sample.id)));
                }
            }
            if let Some(c) = sample.conductivity_s_per_cm
                && !(c.is_finite() && c > 0.0)
            {
                return Err(ConductivityError::file(
                    path,
                    format!("sample {}: conductivity_s_per_cm must be a positive number, got {c}", sample.id),
                ));
            }
        }
        Ok(())
    }

    /// log10 σ of every sample, or an error naming the first sample without a measurement.
    pub fn log10_targets(&self, path: &Path) -> Result<Vec<f64>> {
        self.samples
            .iter()
            .enumerate()
            .map(|(s, sm)| {
                sm.log10_conductivity().ok_or_else(|| {
                    ConductivityError::file(
                        path,
                        format!("sample {} (row {}) has no measured conductivity_s_per_cm; training needs one for every sample", sm.id, s + 1),
                    )
                })
            })
            .collect()
    }

    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        let f = hdf5::File::create(path).map_err(h5err(path, "create"))?;
        str_attr(&f, "format", FORMAT).map_err(h5err(path, "format attribute"))?;
        str_attr(&f, "source", &self.source).map_err(h5err(path, "source attribute"))?;
        let g = f.create_group("samples").map_err(h5err(path, "/samples"))?;
        let ids: Vec<VarLenUnicode> = self.samples.iter().map(|s| vlen(&s.id)).collect();
        g.new_dataset_builder().with_data(&Array1::from(ids)).create("sample_id").map_err(h5err(path, "/samples/sample_id"))?;
        let col = |name: &str, get: &dyn Fn(&Sample) -> f64| -> Result<()> {
            let v: Array1<f64> = self.samples.iter().map(get).collect();
            g.new_dataset_builder().with_data(&v).create(name).map_err(h5err(path, format!("/samples/{name}")))?;
            Ok(())
        };
        col("x", &|s| s.x)?;
        col("y", &|s| s.y)?;
        col("T1_c", &|s| s.t1_c)?;
        col("T2_c", &|s| s.t2_c)?;
        col("conductivity_s_per_cm", &|s| s.conductivity_s_per_cm.unwrap_or(f64::NAN))?;
        let ig = f.create_group("images").map_err(h5err(path, "/images"))?;
        for (i, im) in self.images.iter().enumerate() {
            let name = image_name(i);
            let a = Array2::from_shape_vec((im.height, im.width), im.pixels.clone())
                .map_err(|e| ConductivityError::file(path, format!("image {i}: {e}")))?;
            let d = ig
                .new_dataset_builder()
                .deflate(1)
                .chunk((im.height, im.width))
                .with_data(&a)
                .create(name.as_str())
                .map_err(h5err(path, format!("/images/{name}")))?;
            d.new_attr::<u64>()
                .create("sample_index")
                .and_then(|at| at.write_scalar(&(im.sample as u64)))
                .map_err(h5err(path, format!("/images/{name} sample_index")))?;
            str_attr(&d, "source", &im.source).map_err(h5err(path, format!("/images/{name} source")))?;
        }
        let map: Array1<u64> = self.images.iter().map(|im| im.sample as u64).collect();
        f.new_dataset_builder().with_data(&map).create("image_sample").map_err(h5err(path, "/image_sample"))?;
        if let Some(t) = &self.truth {
            write_truth(&f, path, t, &self.images)?;
        }
        f.flush().map_err(h5err(path, "flush"))?;
        Ok(path.to_owned())
    }

    pub fn read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ConductivityError::file(path, "no such dataset file (make one with `beamwatch conductivity import` or `synth`)"));
        }
        let f = hdf5::File::open(path).map_err(h5err(path, "open"))?;
        let format = read_str_attr(&f, "format").unwrap_or_default();
        if format != FORMAT {
            return Err(ConductivityError::file(
                path,
                format!("not a conductivity dataset (format attribute {format:?}, expected {FORMAT:?})"),
            ));
        }
        let source = read_str_attr(&f, "source").unwrap_or_default();
        let g = f.group("samples").map_err(h5err(path, "/samples"))?;
        let ids: Vec<String> = g
            .dataset("sample_id")
            .and_then(|d| d.read_1d::<VarLenUnicode>())
            .map_err(h5err(path, "/samples/sample_id"))?
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let col = |name: &str| -> Result<Vec<f64>> {
            let v = g.dataset(name).and_then(|d| d.read_1d::<f64>()).map_err(h5err(path, format!("/samples/{name}")))?;
            if v.len() != ids.len() {
                return Err(ConductivityError::file(path, format!("/samples/{name} has {} rows, sample_id {}", v.len(), ids.len())));
            }
            Ok(v.to_vec())
        };
        let (x, y, t1, t2, c) = (col("x")?, col("y")?, col("T1_c")?, col("T2_c")?, col("conductivity_s_per_cm")?);
        let samples = (0..ids.len())
            .map(|i| Sample {
                id: ids[i].clone(),
                x: x[i],
                y: y[i],
                t1_c: t1[i],
                t2_c: t2[i],
                conductivity_s_per_cm: (!c[i].is_nan()).then_some(c[i]),
            })
            .collect();
        let map = f.dataset("image_sample").and_then(|d| d.read_1d::<u64>()).map_err(h5err(path, "/image_sample"))?;
        let ig = f.group("images").map_err(h5err(path, "/images"))?;
        let mut images = Vec::with_capacity(map.len());
        for (i, &s) in map.iter().enumerate() {
            let name = image_name(i);
            let d = ig.dataset(&name).map_err(h5err(path, format!("/images/{name}")))?;
            let a = d.read_2d::<f32>().map_err(h5err(path, format!("/images/{name}")))?;
            let (h, w) = a.dim();
            let src = read_str_attr(&d, "source").unwrap_or_else(|| format!("/images/{name}"));
            images.push(SemImage { sample: s as usize, width: w, height: h, pixels: a.iter().copied().collect(), source: src });
        }
        let truth = if f.link_exists("truth") { Some(read_truth(&f, path, images.len())?) } else { None };
        let ds = Self { samples, images, truth, source };
        ds.check(path)?;
        Ok(ds)
    }
}

pub fn image_name(i: usize) -> String {
    format!("{i:06}")
}

fn vlen(s: &str) -> VarLenUnicode {
    // Only an interior NUL makes the conversion fail; such a character has no place in a name.
    s.replace('\0', "").parse().unwrap_or_default()
}

pub(crate) fn str_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&vlen(value))
}

pub(crate) fn read_str_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    loc.attr(name).ok()?.read_scalar::<VarLenUnicode>().ok().map(|v| v.as_str().to_owned())
}

const TRUTH_COLUMNS: [&str; 7] = [
    "hidden_factor",
    "porosity",
    "grain_px",
    "beta_fraction",
    "boundary_ratio",
    "log10_bulk_s_per_cm",
    "log10_microstructure_factor",
];

fn truth_columns(t: &Truth) -> [&Vec<f64>; 7] {
    [
        &t.hidden_factor,
        &t.porosity,
        &t.grain_px,
        &t.beta_fraction,
        &t.boundary_ratio,
        &t.log10_bulk_s_per_cm,
        &t.log10_microstructure_factor,
    ]
}

fn write_truth(f: &hdf5::File, path: &Path, t: &Truth, images: &[SemImage]) -> Result<()> {
    let g = f.create_group("truth").map_err(h5err(path, "/truth"))?;
    for (name, col) in TRUTH_COLUMNS.iter().zip(truth_columns(t)) {
        g.new_dataset_builder()
            .with_data(&Array1::from(col.clone()))
            .create(*name)
            .map_err(h5err(path, format!("/truth/{name}")))?;
    }
    let pg = g.create_group("phase").map_err(h5err(path, "/truth/phase"))?;
    for (i, (ph, im)) in t.phase.iter().zip(images).enumerate() {
        let name = image_name(i);
        let a = Array2::from_shape_vec((im.height, im.width), ph.clone())
            .map_err(|e| ConductivityError::file(path, format!("phase map {i}: {e}")))?;
        pg.new_dataset_builder()
            .deflate(1)
            .with_data(&a)
            .create(name.as_str())
            .map_err(h5err(path, format!("/truth/phase/{name}")))?;
    }
    Ok(())
}

fn read_truth(f: &hdf5::File, path: &Path, n_images: usize) -> Result<Truth> {
    let g = f.group("truth").map_err(h5err(path, "/truth"))?;
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for name in TRUTH_COLUMNS {
        cols.push(g.dataset(name).and_then(|d| d.read_1d::<f64>()).map_err(h5err(path, format!("/truth/{name}")))?.to_vec());
    }
    let pg = g.group("phase").map_err(h5err(path, "/truth/phase"))?;
    let phase = (0..n_images)
        .map(|i| {
            let name = image_name(i);
            pg.dataset(&name)
                .and_then(|d| d.read_2d::<u8>())
                .map(|a| a.iter().copied().collect())
                .map_err(h5err(path, format!("/truth/phase/{name}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut it = cols.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(Truth {
        hidden_factor: next(),
        porosity: next(),
        grain_px: next(),
        beta_fraction: next(),
        boundary_ratio: next(),
        log10_bulk_s_per_cm: next(),
        log10_microstructure_factor: next(),
        phase,
    })
}
