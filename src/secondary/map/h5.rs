//! Small typed HDF5 read/write helpers; every error names the file and the object.

use std::path::Path;

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};

use super::MapError;

pub fn err(path: &Path, what: &str) -> impl Fn(hdf5::Error) -> MapError {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |source| MapError::Hdf5 { path: path.clone(), what: what.clone(), source }
}

pub fn create(path: &Path) -> Result<hdf5::File, MapError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| MapError::Io { path: dir.to_path_buf(), source })?;
    }
    hdf5::File::create(path).map_err(err(path, "create"))
}

pub fn open(path: &Path) -> Result<hdf5::File, MapError> {
    if !path.exists() {
        return Err(MapError::Io { path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    hdf5::File::open(path).map_err(err(path, "open"))
}

pub fn f32_2d(g: &hdf5::Group, path: &Path, name: &str, a: &Array2<f32>) -> Result<(), MapError> {
    let (r, c) = a.dim();
    let mut b = g.new_dataset::<f32>().shape((r, c));
    if r > 0 && c > 0 {
        b = b.chunk((r.clamp(1, 64), c)).deflate(4);
    }
    b.create(name).and_then(|d| d.write(a)).map_err(err(path, name))
}

pub fn f64_1d(g: &hdf5::Group, path: &Path, name: &str, v: &[f64]) -> Result<(), MapError> {
    g.new_dataset_builder().with_data(&Array1::from(v.to_vec())).create(name).map(|_| ()).map_err(err(path, name))
}

pub fn f64_2d(g: &hdf5::Group, path: &Path, name: &str, a: &Array2<f64>) -> Result<(), MapError> {
    g.new_dataset_builder().with_data(a).create(name).map(|_| ()).map_err(err(path, name))
}

pub fn u8_1d(g: &hdf5::Group, path: &Path, name: &str, v: &[u8]) -> Result<(), MapError> {
    g.new_dataset_builder().with_data(&Array1::from(v.to_vec())).create(name).map(|_| ()).map_err(err(path, name))
}

pub fn strings(g: &hdf5::Group, path: &Path, name: &str, v: &[String]) -> Result<(), MapError> {
    let s: Vec<VarLenUnicode> = v.iter().map(|x| x.parse().unwrap_or_default()).collect();
    g.new_dataset_builder().with_data(&Array1::from(s)).create(name).map(|_| ()).map_err(err(path, name))
}

pub fn attr_str(g: &hdf5::Group, path: &Path, name: &str, v: &str) -> Result<(), MapError> {
    let s: VarLenUnicode = v.parse().unwrap_or_default();
    g.new_attr::<VarLenUnicode>().create(name).and_then(|a| a.write_scalar(&s)).map_err(err(path, name))
}

pub fn attr_f64(g: &hdf5::Group, path: &Path, name: &str, v: f64) -> Result<(), MapError> {
    g.new_attr::<f64>().create(name).and_then(|a| a.write_scalar(&v)).map_err(err(path, name))
}

pub fn read_f32_2d(g: &hdf5::Group, path: &Path, name: &str) -> Result<Array2<f32>, MapError> {
    g.dataset(name).and_then(|d| d.read_2d::<f32>()).map_err(err(path, name))
}

pub fn read_f64_2d(g: &hdf5::Group, path: &Path, name: &str) -> Result<Array2<f64>, MapError> {
    g.dataset(name).and_then(|d| d.read_2d::<f64>()).map_err(err(path, name))
}

pub fn read_f64_1d(g: &hdf5::Group, path: &Path, name: &str) -> Result<Vec<f64>, MapError> {
    g.dataset(name).and_then(|d| d.read_raw::<f64>()).map_err(err(path, name))
}

pub fn read_u8_1d(g: &hdf5::Group, path: &Path, name: &str) -> Result<Vec<u8>, MapError> {
    g.dataset(name).and_then(|d| d.read_raw::<u8>()).map_err(err(path, name))
}

pub fn read_strings(g: &hdf5::Group, path: &Path, name: &str) -> Result<Vec<String>, MapError> {
    g.dataset(name)
        .and_then(|d| d.read_raw::<VarLenUnicode>())
        .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
        .map_err(err(path, name))
}

pub fn read_attr_str(g: &hdf5::Group, path: &Path, name: &str) -> Result<String, MapError> {
    g.attr(name).and_then(|a| a.read_scalar::<VarLenUnicode>()).map(|s| s.as_str().to_string()).map_err(err(path, name))
}
