//! Replay readers: the real sample files read right, fixtures written here in every other layout
//! read back bit-exact, and bad files end in a `ReadError` naming the file and dataset — never a
//! panic.

mod common;

use std::ffi::{CString, c_uint};
use std::path::{Path, PathBuf};

use hdf5::H5Type;
use hdf5::types::{FixedAscii, VarLenUnicode};
use hdf5_sys::h5d::{H5Dclose, H5Dcreate2, H5Dwrite_chunk};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{H5P_DEFAULT, H5Pclose, H5Pcreate, H5Pset_chunk, H5Pset_filter};
use hdf5_sys::h5s::{H5Sclose, H5Screate_simple};
use hdf5_sys::h5z::H5Z_FLAG_OPTIONAL;
use ndarray::{Array2, Array3, ArrayD, s};
use ndarray_npy::WriteNpyExt;

use beamwatch::decode::bslz4::{DEFAULT_BLOCK_BYTES, encode_bslz4, encode_lz4_framed};
use beamwatch::frame::{Frame, PixelType};
use beamwatch::record::readers::open;
use beamwatch::record::{FrameSource, Layout, OpenOptions, ReadError, h5sync};

// ---------------------------------------------------------------------------------------------
// Helpers

fn samples() -> PathBuf {
    common::shared().join("data/emd-samples")
}

fn detect() -> OpenOptions {
    OpenOptions::default()
}

fn named(dataset: &str, frame_axis: Option<usize>) -> OpenOptions {
    OpenOptions { dataset: Some(dataset.into()), frame_axis, mask_gaps: false }
}

fn open_ok(path: &Path, opts: &OpenOptions) -> Box<dyn FrameSource> {
    open(path, opts).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn read_all(src: &mut dyn FrameSource) -> Vec<Frame> {
    (0..src.info().frames).map(|i| src.read(i).unwrap_or_else(|e| panic!("frame {i}: {e}")).frame).collect()
}

fn open_err(path: &Path, opts: &OpenOptions) -> ReadError {
    match open(path, opts) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => e,
    }
}

/// An error is one line naming the file (and the dataset, when given).
fn assert_names(e: &ReadError, path: &Path, dataset: Option<&str>) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.contains(&path.display().to_string()), "does not name the file: {msg}");
    if let Some(d) = dataset {
        assert!(msg.contains(d), "does not name dataset {d}: {msg}");
        assert_eq!(e.dataset.as_deref(), Some(d), "{msg}");
    }
}

fn as_f32<T: Copy + Into<f64>>(v: &[T]) -> Vec<f32> {
    v.iter().map(|&x| x.into() as f32).collect()
}

fn has_note(src: &dyn FrameSource, needle: &str) -> bool {
    src.info().notes.iter().any(|n| n.contains(needle))
}

fn int_attr(loc: &hdf5::Location, name: &str, v: i64) {
    loc.new_attr::<i64>().create(name).expect("attr").write_scalar(&v).expect("write attr");
}

fn f64_attr(loc: &hdf5::Location, name: &str, v: f64) {
    loc.new_attr::<f64>().create(name).expect("attr").write_scalar(&v).expect("write attr");
}

fn str_attr(loc: &hdf5::Location, name: &str, v: &str) {
    let v: VarLenUnicode = v.parse().expect("string");
    loc.new_attr::<VarLenUnicode>().create(name).expect("attr").write_scalar(&v).expect("write attr");
}

/// A fixed-length string attribute, as older h5py / numpy bytes writers make them.
fn fixed_attr(loc: &hdf5::Location, name: &str, v: &str) {
    let v = FixedAscii::<16>::from_ascii(v).expect("ascii");
    loc.new_attr::<FixedAscii<16>>().create(name).expect("attr").write_scalar(&v).expect("write attr");
}

fn vector(g: &hdf5::Group, name: &str, v: &[f64], units: &str) {
    let ds = g.new_dataset_builder().with_data(v).create(name).expect("dim");
    fixed_attr(&ds, "units", units);
    fixed_attr(&ds, "name", name);
}

