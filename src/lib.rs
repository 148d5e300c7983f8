//! # beamwatch
//!
//! Tells a microscopist, while they acquire, where and at what electron dose their sample is being
//! damaged by the beam: every frame is cut into patches, each patch is described by ResNet-18 trunk
//! features, and its cosine similarity to the same patch of the first frame maps the damage.
//!
//! ## Layout (modules follow the data)
//! - [`decode`]: wire formats (beamwatch, DECTRIS stream v1/v2, bitshuffle-LZ4) → frames.
//! - [`ingest`]: ZeroMQ sockets behind a frame-size guard; re-publishing.
//! - [`daemon`]: the live monitor — receive, decode, dose, analyse, alarm.
//! - [`dose`]: electron dose per frame and cumulative, with the source of every input.
//! - [`alarms`]: rules, debounce, the critical-dose forecast, sinks.
//! - [`imagefile`]: TIFF / PNG / `.npy` files → [`frame::Frame`]s (f32 pixels + gap mask).
//! - [`register`]: drift measured by phase correlation and undone.
//! - [`patches`]: the patch grid; frames → scaled patch batches.
//! - [`engine`]: the ResNet-18 trunk on the CPU (folded batch-norm, padding-free GEMMs).
//! - [`weights`]: weight files — read, import `.pth`, verify identity, locate, fetch.
//! - [`damage`]: per-patch similarity maps (ResNet-18 cosine, LPIPS-style, SSIM, PSNR, NCC) and
//!   their summaries; [`damage::Analyzer`] holds a series' reference.
//! - [`record`]: HDF5 session recording and the readers replay uses.
//! - [`report`]: what people read and look at — CSV, JSON, PNG overlays.
//! - [`commands`]: `compare`, `bench`, `demo`, `weights`: the CLI's work, without the CLI.
//! - [`simulate`]: synthetic STEM frames with known damage (demo, benchmarks, tests).
//! - [`secondary`]: the conductivity CNN and the materials map (HDF5-backed, never in the live path).
//! - [`config`]: TOML configuration, validated.
//! - [`limits`], [`progress`]: input limits; progress bars.

pub mod alarms;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod damage;
pub mod decode;
pub mod dose;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod frame;
pub mod imagefile;
pub mod ingest;
pub mod limits;
pub mod patches;
pub mod progress;
pub mod record;
pub mod register;
pub mod report;
pub mod secondary;
pub mod simulate;
pub mod weights;
pub use error::Error;
