//! Bitshuffle-LZ4 and LZ4 blobs in the HDF5 filter framing (filters 32008 / 32004), as DECTRIS
//! stream v1 `bsNN-lz4<` / `lz4<` image parts and stream v2 tag-56500 payloads carry them, and as
//! NeXus data chunks hold them.
//!
//! Framing: a 12-byte header (total decoded bytes as u64 BE, block size in bytes as u32 BE), then
//! per block a u32 BE compressed size and an LZ4 block. Bitshuffle blocks are bit-transposed before
//! compression: a block of n elements of `es` bytes is `8·es` rows of n/8 bytes, and in row
//! (byte b, bit k) bit j of byte i is bit k of byte b of element 8i + j. The bytes after the last
//! whole multiple of 8 elements are stored raw at the end.
//!
//! No well-kept Rust crate implements the bit transpose (the existing ones wrap the C library), so
//! it is written here. LZ4 blocks are decoded by the C liblz4 (`LZ4_decompress_safe`, through the
//! `lz4` crate): on electron-counting data, whose high bit-planes are long zero runs, it decodes
//! the overlapping matches far faster than `lz4_flex` (figures in Cargo.toml; `beamwatch bench-4d`
//! measures both). `lz4_flex` stays for encoding and for the comparison. Every length is checked against the header and
//! the caller's expectation before anything is allocated.

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[must_use]
pub enum CodecError {
    #[error("compressed blob of {0} bytes is shorter than the 12-byte header")]
    TooShort(usize),
    #[error("header says {claimed} decoded bytes but {expected} are expected (shape × dtype)")]
    SizeMismatch { claimed: u64, expected: usize },
    #[error("invalid block size {block} for element size {elem}")]
    BlockSize { block: u32, elem: usize },
    #[error("block {index}: {what}")]
    Block { index: usize, what: String },
    #[error("{0} bytes left over after the last block")]
    Trailing(usize),
    #[error("element size {0} is not 1, 2, 4 or 8")]
    ElemSize(usize),
}

const HEADER: usize = 12;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses the header and checks it claims exactly `expected` bytes. Returns the block size in bytes.
fn header(blob: &[u8], expected: usize) -> Result<u32, CodecError> {
    if blob.len() < HEADER {
        return Err(CodecError::TooShort(blob.len()));
    }
    let mut total = [0u8; 8];
    total.copy_from_slice(&blob[..8]);
    let claimed = u64::from_be_bytes(total);
    if claimed != expected as u64 {
        return Err(CodecError::SizeMismatch { claimed, expected });
    }
    be_u32(blob, 8).ok_or(CodecError::TooShort(blob.len()))
}

/// Most bytes one LZ4 block can decode to per compressed byte: a match of length 255·k + 19 takes
/// k + 3 bytes, so about 255 : 1 (plus a few bytes for the shortest blocks).
const LZ4_MAX_EXPANSION: usize = 255;

/// Whether `compressed` LZ4 bytes can decode to `decoded` bytes at all.
fn lz4_can_produce(compressed: usize, decoded: usize) -> bool {
    decoded <= compressed.saturating_mul(LZ4_MAX_EXPANSION).saturating_add(16)
}

