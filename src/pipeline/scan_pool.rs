//! The live daemon's 4D pattern workers: decode + reduce off the receive loop.
//!
//! A bounded pool of threads, each owning [`BandAssembler`]s over bands of scan rows (a pattern's
//! band is known from its image index before it is decoded, [`crate::decode::Decoder::peek_image`]).
//! The receive loop only routes: the message's bytes go to the worker owning the pattern's band,
//! which decodes the pattern and reduces it. The series' first scan (where the pattern centre and
//! the Bragg spots are found) goes to one assembler over the whole scan; once its geometry is
//! known, later scans are split into bands that adopt it ([`BandSeries`]).
//!
//! Queues are bounded twice: by count, and by bytes drawn from the daemon's memory budget
//! ([`Kind::FourDQueue`]); a pattern that fits neither is counted and dropped, its position masked
//! as missing. Scan boundaries are broadcast in stream order to every worker, so a band completes
//! its part of a scan exactly where one assembler over the whole scan would have completed it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};

use crate::budget::{Budget, Kind, Reservation};
use crate::decode::{DecodeError, Decoder, FrameMsg, Message};
use crate::fourd::assemble::Pixels;
use crate::fourd::bands::{MergePlan, merge, plan_bands};
use crate::fourd::{BandAssembler, FourDConfig, FourDError, ScanEvent, ScanResult, ScanShape, Spot, VirtualDetectors};
use crate::frame::PixelType;

use super::stats::{Stats, add, inc};

/// Jobs queued per worker at most (the budget bounds their bytes).
const QUEUE_JOBS: usize = 16_384;
/// The band id of the assembler over the whole scan.
const WHOLE: usize = usize::MAX;

/// The threads the `[fourd] decode_threads` setting asks for: the available cores less one (the
/// receive loop's), at least one.
pub fn threads_for(cfg: &FourDConfig) -> usize {
    cfg.decode_threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1))
}

/// The pattern geometry found in a series' first scan.
#[derive(Clone)]
pub struct Geometry {
    pub detectors: VirtualDetectors,
    pub spots: Vec<Spot>,
}

/// A pattern as routed: the message to decode, or (formats without a cheap peek) the decoded frame.
enum Pattern {
    Raw(Vec<Bytes>),
    Decoded(Box<FrameMsg>),
}

enum Job {
    /// A new series: the decoder that knows its start message; the worker's bands are dropped.
    Series {
        generation: u64,
        decoder: Box<Decoder>,
    },
    /// An assembler for band `band` to own.
    /// `analyse`: the detector whose rows the live view gets.
    Band {
        band: usize,
        assembler: Box<BandAssembler>,
        whole: bool,
        analyse: usize,
    },
    Pattern {
        band: usize,
        index: u64,
        pattern: Pattern,
        _held: Option<Reservation>,
    },
    /// Every band of this worker (or only `band`): a pattern of `scan` arrived elsewhere. An
    /// [`Out::Ack`] with `token` follows the parts it completed.
    Before {
        scan: u64,
        band: Option<usize>,
        token: u64,
    },
    /// The series ends: every band finishes (incomplete parts come out), then [`Out::Ack`].
    Finish {
        token: u64,
    },
}

/// What workers send back (in each worker's job order).
pub enum Out {
    Part {
        generation: u64,
        band: usize,
        result: Box<ScanResult>,
        geometry: Option<Box<Geometry>>,
        info: PartInfo,
    },
    /// Rows of a scan filled, with the analysed detector's values (empty once the scan is done).
    Rows {
        generation: u64,
        scan: u64,
        rows: std::ops::Range<usize>,
        values: Vec<f32>,
    },
    Ack {
        generation: u64,
        token: u64,
    },
    DecodeError(DecodeError),
}

/// What a part says besides its result.
#[derive(Clone, Copy, Debug, Default)]
pub struct PartInfo {
    pub dtype: Option<PixelType>,
    pub last_timestamp_ns: Option<u64>,
}

