//! The materials map stage: descriptors checked by hand, CIF reading and symmetry expansion, OBELiX
//! end to end, bad input, and a small training run with decode/near round trips.

mod common;

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use beamwatch::secondary::map::structure::{self, Species, StructureSettings};
use beamwatch::secondary::map::{cif, dataset, formula, histograms, train};

fn obelix() -> PathBuf {
    common::shared().join("data/obelix/data/downloads")
}

/// The chemhist table as the test reads it itself: symbol → column → value (None for nodata).
fn table() -> HashMap<String, HashMap<String, Option<f64>>> {
    let text = std::fs::read_to_string(common::shared().join("data/chemhist/def_elem_property.csv")).expect("chemhist table");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let mut out = HashMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        let mut m = HashMap::new();
        for (h, v) in header.iter().zip(&f) {
            m.insert(h.to_string(), v.trim_matches('[').parse::<f64>().ok());
        }
        out.insert(f[1].to_string(), m);
    }
    out
}

fn prop(t: &HashMap<String, HashMap<String, Option<f64>>>, el: &str, p: &str) -> f64 {
    t[el][p].expect("value")
}

/// chemhist's smoothing of a histogram with mass `w` in bin `k` (bin lower edges e_i = min + i·width),
/// written out for one or two filled bins.
fn smoothed(bins: usize, min: f64, width: f64, sigma: f64, filled: &[(usize, f64)]) -> Vec<f64> {
    (0..bins)
        .map(|x| {
            let ex = min + width * x as f64;
            let v: f64 = filled
                .iter()
                .filter(|(k, _)| *k >= 1)
                .map(|&(k, w)| {
                    let ek = min + width * k as f64;
                    w / (2.0 * PI * sigma * sigma).sqrt() * (-(ek - ex).powi(2) / (2.0 * sigma * sigma)).exp() * width
                })
                .sum();
            if v.abs() < 1e-6 { 0.0 } else { v }
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-9, "{what}[{i}]: got {g}, hand-computed {w}");
    }
}

// Offsets of the single-histogram blocks inside each 595-bin type (AN 101, EN 50, MP 50, PN 19,
// PG 19, MN 102, AW, AR, IR, CoR, CrR 50 each, spdf 4); products start at 595, differences at 1190.
const AN: usize = 0;
const EN: usize = 101;
const PN: usize = 201;
const MN: usize = 239;
const SPDF: usize = 591;
const PRODUCT: usize = 595;
const DIFFERENCE: usize = 1190;

#[test]
fn composition_histograms_by_hand_lif_and_li2o() {
    let t = table();
    for (f, parts) in [("LiF", [("Li", 0.5), ("F", 0.5)]), ("Li2O", [("Li", 2.0 / 3.0), ("O", 1.0 / 3.0)])] {
        let d = histograms::descriptor(&formula::parse(f).expect("formula"));
        assert_eq!(d.len(), 1785, "{f}: 3 × 595 values");
        let (a, b) = (parts[0], parts[1]);
        // AN: one bin per element (bin Z − 1), not smoothed.
        let mut an = vec![0.0; 101];
        an[prop(&t, a.0, "AN") as usize - 1] = a.1;
        an[prop(&t, b.0, "AN") as usize - 1] = b.1;
        assert_close(&d[AN..AN + 101], &an, &format!("{f} AN"));
        // EN single: −1..5 in 50 bins of 0.12, σ = 0.2.
        let en_bin = |v: f64| ((v + 1.0) / 0.12).floor() as usize;
        let (ea, eb) = (prop(&t, a.0, "EN"), prop(&t, b.0, "EN"));
        let want = smoothed(50, -1.0, 0.12, 0.2, &[(en_bin(ea), a.1), (en_bin(eb), b.1)]);
        assert_close(&d[EN..EN + 50], &want, &format!("{f} EN"));
        // EN product: ln EN₁ + ln EN₂ with weight x₁ + x₂ = 1 over [−0.2 ln 5, 2 ln 5], σ = 2 ln 5 / 50.
        let l5 = 5f64.ln();
        let (pmin, pw) = (-0.2 * l5, 2.2 * l5 / 50.0);
        let pv = ea.ln() + eb.ln();
        let want = smoothed(50, pmin, pw, 2.0 * l5 / 50.0, &[(((pv - pmin) / pw).floor() as usize, 1.0)]);
        assert_close(&d[PRODUCT + EN..PRODUCT + EN + 50], &want, &format!("{f} EN×EN"));
        // EN difference: |EN₁ − EN₂|, weight 1, single settings.
        let want = smoothed(50, -1.0, 0.12, 0.2, &[(en_bin((ea - eb).abs()), 1.0)]);
        assert_close(&d[DIFFERENCE + EN..DIFFERENCE + EN + 50], &want, &format!("{f} EN−EN"));
        // PN difference: Li, F and O are all in period 2, |ΔPN| = 0 is below the range (1..20): empty.
        assert_close(&d[DIFFERENCE + PN..DIFFERENCE + PN + 19], &[0.0; 19], &format!("{f} PN−PN"));
        // spdf: s (1) and p (2) blocks, 1..5 in 4 bins, not smoothed.
        assert_close(&d[SPDF..SPDF + 4], &[a.1, b.1, 0.0, 0.0], &format!("{f} spdf"));
        // MN difference: −24..120 in 102 bins, σ 4.8.
        let (ma, mb) = (prop(&t, a.0, "MN"), prop(&t, b.0, "MN"));
        let w = 144.0 / 102.0;
        let want = smoothed(102, -24.0, w, 4.8, &[((((ma - mb).abs() + 24.0) / w).floor() as usize, 1.0)]);
        assert_close(&d[DIFFERENCE + MN..DIFFERENCE + MN + 102], &want, &format!("{f} MN−MN"));
    }
}

