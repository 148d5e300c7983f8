//! Hard limits on what input may claim, checked before any allocation sized by the input.
//!
//! They are sized for an instrument PC (a few GiB for beamwatch): one frame of the largest size,
//! in every form it takes at once (the decoded pixels, their f32 copy, the registered copy and a
//! queued one), must fit many times over. A header claiming more is refused, not believed.

/// Largest frame accepted, in bytes as f32 pixels (256 MiB).
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// Largest frame accepted, in pixels (8192 × 8192 = [`MAX_FRAME_BYTES`] as f32).
pub const MAX_FRAME_PIXELS: usize = MAX_FRAME_BYTES / 4;

/// Largest image file read whole into memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 4 << 30;

/// Frames in one multi-page image file.
pub const MAX_PAGES: usize = 100_000;

/// Pixels decoded from one image file by the readers that hold all its frames at once (compare,
/// evaluate, monitor): 4 frames of the largest size. Replay reads a stack one page at a time.
pub const MAX_FILE_PIXELS: usize = 4 * MAX_FRAME_PIXELS;

/// Largest pixel magnitude accepted (float frames): 10¹⁵ is beyond any detector's count (a 64-bit
/// DM image may hold 2⁴⁰), and differences of such values stay far from f32 overflow.
pub const MAX_ABS_PIXEL: f32 = 1e15;

/// Largest magnitude of a pixel after intensity scaling (the reference's range maps to [0, 1]): a
/// frame a million times brighter than its reference is a bad frame, not damage.
pub const MAX_SCALED_PIXEL: f32 = 1e6;