/// Walks the block size table from `HEADER` without decoding anything: every block must be
/// present and able to produce its share of `total` bytes (blocks of `block` bytes, raw blocks
/// allowed when `raw_allowed`), followed by exactly `tail` raw bytes. Checked before the output
/// is allocated, so a short blob claiming gigabytes is refused without asking for them.
fn check_blocks(blob: &[u8], total: usize, block: usize, tail: usize, raw_allowed: bool) -> Result<(), CodecError> {
    let (mut pos, mut start, mut index) = (HEADER, 0usize, 0usize);
    while start < total {
        let len = block.min(total - start);
        let bad = |what: String| CodecError::Block { index, what };
        let size = be_u32(blob, pos).ok_or_else(|| bad("truncated before the block size".into()))? as usize;
        pos += 4;
        if blob.len() - pos < size {
            return Err(bad(format!("{size} bytes announced, {} left", blob.len() - pos)));
        }
        if !(raw_allowed && size == len) && !lz4_can_produce(size, len) {
            return Err(bad(format!("{size} compressed bytes cannot decode to the {len} bytes of the block")));
        }
        pos += size;
        start += len;
        index += 1;
    }
    match (blob.len() - pos).cmp(&tail) {
        std::cmp::Ordering::Less => Err(CodecError::Block { index, what: "raw tail missing".into() }),
        std::cmp::Ordering::Greater => Err(CodecError::Trailing(blob.len() - pos - tail)),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Which LZ4 block decoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lz4 {
    /// The C liblz4's `LZ4_decompress_safe` (bounds-checked on malformed input; allocates nothing).
    C,
    /// `lz4_flex`'s safe decoder (pure Rust).
    Flex,
}

impl Lz4 {
    /// Decompresses one LZ4 block into `out`; the number of bytes written.
    fn decompress(self, data: &[u8], out: &mut [u8]) -> Result<usize, String> {
        match self {
            Self::Flex => lz4_flex::block::decompress_into(data, out).map_err(|e| e.to_string()),
            Self::C => {
                // liblz4 takes i32 sizes; a larger block cannot be one of ours (checked, not cast).
                let cap = i32::try_from(out.len()).map_err(|_| format!("block of {} bytes too large", out.len()))?;
                if i32::try_from(data.len()).is_err() {
                    return Err(format!("{} compressed bytes too many", data.len()));
                }
                lz4::block::decompress_to_buffer(data, Some(cap), out).map_err(|e| e.to_string())
            }
        }
    }
}

/// Reads one size-prefixed LZ4 block at `*pos` and decompresses it into `out` (exactly its length).
/// A block whose stored size equals the decoded size is raw (LZ4 filter convention).
fn read_block(blob: &[u8], pos: &mut usize, out: &mut [u8], index: usize, raw_allowed: bool) -> Result<(), CodecError> {
    read_block_with(blob, pos, out, index, raw_allowed, Lz4::C)
}

fn read_block_with(
    blob: &[u8],
    pos: &mut usize,
    out: &mut [u8],
    index: usize,
    raw_allowed: bool,
    lz4: Lz4,
) -> Result<(), CodecError> {
    let bad = |what: String| CodecError::Block { index, what };
    let size = be_u32(blob, *pos).ok_or_else(|| bad("truncated before the block size".into()))? as usize;
    *pos += 4;
    let data = blob
        .get(*pos..*pos + size)
        .ok_or_else(|| bad(format!("{size} bytes announced, {} left", blob.len() - *pos)))?;
    *pos += size;
    if raw_allowed && size == out.len() {
        out.copy_from_slice(data);
        return Ok(());
    }
    let n = lz4.decompress(data, out).map_err(|e| bad(format!("LZ4: {e}")))?;
    if n != out.len() {
        return Err(bad(format!("LZ4 block decoded to {n} bytes, expected {}", out.len())));
    }
    Ok(())
}

/// Decodes a bitshuffle-LZ4 blob of elements of `elem` bytes into exactly `expected` bytes.
pub fn decode_bslz4(blob: &[u8], elem: usize, expected: usize) -> Result<Vec<u8>, CodecError> {
    // Checked before the output is allocated: a short blob claiming gigabytes asks for nothing.
    let block_bytes = check_bslz4(blob, elem, expected)?;
    let mut out = vec![0u8; expected];
    let mut scratch = Vec::with_capacity(block_bytes.min(expected));
    decode_checked(blob, elem, block_bytes, &mut out, &mut scratch, Kernel::detect(), Lz4::C)?;
    Ok(out)
}

/// Decodes a bitshuffle-LZ4 blob into `out`, which must be exactly as long as the decoded data
/// (the header must claim `out.len()` bytes). `scratch` holds one decompressed block; it grows to
/// the block size once and is reused, so a caller decoding pattern after pattern allocates nothing.
pub fn decode_bslz4_into(blob: &[u8], elem: usize, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<(), CodecError> {
    decode_bslz4_into_with(blob, elem, out, scratch, Lz4::C)
}

/// [`decode_bslz4_into`] for u16 elements straight into u16 pixels (`out.len()` elements), so
/// nothing converts the bytes afterwards.
pub fn decode_bslz4_u16_into(blob: &[u8], out: &mut [u16], scratch: &mut Vec<u8>) -> Result<(), CodecError> {
    decode_bslz4_into(blob, 2, bytemuck::cast_slice_mut(out), scratch)?;
    // The data are little-endian; on a big-endian host the bytes need swapping.
    #[cfg(target_endian = "big")]
    out.iter_mut().for_each(|v| *v = u16::from_le(*v));
    Ok(())
}

/// [`decode_bslz4_into`] with a chosen LZ4 block decoder (the benchmark compares them).
pub fn decode_bslz4_into_with(
    blob: &[u8],
    elem: usize,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    lz4: Lz4,
) -> Result<(), CodecError> {
    let block_bytes = check_bslz4(blob, elem, out.len())?;
    decode_checked(blob, elem, block_bytes, out, scratch, Kernel::detect(), lz4)
}

/// [`decode_bslz4`] as it was before the SIMD kernel and liblz4: a new output and scratch per
/// blob, the portable untranspose and `lz4_flex`. Kept for the decoder benchmark's old-against-new comparison.
pub fn decode_bslz4_scalar(blob: &[u8], elem: usize, expected: usize) -> Result<Vec<u8>, CodecError> {
    let block_bytes = check_bslz4(blob, elem, expected)?;
    let mut out = vec![0u8; expected];
    let mut scratch = Vec::with_capacity(block_bytes.min(expected));
    decode_checked(blob, elem, block_bytes, &mut out, &mut scratch, Kernel::Scalar, Lz4::Flex)?;
    Ok(out)
}

/// Header, block size and the whole block table, checked without decoding: the block size in bytes.
fn check_bslz4(blob: &[u8], elem: usize, expected: usize) -> Result<usize, CodecError> {
    if ![1, 2, 4, 8].contains(&elem) {
        return Err(CodecError::ElemSize(elem));
    }
    let block = header(blob, expected)?;
    let block_bytes = block as usize;
    if block_bytes == 0 || !block_bytes.is_multiple_of(8 * elem) {
        return Err(CodecError::BlockSize { block, elem });
    }
    let leftover = expected % (8 * elem);
    check_blocks(blob, expected - leftover, block_bytes, leftover, false)?;
    Ok(block_bytes)
}

/// The decoding proper, after [`check_bslz4`] accepted the blob for `out.len()` bytes.
fn decode_checked(
    blob: &[u8],
    elem: usize,
    block_bytes: usize,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    kernel: Kernel,
    lz4: Lz4,
) -> Result<(), CodecError> {
    let expected = out.len();
    let leftover = expected % (8 * elem);
    let shuffled = expected - leftover;
    let need = block_bytes.min(shuffled);
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let (mut pos, mut start, mut index) = (HEADER, 0, 0);
    while start < shuffled {
        let len = block_bytes.min(shuffled - start);
        let tmp = &mut scratch[..len];
        read_block_with(blob, &mut pos, tmp, index, false, lz4)?;
        kernel.untranspose(tmp, &mut out[start..start + len], elem);
        start += len;
        index += 1;
    }
    // The elements after the last whole group of 8 are stored raw (bitshuffle's format).
    let tail =
        blob.get(pos..pos + leftover).ok_or_else(|| CodecError::Block { index, what: "raw tail missing".into() })?;
    out[shuffled..].copy_from_slice(tail);
    pos += leftover;
    if pos != blob.len() {
        return Err(CodecError::Trailing(blob.len() - pos));
    }
    Ok(())
}

/// Decodes an LZ4 blob (HDF5 filter 32004 framing) into exactly `expected` bytes.
pub fn decode_lz4_framed(blob: &[u8], expected: usize) -> Result<Vec<u8>, CodecError> {
    let block = header(blob, expected)?;
    if block == 0 && expected > 0 {
        return Err(CodecError::BlockSize { block, elem: 1 });
    }
    check_blocks(blob, expected, block as usize, 0, true)?;
    let mut out = vec![0u8; expected];
    let (mut pos, mut start, mut index) = (HEADER, 0, 0);
    while start < expected {
        let len = (block as usize).min(expected - start);
        read_block(blob, &mut pos, &mut out[start..start + len], index, true)?;
        start += len;
        index += 1;
    }
    if pos != blob.len() {
        return Err(CodecError::Trailing(blob.len() - pos));
    }
    Ok(out)
}

/// LZ4 as it appears in the wild: the framed form above, or one bare LZ4 block of known decoded
/// size. The framed form is recognised by its header claiming exactly `expected` bytes.
pub fn decode_lz4_any(blob: &[u8], expected: usize) -> Result<Vec<u8>, CodecError> {
    if blob.len() >= HEADER && blob[..8] == (expected as u64).to_be_bytes() {
        return decode_lz4_framed(blob, expected);
    }
    if !lz4_can_produce(blob.len(), expected) {
        return Err(CodecError::Block {
            index: 0,
            what: format!("LZ4: {} bytes cannot decode to the {expected} bytes expected", blob.len()),
        });
    }
    let mut out = vec![0u8; expected];
    let n = Lz4::C.decompress(blob, &mut out).map_err(|e| CodecError::Block { index: 0, what: format!("LZ4: {e}") })?;
    if n != expected {
        return Err(CodecError::SizeMismatch { claimed: n as u64, expected });
    }
    Ok(out)
}

/// Transposes an 8×8 bit matrix held as 8 bytes (byte r, bit c ↔ byte c, bit r).
fn transpose8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Which bit-untranspose runs: the SIMD one where the CPU has it, else the portable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// SSE2's byte transpose and GFNI's bit-matrix transpose for 2-byte elements (SSE2 for the
    /// other sizes).
    #[cfg(target_arch = "x86_64")]
    Gfni,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse2") {
            if std::arch::is_x86_feature_detected!("gfni") {
                return Self::Gfni;
            }
            return Self::Sse2;
        }
        Self::Scalar
    }

    /// Every kernel this CPU runs (the tests compare them).
    pub fn available() -> Vec<Self> {
        let mut k = vec![Self::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse2") {
            k.push(Self::Sse2);
            if std::arch::is_x86_feature_detected!("gfni") {
                k.push(Self::Gfni);
            }
        }
        k
    }

    /// Bit-rows → elements for one block (`input.len()` = n · elem bytes, n a multiple of 8).
    pub fn untranspose(self, input: &[u8], out: &mut [u8], elem: usize) {
        match self {
            Self::Scalar => untranspose_cols(input, out, elem, 0),
            #[cfg(target_arch = "x86_64")]
            Self::Sse2 => {
                // SAFETY: `Sse2` is only constructed after the CPU reported SSE2.
                let done = unsafe { sse2::untranspose(input, out, elem) };
                untranspose_cols(input, out, elem, done);
            }
            #[cfg(target_arch = "x86_64")]
            Self::Gfni => {
                // SAFETY: `Gfni` is only constructed after the CPU reported SSE2 and GFNI.
                let done = unsafe {
                    if elem == 2 { gfni::untranspose_u16(input, out) } else { sse2::untranspose(input, out, elem) }
                };
                untranspose_cols(input, out, elem, done);
            }
        }
    }
}