#[test]
fn formulas_of_all_obelix_entries_match_their_true_composition() {
    let mut rdr = csv::Reader::from_path(obelix().join("all.csv")).expect("all.csv");
    let h = rdr.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect("column");
    let (cr, ct) = (col("Reduced Composition"), col("True Composition"));
    let mut n = 0;
    let mut differ = Vec::new();
    for rec in rdr.records() {
        let rec = rec.expect("row");
        let reduced = formula::parse(&rec[cr]).unwrap_or_else(|e| panic!("{e}"));
        let truth = formula::parse(&rec[ct]).unwrap_or_else(|e| panic!("{e}"));
        let same = truth.fractions().iter().chain(reduced.fractions().iter()).all(|&(z, _)| (truth.fraction_of(z) - reduced.fraction_of(z)).abs() < 2e-3);
        if !same {
            differ.push(format!("{} vs {}", &rec[cr], &rec[ct]));
        }
        n += 1;
    }
    assert_eq!(n, 599);
    // OBELiX itself has a handful of rows whose two columns disagree (e.g. Li2CdCl4 vs
    // Li1.6Cd8.0Cl32.0); a parser bug would show in far more rows (parentheses, spaces, fractions).
    assert!(differ.len() <= 6, "{} rows differ: {differ:#?}", differ.len());
}

const SYM_CIF: &str = "# body-centred cell with inversion, monoclinic angle
data_test
_cell_length_a   4.0000(3)
_cell_length_b   5.0
_cell_length_c   6.0
_cell_angle_alpha 90
_cell_angle_beta  100.0
_cell_angle_gamma 90
_symmetry_space_group_name_H-M   'I 1 2/m 1'
loop_
 _space_group_symop_id
 _space_group_symop_operation_xyz
  1  'x, y, z'
  2  '-x, -y, -z'
  3  'x+1/2, y+1/2, z+1/2'
  4  '1/2-x, 1/2-y, 1/2-z'
loop_
 _atom_site_label
 _atom_site_type_symbol
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Li1  Li+  2  0.0   0.0   0.0   1.0
  O1   O2-  4  0.25  0.1   0.3   0.5
";

