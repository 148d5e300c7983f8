//! Publishes simulated series over ZeroMQ in any of the three wire formats, at a chosen frame rate,
//! the way a detector does: PUSH (or PUB), bound (or connected).
//!
//! Frames are rendered and encoded on a separate thread a few frames ahead, so the send loop keeps
//! the rate.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketSend, ZmqMessage};

use super::series::{FrameTruth, Series, SeriesSpec};
use crate::ingest::Mode;
use crate::decode::{DoseHeader, SeriesInfo, WireFormat, dectris_v1, dectris_v2, own};
use crate::frame::PixelType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SendSocket {
    Push,
    Pub,
}

#[derive(Clone, Debug)]
pub struct PublishOptions {
    pub endpoint: String,
    pub mode: Mode,
    pub socket: SendSocket,
    pub format: WireFormat,
    /// DECTRIS v1 encoding (`<`, `lz4<`, `bs16-lz4<`) or v2 compression (`bslz4`, `lz4`, `none`).
    pub encoding: String,
    pub fps: f64,
    pub series_count: u64,
    pub first_series_id: u64,
    /// beamwatch format: put beam current, dwell time and pixel size in the series header.
    pub dose_in_header: bool,
    /// How long to wait for a receiver before giving up.
    pub wait_for_peer_s: f64,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            endpoint: "tcp://127.0.0.1:9999".into(),
            mode: Mode::Bind,
            socket: SendSocket::Push,
            format: WireFormat::Beamwatch,
            encoding: String::new(),
            fps: 2.0,
            series_count: 1,
            first_series_id: 1,
            dose_in_header: true,
            wait_for_peer_s: 30.0,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub endpoint: String,
    pub series_sent: u64,
    pub frames_sent: u64,
    pub messages_sent: u64,
    pub onset_frame: Option<usize>,
    pub truth: Vec<FrameTruth>,
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum PublishError {
    #[error("{endpoint}: {reason}")]
    Socket { endpoint: String, reason: String },
    #[error("no receiver connected to {0} within the wait time")]
    NoPeer(String),
    #[error("encoding: {0}")]
    Encode(String),
}

/// The sending socket (shared with `replay --publish`).
pub(crate) enum Out {
    Push(zeromq::PushSocket),
    Pub(zeromq::PubSocket),
}

impl Out {
    /// Unbinds and closes: a dropped socket would keep listening.
    pub(crate) async fn close(self) {
        let errors = match self {
            Out::Push(s) => s.close().await,
            Out::Pub(s) => s.close().await,
        };
        for e in errors {
            tracing::debug!("closing the simulator socket: {e}");
        }
    }

