//! `beamwatch map`: the autoencoder materials map (secondary).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Error;
use crate::config::ConfigError;
use crate::secondary::map::train::TrainConfig;

#[derive(Subcommand)]
pub enum MapCommand {
    /// Compute compositional and structural descriptors of a compound table into an HDF5 dataset.
    Featurize {
        /// CSV with id, formula and target columns (OBELiX's all.csv works as it is).
        #[arg(long)]
        table: PathBuf,
        /// CIFs: a folder or a .tar.gz, files named <id>.cif (or a `cif` column in the table).
        #[arg(long)]
        cifs: Option<PathBuf>,
        /// CSV whose id column lists the training compounds (e.g. OBELiX's train.csv).
        #[arg(long)]
        train_ids: Option<PathBuf>,
        /// CSV whose id column lists the test compounds (e.g. OBELiX's test.csv).
        #[arg(long)]
        test_ids: Option<PathBuf>,
        /// Leave out rows whose conductivity is only an upper bound ("<1E-10") instead of keeping
        /// them at the bound.
        #[arg(long)]
        drop_censored: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the map for every W of the sweep; write the model, results.h5, tables and pictures.
    Train {
        /// Dataset from `map featurize`.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        train: MapTrainArgs,
    },
    /// Featurise OBELiX with its official train/test split, train the sweep, fit the ridge baseline.
    Evaluate {
        /// OBELiX's data/downloads folder (all.csv, train.csv, test.csv, all_cifs.tar.gz).
        #[arg(long)]
        obelix: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        train: MapTrainArgs,
    },
    /// Decode a point (x_comp, x_struct) of the map into descriptors and a predicted target.
    #[command(allow_negative_numbers = true)]
    Decode {
        x_comp: f64,
        x_struct: f64,
        /// Output folder of `map train` / `map evaluate`.
        #[arg(long)]
        model: PathBuf,
        /// Write the decoded descriptors to this HDF5 file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// …and/or to this CSV (block, label, value).
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The compounds nearest to a point of the map.
    #[command(allow_negative_numbers = true)]
    Near {
        x_comp: f64,
        x_struct: f64,
        #[arg(long)]
        model: PathBuf,
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        json: bool,
    },
    /// Time descriptor construction, a training epoch and inference; prints one JSON line.
    Bench {
        /// Time the structural descriptors of this CIF (default: a garnet-sized synthetic cell).
        #[arg(long)]
        cif: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct MapTrainArgs {
    /// TOML file of training settings (see configs/map/train.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The W values of the sweep.
    #[arg(long, value_delimiter = ',')]
    w: Option<Vec<f64>>,
    /// The W whose model is saved and drawn as map.png.
    #[arg(long)]
    pick_w: Option<f64>,
    #[arg(long)]
    max_epochs: Option<usize>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
}

impl MapTrainArgs {
    fn resolve(&self) -> Result<TrainConfig, Error> {
        let mut c = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.clone(),
                    message: e.to_string().trim().replace('\n', " "),
                })?
            }
            None => TrainConfig::default(),
        };
        if let Some(w) = &self.w {
            c.w_values = w.clone();
        }
        if let Some(v) = self.pick_w {
            c.pick_w = v;
        }
        if let Some(v) = self.max_epochs {
            c.max_epochs = v;
        }
        if let Some(v) = self.patience {
            c.patience = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        Ok(c)
    }
}

pub fn run(cmd: MapCommand) -> Result<(), Error> {
    use crate::commands::map;
    match cmd {
        MapCommand::Featurize { table, cifs, train_ids, test_ids, drop_censored, out } => {
            let censored = if drop_censored {
                crate::secondary::map::dataset::Censored::Drop
            } else {
                crate::secondary::map::dataset::Censored::Bound
            };
            let r = map::featurize(&map::FeaturizeOptions {
                table,
                cifs,
                train_ids,
                test_ids,
                censored,
                out: out.clone(),
            })?;
            print_featurize(&r);
            println!("wrote {}", out.display());
        }
        MapCommand::Train { data, out, train } => {
            let r = map::train(&map::TrainOptions { dataset: data, out, config: train.resolve()? })?;
            print!("{}", r.markdown);
            println!("outputs in {}", r.out);
        }
        MapCommand::Evaluate { obelix, out, train } => {
            let r = map::evaluate(&map::EvaluateOptions { obelix, out: out.clone(), config: train.resolve()? })?;
            print_featurize(&r.featurize);
            print!("{}", r.train.markdown);
            println!("total wall time {:.1} s; report: {}", r.wall_s, out.join("report.md").display());
        }
        MapCommand::Decode { x_comp, x_struct, model, out, csv, json } => {
            let r = map::decode(&map::DecodeOptions { model_dir: model, x_comp, x_struct, out, csv })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                return Ok(());
            }
            println!(
                "({:.3}, {:.3}): predicted target {:.2} {}",
                r.x_comp, r.x_struct, r.predicted_target, r.target_units
            );
            let els: Vec<String> = r.elements.iter().map(|(e, x)| format!("{e} {x:.2}")).collect();
            println!(
                "decoded composition (atomic fractions from the AN histogram, Σ = {:.2}): {}",
                r.an_histogram_sum,
                els.join(", ")
            );
            for (name, peak) in &r.rdf_first_peak_a {
                println!("{name}: first peak {}", peak.map_or("none".into(), |p| format!("{p:.2} Å")));
            }
            for n in &r.nearest {
                println!(
                    "near: {} {} ({}) at distance {:.3}, measured {:.2}",
                    n.id, n.formula, n.family, n.distance, n.measured
                );
            }
            for f in &r.files {
                println!("wrote {f}");
            }
        }
        MapCommand::Near { x_comp, x_struct, model, k, json } => {
            let r = map::near(&model, x_comp, x_struct, k)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                return Ok(());
            }
            println!("({x_comp:.3}, {x_struct:.3}): predicted {:.2} {}", r.predicted_here, r.target_units);
            println!(
                "{:>4}  {:<6} {:<34} {:<13} {:>8} {:>8} {:>8} {:>9} {:>9}  role",
                "rank", "id", "formula", "family", "x_comp", "x_struct", "distance", "measured", "predicted"
            );
            for (i, n) in r.rows.iter().enumerate() {
                println!(
                    "{:>4}  {:<6} {:<34} {:<13} {:>8.3} {:>8.3} {:>8.3} {:>9.2} {:>9.2}  {}",
                    i + 1,
                    n.id,
                    n.formula,
                    n.family,
                    n.x_comp,
                    n.x_struct,
                    n.distance,
                    n.measured,
                    n.predicted,
                    n.role
                );
            }
            println!(
                "({} compounds without a structure are on the composition axis only and not ranked)",
                r.without_structure
            );
        }
        MapCommand::Bench { cif } => {
            let r = map::bench(cif.as_deref())?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
    }
    Ok(())
}

fn print_featurize(r: &crate::secondary::map::dataset::FeaturizeReport) {
    println!(
        "{} compounds ({} train, {} test), {} with a CIF; descriptors: {} compositional + {} structural; {} targets censored at their bound{}",
        r.compounds,
        r.train,
        r.test,
        r.with_structure,
        r.composition_dim,
        r.structure_dim,
        r.censored,
        if r.dropped_censored > 0 { format!(", {} censored rows dropped", r.dropped_censored) } else { String::new() }
    );
    println!(
        "time: {:.1} s wall; {:.2} ms per formula, {:.1} ms per CIF (CPU)",
        r.wall_s, r.composition_ms_per_compound, r.structure_ms_per_cif
    );
    if let Some((a, n)) = r.family_agreement {
        println!("families: our rules agree with the table's Family column for {a} of {n} compounds");
    }
    if !r.cif_formula_mismatches.is_empty() {
        println!(
            "note: {} CIFs whose composition differs from the formula (kept as given):",
            r.cif_formula_mismatches.len()
        );
        for m in &r.cif_formula_mismatches {
            println!("  {m}");
        }
    }
}
