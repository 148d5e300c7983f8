//! The conductivity stage end to end on real files: synthetic pellets written as HDF5, PNG and CSV,
//! imported back, bad tables and images, the 33 descriptors, folds over samples, the quick protocol
//! through the CLI (model ordering, no leakage, pictures, saved model, prediction), determinism and
//! the microstructure physics.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use beamwatch::secondary::conductivity::dataset::{Dataset, Sample};
use beamwatch::secondary::conductivity::descriptors::{self, NAMES, N_DESCRIPTORS, Standardizer};
use beamwatch::secondary::conductivity::folds::{self, Protocol};
use beamwatch::secondary::conductivity::import::{self, ImportOptions};
use beamwatch::secondary::conductivity::laplace::{self, Direction};
use beamwatch::secondary::conductivity::model::Arch;
use beamwatch::secondary::conductivity::protocol::{self, EvalSettings};
use beamwatch::secondary::conductivity::synth::{self, MicroParams, SynthSpec, microstructure};
use beamwatch::secondary::conductivity::train::{self, MemberInput, TrainSettings};
use beamwatch::secondary::conductivity::results;
use common::{assert_clean_error, beamwatch, stdout};
use rand::SeedableRng;

fn spec(samples: usize, images: (usize, usize), size: usize, seed: u64) -> SynthSpec {
    SynthSpec { samples, images_min: images.0, images_max: images.1, size_px: size, seed }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn synth_files_import_back_to_the_same_dataset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = synth::generate(&spec(6, (1, 3), 32, 2), || {}).expect("synth");
    let files = synth::write_files(&ds, tmp.path()).expect("write");
    assert!(ds.images.len() >= 6 && ds.images.len() <= 18);
    assert_eq!(ds.truth.as_ref().map(|t| t.phase.len()), Some(ds.images.len()));

    // The HDF5 file reads back exactly, truth included.
    let back = Dataset::read(&files.dataset).expect("read");
    assert_eq!(back, ds);

    // The PNGs + CSV, imported through the CLI, give the same samples and pixels.
    let out = tmp.path().join("imported.h5");
    let o = beamwatch(
        &["conductivity", "import", "--images", path_str(&files.images_dir), "--table", path_str(&files.table), "--out", path_str(&out)],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(stdout(&o).contains("6 samples"), "{}", stdout(&o));
    let imp = Dataset::read(&out).expect("read imported");
    assert_eq!(imp.samples, ds.samples);
    assert_eq!(imp.images.len(), ds.images.len());
    for (a, b) in imp.images.iter().zip(&ds.images) {
        assert_eq!((a.sample, a.width, a.height), (b.sample, b.width, b.height));
        assert_eq!(a.pixels, b.pixels, "{}", a.source);
        assert!(a.source.ends_with(&b.source));
    }
    assert!(imp.truth.is_none());
}

#[test]
fn import_matches_files_by_name_and_takes_any_size_and_bit_depth() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sem");
    std::fs::create_dir(&dir).expect("dir");
    let gray8 = image::GrayImage::from_fn(40, 36, |x, y| image::Luma([((x * 5 + y) % 256) as u8]));
    gray8.save(dir.join("P1_a.png")).expect("png");
    gray8.save(dir.join("P10.png")).expect("png");
    // A 16-bit TIFF: full range maps to 0..1.
    let (w, h) = (48u32, 40u32);
    let px16: Vec<u16> = (0..w * h).map(|i| (i * 37 % 65536) as u16).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut buf)
        .expect("tiff")
        .write_image::<tiff::encoder::colortype::Gray16>(w, h, &px16)
        .expect("tiff write");
    std::fs::write(dir.join("P1-b.tif"), buf.into_inner()).expect("write tif");
    // No `images` column: files belong to the id before `_`, `-` or `.`; P10 is not P1's.
    let table = tmp.path().join("t.csv");
    std::fs::write(&table, "sample_id,T2_c,x,y,T1_c,conductivity_s_per_cm,notes\nP1,1200,0.1,0.1,1000,1e-5,first\nP10,1250,0.2,0.05,1100,2.5e-6,\n")
        .expect("csv");
    let (ds, notes) =
        import::import(&ImportOptions { images_dir: dir, table: Some(table), require_target: true, ..ImportOptions::default() })
            .expect("import");
    assert!(notes.cropped.is_empty() && notes.unmatched.is_empty());
    assert_eq!(ds.samples.len(), 2);
    assert_eq!(ds.samples[0].t2_c, 1200.0);
    assert_eq!(ds.images_of(0).len(), 2);
    assert_eq!(ds.images_of(1).len(), 1);
    let tif = ds.images.iter().find(|im| im.source.ends_with("P1-b.tif")).expect("tif imported");
    assert_eq!((tif.width, tif.height), (48, 40));
    assert!((tif.pixels[1] - 37.0 / 65535.0).abs() < 1e-7);
    let png = ds.images.iter().find(|im| im.source.ends_with("P1_a.png")).expect("png imported");
    assert!((png.pixels[1] - 5.0 / 255.0).abs() < 1e-7);
}