    async fn send(&mut self, m: ZmqMessage) -> zeromq::ZmqResult<()> {
        match self {
            Out::Push(s) => s.send(m).await,
            Out::Pub(s) => s.send(m).await,
        }
    }
}

fn message(parts: Vec<Vec<u8>>) -> Option<ZmqMessage> {
    let mut it = parts.into_iter();
    let mut m = ZmqMessage::from(it.next()?);
    for p in it {
        m.push_back(p.into());
    }
    Some(m)
}

/// Encodes every message of one series (start, frames, end) in `format`.
fn encode_series(
    series: &Series,
    opts: &PublishOptions,
    id: u64,
    frame: usize,
    px: &[u16],
) -> Result<Vec<Vec<u8>>, PublishError> {
    let s = &series.spec;
    let (rows, cols) = (s.size_px, s.size_px);
    let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ts = (frame as f64 * s.frame_time_s() * 1e9) as u64;
    Ok(match opts.format {
        WireFormat::Beamwatch | WireFormat::Auto => {
            own::encode_frame(&id.to_string(), frame as u64, rows, cols, PixelType::U16, bytes, Some(ts), None)
        }
        WireFormat::DectrisV1 => {
            let enc = if opts.encoding.is_empty() { "bs16-lz4<" } else { opts.encoding.as_str() };
            dectris_v1::encode_image(id, frame as u64, rows, cols, PixelType::U16, &bytes, enc, ts)
                .map_err(|e| PublishError::Encode(e.to_string()))?
        }
        WireFormat::DectrisV2 => {
            let comp = if opts.encoding.is_empty() { "bslz4" } else { opts.encoding.as_str() };
            // Two channels, as counting detectors send: the frame and a half-count copy.
            let half: Vec<u8> = px.iter().flat_map(|v| (v / 2).to_le_bytes()).collect();
            dectris_v2::encode_image(
                id,
                frame as u64,
                rows,
                cols,
                PixelType::U16,
                &[("threshold_1", &bytes), ("threshold_2", &half)],
                comp,
                ts,
            )
        }
    })
}

fn start_message(series: &Series, opts: &PublishOptions, id: u64) -> Vec<Vec<u8>> {
    let s = &series.spec;
    match opts.format {
        WireFormat::Beamwatch | WireFormat::Auto => own::encode_start(&SeriesInfo {
            series: id.to_string(),
            format: WireFormat::Beamwatch,
            frames_expected: Some(s.frames as u64),
            shape: Some((s.size_px, s.size_px)),
            dtype: Some(PixelType::U16),
            frame_time_s: Some(s.frame_time_s()),
            dose: if opts.dose_in_header {
                DoseHeader {
                    beam_current_pa: Some(s.beam_current_pa()),
                    dwell_time_us: Some(s.dwell_time_us),
                    pixel_size_a: Some(s.pixel_size_a),
                }
            } else {
                DoseHeader::default()
            },
            scan_hint: None,
        }),
        WireFormat::DectrisV1 => {
            dectris_v1::encode_header(id, s.size_px, s.size_px, PixelType::U16, s.frames as u64, s.frame_time_s())
        }
        WireFormat::DectrisV2 => dectris_v2::encode_start(
            id,
            s.size_px,
            s.size_px,
            PixelType::U16,
            s.frames as u64,
            s.frame_time_s(),
            &["threshold_1", "threshold_2"],
        ),
    }
}

fn end_message(opts: &PublishOptions, id: u64) -> Vec<Vec<u8>> {
    match opts.format {
        WireFormat::Beamwatch | WireFormat::Auto => own::encode_end(&id.to_string()),
        WireFormat::DectrisV1 => dectris_v1::encode_end(id),
        WireFormat::DectrisV2 => dectris_v2::encode_end(id),
    }
}

/// Binds or connects the sending socket; returns it with the endpoint peers use.
pub(crate) async fn open(opts: &PublishOptions) -> Result<(Out, String), PublishError> {
    let err = |e: zeromq::ZmqError| PublishError::Socket { endpoint: opts.endpoint.clone(), reason: e.to_string() };
    let mut out = match opts.socket {
        SendSocket::Push => Out::Push(zeromq::PushSocket::new()),
        SendSocket::Pub => Out::Pub(zeromq::PubSocket::new()),
    };
    let ep = match (&mut out, opts.mode) {
        (Out::Push(s), Mode::Bind) => s.bind(&opts.endpoint).await.map_err(err)?.to_string(),
        (Out::Pub(s), Mode::Bind) => s.bind(&opts.endpoint).await.map_err(err)?.to_string(),
        (Out::Push(s), Mode::Connect) => {
            s.connect(&opts.endpoint).await.map_err(err)?;
            opts.endpoint.clone()
        }
        (Out::Pub(s), Mode::Connect) => {
            s.connect(&opts.endpoint).await.map_err(err)?;
            opts.endpoint.clone()
        }
    };
    Ok((out, ep))
}

/// Sends one message; PUSH waits (up to the deadline) for a receiver to appear.
pub(crate) async fn send(out: &mut Out, parts: Vec<Vec<u8>>, deadline: Instant, ep: &str) -> Result<(), PublishError> {
    let Some(msg) = message(parts) else { return Ok(()) };
    let mut msg = msg;
    loop {
        match out.send(msg).await {
            Ok(()) => return Ok(()),
            Err(zeromq::ZmqError::ReturnToSender { message, .. }) if Instant::now() < deadline => {
                msg = message;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(zeromq::ZmqError::ReturnToSender { .. }) => return Err(PublishError::NoPeer(ep.to_string())),
            Err(e) => return Err(PublishError::Socket { endpoint: ep.to_string(), reason: e.to_string() }),
        }
    }
}

/// Publishes `opts.series_count` series of `spec` (each with a new id and noise seed). `bound`
/// receives the endpoint once the socket is up (useful with port 0).
pub async fn publish(
    spec: &SeriesSpec,
    opts: &PublishOptions,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<String>>,
) -> Result<PublishReport, PublishError> {
    let (mut out, ep) = open(opts).await?;
    if let Some(b) = bound {
        let _ = b.send(ep.clone());
    }
    if opts.socket == SendSocket::Pub {
        // PUB has no way to tell when a subscriber has joined; give it a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut report = PublishReport {
        endpoint: ep.clone(),
        series_sent: 0,
        frames_sent: 0,
        messages_sent: 0,
        onset_frame: None,
        truth: Vec::new(),
    };
    let period = Duration::from_secs_f64(1.0 / opts.fps.max(1e-3));
    for k in 0..opts.series_count {
        let id = opts.first_series_id + k;
        let mut s = spec.clone();
        s.seed = spec.seed.wrapping_add(k);
        // Rendering runs ahead on its own thread, four frames at most.
        let (ftx, frx) = std::sync::mpsc::sync_channel::<Result<(Vec<Vec<u8>>, FrameTruth), PublishError>>(4);
        let (series, o) = (Series::new(s.clone()), opts.clone());
        let onset = series.onset_frame();
        let start = start_message(&series, opts, id);
        let render = std::thread::spawn(move || {
            for i in 0..series.spec.frames {
                let (px, truth) = series.frame(i);
                if ftx.send(encode_series(&series, &o, id, i, &px).map(|m| (m, truth))).is_err() {
                    return;
                }
            }
        });
        let frx = std::sync::Arc::new(std::sync::Mutex::new(frx));
        let deadline = Instant::now() + Duration::from_secs_f64(opts.wait_for_peer_s);
        send(&mut out, start, deadline, &ep).await?;
        report.messages_sent += 1;
        let mut next = Instant::now();
        for _ in 0..s.frames {
            let rx = frx.clone();
            let item =
                tokio::task::spawn_blocking(move || rx.lock().ok().and_then(|r| r.recv().ok())).await.ok().flatten();
            let Some(item) = item else { break };
            let (parts, truth) = item?;
            next += period;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {},
                _ = shutdown.cancelled() => break,
            }
            send(&mut out, parts, deadline, &ep).await?;
            report.frames_sent += 1;
            report.messages_sent += 1;
            if k == 0 {
                report.truth.push(truth);
            }
        }
        drop(frx);
        let _ = render.join();
        send(&mut out, end_message(opts, id), deadline, &ep).await?;
        report.messages_sent += 1;
        report.series_sent += 1;
        if k == 0 {
            report.onset_frame = onset;
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Let the last messages leave before the socket closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    out.close().await;
    Ok(report)
}
