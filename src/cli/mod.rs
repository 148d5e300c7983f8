//! The command line, after fd's shape: one `Parser` struct per subcommand (every option enum a
//! `ValueEnum`), each with a `run` that turns its flags into the library's options — flags override
//! the configuration file through one path ([`analysis::AnalysisArgs::config`]) — runs the
//! command and prints what it returns. `main.rs` parses, calls [`run`] and prints an error once.

mod analysis;
#[cfg(feature = "secondary")]
mod conductivity;
mod files;
#[cfg(feature = "secondary")]
mod map;
mod monitor;
mod view;
mod watch;
mod weights;

use clap::{Parser, Subcommand};

use crate::Error;

/// Electron-beam damage monitor: where and at what dose the beam damages your sample.
#[derive(Parser)]
#[command(name = "beamwatch", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The live monitor: attach to an acquisition stream and raise dose/damage alarms.
    Run(monitor::RunArgs),
    /// Publish a simulated, beam-damaged STEM series over ZeroMQ, as a detector would.
    Simulate(monitor::SimulateArgs),
    /// Run a recorded series (HDF5 session, Velox/Berkeley EMD, DECTRIS NeXus, EMD 1.0, any 3-D dataset,
    /// TIFF stack or image folder) through the analysis and write reports; or stream it with --publish.
    Replay(files::ReplayArgs),
    /// Patch-wise similarity of image frames to a reference frame (TIFF, PNG, .npy).
    Compare(files::CompareArgs),
    /// Time the per-frame analysis on a synthetic frame; prints one JSON line.
    Bench(monitor::BenchArgs),
    /// Time the live daemon end to end over loopback sockets (latency, sustainable frame rate).
    BenchLive(monitor::BenchLiveArgs),
    /// Time the 4D-STEM path on synthetic electron-counting patterns (--decode-only: bitshuffle-LZ4).
    #[command(name = "bench-4d")]
    Bench4d(monitor::Bench4dArgs),
    /// Simulator and monitor together on this machine: watch a simulated sample get damaged.
    Demo(monitor::DemoArgs),
    /// Analyse image files as the microscope exports them into a folder (a live series per folder).
    Watch(watch::WatchArgs),
    /// Serve the live view's page for recorded sessions (a session file or a folder of them).
    View(view::ViewArgs),
    /// Score comparison settings (metric × pre-filter × registration) on series with known damage.
    Evaluate(files::EvaluateArgs),
    /// Import, verify, locate or download ResNet-18 weights.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// SEM image → ionic conductivity (secondary stage): import or synthesise a dataset, evaluate and
    /// train the CNNs, predict new images.
    #[cfg(feature = "secondary")]
    #[command(subcommand)]
    Conductivity(conductivity::ConductivityCommand),
    /// The autoencoder materials map: featurise compounds, train the W sweep, decode and query the map.
    #[cfg(feature = "secondary")]
    #[command(subcommand)]
    Map(map::MapCommand),
}

/// Runs one subcommand.
pub fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Run(a) => a.run(),
        Command::Simulate(a) => a.run(),
        Command::Replay(a) => a.run(),
        Command::Compare(a) => a.run(),
        Command::Bench(a) => a.run(),
        Command::BenchLive(a) => a.run(),
        Command::Bench4d(a) => a.run(),
        Command::Demo(a) => a.run(),
        Command::Evaluate(a) => a.run(),
        Command::View(a) => a.run(),
        Command::Watch(a) => a.run(),
        Command::Weights(w) => w.run(),
        #[cfg(feature = "secondary")]
        Command::Conductivity(c) => conductivity::run(c),
        #[cfg(feature = "secondary")]
        Command::Map(m) => map::run(m),
    }
}

/// Logs to stderr at the level `-v` / `-q` ask for (`BEAMWATCH_LOG` overrides, as an env filter).
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEAMWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("beamwatch={level},warn")));
    // Colours only on a terminal: escape codes in a log file or a CI log are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(crate::progress::LogWriter)
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
