//! The `beamwatch` command line: parses, runs, and prints any error once, as one line naming what
//! went wrong (the whole chain of causes, each once). See [`beamwatch::cli`].

use std::process::ExitCode;

use clap::Parser;

use beamwatch::cli::{self, Cli};

fn main() -> ExitCode {
    // A file over the size limit (ulimit -f, a quota) must fail the write — the recorder then stops
    // with an alarm — not kill the monitor with SIGXFSZ.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts is sound.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let kept = beamwatch::allocator::keep_freed_memory();
    let args = Cli::parse();
    cli::init_logging(args.verbose, args.quiet);
    if !kept {
        tracing::debug!("allocator left at its defaults (not glibc, or it refused the settings)");
    }
    match cli::run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", beamwatch::error::chain_line(&e));
            ExitCode::FAILURE
        }
    }
}