#[test]
fn cif_symmetry_operations_are_expanded() {
    let c = cif::parse(SYM_CIF, "sym.cif").expect("parse");
    assert_eq!(c.ops.len(), 4);
    let li: Vec<&cif::Atom> = c.atoms.iter().filter(|a| a.z == 3).collect();
    let o: Vec<&cif::Atom> = c.atoms.iter().filter(|a| a.z == 8).collect();
    assert_eq!(li.len(), 2, "Li on the inversion centre: 2 positions, not 4");
    assert_eq!(o.len(), 4);
    let has = |set: &[&cif::Atom], p: [f64; 3]| set.iter().any(|a| (0..3).all(|k| (a.frac[k] - p[k]).abs() < 1e-9));
    for p in [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]] {
        assert!(has(&li, p), "Li at {p:?}");
    }
    for p in [[0.25, 0.1, 0.3], [0.75, 0.9, 0.7], [0.75, 0.6, 0.8], [0.25, 0.4, 0.2]] {
        assert!(has(&o, p), "O at {p:?}");
    }
    assert!(o.iter().all(|a| a.occupancy == 0.5) && li.iter().all(|a| a.occupancy == 1.0));
    assert!(c.multiplicity_mismatches.is_empty());
    let v = 4.0 * 5.0 * 6.0 * 100f64.to_radians().sin();
    assert!((c.volume_a3() - v).abs() < 1e-9, "monoclinic volume {} vs {v}", c.volume_a3());
    assert_eq!(c.space_group.as_deref(), Some("I 1 2/m 1"));
}

#[test]
fn every_obelix_cif_expands_to_its_stated_multiplicities_and_formula() {
    let src = dataset::CifSource::open(Some(&obelix().join("all_cifs.tar.gz"))).expect("archive");
    let dataset::CifSource::Archive { files, .. } = &src else { panic!("not read as an archive") };
    assert_eq!(files.len(), 321);
    let mut checked = 0;
    for (name, text) in files.values() {
        let c = cif::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.multiplicity_mismatches.is_empty(), "{name}: {:?}", c.multiplicity_mismatches);
        // _chemical_formula_sum 'Li4 Gd4 P16 O48' is the cell content pymatgen wrote.
        let sum = text.lines().find_map(|l| l.strip_prefix("_chemical_formula_sum")).expect("formula sum").trim().trim_matches('\'');
        if sum.is_empty() {
            continue; // a few files put the value on the next line
        }
        checked += 1;
        let want = formula::parse(&sum.replace(' ', "")).expect("sum formula");
        let got = c.composition();
        for &(z, n) in &want.amounts {
            let g = got.iter().find(|e| e.0 == z).map_or(0.0, |e| e.1);
            assert!((g - n).abs() < 1e-3 * n.max(1.0), "{name}: Z={z}: {g} atoms in the expanded cell, formula sum says {n}");
        }
    }
    assert!(checked >= 310, "{checked} formula sums checked");
}

fn simple_cubic(a: f64) -> cif::UnitCell {
    let text = format!(
        "data_sc\n_cell_length_a {a}\n_cell_length_b {a}\n_cell_length_c {a}\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nLi1 0 0 0\n"
    );
    cif::parse(&text, "sc.cif").expect("simple cubic")
}

#[test]
fn rdf_of_simple_cubic_has_its_shells_and_coordination_numbers() {
    let a = 3.0;
    let cell = simple_cubic(a);
    let s = StructureSettings::default();
    let (counts, n_centre) = structure::rdf_counts(&cell, Species::Li, Species::Li, s.rdf_cutoff_a, s.rdf_bins, s.same_site_a);
    assert_eq!(n_centre, 1.0);
    let dr = s.rdf_cutoff_a / s.rdf_bins as f64;
    let shells = [(a, 6.0), (a * 2f64.sqrt(), 12.0), (a * 3f64.sqrt(), 8.0), (2.0 * a, 6.0)];
    for (r, cn) in shells {
        let k = (r / dr) as usize;
        assert_eq!(counts[k], cn, "raw count in the bin of r = {r:.3} Å");
    }
    // Nothing closer than the first shell.
    assert!(counts[..(a / dr) as usize].iter().all(|&c| c == 0.0));
    // The descriptor: smoothed neighbour density; peaks at the shells, ∫4πr²ρ dr = coordination number.
    let d = structure::descriptor(&cell, &s);
    let rdf = &d[0..s.rdf_bins];
    for (r, cn) in shells {
        let k = (r / dr) as usize;
        let peak = (k.saturating_sub(2)..=k + 2).max_by(|&i, &j| rdf[i].total_cmp(&rdf[j])).expect("bins");
        let r_peak = (peak as f64 + 0.5) * dr;
        assert!((r_peak - r).abs() <= dr, "peak at {r_peak:.3} Å, shell at {r:.3} Å");
        let window = 7;
        let integral: f64 = (k - window..=k + window).map(|i| rdf[i] * 4.0 * PI * ((i as f64 + 0.5) * dr).powi(2) * dr).sum();
        assert!((integral - cn).abs() < 0.01 * cn, "coordination at {r:.3} Å: {integral:.4}, want {cn}");
    }
    // ADF of the six nearest neighbours: 12 right angles and 3 straight ones per centre.
    let (adf, _) = structure::adf_counts(&cell, Species::Li, Species::All, 3.2, 180, s.same_site_a);
    assert_eq!(adf[90], 12.0);
    assert_eq!(adf[179], 3.0);
    assert_eq!(adf.iter().sum::<f64>(), 15.0);
}

