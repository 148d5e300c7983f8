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
    let ds = import::import(&ImportOptions { images_dir: dir, table, require_target: true }).expect("import");
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
