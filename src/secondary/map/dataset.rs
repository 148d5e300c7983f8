//! A table of compounds → the featurised HDF5 dataset the map trains on.
//!
//! The table is a CSV with a header. Columns are found by name (first match wins):
//! - id: `id`, `ID`; formula: `formula`, `Reduced Composition`;
//! - target: `Ionic conductivity (S cm-1)` or `conductivity_s_per_cm` (S/cm; the target is its
//!   log10), else `target` (used as it is);
//! - optional: `cif` (path relative to the table's folder or to `--cifs`), `Space group`
//!   (`space_group`), `Family` (a reference label, only compared with our rules).
//!
//! A conductivity written as an upper bound (OBELiX: `<1E-10`, `<1E-8`) is censored: by default it
//! is kept at the bound (log10 = −10) and flagged in `/censored`; `Censored::Drop` leaves such rows
//! out. CIFs come from a folder or a `.tar.gz` (read in place), matched by `<id>.cif` anywhere in it
//! or by the `cif` column. A compound without a CIF gets an all-zero structure row and
//! `has_structure = 0`; nothing structural is invented for it.
//!
//! HDF5 layout (`/` of the dataset file): `ids`, `formulas`, `families`, `family_labels`,
//! `space_groups`, `cif_files` (strings, n); `target` (f64, n, attribute `units`); `censored`,
//! `has_structure`, `split` (u8, n; split 0 train, 1 test, 2 neither); `composition` (f32, n × 1785);
//! `structure` (f32, n × 1160); `composition_labels`, `structure_labels`; root attributes
//! `kind` = `beamwatch-map-dataset`, `structure_settings` (JSON), `target_name`, `source`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use rayon::prelude::*;

use super::structure::{self, StructureSettings};
use super::{MapError, cif, families, formula, h5, histograms};

pub const KIND: &str = "beamwatch-map-dataset";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Censored {
    /// Keep "<X" at log10 X, flagged.
    #[default]
    Bound,
    /// Leave such rows out.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train = 0,
    Test = 1,
    Neither = 2,
}

/// One usable row of the table.
#[derive(Debug, Clone)]
pub struct InputRow {
    /// Line number in the file (header = 1).
    pub row: usize,
    pub id: String,
    pub formula: String,
    pub composition: formula::Composition,
    pub target: f64,
    pub censored: bool,
    pub cif_hint: Option<String>,
    pub space_group: Option<String>,
    pub family_label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub rows: Vec<InputRow>,
    pub target_name: String,
    pub target_units: String,
    pub dropped_censored: usize,
}

fn find_col(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    names.iter().find_map(|n| headers.iter().position(|h| h.trim() == *n))
}

fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>, MapError> {
    let f = std::fs::File::open(path).map_err(|source| MapError::Io { path: path.to_path_buf(), source })?;
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(f))
}