/// The worker threads and their channels.
pub struct Pool {
    jobs: Vec<Sender<Job>>,
    outs: Receiver<Out>,
    /// Wakes the receive loop when a worker has sent something.
    pub wake: Arc<tokio::sync::Notify>,
    handles: Vec<JoinHandle<()>>,
    budget: Arc<Budget>,
    stats: Arc<Stats>,
    generation: u64,
    token: u64,
}

impl Pool {
    pub fn start(threads: usize, budget: Arc<Budget>, stats: Arc<Stats>) -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let (out_tx, outs) = unbounded();
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        for k in 0..threads.max(1) {
            let (tx, rx) = bounded(QUEUE_JOBS);
            let (out, wake, stats) = (out_tx.clone(), wake.clone(), stats.clone());
            let spawned = std::thread::Builder::new().name(format!("4d-worker-{k}")).spawn(move || {
                Worker { out, wake, stats, decoder: None, bands: BTreeMap::new(), generation: 0, counts: Vec::new() }
                    .run(rx)
            });
            match spawned {
                Ok(h) => {
                    jobs.push(tx);
                    handles.push(h);
                }
                Err(e) => tracing::error!("4D worker {k} not started: {e}"),
            }
        }
        tracing::info!("4D patterns decoded and reduced on {} worker threads", jobs.len());
        Self { jobs, outs, wake, handles, budget, stats, generation: 0, token: 0 }
    }

    pub fn threads(&self) -> usize {
        self.jobs.len()
    }

    fn worker_of(&self, band: usize) -> usize {
        if band == WHOLE { 0 } else { band % self.jobs.len().max(1) }
    }

    /// A job that must arrive (control): waits for room.
    fn send(&self, worker: usize, job: Job) {
        if let Some(tx) = self.jobs.get(worker)
            && tx.send(job).is_err()
        {
            tracing::error!("4D worker {worker} is gone");
        }
    }

    /// Starts a series' routing: every worker gets the decoder; the whole-scan assembler goes to
    /// the first.
    pub fn start_series(&mut self, decoder: &Decoder, whole: BandAssembler, analyse: usize) -> u64 {
        self.generation += 1;
        for w in 0..self.jobs.len() {
            self.send(w, Job::Series { generation: self.generation, decoder: Box::new(decoder.clone()) });
        }
        self.send(0, Job::Band { band: WHOLE, assembler: Box::new(whole), whole: true, analyse });
        self.generation
    }

    /// A pattern to its band's worker; `false` (counted) when it fits neither the queue nor the
    /// budget — it is dropped and its position will be masked.
    fn pattern(&self, band: usize, index: u64, pattern: Pattern) -> bool {
        let bytes = match &pattern {
            Pattern::Raw(parts) => parts.iter().map(Bytes::len).sum::<usize>() as u64,
            Pattern::Decoded(f) => f.frame.pixels().len() as u64 * 5,
        } + 256;
        let Some(held) = self.budget.try_reserve(bytes, Kind::FourDQueue) else {
            inc(&self.stats.patterns_dropped_queue);
            return false;
        };
        let w = self.worker_of(band);
        match self.jobs[w].try_send(Job::Pattern { band, index, pattern, _held: Some(held) }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.budget.refuse(Kind::FourDQueue);
                inc(&self.stats.patterns_dropped_queue);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Sends `Before` to every worker (or only the one owning `band`); returns the token and how
    /// many acks will answer it.
    fn before(&mut self, scan: u64, band: Option<usize>) -> (u64, usize) {
        self.token += 1;
        match band {
            Some(b) => {
                self.send(self.worker_of(b), Job::Before { scan, band: Some(b), token: self.token });
                (self.token, 1)
            }
            None => {
                for w in 0..self.jobs.len() {
                    self.send(w, Job::Before { scan, band: None, token: self.token });
                }
                (self.token, self.jobs.len())
            }
        }
    }

    fn finish_all(&mut self) -> (u64, usize) {
        self.token += 1;
        for w in 0..self.jobs.len() {
            self.send(w, Job::Finish { token: self.token });
        }
        (self.token, self.jobs.len())
    }

    pub fn try_out(&self) -> Option<Out> {
        self.outs.try_recv().ok()
    }

    fn wait_out(&self) -> Option<Out> {
        self.outs.recv_timeout(std::time::Duration::from_secs(30)).ok()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

struct OwnedBand {
    assembler: BandAssembler,
    whole: bool,
    analyse: usize,
    late_seen: u64,
    info: PartInfo,
}

struct Worker {
    out: Sender<Out>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<Stats>,
    decoder: Option<Box<Decoder>>,
    bands: BTreeMap<usize, OwnedBand>,
    generation: u64,
    /// u8/u16 patterns as u16 again, for the integer reduction.
    counts: Vec<u16>,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Series { generation, decoder } => {
                    self.generation = generation;
                    self.decoder = Some(decoder);
                    self.bands.clear();
                }
                Job::Band { band, assembler, whole, analyse } => {
                    let owned =
                        OwnedBand { assembler: *assembler, whole, analyse, late_seen: 0, info: PartInfo::default() };
                    self.bands.insert(band, owned);
                }
                Job::Pattern { band, index, pattern, _held } => self.pattern(band, index, pattern),
                Job::Before { scan, band, token } => {
                    let which: Vec<usize> = match band {
                        Some(b) => vec![b],
                        None => self.bands.keys().copied().collect(),
                    };
                    for b in which {
                        if let Some(owned) = self.bands.get_mut(&b) {
                            let events = owned.assembler.complete_before(scan);
                            self.emit(b, events);
                        }
                        // The whole-scan assembler hands over to the bands after this.
                        if band.is_some() {
                            self.bands.remove(&b);
                        }
                    }
                    self.send(Out::Ack { generation: self.generation, token });
                }
                Job::Finish { token } => {
                    let bands: Vec<usize> = self.bands.keys().copied().collect();
                    for b in bands {
                        if let Some(owned) = self.bands.get_mut(&b) {
                            let events = owned.assembler.finish();
                            self.emit(b, events);
                        }
                    }
                    self.bands.clear();
                    self.send(Out::Ack { generation: self.generation, token });
                }
            }
        }
    }

    fn send(&self, out: Out) {
        if self.out.send(out).is_ok() {
            self.wake.notify_one();
        }
    }

    fn pattern(&mut self, band: usize, index: u64, pattern: Pattern) {
        let frame = match pattern {
            Pattern::Decoded(f) => f,
            Pattern::Raw(parts) => {
                let Some(decoder) = self.decoder.as_mut() else { return };
                let refs: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
                match decoder.decode(&refs) {
                    Ok(Message::Frame(f)) => f,
                    Ok(_) => return,
                    Err(e) => {
                        self.send(Out::DecodeError(e));
                        return;
                    }
                }
            }
        };
        let Some(owned) = self.bands.get_mut(&band) else { return };
        if frame.index != index || !owned.assembler.owns(frame.index) {
            tracing::warn!("4D pattern {} decoded where {index} was read: dropped", frame.index);
            inc(&self.stats.patterns_wrong_size);
            return;
        }
        owned.info.dtype.get_or_insert(frame.frame.dtype());
        if frame.timestamp_ns.is_some() {
            owned.info.last_timestamp_ns = frame.timestamp_ns;
        }
        let (w, h) = (frame.frame.width(), frame.frame.height());
        // Integer patterns (every counting detector) take the exact integer pass, 4–5× cheaper than
        // the f32 one (`beamwatch bench-4d`); the decoder's f32 holds every u8/u16 count exactly.
        let pushed = if matches!(frame.frame.dtype(), PixelType::U8 | PixelType::U16) {
            self.counts.clear();
            self.counts.extend(frame.frame.pixels().iter().map(|&v| v as u16));
            owned.assembler.push(frame.index, w, h, Pixels::U16(&self.counts), frame.frame.invalid_mask())
        } else {
            owned.assembler.push(frame.index, w, h, Pixels::F32(frame.frame.pixels()), frame.frame.invalid_mask())
        };
        match pushed {
            Ok(events) => {
                let late = owned.assembler.assembler.late();
                if late > owned.late_seen {
                    add(&self.stats.patterns_late, late - owned.late_seen);
                    tracing::warn!(
                        "series {} pattern {}: its scan is already complete (late, counted and dropped)",
                        frame.series,
                        frame.index
                    );
                    owned.late_seen = late;
                }
                self.emit(band, events);
            }
            Err(e) => {
                inc(&self.stats.patterns_wrong_size);
                let n = crate::pipeline::stats::get(&self.stats.patterns_wrong_size);
                if !matches!(e, FourDError::PatternSize { .. }) || n <= 10 || n.is_power_of_two() {
                    tracing::warn!(
                        "series {} pattern {} dropped ({n} so far), its position masked: {e}",
                        frame.series,
                        frame.index
                    );
                }
            }
        }
    }

    fn emit(&mut self, band: usize, events: Vec<ScanEvent>) {
        let Some(owned) = self.bands.get(&band) else { return };
        let (generation, info, whole) = (self.generation, owned.info, owned.whole);
        let geometry = || {
            let a = &owned.assembler.assembler;
            a.detectors.clone().map(|detectors| Box::new(Geometry { detectors, spots: a.spots.clone() }))
        };
        for e in events {
            let out = match e {
                ScanEvent::Rows { scan, rows } => {
                    let values = owned.assembler.current_rows(scan, owned.analyse, rows.clone()).map(<[f32]>::to_vec);
                    Out::Rows { generation, scan, rows, values: values.unwrap_or_default() }
                }
                ScanEvent::Complete(result) => {
                    Out::Part { generation, band, result, geometry: if whole { geometry() } else { None }, info }
                }
            };
            self.send(out);
        }
    }
}

