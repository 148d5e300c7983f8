//! The work behind each CLI subcommand, free of CLI types: `main.rs` parses arguments into these
//! option structs and prints what they return.

pub mod bench;
pub mod bench_live;
pub mod compare;
pub mod conductivity;
pub mod demo;
pub mod evaluate;
pub mod map;
pub mod replay;
pub mod run;
pub mod setup;
pub mod simulate;
pub mod weights;