/// Reads and checks every row of the compound table.
pub fn read_table(path: &Path, censored: Censored) -> Result<Table, MapError> {
    let mut rdr = csv_reader(path)?;
    let headers = rdr.headers().map_err(|e| MapError::Table { file: path.to_path_buf(), why: e.to_string() })?.clone();
    let missing = |what: &str, names: &[&str]| MapError::Table {
        file: path.to_path_buf(),
        why: format!("no {what} column (looked for {})", names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")),
    };
    let id_names = ["id", "ID"];
    let formula_names = ["formula", "Reduced Composition"];
    let conductivity_names = ["Ionic conductivity (S cm-1)", "conductivity_s_per_cm"];
    let c_id = find_col(&headers, &id_names).ok_or_else(|| missing("id", &id_names))?;
    let c_formula = find_col(&headers, &formula_names).ok_or_else(|| missing("formula", &formula_names))?;
    let (c_target, log10) = match find_col(&headers, &conductivity_names) {
        Some(c) => (c, true),
        None => (find_col(&headers, &["target"]).ok_or_else(|| missing("target", &["Ionic conductivity (S cm-1)", "conductivity_s_per_cm", "target"]))?, false),
    };
    let target_col_name = headers.get(c_target).unwrap_or("target").to_string();
    let c_cif = find_col(&headers, &["cif", "cif_path"]);
    let c_sg = find_col(&headers, &["Space group", "space_group"]);
    let c_family = find_col(&headers, &["Family"]);
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut dropped = 0;
    for (k, rec) in rdr.records().enumerate() {
        let row = k + 2;
        let rec = rec.map_err(|e| MapError::Table { file: path.to_path_buf(), why: format!("row {row}: {e}") })?;
        let field = |c: usize| rec.get(c).unwrap_or("").trim().to_string();
        let id = field(c_id);
        let row_err = |column: &str, why: String| MapError::Row {
            file: path.to_path_buf(),
            row,
            id: (!id.is_empty()).then(|| id.clone()),
            column: column.to_string(),
            why,
        };
        if id.is_empty() {
            return Err(row_err(headers.get(c_id).unwrap_or("id"), "empty id".into()));
        }
        if let Some(prev) = seen.insert(id.clone(), row) {
            return Err(row_err(headers.get(c_id).unwrap_or("id"), format!("id repeated (first on row {prev})")));
        }
        let formula_text = field(c_formula);
        let composition = formula::parse(&formula_text).map_err(|e| row_err(headers.get(c_formula).unwrap_or("formula"), e.to_string()))?;
        let (target, is_censored) = parse_target(&field(c_target), log10).map_err(|why| row_err(&target_col_name, why))?;
        if is_censored && censored == Censored::Drop {
            dropped += 1;
            continue;
        }
        let opt = |c: Option<usize>| c.map(field).filter(|s| !s.is_empty());
        rows.push(InputRow {
            row,
            id,
            formula: formula_text,
            composition,
            target,
            censored: is_censored,
            cif_hint: opt(c_cif),
            space_group: opt(c_sg),
            family_label: opt(c_family),
        });
    }
    if rows.is_empty() {
        return Err(MapError::Table { file: path.to_path_buf(), why: "no rows".into() });
    }
    let (target_name, target_units) = if log10 {
        (format!("log10 of {target_col_name}"), "log10(S/cm)".to_string())
    } else {
        (target_col_name.clone(), "as given".to_string())
    };
    Ok(Table { rows, target_name, target_units, dropped_censored: dropped })
}

/// A target cell → (value, censored). Conductivities (S/cm) become log10; `<X` is an upper bound.
pub fn parse_target(s: &str, log10: bool) -> Result<(f64, bool), String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty target".into());
    }
    let (num, censored) = match t.strip_prefix('<').or_else(|| t.strip_prefix('≤')) {
        Some(rest) => (rest.trim(), true),
        None => (t, false),
    };
    let v: f64 = num.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| format!("'{t}' is not a number"))?;
    if !log10 {
        return Ok((v, censored));
    }
    if v <= 0.0 {
        return Err(format!("conductivity {t} S/cm must be > 0 to take its log10"));
    }
    Ok((v.log10(), censored))
}

