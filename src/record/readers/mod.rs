//! Frame sources for replay; `open` detects the layout.
//! (Being written: see the module list in `src/record/mod.rs`.)

use std::path::Path;

use super::{FrameSource, OpenOptions, ReadError};

/// Opens `path` with the reader its layout needs.
pub fn open(path: &Path, _opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    Err(ReadError::new(path, None, "no reader yet"))
}