/// Bit-rows → elements for one block, from column (group of 8 elements) `from` on.
fn untranspose_cols(input: &[u8], out: &mut [u8], elem: usize, from: usize) {
    let n = input.len() / elem;
    let row = n / 8;
    for b in 0..elem {
        for i in from..row {
            let mut x = 0u64;
            for k in 0..8 {
                x |= (input[(b * 8 + k) * row + i] as u64) << (8 * k);
            }
            let y = transpose8(x);
            for j in 0..8 {
                out[(8 * i + j) * elem + b] = (y >> (8 * j)) as u8;
            }
        }
    }
}

/// The SSE2 bit-untranspose, after the C bitshuffle library's: a byte transpose gathers, for 16
/// groups of 8 elements at once, the 8 bit-rows of each byte of the elements into one vector;
/// `_mm_movemask_epi8` then reads one bit of 16 row bytes at a time, i.e. one bit position of two
/// element bytes, and seven shifts give the other bits.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_slli_epi16, _mm_unpackhi_epi8, _mm_unpackhi_epi16,
        _mm_unpackhi_epi32, _mm_unpackhi_epi64, _mm_unpacklo_epi8, _mm_unpacklo_epi16, _mm_unpacklo_epi32,
        _mm_unpacklo_epi64,
    };

    /// Loads 16 bytes at `at` (bounds checked).
    #[inline(always)]
    pub(super) fn load(input: &[u8], at: usize) -> __m128i {
        let s: &[u8; 16] = input[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: `s` is 16 readable bytes; loadu has no alignment requirement.
        unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
    }

    /// 8 rows × 16 columns of bytes → 8 vectors, vector m holding column 2m's 8 bytes (row order)
    /// then column 2m + 1's.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn columns8(r: [__m128i; 8]) -> [__m128i; 8] {
        let a = [
            _mm_unpacklo_epi8(r[0], r[1]),
            _mm_unpackhi_epi8(r[0], r[1]),
            _mm_unpacklo_epi8(r[2], r[3]),
            _mm_unpackhi_epi8(r[2], r[3]),
            _mm_unpacklo_epi8(r[4], r[5]),
            _mm_unpackhi_epi8(r[4], r[5]),
            _mm_unpacklo_epi8(r[6], r[7]),
            _mm_unpackhi_epi8(r[6], r[7]),
        ];
        // Rows 0-3 (b[0..4]) and rows 4-7 (b[4..8]), 4 columns per vector.
        let b = [
            _mm_unpacklo_epi16(a[0], a[2]),
            _mm_unpackhi_epi16(a[0], a[2]),
            _mm_unpacklo_epi16(a[1], a[3]),
            _mm_unpackhi_epi16(a[1], a[3]),
            _mm_unpacklo_epi16(a[4], a[6]),
            _mm_unpackhi_epi16(a[4], a[6]),
            _mm_unpacklo_epi16(a[5], a[7]),
            _mm_unpackhi_epi16(a[5], a[7]),
        ];
        [
            _mm_unpacklo_epi32(b[0], b[4]),
            _mm_unpackhi_epi32(b[0], b[4]),
            _mm_unpacklo_epi32(b[1], b[5]),
            _mm_unpackhi_epi32(b[1], b[5]),
            _mm_unpacklo_epi32(b[2], b[6]),
            _mm_unpackhi_epi32(b[2], b[6]),
            _mm_unpacklo_epi32(b[3], b[7]),
            _mm_unpackhi_epi32(b[3], b[7]),
        ]
    }

    /// Eight movemasks of `v` (bit 7 first): entry j holds bit j of each of the 16 bytes.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn bit_planes(mut v: __m128i) -> [u16; 8] {
        let mut m = [0u16; 8];
        for j in (0..8).rev() {
            m[j] = _mm_movemask_epi8(v) as u16;
            v = _mm_slli_epi16::<1>(v);
        }
        m
    }

    /// Untransposes whole tiles of 16 columns; returns the first column left for the scalar code.
    #[target_feature(enable = "sse2")]
    pub(super) fn untranspose(input: &[u8], out: &mut [u8], elem: usize) -> usize {
        let row = input.len() / elem / 8;
        let mut i = 0;
        while i + 16 <= row {
            if elem == 1 {
                let c = columns8(std::array::from_fn(|k| load(input, k * row + i)));
                for (m, v) in c.into_iter().enumerate() {
                    let bits = bit_planes(v);
                    // Low byte of entry j: element 8·(i + 2m) + j; high byte: the next column's.
                    let lo: [u8; 8] = std::array::from_fn(|j| bits[j] as u8);
                    let hi: [u8; 8] = std::array::from_fn(|j| (bits[j] >> 8) as u8);
                    let at = 8 * (i + 2 * m);
                    out[at..at + 8].copy_from_slice(&lo);
                    out[at + 8..at + 16].copy_from_slice(&hi);
                }
            } else {
                // Bytes 2p and 2p + 1 of every element come from the 16 rows 16p..16p + 16.
                for p in 0..elem / 2 {
                    let lo = columns8(std::array::from_fn(|k| load(input, (16 * p + k) * row + i)));
                    let hi = columns8(std::array::from_fn(|k| load(input, (16 * p + 8 + k) * row + i)));
                    for m in 0..8 {
                        for (h, col) in [(0, 2 * m), (1, 2 * m + 1)] {
                            let v = if h == 0 {
                                _mm_unpacklo_epi64(lo[m], hi[m])
                            } else {
                                _mm_unpackhi_epi64(lo[m], hi[m])
                            };
                            let bits = bit_planes(v);
                            for (j, pair) in bits.iter().enumerate() {
                                let at = (8 * (i + col) + j) * elem + 2 * p;
                                out[at..at + 2].copy_from_slice(&pair.to_le_bytes());
                            }
                        }
                    }
                }
            }
            i += 16;
        }
        i
    }
}