/// Lists of ids for the train/test split (a CSV with an id column, e.g. OBELiX's train.csv).
pub fn read_ids(path: &Path) -> Result<Vec<String>, MapError> {
    let mut rdr = csv_reader(path)?;
    let headers = rdr.headers().map_err(|e| MapError::Table { file: path.to_path_buf(), why: e.to_string() })?.clone();
    let c = find_col(&headers, &["id", "ID"]).ok_or_else(|| MapError::Table { file: path.to_path_buf(), why: "no id column ('id' or 'ID')".into() })?;
    let mut out = Vec::new();
    for (k, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| MapError::Table { file: path.to_path_buf(), why: format!("row {}: {e}", k + 2) })?;
        if let Some(id) = rec.get(c).map(str::trim).filter(|s| !s.is_empty()) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Where CIF files come from.
pub enum CifSource {
    None,
    Dir(PathBuf),
    /// A .tar.gz read once: file stem → (name inside the archive, text).
    Archive { path: PathBuf, files: HashMap<String, (String, String)> },
}

impl CifSource {
    pub fn open(path: Option<&Path>) -> Result<CifSource, MapError> {
        let Some(p) = path else { return Ok(CifSource::None) };
        if p.is_dir() {
            return Ok(CifSource::Dir(p.to_path_buf()));
        }
        let io = |source| MapError::Io { path: p.to_path_buf(), source };
        let f = std::fs::File::open(p).map_err(io)?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut files = HashMap::new();
        let entries = ar.entries().map_err(|e| MapError::Format { path: p.to_path_buf(), why: format!("not a .tar.gz: {e}") })?;
        for e in entries {
            let mut e = e.map_err(|e| MapError::Format { path: p.to_path_buf(), why: format!("archive entry: {e}") })?;
            let name = e.path().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let is_cif = Path::new(&name).extension().is_some_and(|x| x.eq_ignore_ascii_case("cif"));
            if !is_cif || !e.header().entry_type().is_file() {
                continue;
            }
            let stem = Path::new(&name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let mut text = String::new();
            e.read_to_string(&mut text).map_err(|e| MapError::Format { path: p.to_path_buf(), why: format!("{name}: {e}") })?;
            files.insert(stem, (name, text));
        }
        Ok(CifSource::Archive { path: p.to_path_buf(), files })
    }

    /// The CIF of a compound, if there is one: (display name, text).
    pub fn find(&self, id: &str, hint: Option<&str>, table_dir: &Path) -> Result<Option<(String, String)>, MapError> {
        let read = |p: PathBuf| -> Result<Option<(String, String)>, MapError> {
            std::fs::read_to_string(&p).map(|t| Some((p.display().to_string(), t))).map_err(|source| MapError::Io { path: p, source })
        };
        if let Some(h) = hint {
            let candidates = [Some(table_dir.join(h)), if let CifSource::Dir(d) = self { Some(d.join(h)) } else { None }];
            for c in candidates.into_iter().flatten() {
                if c.is_file() {
                    return read(c);
                }
            }
            if let CifSource::Archive { path, files } = self {
                let stem = Path::new(h).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                if let Some((n, t)) = files.get(&stem) {
                    return Ok(Some((format!("{}:{n}", path.display()), t.clone())));
                }
            }
            return Err(MapError::Io { path: table_dir.join(h), source: std::io::Error::from(std::io::ErrorKind::NotFound) });
        }
        match self {
            CifSource::None => Ok(None),
            CifSource::Dir(d) => {
                let p = d.join(format!("{id}.cif"));
                if p.is_file() { read(p) } else { Ok(None) }
            }
            CifSource::Archive { path, files } => Ok(files.get(id).map(|(n, t)| (format!("{}:{n}", path.display()), t.clone()))),
        }
    }

    /// How many CIFs an archive holds (None for a folder or no source).
    pub fn archive_len(&self) -> Option<usize> {
        match self {
            CifSource::Archive { files, .. } => Some(files.len()),
            _ => None,
        }
    }
}

/// The featurised dataset (in memory; `write`/`read` move it to and from HDF5).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub ids: Vec<String>,
    pub formulas: Vec<String>,
    pub families: Vec<String>,
    pub family_labels: Vec<String>,
    pub space_groups: Vec<String>,
    pub cif_files: Vec<String>,
    pub target: Vec<f64>,
    pub target_name: String,
    pub target_units: String,
    pub censored: Vec<bool>,
    pub has_structure: Vec<bool>,
    pub split: Vec<Split>,
    pub composition: Array2<f32>,
    pub structure: Array2<f32>,
    pub structure_settings: StructureSettings,
    pub source: String,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FeaturizeReport {
    pub compounds: usize,
    pub with_structure: usize,
    pub censored: usize,
    pub dropped_censored: usize,
    pub train: usize,
    pub test: usize,
    pub composition_dim: usize,
    pub structure_dim: usize,
    /// CPU time summed over compounds (ms per compound), for comparing machines.
    pub composition_ms_per_compound: f64,
    pub structure_ms_per_cif: f64,
    pub wall_s: f64,
    /// Rows whose CIF composition differs from the formula's by more than 0.05 in some atomic fraction.
    pub cif_formula_mismatches: Vec<String>,
    /// Sites whose symmetry expansion disagrees with the CIF's stated multiplicity.
    pub multiplicity_mismatches: usize,
    /// Our family rules against the table's `Family` column where it has one: (agree, compared).
    pub family_agreement: Option<(usize, usize)>,
}

pub struct FeaturizeInput<'a> {
    pub table: &'a Path,
    pub cifs: Option<&'a Path>,
    pub train_ids: Option<&'a Path>,
    pub test_ids: Option<&'a Path>,
    pub censored: Censored,
    pub settings: StructureSettings,
}

/// Reads the table and CIFs and computes every descriptor; `progress` is told each compound done.
pub fn featurize(input: &FeaturizeInput<'_>, progress: &(dyn Fn() + Sync)) -> Result<(Dataset, FeaturizeReport), MapError> {
    let t0 = Instant::now();
    let table = read_table(input.table, input.censored)?;
    let source = CifSource::open(input.cifs)?;
    let table_dir = input.table.parent().map(Path::to_path_buf).unwrap_or_default();
    let train: Option<Vec<String>> = input.train_ids.map(read_ids).transpose()?;
    let test: Option<Vec<String>> = input.test_ids.map(read_ids).transpose()?;
    let s = input.settings;

    struct Structural {
        cif_name: String,
        descriptor: Vec<f64>,
        ms: f64,
        space_group: String,
        multiplicity_mismatches: usize,
        formula_mismatch: Option<String>,
    }
    struct Out {
        comp: Vec<f64>,
        comp_ms: f64,
        structure: Option<Structural>,
    }
    let outs: Vec<Result<Out, MapError>> = table
        .rows
        .par_iter()
        .map(|r| {
            let t = Instant::now();
            let comp = histograms::descriptor(&r.composition);
            let comp_ms = t.elapsed().as_secs_f64() * 1e3;
            let found = source.find(&r.id, r.cif_hint.as_deref(), &table_dir)?;
            let structure = match found {
                None => None,
                Some((name, text)) => {
                    let t = Instant::now();
                    let cell = cif::parse(&text, &name)
                        .map_err(|error| MapError::Cif { context: format!("{}: row {} (id '{}'): ", input.table.display(), r.row, r.id), error })?;
                    let d = structure::descriptor(&cell, &s);
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let cell_comp = formula::Composition { amounts: cell.composition() };
                    let worst = r
                        .composition
                        .fractions()
                        .iter()
                        .map(|&(z, x)| (x - cell_comp.fraction_of(z)).abs())
                        .chain(cell_comp.fractions().iter().map(|&(z, x)| (x - r.composition.fraction_of(z)).abs()))
                        .fold(0.0, f64::max);
                    let mismatch = (worst > 0.05).then(|| {
                        format!("{} ({}): CIF gives {}, fractions differ by up to {worst:.3}", r.id, r.formula, structure::cell_formula(&cell))
                    });
                    Some(Structural {
                        cif_name: name,
                        descriptor: d,
                        ms,
                        space_group: cell.space_group.clone().unwrap_or_default(),
                        multiplicity_mismatches: cell.multiplicity_mismatches.len(),
                        formula_mismatch: mismatch,
                    })
                }
            };
            progress();
            Ok(Out { comp, comp_ms, structure })
        })
        .collect();
    let n = table.rows.len();
    let mut composition = Array2::<f32>::zeros((n, histograms::DIM));
    let mut structure_m = Array2::<f32>::zeros((n, s.dim()));
    let mut ds = Dataset {
        ids: Vec::with_capacity(n),
        formulas: Vec::with_capacity(n),
        families: Vec::with_capacity(n),
        family_labels: Vec::with_capacity(n),
        space_groups: Vec::with_capacity(n),
        cif_files: Vec::with_capacity(n),
        target: Vec::with_capacity(n),
        target_name: table.target_name.clone(),
        target_units: table.target_units.clone(),
        censored: Vec::with_capacity(n),
        has_structure: Vec::with_capacity(n),
        split: Vec::with_capacity(n),
        composition: Array2::zeros((0, 0)),
        structure: Array2::zeros((0, 0)),
        structure_settings: s,
        source: input.table.display().to_string(),
    };
    let (mut comp_ms, mut struct_ms, mut n_struct, mut mult) = (0.0, 0.0, 0, 0);
    let mut mismatches = Vec::new();
    let (mut agree, mut compared) = (0, 0);
    for (i, (r, o)) in table.rows.iter().zip(outs).enumerate() {
        let o = o?;
        comp_ms += o.comp_ms;
        for (k, v) in o.comp.iter().enumerate() {
            composition[[i, k]] = *v as f32;
        }
        let mut sg = r.space_group.clone().unwrap_or_default();
        match o.structure {
            Some(st) => {
                struct_ms += st.ms;
                n_struct += 1;
                mult += st.multiplicity_mismatches;
                for (k, v) in st.descriptor.iter().enumerate() {
                    structure_m[[i, k]] = *v as f32;
                }
                if sg.is_empty() {
                    sg = st.space_group;
                }
                mismatches.extend(st.formula_mismatch);
                ds.cif_files.push(st.cif_name);
                ds.has_structure.push(true);
            }
            None => {
                ds.cif_files.push(String::new());
                ds.has_structure.push(false);
            }
        }
        let family = families::classify(&r.composition, (!sg.is_empty()).then_some(sg.as_str()));
        if let Some(l) = &r.family_label {
            compared += 1;
            agree += usize::from(families::from_obelix_label(l) == family);
        }
        ds.ids.push(r.id.clone());
        ds.formulas.push(r.formula.clone());
        ds.families.push(family.to_string());
        ds.family_labels.push(r.family_label.clone().unwrap_or_default());
        ds.space_groups.push(sg);
        ds.target.push(r.target);
        ds.censored.push(r.censored);
        ds.split.push(match (&train, &test) {
            (None, None) => Split::Train,
            (tr, te) => {
                if te.as_ref().is_some_and(|t| t.contains(&r.id)) {
                    Split::Test
                } else if tr.as_ref().is_none_or(|t| t.contains(&r.id)) {
                    Split::Train
                } else {
                    Split::Neither
                }
            }
        });
    }
    ds.composition = composition;
    ds.structure = structure_m;
    let report = FeaturizeReport {
        compounds: n,
        with_structure: n_struct,
        censored: ds.censored.iter().filter(|c| **c).count(),
        dropped_censored: table.dropped_censored,
        train: ds.split.iter().filter(|s| **s == Split::Train).count(),
        test: ds.split.iter().filter(|s| **s == Split::Test).count(),
        composition_dim: histograms::DIM,
        structure_dim: s.dim(),
        composition_ms_per_compound: comp_ms / n as f64,
        structure_ms_per_cif: if n_struct > 0 { struct_ms / n_struct as f64 } else { 0.0 },
        wall_s: t0.elapsed().as_secs_f64(),
        cif_formula_mismatches: mismatches,
        multiplicity_mismatches: mult,
        family_agreement: (compared > 0).then_some((agree, compared)),
    };
    if let Some(k) = source.archive_len() {
        tracing::debug!("{k} CIFs in the archive, {n_struct} matched to rows");
    }
    Ok((ds, report))
}

pub fn write(ds: &Dataset, path: &Path) -> Result<(), MapError> {
    let f = h5::create(path)?;
    h5::attr_str(&f, path, "kind", KIND)?;
    h5::attr_str(&f, path, "source", &ds.source)?;
    h5::attr_str(&f, path, "target_name", &ds.target_name)?;
    h5::attr_str(&f, path, "target_units", &ds.target_units)?;
    h5::attr_str(&f, path, "structure_settings", &serde_json::to_string(&ds.structure_settings).unwrap_or_default())?;
    h5::strings(&f, path, "ids", &ds.ids)?;
    h5::strings(&f, path, "formulas", &ds.formulas)?;
    h5::strings(&f, path, "families", &ds.families)?;
    h5::strings(&f, path, "family_labels", &ds.family_labels)?;
    h5::strings(&f, path, "space_groups", &ds.space_groups)?;
    h5::strings(&f, path, "cif_files", &ds.cif_files)?;
    h5::f64_1d(&f, path, "target", &ds.target)?;
    h5::u8_1d(&f, path, "censored", &ds.censored.iter().map(|&c| u8::from(c)).collect::<Vec<_>>())?;
    h5::u8_1d(&f, path, "has_structure", &ds.has_structure.iter().map(|&c| u8::from(c)).collect::<Vec<_>>())?;
    h5::u8_1d(&f, path, "split", &ds.split.iter().map(|&s| s as u8).collect::<Vec<_>>())?;
    h5::f32_2d(&f, path, "composition", &ds.composition)?;
    h5::f32_2d(&f, path, "structure", &ds.structure)?;
    h5::strings(&f, path, "composition_labels", &histograms::labels())?;
    h5::strings(&f, path, "structure_labels", &ds.structure_settings.labels())?;
    Ok(())
}

pub fn read(path: &Path) -> Result<Dataset, MapError> {
    let f = h5::open(path)?;
    let kind = h5::read_attr_str(&f, path, "kind").unwrap_or_default();
    if kind != KIND {
        return Err(MapError::Format { path: path.to_path_buf(), why: format!("not a map dataset (kind '{kind}'); make one with `beamwatch map featurize`") });
    }
    let settings: StructureSettings = serde_json::from_str(&h5::read_attr_str(&f, path, "structure_settings")?)
        .map_err(|e| MapError::Format { path: path.to_path_buf(), why: format!("structure_settings: {e}") })?;
    let bools = |name: &str| -> Result<Vec<bool>, MapError> { Ok(h5::read_u8_1d(&f, path, name)?.into_iter().map(|v| v != 0).collect()) };
    let split = h5::read_u8_1d(&f, path, "split")?
        .into_iter()
        .map(|v| match v {
            0 => Split::Train,
            1 => Split::Test,
            _ => Split::Neither,
        })
        .collect();
    let ds = Dataset {
        ids: h5::read_strings(&f, path, "ids")?,
        formulas: h5::read_strings(&f, path, "formulas")?,
        families: h5::read_strings(&f, path, "families")?,
        family_labels: h5::read_strings(&f, path, "family_labels")?,
        space_groups: h5::read_strings(&f, path, "space_groups")?,
        cif_files: h5::read_strings(&f, path, "cif_files")?,
        target: h5::read_f64_1d(&f, path, "target")?,
        target_name: h5::read_attr_str(&f, path, "target_name")?,
        target_units: h5::read_attr_str(&f, path, "target_units")?,
        censored: bools("censored")?,
        has_structure: bools("has_structure")?,
        split,
        composition: h5::read_f32_2d(&f, path, "composition")?,
        structure: h5::read_f32_2d(&f, path, "structure")?,
        structure_settings: settings,
        source: h5::read_attr_str(&f, path, "source").unwrap_or_default(),
    };
    let n = ds.ids.len();
    let ok = [ds.formulas.len(), ds.target.len(), ds.censored.len(), ds.has_structure.len(), ds.split.len(), ds.composition.nrows(), ds.structure.nrows()]
        .iter()
        .all(|&l| l == n);
    if !ok || ds.composition.ncols() != histograms::DIM || ds.structure.ncols() != settings.dim() {
        return Err(MapError::Format { path: path.to_path_buf(), why: "datasets of inconsistent length or width".into() });
    }
    Ok(ds)
}