#[test]
fn obelix_featurizes_from_the_tar_gz_with_its_official_split() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("obelix.h5");
    let o = obelix();
    let p = |n: &str| o.join(n).to_string_lossy().into_owned();
    let (all, cifs, train, test) = (p("all.csv"), p("all_cifs.tar.gz"), p("train.csv"), p("test.csv"));
    let out_s = out.to_string_lossy().into_owned();
    let args = ["map", "featurize", "--table", &all, "--cifs", &cifs, "--train-ids", &train, "--test-ids", &test, "--out", &out_s];
    let r = common::beamwatch(&args, tmp.path());
    assert!(r.status.success(), "{}", common::stderr(&r));
    let ds = dataset::read(&out).expect("dataset");
    assert_eq!(ds.len(), 599);
    assert_eq!(ds.has_structure.iter().filter(|h| **h).count(), 321);
    assert_eq!(ds.split.iter().filter(|s| **s == dataset::Split::Test).count(), 121);
    assert_eq!(ds.censored.iter().filter(|c| **c).count(), 37);
    assert_eq!((ds.composition.ncols(), ds.structure.ncols()), (1785, 1160));
    // "<1E-10" is kept at its bound; a plain value is its log10.
    let i = ds.ids.iter().position(|x| x == "jqc").expect("jqc");
    assert!((ds.target[i] - 1.58489e-06f64.log10()).abs() < 1e-9);
    assert!(ds.target.iter().zip(&ds.censored).filter(|(_, c)| **c).all(|(t, _)| *t == -10.0 || *t == -8.0));
    // Compounds without a CIF carry no structure.
    assert!((0..ds.len()).filter(|&i| !ds.has_structure[i]).all(|i| ds.structure.row(i).iter().all(|&v| v == 0.0)));
    let garnets = ds.families.iter().filter(|f| *f == "garnet").count();
    assert!(garnets >= 95, "{garnets} garnets recognised (OBELiX labels 105)");
    let out_text = common::stdout(&r);
    assert!(out_text.contains("agree with the table's Family column"), "{out_text}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn featurize_error(table: &str, cifs: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path().join("t.csv");
    write(&t, table);
    let dir = tmp.path().join("cifs");
    std::fs::create_dir_all(&dir).expect("dir");
    for (n, c) in cifs {
        write(&dir.join(n), c);
    }
    let r = common::beamwatch(
        &["map", "featurize", "--table", t.to_str().expect("p"), "--cifs", dir.to_str().expect("p"), "--out", tmp.path().join("o.h5").to_str().expect("p")],
        tmp.path(),
    );
    common::assert_clean_error(&r, "error")
}