/// The routing and merging of one series (the receive loop's side).
pub struct BandSeries {
    generation: u64,
    cfg: FourDConfig,
    shape: ScanShape,
    threads: usize,
    /// Known once the first scan is complete.
    pub geometry: Option<Geometry>,
    /// Scans from this one on go to the bands (once the geometry is known).
    bands_from: Option<u64>,
    bands: Vec<(usize, usize)>,
    /// Band of each scan row.
    band_of_row: Vec<usize>,
    whole_retired: bool,
    /// The scan the bands were last told of (the highest scan routed to them).
    band_scan: Option<u64>,
    highest_routed: Option<u64>,
    /// Scans below this are out (or were given up): nothing more waits for them.
    emitted_below: u64,
    pending: BTreeMap<u64, Pending>,
    /// When the latest pattern of each pending scan was routed.
    last_at: BTreeMap<u64, std::time::Instant>,
    /// Before-tokens waiting for acks: (token, acks left, scans below this are closed).
    boundaries: Vec<(u64, usize, u64)>,
    pub info: PartInfo,
}

struct Pending {
    /// The whole-scan assembler's result (first scans), final on arrival.
    whole: Option<ScanResult>,
    from_whole: bool,
    parts: Vec<Option<ScanResult>>,
    got: usize,
    /// Ended by a later scan's pattern (every band acknowledged).
    closed: bool,
}