/// Deterministic u16 frames with a wide value range (low and high bytes both vary).
fn u16_frames(n: usize, h: usize, w: usize, seed: u32) -> Vec<Vec<u16>> {
    (0..n)
        .map(|f| {
            (0..h * w)
                .map(|i| {
                    let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed + 977 * f as u32);
                    (x >> 16) as u16 % 65000
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Real files written by other software

#[test]
fn berkeley_emd_sample_is_one_int32_frame() {
    let path = samples().join("example_image.emd");
    let mut src = open_ok(&path, &detect());
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::BerkeleyEmd);
    assert_eq!(info.dataset, "/signals/__unnamed__/data");
    assert_eq!(info.series, "example_image");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (1, 3, 3, PixelType::F32));
    let frames = read_all(src.as_mut());
    assert_eq!(frames[0].pixels(), &(0..9).map(|v| v as f32).collect::<Vec<_>>()[..]);
    // dims in "[]" are not lengths; no dwell time, no current.
    assert!(info.dose.pixel_size_a.is_none() && info.dose.dwell_time_us.is_none());
    assert!(has_note(src.as_ref(), "pixel size not in file"), "{:?}", info.notes);
    assert!(has_note(src.as_ref(), "dwell time not in file"), "{:?}", info.notes);
}

#[test]
fn velox_sample_is_two_int16_frames_with_dose() {
    let path = samples().join("fei_example_tem_stack.emd");
    let mut src = open_ok(&path, &detect());
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::Velox);
    assert_eq!(info.series, "26f60320a61d4f66a73efd8cde34ffa9");
    assert_eq!(info.dataset, "/Data/Image/26f60320a61d4f66a73efd8cde34ffa9/Data");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (2, 3, 3, PixelType::F32));
    let frames = read_all(src.as_mut());
    assert_eq!(frames[0].pixels(), &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
    assert_eq!(frames[1].pixels(), &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0]);
    let pixel = info.dose.pixel_size_a.expect("pixel size");
    assert!((pixel - 0.081_728_831_922_978_51).abs() < 1e-6, "{pixel}");
    assert!((pixel - 0.0817).abs() < 1e-4, "{pixel}");
    let current = info.dose.beam_current_pa.expect("current");
    assert!((current - 3732.3).abs() < 0.05, "{current}");
    assert!(info.dose.dwell_time_us.is_none());
    assert!(has_note(src.as_ref(), "dwell time not in file"), "{:?}", info.notes);
    // Per-frame values come from each frame's JSON column.
    let f1 = src.read(1).expect("frame 1");
    assert_eq!(f1.index, 1);
    assert!((f1.dose.beam_current_pa.expect("per-frame current") - 3732.3).abs() < 0.05);
}

#[test]
fn py4dstem_datacube_flattens_scan_positions_into_frames() {
    let path = samples().join("py4DSTEM_size2x3x4x5.h5");
    let mut src = open_ok(&path, &detect());
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::Emd1);
    assert_eq!(info.dataset, "/datacube_root/datacube/data");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (6, 5, 4, PixelType::F32));
    assert!(has_note(src.as_ref(), "flattened"), "{:?}", info.notes);
    // 0.126796875 nm from the calibration.
    let pixel = info.dose.pixel_size_a.expect("pixel size");
    assert!((pixel - 1.267_968_75).abs() < 1e-9, "{pixel}");

    let file = hdf5::File::open(&path).expect("h5");
    let cube: ArrayD<f32> = file.dataset("datacube_root/datacube/data").expect("ds").read_dyn().expect("read");
    let frames = read_all(src.as_mut());
    for (i, frame) in frames.iter().enumerate() {
        let (rx, ry) = (i / 3, i % 3);
        let expected: Vec<f32> = cube.slice(s![rx, ry, .., ..]).iter().copied().collect();
        assert_eq!(frame.pixels(), &expected[..], "frame {i} = data[{rx}, {ry}]");
    }
}

#[test]
fn a_named_dataset_in_a_real_file_is_read_too() {
    let path = samples().join("fei_example_tem_stack.emd");
    let name = "/Data/Image/26f60320a61d4f66a73efd8cde34ffa9/Data";
    let mut src = open_ok(&path, &named(name, Some(2)));
    assert_eq!(src.info().layout, Layout::Dataset);
    let frames = read_all(src.as_mut());
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].pixels()[8], 17.0);
}

// ---------------------------------------------------------------------------------------------
// 2. Fixtures in every other layout, read back bit-exact