/// A folder with two good images and a table, for the bad-input cases to spoil one thing each.
fn bad_case(dir: &Path, table: &str) -> (PathBuf, PathBuf) {
    let images = dir.join("img");
    std::fs::create_dir_all(&images).expect("dir");
    let im = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([((x * y) % 200) as u8]));
    im.save(images.join("A_1.png")).expect("png");
    im.save(images.join("B_1.png")).expect("png");
    let t = dir.join("samples.csv");
    std::fs::write(&t, table).expect("csv");
    (images, t)
}

#[test]
fn bad_datasets_give_one_clear_error_naming_line_column_or_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let header = "sample_id,x,y,T1_c,T2_c,conductivity_s_per_cm\n";
    let run = |name: &str, table: &str, spoil: &dyn Fn(&Path)| {
        let dir = tmp.path().join(name);
        let (images, t) = bad_case(&dir, table);
        spoil(&images);
        let out = dir.join("out.h5");
        beamwatch(&["conductivity", "import", "--images", path_str(&images), "--table", path_str(&t), "--out", path_str(&out)], &dir)
    };
    // Missing column: named, with the header line.
    let o = run("missing", "sample_id,x,y,T1_c,conductivity_s_per_cm\nA,0.1,0.1,1000,1e-5\n", &|_| {});
    let line = assert_clean_error(&o, "missing column T2_c");
    assert!(line.contains("line 1"), "{line}");
    // Unreadable image: the file is named.
    let o = run("unreadable", &format!("{header}A,0.1,0.1,1000,1200,1e-5\nB,0.2,0.1,1000,1200,2e-5\n"), &|d| {
        std::fs::write(d.join("B_1.png"), b"not an image at all").expect("spoil");
    });
    assert_clean_error(&o, "B_1.png");
    // A sample without images: its line and id.
    let o = run("noimages", &format!("{header}A,0.1,0.1,1000,1200,1e-5\nB,0.2,0.1,1000,1200,2e-5\nC,0.3,0.1,1000,1200,3e-5\n"), &|_| {});
    let line = assert_clean_error(&o, "sample C has no images");
    assert!(line.contains("line 4"), "{line}");
    // NaN target: line, column and value.
    let o = run("nan", &format!("{header}A,0.1,0.1,1000,1200,1e-5\nB,0.2,0.1,1000,1200,NaN\n"), &|_| {});
    let line = assert_clean_error(&o, "line 3, column conductivity_s_per_cm");
    assert!(line.contains("NaN"), "{line}");
    // Not a number in a descriptor column.
    let o = run("text", &format!("{header}A,0.1,abc,1000,1200,1e-5\nB,0.2,0.1,1000,1200,2e-5\n"), &|_| {});
    assert_clean_error(&o, "line 2, column y: sample A: \"abc\" is not a number");
    // Negative conductivity.
    let o = run("negative", &format!("{header}A,0.1,0.1,1000,1200,-1e-5\nB,0.2,0.1,1000,1200,2e-5\n"), &|_| {});
    assert_clean_error(&o, "positive finite number");
}

#[test]
fn descriptors_follow_table_3_and_standardise_with_training_statistics() {
    let s = Sample { id: "s".into(), x: 0.2, y: 0.1, t1_c: 1000.0, t2_c: 1200.0, conductivity_s_per_cm: Some(1e-5) };
    let d = descriptors::descriptors(&s);
    let get = |name: &str| d[NAMES.iter().position(|n| *n == name).expect(name)];
    assert_eq!(N_DESCRIPTORS, 33);
    assert_eq!(NAMES.iter().collect::<BTreeSet<_>>().len(), 33, "names are unique");
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
    assert!(close(get("[Li]"), 1.5) && close(get("[Zr]"), 1.8) && close(get("[P]"), 2.9));
    assert!(close(get("[Si]x[Zr]"), 0.18) && close(get("T1xT2"), 1.2e6) && close(get("[Li]^2"), 2.25));
    assert!(close(get("[Zr]xT2"), 1.8 * 1200.0) && close(get("[Ca]xT1"), 200.0));
    // The paper's table has no [P]×T products.
    assert!(!NAMES.iter().any(|n| n.starts_with("[P]xT")));

    let train: Vec<Sample> = (0..5)
        .map(|i| Sample { x: 0.05 + 0.05 * i as f64, t1_c: 900.0 + 50.0 * i as f64, ..s.clone() })
        .collect();
    let st = Standardizer::fit(&descriptors::rows(train.iter()));
    let z: Vec<Vec<f32>> = train.iter().map(|t| st.apply(&descriptors::descriptors(t))).collect();
    for j in 0..N_DESCRIPTORS {
        let m: f32 = z.iter().map(|r| r[j]).sum::<f32>() / 5.0;
        assert!(m.abs() < 1e-5, "column {} mean {m}", NAMES[j]);
    }
    // y is constant in this training set: std 1, so it standardises to 0 instead of NaN.
    assert!(z.iter().all(|r| r[1] == 0.0));
    // A held-out sample is scaled with the training statistics, not its own.
    let held = Sample { x: 0.5, ..s.clone() };
    let zh = st.apply(&descriptors::descriptors(&held));
    assert!(zh[0] > 2.0, "x = 0.5 lies beyond the training range: {}", zh[0]);
}