#[test]
fn bad_input_is_one_clear_error_naming_the_row() {
    let e = featurize_error("id,formula,target\na,Li2O,-3\nb,LiXx2O,-4\n", &[]);
    assert!(e.contains("row 3") && e.contains("id 'b'") && e.contains("unknown element 'Xx'"), "{e}");
    let e = featurize_error("id,formula,target\na,Li2(O,-3\n", &[]);
    assert!(e.contains("row 2") && e.contains("column 'formula'") && e.contains("expected ')'"), "{e}");
    let e = featurize_error("id,formula,conductivity_s_per_cm\na,Li2O,1e-4\nb,LiF,fast\n", &[]);
    assert!(e.contains("row 3") && e.contains("'fast' is not a number") && e.contains("conductivity_s_per_cm"), "{e}");
    let e = featurize_error("id,formula,conductivity_s_per_cm\na,Li2O,0\n", &[]);
    assert!(e.contains("row 2") && e.contains("must be > 0"), "{e}");
    let bad = "data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nLi1 0 0\n";
    let e = featurize_error("id,formula,target\nc,Li,-3\n", &[("c.cif", bad)]);
    assert!(e.contains("c.cif:8") && e.contains("not a multiple") && e.contains("row 2 (id 'c')"), "{e}");
    let no_cell = "data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nLi1 0 0 0\n";
    let e = featurize_error("id,formula,target\nc,Li,-3\n", &[("c.cif", no_cell)]);
    assert!(e.contains("c.cif") && e.contains("no _cell_length_b"), "{e}");
    let junk_symop = SYM_CIF.replace("'x+1/2, y+1/2, z+1/2'", "'x+1/2, y+1/2, q'");
    let e = featurize_error("id,formula,target\nc,LiO2,-3\n", &[("c.cif", &junk_symop)]);
    assert!(e.contains("c.cif:15") && e.contains("unexpected 'q'"), "{e}");
}

/// A learnable toy family: Li(1+6t) Ta(2−t) O6 in a CsCl-type LiO cell of edge 2.9 + 1.2 s Å, target
/// 2s + 0.3t (+ a small wobble), mostly structural like the paper's migration energy; every fourth
/// compound has no CIF. One parameter per block, so a 1-D code can hold each.
fn synthetic(dir: &Path, n: usize) -> PathBuf {
    let cifs = dir.join("cifs");
    std::fs::create_dir_all(&cifs).expect("dir");
    let mut table = String::from("id,formula,target\n");
    for i in 0..n {
        let t = (i as f64 * 0.618_034) % 1.0;
        let s = (i as f64 * 0.414_214 + 0.2) % 1.0;
        let y = 2.0 * s + 0.3 * t + 0.05 * (i as f64).sin();
        table.push_str(&format!("c{i},Li{:.3}Ta{:.3}O6,{y:.4}\n", 1.0 + 6.0 * t, 2.0 - t));
        if i % 4 != 3 {
            let a = 2.9 + 1.2 * s;
            let text = format!(
                "data_c{i}\n_cell_length_a {a}\n_cell_length_b {a}\n_cell_length_c {a}\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\nLi1 Li 0 0 0 1\nO1 O 0.5 0.5 0.5 1\n"
            );
            write(&cifs.join(format!("c{i}.cif")), &text);
        }
    }
    let p = dir.join("toy.csv");
    write(&p, &table);
    p
}