/// Berkeley EMD 0.2 time series: u16 (n, h, w), dims in n_m, `dwell time` in s.
fn write_berkeley(path: &Path, frames: &[Vec<u16>], h: usize, w: usize) {
    let f = hdf5::File::create(path).expect("create");
    int_attr(&f, "version_major", 0);
    int_attr(&f, "version_minor", 2);
    let data = f.create_group("data").expect("group");
    let g = data.create_group("series").expect("group");
    // Some writers store the group type as a string: the reader takes both.
    str_attr(&g, "emd_group_type", "1");
    let flat: Vec<u16> = frames.concat();
    let arr = Array3::from_shape_vec((frames.len(), h, w), flat).expect("shape");
    g.new_dataset_builder().with_data(&arr).create("data").expect("data");
    let times: Vec<f64> = (0..frames.len()).map(|t| t as f64 * 0.5).collect();
    vector(&g, "dim1", &times, "s");
    vector(&g, "dim2", &[0.0, 0.25], "n_m");
    vector(&g, "dim3", &[0.0, 0.25], "n_m");
    let m = f.create_group("microscope").expect("group");
    f64_attr(&m, "dwell time", 4e-6);
    str_attr(&m, "name", "test scope");
}

#[test]
fn berkeley_emd_time_series_fixture() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("series.emd");
    let (n, h, w) = (4, 6, 9);
    let frames = u16_frames(n, h, w, 1);
    write_berkeley(&path, &frames, h, w);
    let mut src = open_ok(&path, &detect());
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::BerkeleyEmd);
    assert_eq!(info.dataset, "/data/series/data");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (n, w, h, PixelType::U16));
    assert_eq!(info.dose.dwell_time_us, Some(4.0));
    assert_eq!(info.dose.pixel_size_a, Some(2.5));
    assert!(info.dose.beam_current_pa.is_none());
    assert!(has_note(src.as_ref(), "beam current not in file"), "{:?}", info.notes);
    for (i, got) in read_all(src.as_mut()).iter().enumerate() {
        assert_eq!(got.pixels(), &as_f32(&frames[i])[..], "frame {i}");
        assert_eq!(got.dtype(), PixelType::U16);
    }
}

/// Velox: /Data/Image/<uuid>/Data (h, w, n) u16 frames last, one JSON column per frame.
fn write_velox(path: &Path, uuid: &str, frames: &[Vec<u16>], h: usize, w: usize) {
    let f = hdf5::File::create(path).expect("create");
    let g = f.create_group("Data").and_then(|d| d.create_group("Image")).and_then(|i| i.create_group(uuid)).expect("g");
    let n = frames.len();
    let mut arr = Array3::<u16>::zeros((h, w, n));
    for (k, frame) in frames.iter().enumerate() {
        for (i, &v) in frame.iter().enumerate() {
            arr[[i / w, i % w, k]] = v;
        }
    }
    g.new_dataset_builder().with_data(&arr).create("Data").expect("data");
    let len = 2048;
    let mut meta = Array2::<u8>::zeros((len, n));
    for k in 0..n {
        let json = serde_json::json!({
            "Optics": {"LastMeasuredScreenCurrent": format!("{:e}", (50 + k) as f64 * 1e-12)},
            "Scan": {"DwellTime": "2e-06", "FrameTime": "0.5"},
            "BinaryResult": {"PixelSize": {"width": "1.5e-10", "height": "1.5e-10"}, "PixelUnitX": "m", "Detector": "HAADF"},
        })
        .to_string();
        for (i, b) in json.bytes().enumerate() {
            meta[[i, k]] = b;
        }
    }
    g.new_dataset_builder().with_data(&meta).create("Metadata").expect("metadata");
}

#[test]
fn velox_multi_frame_fixture_with_per_frame_metadata() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("stem.emd");
    let (n, h, w) = (3, 5, 7);
    let mut frames = u16_frames(n, h, w, 2);
    frames[1][3] = u16::MAX; // a gap pixel
    let uuid = "0123456789abcdef0123456789abcdef";
    write_velox(&path, uuid, &frames, h, w);
    let opts = OpenOptions { mask_gaps: true, ..OpenOptions::default() };
    let mut src = open_ok(&path, &opts);
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::Velox);
    assert_eq!(info.series, uuid);
    assert_eq!((info.frames, info.width, info.height, info.dtype), (n, w, h, PixelType::U16));
    assert_eq!(info.dose.dwell_time_us, Some(2.0));
    assert!((info.dose.pixel_size_a.expect("pixel") - 1.5).abs() < 1e-12);
    assert!((info.dose.beam_current_pa.expect("current") - 50.0).abs() < 1e-9);
    assert!(has_note(src.as_ref(), "HAADF"), "{:?}", info.notes);
    for (k, expected) in frames.iter().enumerate() {
        let f = src.read(k).expect("frame");
        assert_eq!(f.frame.pixels(), &as_f32(expected)[..], "frame {k}");
        assert!((f.dose.beam_current_pa.expect("current") - (50 + k) as f64).abs() < 1e-9, "frame {k} current");
        assert_eq!(f.dose.dwell_time_us, Some(2.0));
    }
    let gap = src.read(1).expect("frame 1").frame;
    assert_eq!((gap.n_invalid(), gap.is_valid(3)), (1, false));
}

