//! Hard limits on what input may claim, checked before any allocation sized by the input.

/// Largest frame accepted, in pixels (16384 × 16384; 1 GiB as f32).
pub const MAX_FRAME_PIXELS: usize = 16384 * 16384;

/// Largest image file read whole into memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 4 << 30;

/// Frames in one multi-page image file.
pub const MAX_PAGES: usize = 100_000;
