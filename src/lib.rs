//! # beamwatch
//!
//! Tells a microscopist, while they acquire, where and at what electron dose their sample is being
//! damaged by the beam: every frame is cut into patches, each patch is described by ResNet-18 trunk
//! features (or a classical metric), and its similarity to the same patch of the first frame maps
//! the damage.
//!
//! ## The modules, in the order the data flows
//!
//! A module uses only modules listed above it (`tests/architecture.rs` checks this list against
//! the source), so the list reads as the path of a frame from the wire to an alarm and a report.
//!
//! **Foundations**
//! - [`limits`]: input limits every reader and decoder checks before allocating.
//! - [`budget`]: the daemon's one memory budget; every queue and buffer draws its bytes from it.
//! - [`clock`], [`telemetry`]: timestamps; percentiles of recent timings, resident memory.
//! - [`allocator`]: keeps freed heap memory for reuse (fewer page faults per frame).
//! - [`progress`]: progress bars for long work.
//!
//! **Frames in**
//! - [`frame`]: a frame — f32 pixels, gap mask, the pixel type it came in.
//! - [`fourd`]: 4D-STEM — diffraction patterns per probe position → virtual STEM images per scan,
//!   and Bragg-spot fading against dose.
//! - [`decode`]: wire formats → frames: beamwatch's own, DECTRIS stream v1 and v2, bitshuffle-LZ4.
//! - [`ingest`]: ZeroMQ sockets behind a frame-size guard → raw messages for [`decode`]; the
//!   bounded PUB socket every publisher uses.
//! - [`microscope`]: Gatan DigitalMicrograph DM3/DM4 and TIA `.emi`/`.ser` files → images with
//!   their calibration and acquisition metadata (pixel size, dwell time, beam current).
//! - [`imagefile`]: TIFF (incl. palette) / PNG / JPEG / `.npy` files, and DM / TIA files through
//!   [`microscope`] → frames; SEM pixel-size metadata.
//! - [`dose`]: electron dose per frame and cumulative, with the source of every input.
//!
//! **Analysis**
//! - [`patches`]: the patch grid; frames → scaled patch batches.
//! - [`register`]: drift measured by phase correlation and undone.
//! - [`weights`]: ResNet-18 weight files — read, import `.pth`, verify identity, locate, fetch.
//! - [`engine`]: the ResNet-18 trunk — CPU (folded batch-norm, padding-free GEMMs) and CUDA
//!   (NVRTC-compiled kernels in `kernels/`), chosen at run time.
//! - [`damage`]: per-patch similarity maps (ResNet-18 cosine, LPIPS-style, SSIM, PSNR, NCC) and
//!   their summaries; [`damage::Analyzer`] holds a series' reference; [`damage::setup`] chooses
//!   the metric and loads what it needs.
//!
//! **Decisions and outputs**
//! - [`alarms`]: rules, debounce, the critical-dose forecast; the sinks (PUB socket, log, command).
//! - [`record`]: HDF5 sessions — the recorder, and the readers replay uses (beamwatch sessions,
//!   EMD, Velox, DECTRIS NeXus, datasets, image stacks, DM and TIA files).
//! - [`report`]: what people read and look at — CSV, JSON, PNG overlays and plots, HTML.
//! - [`view`]: the live view — a page in the browser fed by server-sent events (axum), and the
//!   same page for recorded sessions.
//! - [`config`]: the TOML configuration, every section validated.
//!
//! **Wiring**
//! - [`pipeline`]: the one pipeline every source feeds — dose, recording, the compute thread,
//!   alarms, consumers — with its report.
//! - [`daemon`]: the live source: socket → decode → pipeline, until stopped.
//! - [`watch`]: the exported-files source: image files appearing in a folder → pipeline.
//! - [`simulate`]: synthetic STEM series with known damage, sent like a detector or written to HDF5.
//! - [`evaluate`]: scoring metrics against known damage (AUC, onset delay, false alarms).
//! - [`secondary`] (feature `secondary`, on by default): the conductivity CNN and the materials
//!   map — HDF5-backed, never in the live path.
//! - [`error`]: the commands' error, by fault.
//! - [`commands`]: the work behind each subcommand, free of CLI types.
//! - [`cli`]: the command line — argument structs, overrides into the configuration, printing.
//!
//! `main.rs` only parses the command line, runs it and prints an error once.

pub mod limits;
pub mod budget;
pub mod clock;
pub mod telemetry;
pub mod allocator;
pub mod progress;
pub mod frame;
pub mod fourd;
pub mod decode;
pub mod ingest;
pub mod microscope;
pub mod imagefile;
pub mod dose;
pub mod patches;
pub mod register;
pub mod weights;
pub mod engine;
pub mod damage;
pub mod alarms;
pub mod record;
pub mod report;
pub mod view;
pub mod config;
pub mod pipeline;
pub mod daemon;
pub mod watch;
pub mod simulate;
pub mod evaluate;
#[cfg(feature = "secondary")]
pub mod secondary;
pub mod error;
pub mod commands;
pub mod cli;

pub use error::Error;