const BSLZ4: i32 = 32008;
const LZ4: i32 = 32004;

/// Creates a dataset chunked one image per chunk, declaring `filter` (not registered in this
/// process: declared OPTIONAL, which HDF5 accepts and records in the pipeline), and writes
/// `chunks` as stored bytes with direct chunk writes, as the DECTRIS file writer does.
fn write_raw_chunks(
    group: &hdf5::Group,
    name: &str,
    shape: &[u64],
    filter: i32,
    params: &[c_uint],
    chunks: &[Vec<u8>],
) {
    let mut chunk = shape.to_vec();
    chunk[0] = 1;
    write_chunked(group, name, shape, &chunk, filter, params, chunks);
}

/// As [`write_raw_chunks`] with any chunk shape; blob `k` is the chunk at `k · chunk[0]` on axis 0.
fn write_chunked(
    group: &hdf5::Group,
    name: &str,
    shape: &[u64],
    chunk: &[u64],
    filter: i32,
    params: &[c_uint],
    chunks: &[Vec<u8>],
) {
    let cname = CString::new(name).expect("name");
    h5sync(|| {
        // SAFETY: every pointer passed points at live local data of the right length; every id
        // created here is closed here.
        unsafe {
            let dcpl: hid_t = H5Pcreate(*hdf5::globals::H5P_DATASET_CREATE);
            assert!(dcpl >= 0);
            assert!(H5Pset_chunk(dcpl, chunk.len() as i32, chunk.as_ptr()) >= 0);
            let rc = H5Pset_filter(dcpl, filter, H5Z_FLAG_OPTIONAL, params.len(), params.as_ptr());
            assert!(rc >= 0, "H5Pset_filter({filter}) refused an unregistered optional filter");
            let space = H5Screate_simple(shape.len() as i32, shape.as_ptr(), std::ptr::null());
            let ds = H5Dcreate2(
                group.id(),
                cname.as_ptr(),
                *hdf5::globals::H5T_STD_U16LE,
                space,
                H5P_DEFAULT,
                dcpl,
                H5P_DEFAULT,
            );
            assert!(ds >= 0, "H5Dcreate2 with filter {filter}");
            for (k, blob) in chunks.iter().enumerate() {
                let mut offset = vec![0u64; shape.len()];
                offset[0] = k as u64 * chunk[0];
                let rc = H5Dwrite_chunk(ds, H5P_DEFAULT, 0, offset.as_ptr(), blob.len(), blob.as_ptr().cast());
                assert!(rc >= 0, "H5Dwrite_chunk {k}");
            }
            H5Dclose(ds);
            H5Sclose(space);
            H5Pclose(dcpl);
        }
    });
}

fn encode(filter: i32, frame: &[u16]) -> Vec<u8> {
    let bytes: Vec<u8> = frame.iter().flat_map(|v| v.to_le_bytes()).collect();
    match filter {
        BSLZ4 => encode_bslz4(&bytes, 2, DEFAULT_BLOCK_BYTES),
        _ => encode_lz4_framed(&bytes, 8192),
    }
}

fn params(filter: i32) -> Vec<c_uint> {
    match filter {
        BSLZ4 => vec![0, 2, 2, 0, 2],
        _ => vec![0],
    }
}