#[test]
fn fold_builder_never_puts_an_image_of_a_held_out_sample_in_training() {
    let ds = synth::generate(&spec(11, (1, 3), 20, 4), || {}).expect("synth");
    let targets = ds.log10_targets(Path::new("synthetic")).expect("targets");
    for (protocol, members) in [(Protocol::Loso, 4), (Protocol::Kfold { folds: 3 }, 2)] {
        let plan = folds::plan(&targets, protocol, 4, members, 9).expect("plan");
        let mut tested = Vec::new();
        for f in &plan {
            let test: BTreeSet<usize> = folds::images_of(&ds, &f.test_samples).into_iter().collect();
            // Every image of a test sample is in the test set.
            for &s in &f.test_samples {
                assert!(ds.images_of(s).iter().all(|i| test.contains(i)));
            }
            assert_eq!(f.members.len(), members);
            for m in &f.members {
                let train: BTreeSet<usize> = folds::images_of(&ds, &m.train_samples).into_iter().collect();
                let val: BTreeSet<usize> = folds::images_of(&ds, &m.val_samples).into_iter().collect();
                assert!(train.is_disjoint(&test), "{protocol:?}: training images of a test sample");
                assert!(val.is_disjoint(&test), "{protocol:?}: validation images of a test sample");
                assert!(train.is_disjoint(&val));
                assert_eq!(train.len() + val.len() + test.len(), ds.images.len());
            }
            tested.extend(f.test_samples.iter().copied());
        }
        tested.sort_unstable();
        assert_eq!(tested, (0..ds.samples.len()).collect::<Vec<_>>(), "each sample tested exactly once");
    }
}

#[test]
fn training_entry_point_records_that_no_held_out_image_was_seen() {
    // Leave-one-sample-out with a 2-member inner ensemble, through the real training loop.
    let ds = synth::generate(&spec(6, (1, 3), 20, 8), || {}).expect("synth");
    let targets = ds.log10_targets(Path::new("synthetic")).expect("targets");
    let settings = EvalSettings {
        archs: vec![Arch::Baseline, Arch::DescriptorsOnly],
        protocol: Protocol::Loso,
        inner_folds: 2,
        members: 2,
        seed: 3,
        train: TrainSettings { crop_px: 16, max_epochs: 2, patience: 2, batch: 4, linear_max_epochs: 2, linear_patience: 2, ..TrainSettings::default() },
    };
    let ev = protocol::evaluate(&ds, &targets, None, &settings, |_| {}).expect("evaluate");
    assert_eq!(ev.members.len(), 2 * 6 * 2);
    for r in &ev.members {
        let test_items: BTreeSet<usize> = train::items(&ds, r.arch, &r.test_samples).into_iter().collect();
        let train_items: BTreeSet<usize> = train::items(&ds, r.arch, &r.train_samples).into_iter().collect();
        let val_items: BTreeSet<usize> = train::items(&ds, r.arch, &r.val_samples).into_iter().collect();
        let seen: BTreeSet<usize> = r.seen.iter().copied().collect();
        assert!(!seen.is_empty());
        assert!(seen.is_disjoint(&test_items), "{} fold {} saw a held-out item", r.arch, r.outer);
        assert!(seen.is_subset(&train_items), "{} fold {} trained on validation items", r.arch, r.outer);
        assert_eq!(seen, train_items, "two epochs go through every training item");
        assert_eq!(r.validated.iter().copied().collect::<BTreeSet<_>>(), val_items);
    }
    for res in &ev.results {
        assert!(res.sample_prediction.iter().all(|p| p.is_finite()), "{}: every sample predicted", res.arch);
    }
}

#[test]
fn training_repeats_bit_for_bit_and_depends_on_the_seed() {
    let ds = synth::generate(&spec(5, (1, 2), 20, 6), || {}).expect("synth");
    let targets = ds.log10_targets(Path::new("synthetic")).expect("targets");
    let input = MemberInput { ds: &ds, targets: &targets, train_samples: &[0, 1, 2], val_samples: &[3, 4], features: None };
    let st = TrainSettings { crop_px: 16, max_epochs: 3, patience: 3, batch: 4, ..TrainSettings::default() };
    let weights = |seed: u64| -> Vec<Vec<f32>> {
        let t = train::train_member(Arch::Attention, &input, &st, seed, |_| {}).expect("train");
        t.net.snapshot().expect("snapshot").iter().map(|(_, t)| t.flatten_all().and_then(|t| t.to_vec1()).expect("values")).collect()
    };
    let (a, b, c) = (weights(5), weights(5), weights(6));
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c, "another seed, other weights");
}