/// What comes out of a series, in scan order.
pub enum Ready {
    /// A scan, with when its last pattern was routed (received).
    Scan(Box<ScanResult>, Option<std::time::Instant>),
    Rows {
        scan: u64,
        rows: std::ops::Range<usize>,
        values: Vec<f32>,
    },
    /// A pattern a worker could not decode (counted by the daemon as a decode error).
    DecodeError(DecodeError),
}

impl BandSeries {
    pub fn start(pool: &mut Pool, decoder: &Decoder, cfg: &FourDConfig, shape: ScanShape) -> Result<Self, FourDError> {
        let whole = BandAssembler::whole(cfg, shape)?;
        let analyse = cfg.detectors.iter().position(|d| d.name == cfg.analyse).unwrap_or(0);
        let generation = pool.start_series(decoder, whole, analyse);
        Ok(Self {
            generation,
            cfg: cfg.clone(),
            shape,
            threads: pool.threads(),
            geometry: None,
            bands_from: None,
            bands: Vec::new(),
            band_of_row: Vec::new(),
            whole_retired: false,
            band_scan: None,
            highest_routed: None,
            emitted_below: 0,
            pending: BTreeMap::new(),
            last_at: BTreeMap::new(),
            boundaries: Vec::new(),
            info: PartInfo::default(),
        })
    }