/// A DECTRIS master `<name>_master.h5` with `/entry/data/data_00000k` external links to
/// `<name>_data_00000k.h5:/entry/data/data`, one per entry of `files` (its frames).
fn write_nexus(dir: &Path, name: &str, filter: i32, files: &[Vec<Vec<u16>>], h: usize, w: usize) -> PathBuf {
    let master = dir.join(format!("{name}_master.h5"));
    let m = hdf5::File::create(&master).expect("master");
    let mdata = m.create_group("entry").and_then(|e| e.create_group("data")).expect("group");
    for (k, frames) in files.iter().enumerate() {
        let data_name = format!("{name}_data_{:06}.h5", k + 1);
        let f = hdf5::File::create(dir.join(&data_name)).expect("data file");
        let g = f.create_group("entry").and_then(|e| e.create_group("data")).expect("group");
        let chunks: Vec<Vec<u8>> = frames.iter().map(|fr| encode(filter, fr)).collect();
        write_raw_chunks(&g, "data", &[frames.len() as u64, h as u64, w as u64], filter, &params(filter), &chunks);
        // Relative link target, as the file writer makes it.
        mdata.link_external(&data_name, "/entry/data/data", &format!("data_{:06}", k + 1)).expect("link");
    }
    let det = m.create_group("entry/instrument").and_then(|i| i.create_group("detector")).expect("det");
    f64_attr(&det, "count_time", 1e-3);
    master
}

fn check_nexus(filter: i32) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (h, w) = (11, 13); // 143 u16: not a multiple of 8 elements, so bitshuffle leaves a raw tail
    let mut first = u16_frames(3, h, w, 3);
    first[2][0] = u16::MAX;
    let files = vec![first, u16_frames(2, h, w, 4)];
    let master = write_nexus(tmp.path(), "scan7", filter, &files, h, w);
    // The links hold bare file names: they resolve next to the master, not in the working directory.
    let mut src = open_ok(&master, &OpenOptions { mask_gaps: true, ..OpenOptions::default() });
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::DectrisNexus);
    assert_eq!(info.series, "scan7");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (5, w, h, PixelType::U16));
    assert_eq!(info.dose, Default::default());
    assert!(has_note(src.as_ref(), "2 data files"), "{:?}", info.notes);
    assert!(has_note(src.as_ref(), "beam current not in file"), "{:?}", info.notes);
    let expected: Vec<&Vec<u16>> = files.iter().flatten().collect();
    let got = read_all(src.as_mut());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.pixels(), &as_f32(e)[..], "frame {i} (filter {filter})");
    }
    assert_eq!(got[2].n_invalid(), 1, "gap pixel masked");
}

#[test]
fn dectris_nexus_bitshuffle_lz4_fixture() {
    check_nexus(BSLZ4);
}

#[test]
fn dectris_nexus_lz4_fixture() {
    check_nexus(LZ4);
}

#[test]
fn dectris_nexus_4d_master_reads_channel_0() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("new_master.h5");
    let (n, c, h, w) = (3, 2, 8, 16);
    let frames = u16_frames(n * c, h, w, 5);
    {
        let f = hdf5::File::create(&path).expect("create");
        let g = f.create_group("entry").and_then(|e| e.create_group("data")).expect("group");
        // A chunk is one image, channels in order: channel 0's pixels come first.
        let chunks: Vec<Vec<u8>> = (0..n)
            .map(|k| {
                let both: Vec<u16> = frames[k * c..(k + 1) * c].concat();
                encode_bslz4(&both.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(), 2, DEFAULT_BLOCK_BYTES)
            })
            .collect();
        write_raw_chunks(&g, "data", &[n as u64, c as u64, h as u64, w as u64], BSLZ4, &params(BSLZ4), &chunks);
    }
    let mut src = open_ok(&path, &detect());
    assert_eq!((src.info().frames, src.info().width, src.info().height), (n, w, h));
    assert!(has_note(src.as_ref(), "channel 0"), "{:?}", src.info().notes);
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        assert_eq!(got.pixels(), &as_f32(&frames[k * c])[..], "image {k} channel 0");
    }
}

#[test]
fn bitshuffle_datasets_outside_nexus_are_read_by_chunk_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (n, h, w) = (5, 6, 8);
    let frames = u16_frames(n, h, w, 10);
    // A DECTRIS data file opened on its own, by dataset name.
    let data = tmp.path().join("lone_data_000001.h5");
    {
        let f = hdf5::File::create(&data).expect("create");
        let g = f.create_group("entry").and_then(|e| e.create_group("data")).expect("g");
        let chunks: Vec<Vec<u8>> = frames.iter().map(|fr| encode(BSLZ4, fr)).collect();
        write_raw_chunks(&g, "data", &[n as u64, h as u64, w as u64], BSLZ4, &params(BSLZ4), &chunks);
    }
    let mut src = open_ok(&data, &named("/entry/data/data", None));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        assert_eq!(got.pixels(), &as_f32(&frames[k])[..], "frame {k}");
    }
    // Two frames per chunk (hdf5plugin users chunk so); the last chunk is padded, as HDF5 stores
    // edge chunks whole.
    let pairs = tmp.path().join("pairs.h5");
    {
        let f = hdf5::File::create(&pairs).expect("create");
        let chunks: Vec<Vec<u8>> = frames
            .chunks(2)
            .map(|two| {
                let mut both: Vec<u16> = two.concat();
                both.resize(2 * h * w, 0);
                encode_bslz4(&both.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(), 2, DEFAULT_BLOCK_BYTES)
            })
            .collect();
        let shape = [n as u64, h as u64, w as u64];
        write_chunked(&f, "stack", &shape, &[2, h as u64, w as u64], BSLZ4, &params(BSLZ4), &chunks);
    }
    let mut src = open_ok(&pairs, &named("stack", None));
    for k in [0, 3, 1, 4, 2] {
        assert_eq!(src.read(k).expect("frame").frame.pixels(), &as_f32(&frames[k])[..], "frame {k}");
    }
}