/// The GFNI bit-untranspose for 2-byte elements: the SSE2 kernel's byte transpose (rows fed in
/// reverse order), then one `gf2p8affineqb` per 8×8 bit matrix in place of eight movemasks and
/// shifts: with the data as the matrix and x = 1 << i in byte i, byte i of the result holds bit i
/// of the eight (reversed) rows, i.e. the matrix transposed.
#[cfg(target_arch = "x86_64")]
mod gfni {
    use std::arch::x86_64::{
        __m128i, _mm_gf2p8affine_epi64_epi8, _mm_set1_epi64x, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };

    use super::sse2::{columns8, load};

    /// Untransposes whole tiles of 16 columns of 2-byte elements; returns the first column left
    /// for the scalar code.
    #[target_feature(enable = "sse2,gfni")]
    pub(super) fn untranspose_u16(input: &[u8], out: &mut [u8]) -> usize {
        let row = input.len() / 16;
        let x = _mm_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let t = |v: __m128i| _mm_gf2p8affine_epi64_epi8::<0>(x, v);
        let mut i = 0;
        while i + 16 <= row {
            // Rows 7..0 (low bytes) and 15..8 (high bytes).
            let lo = columns8(std::array::from_fn(|k| load(input, (7 - k) * row + i)));
            let hi = columns8(std::array::from_fn(|k| load(input, (15 - k) * row + i)));
            let at = 16 * i;
            let dst: &mut [u8; 256] = (&mut out[at..at + 256]).try_into().expect("256 bytes");
            for m in 0..8 {
                let (l, h) = (t(lo[m]), t(hi[m]));
                // SAFETY: each store writes 16 bytes inside `dst` (m ≤ 7: at most byte 255).
                unsafe {
                    _mm_storeu_si128(dst.as_mut_ptr().add(32 * m).cast(), _mm_unpacklo_epi8(l, h));
                    _mm_storeu_si128(dst.as_mut_ptr().add(32 * m + 16).cast(), _mm_unpackhi_epi8(l, h));
                }
            }
            i += 16;
        }
        i
    }
}