#[test]
fn training_learns_a_toy_map_and_decode_near_round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let table = synthetic(d, 56);
    let ds_path = d.join("toy.h5");
    let r = common::beamwatch(
        &["map", "featurize", "--table", table.to_str().expect("p"), "--cifs", d.join("cifs").to_str().expect("p"), "--out", ds_path.to_str().expect("p")],
        d,
    );
    assert!(r.status.success(), "{}", common::stderr(&r));
    let cfg = d.join("map.toml");
    write(&cfg, "w_values = [0.0, 1.0]\npick_w = 1.0\nhidden = [48, 16]\nhead_hidden = [16, 16]\nmax_epochs = 300\npatience = 50\ngrid = 40\n");
    let out = d.join("run");
    let r = common::beamwatch(&["map", "train", "--data", ds_path.to_str().expect("p"), "--out", out.to_str().expect("p"), "--config", cfg.to_str().expect("p")], d);
    assert!(r.status.success(), "{}", common::stderr(&r));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let picked = &runs[1]["test"];
    let f = |k: &str| picked[k].as_f64().unwrap_or(f64::NAN);
    println!("toy test set: R² composition {:.3}, structure {:.3}, target {:.3}", f("r2_comp"), f("r2_struct"), f("r2_target"));
    // An untrained decoder scores below 0; the structure's moving RDF peaks are the harder block.
    assert!(f("r2_comp") > 0.8, "composition reconstruction R² {}", f("r2_comp"));
    assert!(f("r2_struct") > 0.5, "structure reconstruction R² {}", f("r2_struct"));
    assert!(f("r2_target") > 0.3, "target R² {} (the toy target is a smooth function of the codes)", f("r2_target"));
    for png in ["map.png", "map_W_0.png", "tradeoff.png", "diagnostics.png"] {
        let img = image::open(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() >= 1000 && img.height() >= 400, "{png}");
    }
    let md = std::fs::read_to_string(out.join("tradeoff.md")).expect("md");
    assert!(md.contains("| 0 ¹ |") && md.contains("ridge"), "{md}");

    // near at a compound's own code ranks it first at distance 0; decode there recovers its elements.
    let res = beamwatch::secondary::map::results::read(&out.join("results.h5"), None).expect("results");
    let i = (0..res.ids.len()).find(|&i| res.has_structure[i]).expect("a compound with structure");
    let (x, y) = (res.codes[[i, 0]], res.codes[[i, 1]]);
    let (xs, ys) = (format!("{x}"), format!("{y}"));
    let r = common::beamwatch(&["map", "near", &xs, &ys, "--model", out.to_str().expect("p"), "-k", "3", "--json"], d);
    assert!(r.status.success(), "{}", common::stderr(&r));
    let near: serde_json::Value = serde_json::from_str(&common::stdout(&r)).expect("near json");
    assert_eq!(near["rows"][0]["id"], res.ids[i].as_str());
    assert!(near["rows"][0]["distance"].as_f64().expect("d") < 1e-6);
    assert_eq!(near["rows"].as_array().map(|a| a.len()), Some(3));
    let h5 = d.join("decoded.h5");
    let r = common::beamwatch(&["map", "decode", &xs, &ys, "--model", out.to_str().expect("p"), "--out", h5.to_str().expect("p"), "--json"], d);
    assert!(r.status.success(), "{}", common::stderr(&r));
    let dec: serde_json::Value = serde_json::from_str(&common::stdout(&r)).expect("decode json");
    let els: Vec<&str> = dec["elements"].as_array().expect("elements").iter().filter_map(|e| e[0].as_str()).collect();
    for e in ["Li", "Ta", "O"] {
        assert!(els.contains(&e), "decoded elements {els:?} lack {e}");
    }
    assert!((dec["predicted_target"].as_f64().expect("p") - res.predicted[i]).abs() < 1e-4, "decode and the run predict the same target");
    let f = hdf5::File::open(&h5).expect("decoded h5");
    assert_eq!(f.dataset("composition").expect("c").size(), 1785);
    assert_eq!(f.dataset("structure").expect("s").size(), 1160);
    // Negative coordinates parse as numbers, not flags.
    let r = common::beamwatch(&["map", "near", "-1.5", "-0.25", "--model", out.to_str().expect("p")], d);
    assert!(r.status.success(), "{}", common::stderr(&r));
}

#[test]
fn training_repeats_exactly_with_the_same_seed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let table = synthetic(tmp.path(), 24);
    let input = dataset::FeaturizeInput {
        table: &table,
        cifs: Some(&tmp.path().join("cifs")),
        train_ids: None,
        test_ids: None,
        censored: dataset::Censored::Bound,
        settings: StructureSettings::default(),
    };
    let (ds, _) = dataset::featurize(&input, &|| {}).expect("featurize");
    let cfg = train::TrainConfig { hidden: vec![32, 8], head_hidden: vec![8], max_epochs: 4, ..train::TrainConfig::default() };
    let p = train::prepare(&ds, &cfg).expect("prepare");
    let a = train::train_one(&p, &cfg, 0.1, &mut |_, _| {}).expect("run a");
    let b = train::train_one(&p, &cfg, 0.1, &mut |_, _| {}).expect("run b");
    assert_eq!(a.history, b.history);
    assert!(a.codes.iter().zip(b.codes.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
    let c = train::train_one(&p, &train::TrainConfig { seed: 1, ..cfg.clone() }, 0.1, &mut |_, _| {}).expect("run c");
    assert_ne!(a.history, c.history, "another seed gives another run");
}

#[test]
fn shipped_training_config_states_the_defaults() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/map/train.toml");
    let cfg: train::TrainConfig = toml::from_str(&std::fs::read_to_string(&p).expect("config")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg, train::TrainConfig::default(), "configs/map/train.toml documents the defaults");
    assert!(toml::from_str::<train::TrainConfig>("bacth = 16\n").is_err(), "a misspelt key is an error");
}