    /// Routes a raw pattern message (`index` read by the peek) or a decoded pattern.
    pub fn route_raw(&mut self, pool: &mut Pool, index: u64, parts: Vec<Bytes>) {
        self.route(pool, index, Pattern::Raw(parts));
    }

    pub fn route_decoded(&mut self, pool: &mut Pool, frame: Box<FrameMsg>) {
        let index = frame.index;
        self.route(pool, index, Pattern::Decoded(frame));
    }

    fn route(&mut self, pool: &mut Pool, index: u64, pattern: Pattern) {
        let pos = self.shape.position(index);
        // A scan already out: its pattern goes on to be counted late, but nothing waits for it.
        let wanted = pos.scan >= self.emitted_below;
        if wanted {
            self.last_at.insert(pos.scan, std::time::Instant::now());
        }
        let to_bands = self.bands_from.is_some_and(|from| pos.scan >= from);
        if !to_bands {
            if self.highest_routed.is_none_or(|h| pos.scan > h) {
                self.highest_routed = Some(pos.scan);
            }
            if wanted {
                self.pending.entry(pos.scan).or_insert_with(Pending::whole);
            }
            pool.pattern(WHOLE, index, pattern);
            return;
        }
        if !self.whole_retired {
            self.whole_retired = true;
            let from = self.bands_from.unwrap_or(pos.scan);
            let (token, acks) = pool.before(from, Some(WHOLE));
            self.boundaries.push((token, acks, from));
        }
        if self.band_scan.is_none_or(|s| pos.scan > s) {
            if self.band_scan.is_some() {
                let (token, acks) = pool.before(pos.scan, None);
                self.boundaries.push((token, acks, pos.scan));
            }
            self.band_scan = Some(pos.scan);
        }
        let bands = self.bands.len();
        if wanted {
            self.pending.entry(pos.scan).or_insert_with(|| Pending::banded(bands));
        }
        let band = self.band_of_row.get(pos.row).copied().unwrap_or(0);
        pool.pattern(band, index, pattern);
    }

    /// One worker output of this series; what is now ready, in order.
    pub fn take(&mut self, pool: &mut Pool, out: Out) -> Vec<Ready> {
        let mut ready = Vec::new();
        match out {
            Out::Rows { generation, scan, rows, values } if generation == self.generation => {
                ready.push(Ready::Rows { scan, rows, values });
            }
            Out::Part { generation, band, result, geometry, info } if generation == self.generation => {
                self.info.dtype = self.info.dtype.or(info.dtype);
                self.info.last_timestamp_ns = info.last_timestamp_ns.or(self.info.last_timestamp_ns);
                // The first scan with patterns in it is where the spots were found.
                if let Some(g) = geometry
                    && self.geometry.is_none()
                    && result.region_patterns.iter().sum::<u64>() > 0
                {
                    self.adopt(pool, *g);
                }
                let scan = result.scan;
                if scan < self.emitted_below {
                    return ready;
                }
                if band == WHOLE {
                    // The whole-scan assembler completes in order: earlier scans it never will.
                    let p = self.pending.entry(scan).or_insert_with(Pending::whole);
                    p.whole = Some(*result);
                    for (_, p) in self.pending.range_mut(..scan) {
                        if p.from_whole {
                            p.closed = true;
                        }
                    }
                } else {
                    let bands = self.bands.len();
                    let p = self.pending.entry(scan).or_insert_with(|| Pending::banded(bands));
                    if let Some(slot) = p.parts.get_mut(band)
                        && slot.is_none()
                    {
                        *slot = Some(*result);
                        p.got += 1;
                    }
                }
            }
            Out::DecodeError(e) => ready.push(Ready::DecodeError(e)),
            Out::Ack { generation, token } if generation == self.generation => {
                if let Some(b) = self.boundaries.iter_mut().find(|b| b.0 == token) {
                    b.1 = b.1.saturating_sub(1);
                }
                let closed: Vec<u64> = self.boundaries.iter().filter(|b| b.1 == 0).map(|b| b.2).collect();
                self.boundaries.retain(|b| b.1 > 0);
                for below in closed {
                    for (_, p) in self.pending.range_mut(..below) {
                        p.closed = true;
                    }
                }
            }
            _ => {}
        }
        ready.extend(self.ready());
        ready
    }

