//! The whole per-frame path on the GPU, for `beamwatch bench --backend cuda`: a raw frame (u16, u32 or f32) is
//! uploaded from pinned memory, cut into scaled patches, run through the trunk and compared with the
//! reference features kept on the device; only the similarities and the summary come back.
//! Frame n+1 is uploaded on its own stream while frame n computes (two device frame buffers;
//! cudarc's per-buffer events order the copies and kernels).
//!
//! **A throughput path, not an analysis path**: `run`, `replay` and `demo` never use it. It fills
//! detector gaps whatever `mask_gaps` says, does not exclude patches over the invalid-pixel limit
//! (the kernel's count is not read back), applies no pre-filter and no registration, and takes the
//! cosine in f32 where the analysis uses f64. The analysis runs the GPU trunk through
//! `Engine::features` and does everything else on the host, identically to the CPU path.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, CudaStream, PinnedHostSlice, sys::CUevent_flags};

use super::trunk::GpuPixel;
use super::{CudaError, Trunk};

/// Per-frame figures of one frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameTiming {
    /// GPU time of extraction, trunk, cosine and summary (CUDA events).
    pub kernel_ms: f32,
    /// Host wall time from handing over the frame to holding its similarities.
    pub end_to_end_ms: f64,
    pub mean_similarity: f32,
}

pub struct FramePipeline<'t, T: GpuPixel> {
    trunk: &'t mut Trunk,
    upload: Arc<CudaStream>,
    width: usize,
    rows: usize,
    cols: usize,
    offset: f32,
    gain: f32,
    pinned: [PinnedHostSlice<T>; 2],
    frames: [CudaSlice<T>; 2],
    reference: CudaSlice<f32>,
    sims: CudaSlice<f32>,
    summary: CudaSlice<f32>,
    /// The last compared frame's per-patch similarities, row-major over the patch grid.
    host_sims: Vec<f32>,
}

impl<'t, T: GpuPixel> FramePipeline<'t, T> {
    /// `width × height` frames scaled as (v − offset)·gain; the first call to [`Self::run`]
    /// uses its first frame as the reference.
    pub fn new(trunk: &'t mut Trunk, width: usize, height: usize, offset: f32, gain: f32) -> Result<Self, CudaError> {
        let p = trunk.patch();
        let (rows, cols) = (height / p, width / p);
        if rows == 0 || cols == 0 {
            return Err(CudaError::Setup(format!("a {width}×{height} frame holds no {p}×{p} patch")));
        }
        let n = rows * cols;
        if n > trunk.max_batch() {
            return Err(CudaError::Setup(format!(
                "a {width}×{height} frame has {n} patches; one GPU pass on this device holds {}",
                trunk.max_batch()
            )));
        }
        let ctx = trunk.ctx.clone();
        let upload = ctx.new_stream().map_err(|e| CudaError::driver("creating the upload stream", e))?;
        let len = width * height;
        let pin = || -> Result<PinnedHostSlice<T>, CudaError> {
            // SAFETY: the pinned buffer is written in full (copy_from_slice) before every upload.
            unsafe { ctx.alloc_pinned::<T>(len) }.map_err(|e| CudaError::driver("allocating pinned host memory", e))
        };
        let s = trunk.stream.clone();
        let dev = |what: &str, len: usize| s.alloc_zeros::<f32>(len).map_err(|e| CudaError::driver(what, e));
        let frame_buf = || s.alloc_zeros::<T>(len).map_err(|e| CudaError::driver("allocating frame buffers", e));
        Ok(Self {
            pinned: [pin()?, pin()?],
            frames: [frame_buf()?, frame_buf()?],
            reference: dev("allocating reference features", n * 512)?,
            sims: dev("allocating similarities", n)?,
            summary: dev("allocating the summary", 3)?,
            host_sims: vec![0f32; n],
            upload,
            width,
            rows,
            cols,
            offset,
            gain,
            trunk,
        })
    }

    pub fn patches(&self) -> usize {
        self.rows * self.cols
    }

    /// Per-patch cosine similarities of the last frame [`Self::run`] compared (row-major grid).
    pub fn similarities(&self) -> &[f32] {
        &self.host_sims
    }

    fn stage(&mut self, buf: usize, frame: &[T]) -> Result<(), CudaError> {
        let host = self.pinned[buf].as_mut_slice().map_err(|e| CudaError::driver("writing pinned memory", e))?;
        if host.len() != frame.len() {
            return Err(CudaError::Setup(format!("frame has {} pixels, expected {}", frame.len(), host.len())));
        }
        host.copy_from_slice(frame);
        self.upload
            .memcpy_htod(&self.pinned[buf], &mut self.frames[buf])
            .map_err(|e| CudaError::driver("uploading a frame", e))
    }

    fn features_of(&mut self, buf: usize) -> Result<(), CudaError> {
        let (w, r, c, o, g) = (self.width, self.rows, self.cols, self.offset, self.gain);
        self.trunk.features_of_frame(&self.frames[buf], w, r, c, o, g)
    }

    /// Runs `frames` (the first is the reference) and returns one timing per compared frame.
    pub fn run(&mut self, frames: &[Vec<T>], threshold: f32) -> Result<Vec<FrameTiming>, CudaError> {
        let Some(first) = frames.first() else { return Ok(Vec::new()) };
        self.trunk.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the GPU context", e))?;
        let n = self.patches();
        let s = self.trunk.stream.clone();
        self.stage(0, first)?;
        self.features_of(0)?;
        s.memcpy_dtod(&self.trunk.layer4(n)?, &mut self.reference)
            .map_err(|e| CudaError::driver("keeping the reference features", e))?;
        s.synchronize().map_err(|e| CudaError::driver("computing the reference", e))?;
        self.trunk.check_stored()?;

        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let mut out = Vec::with_capacity(frames.len().saturating_sub(1));
        let mut host_summary = [0f32; 3];
        let rest = &frames[1..];
        let mut started = Vec::with_capacity(rest.len());
        if let Some(f) = rest.first() {
            started.push(Instant::now());
            self.stage(0, f)?;
        }
        for i in 0..rest.len() {
            let buf = i % 2;
            let e0 = s.record_event(timing).map_err(|e| CudaError::driver("recording an event", e))?;
            self.features_of(buf)?;
            self.compare(n, threshold)?;
            let e1 = s.record_event(timing).map_err(|e| CudaError::driver("recording an event", e))?;
            // Overlap: the next frame goes up while this one computes.
            if let Some(f) = rest.get(i + 1) {
                started.push(Instant::now());
                self.stage(1 - buf, f)?;
            }
            s.memcpy_dtoh(&self.sims, &mut self.host_sims)
                .map_err(|e| CudaError::driver("downloading similarities", e))?;
            s.memcpy_dtoh(&self.summary, &mut host_summary[..])
                .map_err(|e| CudaError::driver("downloading the summary", e))?;
            s.synchronize().map_err(|e| CudaError::driver("finishing a frame", e))?;
            self.trunk.check_stored()?;
            let kernel_ms = e0.elapsed_ms(&e1).map_err(|e| CudaError::driver("reading event times", e))?;
            out.push(FrameTiming {
                kernel_ms,
                end_to_end_ms: started[i].elapsed().as_secs_f64() * 1e3,
                mean_similarity: host_summary[0] / n as f32,
            });
        }
        Ok(out)
    }

    fn compare(&mut self, n: usize, threshold: f32) -> Result<(), CudaError> {
        self.trunk.cosine_and_summary(n, &self.reference, &mut self.sims, &mut self.summary, threshold)
    }
}