#[test]
fn a_filter_nobody_here_decodes_is_named_at_open() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("blosc.h5");
    {
        let f = hdf5::File::create(&path).expect("create");
        let blob = vec![0u8; 64];
        write_raw_chunks(&f, "data", &[2, 4, 8], 32001, &[2, 2, 2, 64], &[blob.clone(), blob]);
    }
    let e = open_err(&path, &named("/data", None));
    assert_names(&e, &path, Some("/data"));
    assert!(e.problem.contains("32001") && e.problem.contains("Blosc"), "{e}");
}

#[test]
fn emd1_stack_fixture_with_calibration() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("stack.h5");
    let (n, h, w) = (3, 4, 6);
    let values: Vec<i16> = (0..(n * h * w) as i16).map(|v| v * 37 - 900).collect();
    {
        let f = hdf5::File::create(&path).expect("create");
        str_attr(&f, "emd_group_type", "file");
        int_attr(&f, "version_major", 1);
        int_attr(&f, "version_minor", 0);
        let root = f.create_group("stack_root").expect("root");
        str_attr(&root, "emd_group_type", "root");
        let arr = root.create_group("stack").expect("array");
        str_attr(&arr, "emd_group_type", "array");
        let data = Array3::from_shape_vec((n, h, w), values.clone()).expect("shape");
        arr.new_dataset_builder().with_data(&data).create("data").expect("data");
        for (k, len) in [n, h, w].into_iter().enumerate() {
            let v: Vec<f64> = (0..len).map(|i| i as f64).collect();
            arr.new_dataset_builder().with_data(&v).create(format!("dim{k}").as_str()).expect("dim");
        }
        let cal = root.create_group("metadatabundle").and_then(|m| m.create_group("calibration")).expect("cal");
        str_attr(&cal, "emd_group_type", "metadata");
        cal.new_dataset::<f64>().create("R_pixel_size").expect("ds").write_scalar(&0.25).expect("w");
        let units: VarLenUnicode = "nm".parse().expect("s");
        cal.new_dataset::<VarLenUnicode>().create("R_pixel_units").expect("ds").write_scalar(&units).expect("w");
    }
    let mut src = open_ok(&path, &detect());
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::Emd1);
    assert_eq!(info.dataset, "/stack_root/stack/data");
    assert_eq!((info.frames, info.width, info.height, info.dtype), (n, w, h, PixelType::F32));
    assert_eq!(info.dose.pixel_size_a, Some(2.5));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        let e: Vec<f32> = values[k * h * w..(k + 1) * h * w].iter().map(|&v| f32::from(v)).collect();
        assert_eq!(got.pixels(), &e[..], "frame {k}");
    }
}

#[test]
fn generic_dataset_with_frames_on_axis_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("any.h5");
    let (h, w, n) = (5, 3, 4);
    let cube = Array3::from_shape_fn((h, w, n), |(y, x, f)| {
        ((y * 1_000_003 + x * 7919 + f * 104_729) as u32).wrapping_mul(4099)
    });
    {
        let f = hdf5::File::create(&path).expect("create");
        let g = f.create_group("some").and_then(|s| s.create_group("where")).expect("g");
        g.new_dataset_builder().with_data(&cube).create("cube").expect("cube");
    }
    let mut src = open_ok(&path, &named("/some/where/cube", Some(2)));
    let info = src.info().clone();
    assert_eq!(info.layout, Layout::Dataset);
    assert_eq!((info.frames, info.width, info.height, info.dtype), (n, w, h, PixelType::U32));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        let e: Vec<f32> = cube.slice(s![.., .., k]).iter().map(|&v| v as f32).collect();
        assert_eq!(got.pixels(), &e[..], "frame {k}");
    }
    // Frame axis 0 of the same cube: h frames of w × n.
    let src = open_ok(&path, &named("some/where/cube", None));
    assert_eq!((src.info().frames, src.info().width, src.info().height), (h, n, w));
}