#[test]
fn microstructure_factor_falls_with_porosity_beta_and_boundary_resistance() {
    let factor = |p: MicroParams, boundary: f64| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let f = microstructure::render(&p, 64, &mut rng);
        let map = microstructure::conductivity_map(&f.phase, synth::BETA_RATIO, boundary);
        laplace::effective_conductivity(&map, 64, 64, Direction::X).sigma_eff
    };
    let base = MicroParams { grain_px: 9.0, porosity: 0.05, beta_fraction: 0.0, boundary_px: synth::BOUNDARY_PX };
    let dense = factor(base, 0.1);
    assert!(dense < 1.0 && dense > 0.05, "{dense}");
    assert!(factor(MicroParams { porosity: 0.35, ..base }, 0.1) < 0.7 * dense);
    assert!(factor(MicroParams { beta_fraction: 0.3, ..base }, 0.1) < 0.8 * dense);
    assert!(factor(base, 0.02) < 0.6 * dense);
    assert!(factor(MicroParams { grain_px: 16.0, ..base }, 0.1) > 1.2 * dense, "bigger grains, fewer boundaries");
}

/// The quick protocol through the CLI on a small synthetic set: held-out ordering of the models, the
/// leakage record in results.h5, the pictures, the saved model and prediction with it.
#[test]
fn quick_protocol_end_to_end() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("set");
    let o = beamwatch(
        &["conductivity", "synth", "--out", path_str(&data), "--samples", "48", "--images-per-sample", "2", "--size", "36", "--seed", "11"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let dataset = data.join("dataset.h5");
    let run = tmp.path().join("run");
    let weights = common::synthetic_weights();
    let o = beamwatch(
        &[
            "conductivity", "train", "--data", path_str(&dataset), "--out", path_str(&run),
            "--protocol", "kfold", "--folds", "4", "--crop", "32", "--epochs", "15", "--patience", "5",
            "--models", "baseline,descriptors,descriptors-only,resnet18", "--weights", path_str(&weights),
            "--final", "descriptors", "--overlays", "2",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Baseline with descriptors") && text.contains("R²"), "{text}");

    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).expect("metrics.json")).expect("json");
    let r2 = |m: &str| {
        metrics["report"]["models"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["model"] == m))
            .and_then(|x| x["r2"].as_f64())
            .unwrap_or_else(|| panic!("no R² for {m}: {metrics}"))
    };
    let (img, both, desc) = (r2("baseline"), r2("descriptors"), r2("descriptors-only"));
    eprintln!("held-out R²: image-only {img:.3}, image + descriptors {both:.3}, descriptors only {desc:.3}");
    assert!(both > 0.5, "the descriptors model explains most of the variance: R² {both:.3}");
    assert!(both > img + 0.1, "image + descriptors ({both:.3}) beats image only ({img:.3})");
    assert!(both > desc + 0.1, "image + descriptors ({both:.3}) beats descriptors only ({desc:.3})");
    assert!(r2("resnet18").is_finite());
    // The simple baseline is evaluated beside the CNNs without being asked for, in the same folds.
    assert!(r2("ridge").is_finite() && text.contains("Ridge on 8 image statistics"), "{text}");
    let ridge_members = results::read_seen(&run.join("results.h5"), "ridge").expect("ridge seen");
    assert_eq!(ridge_members.len(), 4);
    // The synthetic trunk is never passed off as an ImageNet transfer.
    assert!(metrics["report"]["trunk"].as_str().is_some_and(|t| t.contains("SYNTHETIC")), "{}", metrics["report"]["trunk"]);

    // results.h5: every member's training record is free of its fold's test samples.
    let h5 = run.join("results.h5");
    let f = hdf5::File::open(&h5).expect("results.h5");
    let test_fold: Vec<u64> = f.dataset("samples/test_fold").and_then(|d| d.read_raw()).expect("test_fold");
    let image_sample: Vec<u64> = f.dataset("images/sample_index").and_then(|d| d.read_raw()).expect("sample_index");
    for arch in ["baseline", "descriptors", "descriptors-only", "resnet18"] {
        let members = results::read_seen(&h5, arch).expect("seen");
        assert_eq!(members.len(), 4, "{arch}: one member per outer fold");
        for (outer, seen) in members {
            assert!(!seen.is_empty());
            for item in seen {
                let sample = if arch == "descriptors-only" { item } else { image_sample[item] as usize };
                assert_ne!(test_fold[sample], outer as u64, "{arch}: fold {outer} trained on its own test sample {sample}");
            }
        }
        let pred: Vec<f64> =
            f.dataset(&format!("models/{arch}/sample_prediction_log10_s_per_cm")).and_then(|d| d.read_raw()).expect("predictions");
        assert_eq!(pred.len(), 48);
        let a_r2: f64 = f.group(&format!("models/{arch}")).and_then(|g| g.attr("r2")).and_then(|a| a.read_scalar()).expect("r2 attr");
        assert!((a_r2 - r2(arch)).abs() < 1e-12);
    }
    let corr: Vec<f64> = f.dataset("interpretation/channel_correlation").and_then(|d| d.read_raw()).expect("correlation");
    assert_eq!(corr.len(), 64);
    assert!(corr.iter().all(|r| (-1.0..=1.0).contains(r)) && corr.iter().any(|r| *r != 0.0));

    // Pictures decode and have a sensible size.
    for png in ["diagnostic.png", "channel_correlation.png"] {
        let im = image::open(run.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(im.width() >= 600 && im.height() >= 400, "{png}");
    }
    let overlays: Vec<_> = std::fs::read_dir(run.join("segmentation")).expect("segmentation").collect();
    assert_eq!(overlays.len(), 2);

    // The saved model predicts; twice the same; and it is the trained one (it fits its training set).
    let model = run.join("model");
    assert!(model.join("model.safetensors").is_file() && model.join("model.json").is_file());
    let predict = |out: &str| {
        let out = tmp.path().join(out);
        let o = beamwatch(&["conductivity", "predict", "--model", path_str(&model), "--data", path_str(&dataset), "--out", path_str(&out)], tmp.path());
        assert!(o.status.success(), "{}", common::stderr(&o));
        (std::fs::read_to_string(out.join("predictions.csv")).expect("csv"), stdout(&o))
    };
    let (p1, text) = predict("p1");
    let (p2, _) = predict("p2");
    assert_eq!(p1, p2);
    assert_eq!(p1.lines().count(), 49);
    let fit_r2: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("R² = ").and_then(|r| r.split(',').next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no R² line: {text}"));
    assert!(fit_r2 > 0.6, "the saved model fits the samples it was trained on: R² {fit_r2}");

    // Without a table a descriptors model cannot predict: one clear error.
    let o = beamwatch(
        &["conductivity", "predict", "--model", path_str(&model), "--images", path_str(&data.join("images")), "--out", path_str(&tmp.path().join("p3"))],
        tmp.path(),
    );
    assert_clean_error(&o, "needs each sample's x, y, T1, T2");
}

#[test]
fn settings_errors_name_the_file_image_or_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = synth::generate(&spec(4, (1, 1), 24, 1), || {}).expect("synth");
    let files = synth::write_files(&ds, tmp.path()).expect("write");
    let data = path_str(&files.dataset);
    let out = tmp.path().join("run");
    let o = beamwatch(&["conductivity", "train", "--data", data, "--out", path_str(&out), "--crop", "32"], tmp.path());
    assert_clean_error(&o, "crop 32 px does not fit image 0");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[train]\ncrop_px = 16\nmax_epoch = 3\n").expect("toml");
    let o = beamwatch(&["conductivity", "train", "--data", data, "--out", path_str(&out), "--config", path_str(&cfg)], tmp.path());
    let line = assert_clean_error(&o, "c.toml");
    assert!(line.contains("max_epoch"), "{line}");
    let o = beamwatch(&["conductivity", "train", "--data", path_str(&files.table), "--out", path_str(&out)], tmp.path());
    assert_clean_error(&o, "samples.csv");
    // The shipped example config is valid.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/conductivity/train.toml");
    beamwatch::secondary::conductivity::config::ConductivityConfig::load(&shipped).expect("configs/conductivity/train.toml");
}

// ---- SEM exports: palette TIFF, JPEG, info bars, tables without descriptors ----------------------

/// A classic little-endian 8-bit palette TIFF written byte by byte (the tiff crate cannot encode
/// palettes): `palette[i]` = (r, g, b) 16-bit, one strip, optional ASCII tag `extra`.
fn write_palette_tiff(path: &Path, w: u16, h: u16, idx: &[u8], palette: &[[u16; 3]; 256], extra: Option<(u16, &str)>) {
    let mut entries: Vec<(u16, u16, u32, u32)> = Vec::new(); // tag, type, count, value/offset
    let n_entries = 10 + usize::from(extra.is_some());
    let ifd_len = 2 + 12 * n_entries + 4;
    let cmap_at = 8 + ifd_len as u32;
    let text_at = cmap_at + 2 * 768;
    let text = extra.map(|(_, t)| format!("{t}\0")).unwrap_or_default();
    let data_at = text_at + text.len() as u32;
    entries.push((256, 3, 1, u32::from(w)));
    entries.push((257, 3, 1, u32::from(h)));
    entries.push((258, 3, 1, 8));
    entries.push((259, 3, 1, 1));
    entries.push((262, 3, 1, 3));
    entries.push((273, 4, 1, data_at));
    entries.push((277, 3, 1, 1));
    entries.push((278, 3, 1, u32::from(h)));
    entries.push((279, 4, 1, idx.len() as u32));
    entries.push((320, 3, 768, cmap_at));
    if let Some((tag, _)) = extra {
        entries.push((tag, 2, text.len() as u32, text_at));
    }
    let mut b: Vec<u8> = b"II*\0".to_vec();
    b.extend(8u32.to_le_bytes());
    b.extend((entries.len() as u16).to_le_bytes());
    for (tag, ty, count, v) in entries {
        b.extend(tag.to_le_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(count.to_le_bytes());
        if ty == 3 && count == 1 {
            b.extend((v as u16).to_le_bytes());
            b.extend([0, 0]);
        } else {
            b.extend(v.to_le_bytes());
        }
    }
    b.extend(0u32.to_le_bytes());
    for c in 0..3 {
        for e in palette {
            b.extend(e[c].to_le_bytes());
        }
    }
    b.extend(text.as_bytes());
    b.extend(idx);
    std::fs::write(path, b).expect("write palette tiff");
}

/// Micrograph-like texture (a continuum of grey levels) with a black info bar of `bar` rows at the
/// bottom carrying white "text" blocks.
fn micrograph_with_bar(w: usize, h: usize, bar: usize, seed: u32) -> Vec<u8> {
    let mut px = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = if y >= h - bar {
                let (ty, tx) = (y - (h - bar), x);
                let text = (3..bar.saturating_sub(3)).contains(&ty) && tx % 9 < 5 && (tx / 9) % 3 != 2 && tx > 4 && tx < w / 2;
                if text { 255 } else { 0 }
            } else {
                let t = (x as f32 * 0.37 + seed as f32).sin() * (y as f32 * 0.23).cos() * 60.0
                    + ((x * 7 + y * 13 + seed as usize * 31) % 41) as f32;
                (110.0 + t).clamp(0.0, 255.0) as u8
            };
            px[y * w + x] = v;
        }
    }
    px
}

