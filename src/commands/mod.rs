//! The work behind each CLI subcommand, free of CLI types: [`crate::cli`] parses arguments into these
//! option structs and prints what they return.

pub mod bench;
pub mod bench_4d;
pub mod bench_4d_live;
pub mod bench_live;
pub mod compare;
#[cfg(feature = "secondary")]
pub mod conductivity;
pub mod demo;
pub mod evaluate;
#[cfg(feature = "secondary")]
pub mod map;
pub mod replay;
pub mod run;
pub mod simulate;
pub mod view;
pub mod watch;
pub mod weights;