#[test]
fn tiff_stack_and_png_folder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (w, h) = (12, 7);
    let pages = u16_frames(3, h, w, 6);
    let tif = tmp.path().join("stack.tif");
    {
        let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(&tif).expect("create")).expect("tiff");
        for p in &pages {
            enc.write_image::<tiff::encoder::colortype::Gray16>(w as u32, h as u32, p).expect("page");
        }
    }
    let mut src = open_ok(&tif, &detect());
    assert_eq!(src.info().layout, Layout::TiffStack);
    assert_eq!((src.info().frames, src.info().width, src.info().height), (3, w, h));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        assert_eq!(got.pixels(), &as_f32(&pages[k])[..], "page {k}");
    }

    // A 3-D .npy (frames first) is a stack too.
    let npy = tmp.path().join("stack.npy");
    let cube = Array3::from_shape_fn((2, h, w), |(f, y, x)| (f * 100 + y * w + x) as f32 * 0.25 - 3.0);
    cube.write_npy(std::fs::File::create(&npy).expect("create")).expect("npy");
    let mut src = open_ok(&npy, &detect());
    assert_eq!((src.info().layout, src.info().frames, src.info().dtype), (Layout::TiffStack, 2, PixelType::F32));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        let e: Vec<f32> = cube.slice(s![k, .., ..]).iter().copied().collect();
        assert_eq!(got.pixels(), &e[..], ".npy frame {k}");
    }

    let dir = tmp.path().join("frames");
    std::fs::create_dir(&dir).expect("dir");
    // Natural name order: frame_2 before frame_10; other files are ignored.
    let names = ["frame_1.png", "frame_2.png", "frame_10.png"];
    let imgs = u16_frames(3, h, w, 7);
    for (name, img) in names.iter().zip(&imgs) {
        image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, img.clone())
            .expect("img")
            .save(dir.join(name))
            .expect("png");
    }
    std::fs::write(dir.join("notes.txt"), "not an image").expect("txt");
    let mut src = open_ok(&dir, &detect());
    assert_eq!(src.info().layout, Layout::ImageFolder);
    assert_eq!((src.info().frames, src.info().width, src.info().height), (3, w, h));
    for (k, got) in read_all(src.as_mut()).iter().enumerate() {
        assert_eq!(got.pixels(), &as_f32(&imgs[k])[..], "{}", names[k]);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Bad files: a ReadError naming file and dataset, never a panic

#[test]
fn truncated_hdf5_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let whole = tmp.path().join("whole.emd");
    write_berkeley(&whole, &u16_frames(8, 32, 32, 8), 32, 32);
    let bytes = std::fs::read(&whole).expect("read");
    let half = tmp.path().join("half.emd");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).expect("write");
    let e = open_err(&half, &detect());
    assert_names(&e, &half, None);
    let e = open_err(&half, &named("/data/series/data", None));
    assert_names(&e, &half, Some("/data/series/data"));
}