#[test]
fn sem_exports_palette_tiff_jpeg_info_bar_and_pixel_size_import() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sem");
    std::fs::create_dir(&dir).expect("dir");
    let (w, h, bar) = (64usize, 60usize, 12usize);
    let grey: [[u16; 3]; 256] = std::array::from_fn(|i| [(i * 257) as u16; 3]);
    // A: grey palette TIFF with an info bar and the FEI/Thermo metadata tag.
    let a = micrograph_with_bar(w, h, bar, 1);
    write_palette_tiff(&dir.join("A_1.tif"), w as u16, h as u16, &a, &grey, Some((34682, "[User]\r\nDate=01/02/2025\r\n[Scan]\r\nPixelWidth=2.5e-009\r\n")));
    // B: colour palette (index i → red i, green 0, blue 255 − i) with the Zeiss tag, no bar.
    let colour: [[u16; 3]; 256] = std::array::from_fn(|i| [(i * 257) as u16, 0, ((255 - i) * 257) as u16]);
    let b = micrograph_with_bar(w, h, 0, 2);
    write_palette_tiff(&dir.join("B_1.tif"), w as u16, h as u16, &b, &colour, Some((34118, "AP_PIXEL_SIZE\r\nPixel Size = 4.2 nm\r\n")));
    // C: a JPEG with an info bar, and a Hitachi-style sidecar next to an 8-bit TIFF.
    let c = micrograph_with_bar(w, h, bar, 3);
    let gray = image::GrayImage::from_raw(w as u32, h as u32, c.clone()).expect("gray");
    let mut f = std::fs::File::create(dir.join("C_1.jpg")).expect("jpg");
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95).encode_image(&gray).expect("jpeg");
    gray.save(dir.join("C_2.tif")).expect("tif");
    std::fs::write(dir.join("C_2.txt"), "[SemImageFile]\r\nPixelSize=1.25\r\n").expect("sidecar");
    // A table with no descriptor columns at all.
    let table = tmp.path().join("samples.csv");
    std::fs::write(&table, "sample_id,conductivity_s_per_cm\nA,1e-5\nB,2e-6\nC,3e-4\n").expect("csv");
    let out = tmp.path().join("ds.h5");
    let o = beamwatch(
        &["conductivity", "import", "--images", path_str(&dir), "--table", path_str(&table), "--out", path_str(&out)],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("3 samples, 4 images"), "{text}");
    assert!(text.contains("0 of 3 samples have them"), "{text}");
    assert!(text.contains("info bar cut from 3 of 4 images (bottom 12 rows)"), "{text}");
    assert!(text.contains("pixel size from metadata for 3 of 4 images: 1.250–4.200 nm"), "{text}");
    assert!(common::stderr(&o).contains("cut a 12-row annotation band"), "{}", common::stderr(&o));

    let ds = Dataset::read(&out).expect("read");
    assert!(ds.samples.iter().all(|s| !s.has_descriptors() && s.x.is_nan()));
    let by = |name: &str| ds.images.iter().find(|im| im.source.ends_with(name)).unwrap_or_else(|| panic!("{name}"));
    // Grey palette: the indices, exactly; the bar rows are gone.
    let ia = by("A_1.tif");
    assert_eq!((ia.width, ia.height), (w, h - bar));
    for k in [0, 5, 777, ia.pixels.len() - 1] {
        assert!((ia.pixels[k] - f32::from(a[k]) / 255.0).abs() < 1e-6, "A pixel {k}");
    }
    // Colour palette: Rec. 601 luminance of the 16-bit entries; no bar, nothing cut.
    let ib = by("B_1.tif");
    assert_eq!(ib.height, h);
    for k in [0, 100, 2000] {
        let i = f64::from(b[k]);
        let want = (0.299 * i * 257.0 + 0.114 * (255.0 - i) * 257.0).round() / 65535.0;
        assert!((f64::from(ib.pixels[k]) - want).abs() < 1e-6, "B pixel {k}: {} vs {want}", ib.pixels[k]);
    }
    // JPEG: close to what was encoded (lossy), bar cut.
    let ic = by("C_1.jpg");
    assert_eq!((ic.width, ic.height), (w, h - bar));
    let err = ic.pixels.iter().zip(&c).map(|(p, &v)| (p - f32::from(v) / 255.0).abs()).sum::<f32>() / ic.pixels.len() as f32;
    assert!(err < 0.03, "JPEG mean error {err}");

    // The same pixel sizes straight from the reader.
    let ps = |n: &str| beamwatch::imagefile::sem_pixel_size(&dir.join(n)).map(|p| p.metres);
    assert!((ps("A_1.tif").expect("FEI") - 2.5e-9).abs() < 1e-15);
    assert!((ps("B_1.tif").expect("Zeiss") - 4.2e-9).abs() < 1e-15);
    assert!((ps("C_2.tif").expect("Hitachi") - 1.25e-9).abs() < 1e-15);
    assert_eq!(ps("C_1.jpg"), None);

    // --crop-rows 0 keeps every row; --crop-rows 5 cuts exactly five from each image.
    for (rows, want_a) in [("0", h), ("5", h - 5)] {
        let o = beamwatch(
            &["conductivity", "import", "--images", path_str(&dir), "--table", path_str(&table), "--out", path_str(&out), "--crop-rows", rows],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        let ds = Dataset::read(&out).expect("read");
        assert_eq!(ds.images.iter().find(|im| im.source.ends_with("A_1.tif")).map(|im| im.height), Some(want_a));
        assert!(ds.images.iter().all(|im| im.height == want_a));
    }
}