/// Elements → bit-rows (the inverse of [`untranspose`]).
fn transpose(input: &[u8], out: &mut [u8], elem: usize) {
    let n = input.len() / elem;
    let row = n / 8;
    for b in 0..elem {
        for i in 0..row {
            let mut x = 0u64;
            for j in 0..8 {
                x |= (input[(8 * i + j) * elem + b] as u64) << (8 * j);
            }
            let y = transpose8(x);
            for k in 0..8 {
                out[(b * 8 + k) * row + i] = (y >> (8 * k)) as u8;
            }
        }
    }
}

/// Default bitshuffle block: 8192 bytes.
pub const DEFAULT_BLOCK_BYTES: usize = 8192;

/// Encodes `data` (elements of `elem` bytes) as bitshuffle-LZ4 with `block_bytes` blocks.
pub fn encode_bslz4(data: &[u8], elem: usize, block_bytes: usize) -> Vec<u8> {
    let block_bytes = (block_bytes / (8 * elem)).max(1) * 8 * elem;
    let leftover = data.len() % (8 * elem);
    let shuffled = data.len() - leftover;
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    out.extend((data.len() as u64).to_be_bytes());
    out.extend((block_bytes as u32).to_be_bytes());
    let mut tmp = vec![0u8; block_bytes];
    for chunk in data[..shuffled].chunks(block_bytes) {
        let t = &mut tmp[..chunk.len()];
        transpose(chunk, t, elem);
        let c = lz4_flex::block::compress(t);
        out.extend((c.len() as u32).to_be_bytes());
        out.extend(c);
    }
    out.extend(&data[shuffled..]);
    out
}