#[test]
fn wrong_rank_missing_dataset_and_unsupported_dtypes() {
    #[derive(H5Type, Clone, Copy)]
    #[repr(C)]
    struct Pair {
        a: i32,
        b: f32,
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("odd.h5");
    {
        let f = hdf5::File::create(&path).expect("create");
        f.new_dataset_builder().with_data(&[1.0f32, 2.0, 3.0]).create("line").expect("1-D");
        let strings = Array2::from_shape_fn((2, 3), |(y, x)| format!("{y}{x}").parse::<VarLenUnicode>().expect("s"));
        f.new_dataset_builder().with_data(&strings).create("text").expect("strings");
        let pairs = Array3::from_shape_fn((2, 2, 2), |(a, b, c)| Pair { a: (a + b) as i32, b: c as f32 });
        f.new_dataset_builder().with_data(&pairs).create("pairs").expect("compound");
        f.create_group("grp").expect("group");
    }
    let e = open_err(&path, &named("/line", None));
    assert_names(&e, &path, Some("/line"));
    assert!(e.problem.contains("1-D"), "{e}");

    let e = open_err(&path, &named("/nope", None));
    assert_names(&e, &path, Some("/nope"));
    assert!(e.problem.contains("no such dataset"), "{e}");
    let e = open_err(&path, &named("/missing/group/ds", None));
    assert_names(&e, &path, Some("/missing/group/ds"));
    let e = open_err(&path, &named("/grp", None));
    assert!(e.problem.contains("group"), "{e}");

    let e = open_err(&path, &named("/text", None));
    assert_names(&e, &path, Some("/text"));
    assert!(e.problem.contains("unsupported dtype") && e.problem.contains("unicode"), "{e}");
    let e = open_err(&path, &named("/pairs", None));
    assert_names(&e, &path, Some("/pairs"));
    assert!(e.problem.contains("unsupported dtype") && e.problem.contains("compound"), "{e}");

    let e = open_err(&path, &named("/pairs", Some(3)));
    assert_names(&e, &path, Some("/pairs"));

    // Detection finds none of the layouts and says what it looked for.
    let e = open_err(&path, &detect());
    assert_names(&e, &path, None);
    for layout in ["Berkeley EMD", "Velox", "DECTRIS NeXus", "EMD 1.0", "--dataset"] {
        assert!(e.problem.contains(layout), "{e}");
    }
}

#[test]
fn corrupt_nexus_chunk_names_file_dataset_and_frame() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (h, w) = (6, 10);
    let frames = u16_frames(3, h, w, 9);
    let master = tmp.path().join("bad_master.h5");
    let data = tmp.path().join("bad_data_000001.h5");
    {
        let f = hdf5::File::create(&data).expect("data");
        let g = f.create_group("entry").and_then(|e| e.create_group("data")).expect("g");
        let mut chunks: Vec<Vec<u8>> = frames.iter().map(|fr| encode(BSLZ4, fr)).collect();
        chunks[1] = vec![0xAB; 40];
        // A header claiming the right size, then a block that is not LZ4.
        let mut lying = chunks[0][..12].to_vec();
        lying.extend([0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        chunks[2] = lying;
        write_raw_chunks(&g, "data", &[3, h as u64, w as u64], BSLZ4, &params(BSLZ4), &chunks);
        let m = hdf5::File::create(&master).expect("master");
        let md = m.create_group("entry").and_then(|e| e.create_group("data")).expect("g");
        md.link_external("bad_data_000001.h5", "/entry/data/data", "data_000001").expect("link");
    }
    let mut src = open_ok(&master, &detect());
    assert_eq!(src.read(0).expect("frame 0 is fine").frame.pixels(), &as_f32(&frames[0])[..]);
    for i in [1, 2] {
        let e = src.read(i).expect_err("corrupt chunk");
        assert_names(&e, &data, Some("/entry/data/data"));
        assert!(e.problem.contains(&format!("frame {i}")), "{e}");
        assert!(e.problem.contains("bitshuffle-LZ4"), "{e}");
    }
    let e = src.read(3).expect_err("out of range");
    assert!(e.problem.contains("out of range"), "{e}");
}

#[test]
fn missing_nexus_data_file_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let master = write_nexus(tmp.path(), "gone", BSLZ4, &[u16_frames(1, 4, 4, 1), u16_frames(1, 4, 4, 2)], 4, 4);
    std::fs::remove_file(tmp.path().join("gone_data_000002.h5")).expect("rm");
    let e = open_err(&master, &detect());
    assert_names(&e, &master, Some("/entry/data/data_000002"));
    assert!(e.problem.contains("gone_data_000002.h5"), "{e}");
}

#[test]
fn beamwatch_sessions_and_non_hdf5_files_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let session = tmp.path().join("session.h5");
    {
        let f = hdf5::File::create(&session).expect("create");
        str_attr(&f, "beamwatch_format", "beamwatch-session/1");
    }
    let e = open_err(&session, &detect());
    assert!(e.problem.contains("beamwatch session file: use the session reader"), "{e}");

    let text = tmp.path().join("notes.emd");
    std::fs::write(&text, "hello, not a microscope file").expect("write");
    let e = open_err(&text, &detect());
    assert_names(&e, &text, None);
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).expect("dir");
    let e = open_err(&empty_dir, &detect());
    assert_names(&e, &empty_dir, None);
    let e = open_err(&tmp.path().join("absent.h5"), &detect());
    assert!(e.problem.contains("cannot open"), "{e}");
}