#[test]
fn info_bar_detector_cuts_bars_and_leaves_micrographs_alone() {
    use beamwatch::secondary::conductivity::infobar::{self, Band, Edge};
    let (w, h) = (80usize, 70usize);
    let to_f = |v: Vec<u8>| v.into_iter().map(|p| f32::from(p) / 255.0).collect::<Vec<f32>>();
    let with = to_f(micrograph_with_bar(w, h, 16, 4));
    assert_eq!(infobar::detect(&with, w, h), Some(Band { edge: Edge::Bottom, rows: 16 }));
    let without = to_f(micrograph_with_bar(w, h, 0, 4));
    assert_eq!(infobar::detect(&without, w, h), None);
    // A bar at the top (flip the image vertically).
    let flipped: Vec<f32> = (0..h).rev().flat_map(|y| with[y * w..(y + 1) * w].to_vec()).collect();
    assert_eq!(infobar::detect(&flipped, w, h), Some(Band { edge: Edge::Top, rows: 16 }));
    // Synthetic pellets (grains, boundaries, pores, noise) never look like a bar.
    let ds = synth::generate(&spec(6, (2, 2), 64, 9), || {}).expect("synth");
    for im in &ds.images {
        assert_eq!(infobar::detect(&im.pixels, im.width, im.height), None, "{}", im.source);
    }
}