    /// The geometry is known: later scans go to bands that adopt it.
    fn adopt(&mut self, pool: &mut Pool, g: Geometry) {
        self.bands = plan_bands(self.shape, self.cfg.regions_rows, self.threads);
        self.band_of_row = vec![0; self.shape.rows];
        for (b, &(r0, r1)) in self.bands.iter().enumerate() {
            self.band_of_row[r0..r1].iter_mut().for_each(|x| *x = b);
        }
        let from = self.highest_routed.map_or(0, |h| h + 1);
        let analyse = self.cfg.detectors.iter().position(|d| d.name == self.cfg.analyse).unwrap_or(0);
        for (b, &rows) in self.bands.iter().enumerate() {
            match BandAssembler::new(&self.cfg, self.shape, rows, 1, Some((g.detectors.clone(), g.spots.clone()))) {
                Ok(mut a) => {
                    // Scans before `from` are the whole-scan assembler's (nothing of them here).
                    let none = a.complete_before(from);
                    debug_assert!(none.is_empty());
                    pool.send(pool.worker_of(b), Job::Band { band: b, assembler: Box::new(a), whole: false, analyse })
                }
                Err(e) => {
                    tracing::error!("4D bands not set up ({e}); the whole scan stays on one thread");
                    return;
                }
            }
        }
        self.bands_from = Some(from);
        tracing::info!(bands = self.bands.len(), from_scan = self.bands_from, "4D scans reduced in bands of rows");
        self.geometry = Some(g);
    }

    /// Ready scans from the lowest on (a scan waits for every earlier one).
    fn ready(&mut self) -> Vec<Ready> {
        let mut out = Vec::new();
        while let Some(mut entry) = self.pending.first_entry() {
            let p = entry.get_mut();
            let done = if p.from_whole { p.whole.is_some() || p.closed } else { p.got == p.parts.len() || p.closed };
            if !done {
                break;
            }
            let (scan, p) = entry.remove_entry();
            self.emitted_below = scan + 1;
            let at = self.last_at.remove(&scan);
            if let Some(r) = self.result(scan, p) {
                out.push(Ready::Scan(Box::new(r), at));
            }
        }
        out
    }

    fn result(&self, scan: u64, p: Pending) -> Option<ScanResult> {
        if p.from_whole {
            return p.whole;
        }
        let g = self.geometry.as_ref()?;
        let plan = MergePlan {
            shape: self.shape,
            bands: &self.bands,
            regions_rows: self.cfg.regions_rows,
            regions_cols: self.cfg.regions_cols,
            detector_names: self.cfg.detectors.iter().map(|d| d.name.clone()).collect(),
            pattern_len: g.detectors.width * g.detectors.height,
            pattern_width: g.detectors.width,
            spots: &g.spots,
        };
        merge(&plan, scan, p.parts, p.closed)
    }

    /// The series ends: every band finishes; waits for the workers, then everything pending
    /// comes out (scans cut short marked incomplete).
    pub fn finish(&mut self, pool: &mut Pool) -> Vec<Ready> {
        let (token, mut acks) = pool.finish_all();
        let mut out = Vec::new();
        while acks > 0 {
            let Some(o) = pool.wait_out() else {
                tracing::error!("4D workers did not finish the series within 30 s; its last scans are lost");
                break;
            };
            match o {
                Out::Ack { generation, token: t } if generation == self.generation && t == token => acks -= 1,
                o => out.extend(self.take(pool, o)),
            }
        }
        // Whatever is still pending ends here (absent bands: cut short, not ended by a later scan).
        let pending = std::mem::take(&mut self.pending);
        for (scan, p) in pending {
            let at = self.last_at.remove(&scan);
            if let Some(r) = self.result(scan, p) {
                out.push(Ready::Scan(Box::new(r), at));
            }
        }
        out
    }
}

impl Pending {
    fn whole() -> Self {
        Self { whole: None, from_whole: true, parts: Vec::new(), got: 0, closed: false }
    }

    fn banded(bands: usize) -> Self {
        Self { whole: None, from_whole: false, parts: (0..bands).map(|_| None).collect(), got: 0, closed: false }
    }
}