/// Encodes `data` as LZ4 in the HDF5 filter framing (one block per `block_bytes`).
pub fn encode_lz4_framed(data: &[u8], block_bytes: usize) -> Vec<u8> {
    let block_bytes = block_bytes.max(1);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    out.extend((data.len() as u64).to_be_bytes());
    out.extend((block_bytes as u32).to_be_bytes());
    for chunk in data.chunks(block_bytes) {
        let c = lz4_flex::block::compress(chunk);
        if c.len() >= chunk.len() {
            out.extend((chunk.len() as u32).to_be_bytes());
            out.extend(chunk);
        } else {
            out.extend((c.len() as u32).to_be_bytes());
            out.extend(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose8_is_an_involution_and_moves_bits() {
        let x = 0x0102_0408_1020_4080u64; // anti-diagonal
        assert_eq!(transpose8(transpose8(x)), x);
        assert_eq!(transpose8(1), 1); // bit (0,0) stays
        assert_eq!(transpose8(1 << 1), 1 << 8); // byte 0 bit 1 → byte 1 bit 0
    }

    #[test]
    fn round_trips_odd_sizes_and_every_element_size() {
        for elem in [1usize, 2, 4] {
            for n in [0usize, 7, 8, 9, 1000, 4099, 9001] {
                let data: Vec<u8> = (0..n * elem).map(|i| (i * 31 % 251) as u8).collect();
                let blob = encode_bslz4(&data, elem, 1024);
                assert_eq!(decode_bslz4(&blob, elem, data.len()), Ok(data.clone()), "bslz4 elem {elem} n {n}");
                let blob = encode_lz4_framed(&data, 1000);
                assert_eq!(decode_lz4_framed(&blob, data.len()), Ok(data.clone()), "lz4 n {n}");
                assert_eq!(decode_lz4_any(&lz4_flex::block::compress(&data), data.len()), Ok(data.clone()));
            }
        }
    }

    /// Electron-counting-like u16 data: mostly 0-3 counts, a few bright pixels, gap pixels at 65535.
    fn counting(n: usize, seed: u64) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| match rng.random_range(0..100u32) {
                0 => u16::MAX,
                1..=3 => rng.random_range(4..2000u16),
                r => (r % 4) as u16 * u16::from(i % 3 == 0),
            })
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn every_kernel_decodes_the_encoders_bytes() {
        use rand::{RngCore, SeedableRng};
        let kernels = Kernel::available();
        #[cfg(target_arch = "x86_64")]
        assert!(kernels.contains(&Kernel::Sse2), "x86_64 always has SSE2: {kernels:?}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut scratch = Vec::new();
        for elem in [1usize, 2, 4] {
            // Element counts with partial last blocks, partial 16-column tiles and raw tails.
            for n in [8usize, 16 * 8 - 8, 128, 4096, 4096 + 8 * 17 + 5, 9216, 36864 + 3] {
                let random: Vec<u8> = (0..n * elem).map(|_| rng.next_u32() as u8).collect();
                let counts = counting(n * elem / 2 + 1, n as u64)[..n * elem].to_vec();
                for data in [random, counts] {
                    for block in [8192usize, 1024, 8 * elem * 24] {
                        let blob = encode_bslz4(&data, elem, block);
                        for &k in &kernels {
                            let mut out = vec![0xa5; data.len()];
                            decode_with(k, &blob, elem, &mut out, &mut scratch).expect("decode");
                            assert!(out == data, "{k:?} elem {elem} n {n} block {block}");
                        }
                        let mut out = vec![0u8; data.len()];
                        decode_bslz4_into(&blob, elem, &mut out, &mut scratch).expect("into");
                        assert!(out == data && decode_bslz4(&blob, elem, data.len()).as_ref() == Ok(&data));
                    }
                }
            }
        }
    }

    /// [`decode_checked`] with a chosen kernel.
    fn decode_with(
        k: Kernel,
        blob: &[u8],
        elem: usize,
        out: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let block_bytes = check_bslz4(blob, elem, out.len())?;
        let leftover = out.len() % (8 * elem);
        let shuffled = out.len() - leftover;
        scratch.resize(block_bytes.min(shuffled), 0);
        let (mut pos, mut start, mut index) = (HEADER, 0, 0);
        while start < shuffled {
            let len = block_bytes.min(shuffled - start);
            read_block(blob, &mut pos, &mut scratch[..len], index, false)?;
            k.untranspose(&scratch[..len], &mut out[start..start + len], elem);
            start += len;
            index += 1;
        }
        out[shuffled..].copy_from_slice(&blob[pos..]);
        Ok(())
    }

    #[test]
    fn liblz4_and_lz4_flex_decode_alike_and_both_refuse_corrupt_blocks() {
        let mut scratch = Vec::new();
        for n in [4096usize, 9216, 36864 + 3] {
            let data = counting(n, n as u64);
            let blob = encode_bslz4(&data, 2, DEFAULT_BLOCK_BYTES);
            for lz4 in [Lz4::C, Lz4::Flex] {
                let mut out = vec![0x5a; data.len()];
                decode_bslz4_into_with(&blob, 2, &mut out, &mut scratch, lz4).expect("decodes");
                assert!(out == data, "{lz4:?} n {n}");
                // Every byte of the first block's LZ4 data flipped in turn: an error or other
                // bytes, never a panic or a write past the block.
                let first = u32::from_be_bytes([blob[12], blob[13], blob[14], blob[15]]) as usize;
                for at in (16..16 + first).step_by(3) {
                    let mut bad = blob.clone();
                    bad[at] ^= 0xff;
                    let _ = decode_bslz4_into_with(&bad, 2, &mut out, &mut scratch, lz4);
                }
            }
            // A block that decodes to fewer bytes than its share is an error from both.
            let short = lz4_flex::block::compress(&data[..100]);
            for lz4 in [Lz4::C, Lz4::Flex] {
                let mut out = vec![0u8; 200];
                assert!(lz4.decompress(&short, &mut out).is_ok_and(|k| k == 100), "{lz4:?}");
                let mut tiny = vec![0u8; 50];
                assert!(lz4.decompress(&short, &mut tiny).is_err(), "{lz4:?}: output too small");
                assert!(lz4.decompress(&short[..short.len() - 3], &mut out).is_err(), "{lz4:?}: truncated");
            }
        }
    }

    #[test]
    fn the_raw_tail_is_the_last_elements_verbatim() {
        // 4099 u16 elements: 4096 shuffled, 3 raw; the blob ends with their 6 bytes as they are.
        let data = counting(4099, 3);
        let blob = encode_bslz4(&data, 2, 8192);
        assert_eq!(&blob[blob.len() - 6..], &data[data.len() - 6..]);
        let mut out = vec![0u8; data.len()];
        decode_bslz4_into(&blob, 2, &mut out, &mut Vec::new()).expect("decode");
        assert!(out == data);
        // A wrong-sized output is the header's size mismatch, not a panic.
        let mut short = vec![0u8; data.len() - 2];
        assert!(matches!(
            decode_bslz4_into(&blob, 2, &mut short, &mut Vec::new()),
            Err(CodecError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let data: Vec<u8> = (0..4096u32).flat_map(|v| ((v % 300) as u16).to_le_bytes()).collect();
        let blob = encode_bslz4(&data, 2, 8192);
        assert!(matches!(decode_bslz4(&blob[..5], 2, data.len()), Err(CodecError::TooShort(5))));
        assert!(matches!(decode_bslz4(&blob, 2, data.len() + 2), Err(CodecError::SizeMismatch { .. })));
        for cut in [13, 40, blob.len() - 1] {
            assert!(decode_bslz4(&blob[..cut], 2, data.len()).is_err(), "cut at {cut}");
        }
        let mut flipped = blob.clone();
        for b in flipped.iter_mut().skip(20).step_by(7) {
            *b ^= 0x5a;
        }
        assert!(decode_bslz4(&flipped, 2, data.len()).is_err());
        let mut big_block = blob.clone();
        big_block[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert!(matches!(decode_bslz4(&big_block, 2, data.len()), Err(CodecError::BlockSize { .. })));
        // A block claiming more bytes than the blob holds.
        let mut liar = blob.clone();
        liar[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_bslz4(&liar, 2, data.len()).is_err());
    }
}