#[test]
fn sample_identity_from_names_and_unmatched_files_are_one_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sem");
    std::fs::create_dir(&dir).expect("dir");
    let im = |seed: u32| image::GrayImage::from_raw(40, 40, micrograph_with_bar(40, 40, 0, seed)).expect("gray");
    // File names made of σ values, with copy suffixes, as some groups name their exports.
    im(1).save(dir.join("2.01e-5.tif")).expect("w");
    im(2).save(dir.join("2.01e-5 (2).tif")).expect("w");
    im(3).save(dir.join("8e-8_a.png")).expect("w");
    im(4).save(dir.join("notes.png")).expect("w");
    let out = tmp.path().join("ds.h5");
    let run = |args: &[&str]| {
        let mut a = vec!["conductivity", "import", "--images", path_str(&dir), "--out", path_str(&out)];
        a.extend_from_slice(args);
        beamwatch(&a, tmp.path())
    };
    // Without a table the leading number is the sample and its σ; a name without one is an error.
    let line = assert_clean_error(&run(&[]), "notes.png");
    assert!(line.contains("1 image file does not start with a conductivity"), "{line}");
    let o = run(&["--skip-unmatched"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(stdout(&o).contains("left out 1 image file(s) that belong to no sample: notes.png"), "{}", stdout(&o));
    let ds = Dataset::read(&out).expect("read");
    assert_eq!(ds.samples.len(), 2);
    let s = ds.samples.iter().position(|s| s.id == "2.01e-5").expect("2.01e-5");
    assert_eq!(ds.images_of(s).len(), 2);
    assert_eq!(ds.samples[s].conductivity_s_per_cm, Some(2.01e-5));

    // With a table: `2.01e-5 (2).tif` belongs to sample 2.01e-5; notes.png to nobody → error.
    let table = tmp.path().join("t.csv");
    std::fs::write(&table, "sample_id,conductivity_s_per_cm\n2.01e-5,2.01e-5\n8e-8,8e-8\n").expect("csv");
    let line = assert_clean_error(&run(&["--table", path_str(&table)]), "belong to no sample_id");
    assert!(line.contains("notes.png") && !line.contains("(2).tif"), "{line}");
    // Descriptor columns come together: three of four is an error naming the missing one.
    std::fs::write(&table, "sample_id,x,y,T1_c,conductivity_s_per_cm\nA,0.1,0.1,1000,1e-5\n").expect("csv");
    let line = assert_clean_error(&run(&["--table", path_str(&table), "--skip-unmatched"]), "missing column T2_c");
    assert!(line.contains("leave all four out"), "{line}");
}

#[test]
fn grid_crops_cover_the_whole_image() {
    use beamwatch::secondary::conductivity::dataset::SemImage;
    use beamwatch::secondary::conductivity::model::grid_crops;
    let (w, h) = (100usize, 70usize);
    let im = SemImage { sample: 0, width: w, height: h, pixels: (0..w * h).map(|i| i as f32).collect(), source: "t".into() };
    let crops = grid_crops(&im, 32);
    assert_eq!(crops.len(), 4 * 3);
    let mut covered = vec![false; w * h];
    for c in &crops {
        assert_eq!(c.len(), 32 * 32);
        for &v in c {
            covered[v as usize] = true;
        }
    }
    assert!(covered.iter().all(|&c| c), "every pixel is in some crop");
    // An image the size of the crop is one crop, itself.
    let one = SemImage { sample: 0, width: 32, height: 32, pixels: vec![0.5; 1024], source: "t".into() };
    assert_eq!(grid_crops(&one, 32).len(), 1);
}

#[test]
fn image_only_data_trains_the_image_models_and_skips_descriptor_models_with_one_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Synthetic pellets written as an SEM would: 8-bit grey palette TIFFs with a burnt-in info bar,
    // one image as JPEG, a table with only sample_id and conductivity.
    let ds = synth::generate(&spec(12, (2, 2), 40, 5), || {}).expect("synth");
    let dir = tmp.path().join("sem");
    std::fs::create_dir(&dir).expect("dir");
    let grey: [[u16; 3]; 256] = std::array::from_fn(|i| [(i * 257) as u16; 3]);
    let bar = 10usize;
    let mut per_sample = vec![0usize; ds.samples.len()];
    for (k, im) in ds.images.iter().enumerate() {
        let (w, h) = (im.width, im.height + bar);
        let mut px: Vec<u8> = im.pixels.iter().map(|&v| (v * 255.0).round() as u8).collect();
        let band = micrograph_with_bar(w, bar + 20, bar, 0);
        px.extend_from_slice(&band[20 * w..]);
        per_sample[im.sample] += 1;
        let name = format!("{}_{}", ds.samples[im.sample].id, per_sample[im.sample]);
        if k == 0 {
            let g = image::GrayImage::from_raw(w as u32, h as u32, px).expect("gray");
            let mut f = std::fs::File::create(dir.join(format!("{name}.jpg"))).expect("jpg");
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95).encode_image(&g).expect("jpeg");
        } else {
            write_palette_tiff(&dir.join(format!("{name}.tif")), w as u16, h as u16, &px, &grey, None);
        }
    }
    let mut table = String::from("sample_id,conductivity_s_per_cm\n");
    for s in &ds.samples {
        table.push_str(&format!("{},{:e}\n", s.id, s.conductivity_s_per_cm.expect("σ")));
    }
    std::fs::write(tmp.path().join("t.csv"), table).expect("csv");
    let set = tmp.path().join("set.h5");
    let o = beamwatch(
        &["conductivity", "import", "--images", path_str(&dir), "--table", path_str(&tmp.path().join("t.csv")), "--out", path_str(&set)],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(stdout(&o).contains("info bar cut from 24 of 24 images (bottom 10 rows)"), "{}", stdout(&o));
    let imported = Dataset::read(&set).expect("read");
    // The palette TIFFs give back the pellets' pixels exactly; the bar is gone.
    for (a, b) in imported.images.iter().zip(&ds.images).skip(1) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        assert_eq!(a.pixels, b.pixels, "{}", a.source);
    }
    let run = tmp.path().join("run");
    let o = beamwatch(
        &[
            "conductivity", "train", "--data", path_str(&set), "--out", path_str(&run), "--protocol", "kfold", "--folds", "3",
            "--crop", "16", "--epochs", "2", "--patience", "2", "--crops-per-image", "2", "--models", "baseline,descriptors",
            "--overlays", "1",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("descriptors: skipped — needs x, y, T1_c, T2_c for every sample; 12 of 12 samples lack them"), "{text}");
    assert!(text.contains("the final model is baseline instead"), "{text}");
    assert!(text.contains("Baseline (image only)") && text.contains("Ridge on 8 image statistics"), "{text}");
    // No made-up descriptors in picture captions: the overlay is drawn and the dataset has none.
    assert_eq!(std::fs::read_dir(run.join("segmentation")).expect("segmentation").count(), 1);
    // predict reports the spread over each image's grid of crops.
    let o = beamwatch(
        &["conductivity", "predict", "--model", path_str(&run.join("model")), "--data", path_str(&set), "--out", path_str(&tmp.path().join("p"))],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let csv = std::fs::read_to_string(tmp.path().join("p/predictions.csv")).expect("csv");
    assert!(csv.starts_with("sample_id,images,predicted_log10_s_per_cm,predicted_s_per_cm,crop_spread_log10"), "{csv}");
    let spreads: Vec<f64> = csv.lines().skip(1).filter_map(|l| l.split(',').nth(4)?.parse().ok()).collect();
    assert_eq!(spreads.len(), 12);
    assert!(spreads.iter().all(|s| s.is_finite() && *s >= 0.0) && spreads.iter().any(|s| *s > 0.0), "{spreads:?}");
}
