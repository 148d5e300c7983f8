//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use beamwatch::weights::StateDict;

/// `../shared` (or `$BEAMWATCH_SHARED`): golden outputs, synthetic weights, fixtures.
pub fn shared() -> PathBuf {
    std::env::var_os("BEAMWATCH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

pub fn synthetic_weights() -> PathBuf {
    shared().join("weights/resnet18_synthetic_seed0.safetensors")
}

pub fn golden(name: &str) -> PathBuf {
    shared().join("golden").join(name)
}

/// Cuts the 200×200 golden frame into its 100 row-major 20×20 patches.
pub fn golden_patches(name: &str) -> Vec<f32> {
    let f: ndarray::Array2<f32> = ndarray_npy::read_npy(golden(name)).expect("golden frame");
    let mut px = Vec::with_capacity(100 * 400);
    for r in 0..10 {
        for c in 0..10 {
            for y in 0..20 {
                for x in 0..20 {
                    px.push(f[[r * 20 + y, c * 20 + x]]);
                }
            }
        }
    }
    px
}

/// Writes every frame of a simulated series as one page of a 16-bit TIFF stack.
pub fn write_tiff_stack(path: &Path, series: &beamwatch::simulate::series::Series) {
    let n = series.spec.size_px;
    let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(path).expect("create")).expect("tiff");
    for i in 0..series.spec.frames {
        let (px, _) = series.frame(i);
        enc.write_image::<tiff::encoder::colortype::Gray16>(n as u32, n as u32, &px).expect("page");
    }
}

/// Runs the `beamwatch` binary with a private HOME, data and torch cache, so the weight search sees
/// only what a test puts there.
pub fn beamwatch(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("TORCH_HOME", home.join("torch"))
        .env_remove("BEAMWATCH_WEIGHTS")
        .env("BEAMWATCH_LOG", "beamwatch=info")
        .output()
        .expect("run beamwatch")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run printed exactly one `error:` line naming `needle`, and did not panic.
pub fn assert_clean_error(o: &Output, needle: &str) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].contains(needle), "error line does not name {needle:?}: {}", lines[0]);
    lines[0].to_string()
}

/// Writes `sd` as PyTorch writes `torch.save(model.state_dict(), path)` (zip format, pickle
/// protocol 2): an OrderedDict of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
/// requires_grad, hooks)` with persistent-id storages `("storage", torch.FloatStorage, key, "cpu",
/// numel)` in `archive/data/<key>`, then the `_metadata` attribute set by BUILD.
pub fn write_pth(path: &Path, sd: &StateDict) {
    fn unicode(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend(format!("{module}\n{name}\n").as_bytes());
    }
    let mut p = vec![0x80, 2];
    global(&mut p, "collections", "OrderedDict");
    p.extend([b')', b'R', b'(']);
    let mut storages = Vec::new();
    for (i, (name, t)) in sd.tensors.iter().enumerate() {
        unicode(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'(');
        p.push(b'(');
        unicode(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        unicode(&mut p, &i.to_string());
        unicode(&mut p, "cpu");
        int(&mut p, t.data.len());
        p.extend([b't', b'Q']);
        int(&mut p, 0);
        p.push(b'(');
        for d in &t.shape {
            int(&mut p, *d);
        }
        p.push(b't');
        p.push(b'(');
        let mut stride = vec![1usize; t.shape.len()];
        for k in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[k] = stride[k + 1] * t.shape[k + 1];
        }
        for s in &stride {
            int(&mut p, *s);
        }
        p.push(b't');
        p.push(0x89);
        global(&mut p, "collections", "OrderedDict");
        p.extend([b')', b'R', b't', b'R']);
        storages.push(t.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    p.push(b'u');
    // state = {"_metadata": OrderedDict({"": {"version": 1}})}
    p.push(b'}');
    unicode(&mut p, "_metadata");
    global(&mut p, "collections", "OrderedDict");
    p.extend([b')', b'R']);
    unicode(&mut p, "");
    p.push(b'}');
    unicode(&mut p, "version");
    p.extend([b'K', 1, b's', b's', b's', b'b', b'.']);

    let file = std::fs::File::create(path).expect("create pth");
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).expect("zip");
    zip.write_all(&p).expect("zip");
    zip.start_file("archive/byteorder", opts).expect("zip");
    zip.write_all(b"little").expect("zip");
    for (i, s) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts).expect("zip");
        zip.write_all(s).expect("zip");
    }
    zip.start_file("archive/version", opts).expect("zip");
    zip.write_all(b"3\n").expect("zip");
    zip.finish().expect("zip");
}

/// Sends `parts` as one multipart message on a PUSH socket, retrying (up to 5 s) while no peer has
/// connected yet.
pub async fn push_parts(s: &mut zeromq::PushSocket, parts: Vec<Vec<u8>>) {
    use zeromq::{SocketSend, ZmqMessage};
    let mut it = parts.into_iter();
    let mut m = ZmqMessage::from(it.next().expect("part"));
    for p in it {
        m.push_back(p.into());
    }
    for _ in 0..500 {
        match s.send(m).await {
            Ok(()) => return,
            Err(zeromq::ZmqError::ReturnToSender { message, .. }) => {
                m = message;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    panic!("no receiver");
}

/// A critical damaged-area alarm of series `series` at frame 3, for the sink tests.
pub fn test_alarm(rule: &str, series: String) -> Box<beamwatch::alarms::Alarm> {
    Box::new(beamwatch::alarms::Alarm {
        kind: "alarm",
        rule: rule.into(),
        level: beamwatch::alarms::Level::Critical,
        when: beamwatch::alarms::When::DamagedArea,
        series,
        frame: 3,
        time: "2026-11-22T00:00:00Z".into(),
        cumulative_dose_e_per_a2: Some(800.0),
        dose_per_frame_e_per_a2: Some(200.0),
        value: 0.2,
        threshold: 0.1,
        worst_patches: Vec::new(),
        forecast: None,
        message: "test".into(),
        received: None,
    })
}

/// Asks the live view at `hostport` for its event stream on `stream`, then sends each server-sent
/// event as (name, JSON data) until the stream ends or the receiver is dropped.
pub fn read_events(
    mut stream: std::net::TcpStream,
    hostport: &str,
    tx: std::sync::mpsc::Sender<(String, serde_json::Value)>,
) {
    use std::io::BufRead;
    write!(stream, "GET /api/events HTTP/1.0\r\nHost: {hostport}\r\n\r\n").expect("request");
    let mut name = String::new();
    for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:")) {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
            let v = serde_json::from_str(d).unwrap_or(serde_json::Value::Null);
            if tx.send((std::mem::take(&mut name), v)).is_err() {
                return;
            }
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

// bf16's tolerances against PyTorch's fp32 golden outputs, for the CPU's bf16 path (tests/bf16.rs)
// and the GPU's tensor cores (tests/gpu.rs). Measured on AMD EPYC (Zen 5) with the synthetic
// weights: layer4 features 1.36e-2 of the largest value, golden-pair cosines 1.87e-3 (1020² frame
// cosines 2.41e-3, tests/bf16.rs), then given about 2× room. With layer3's 2×2 maps as Winograd
// GEMMs (Intel Xeon): 1.61e-2, 1.63e-3, 2.57e-3. bf16 keeps 8 significant bits; its error does not
// depend on the machine that runs it beyond the order of f32 sums, so the room covers other CPUs.
pub const BF16_FEATURE_TOL: f64 = 2.5e-2;
pub const BF16_GOLDEN_COSINE_TOL: f64 = 4e-3;

/// Features of the golden pair (`golden_frame`, `golden_frame_damaged`) against PyTorch's: layer4's
/// largest |ours − golden| over the largest |golden|, and the largest |Δcos| of the pair's cosines.
pub fn bf16_against_golden(fa: &beamwatch::engine::Features, fb: &beamwatch::engine::Features) -> (f64, f64) {
    let g: ndarray::Array2<f32> = ndarray_npy::read_npy(golden("golden_features.npy")).expect("golden");
    let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let mut d = 0f64;
    for i in 0..g.nrows() {
        for (j, v) in fa.row(3, i).iter().enumerate() {
            d = d.max((*v as f64 - g[[i, j]] as f64).abs());
        }
    }
    let gc: ndarray::Array1<f32> = ndarray_npy::read_npy(golden("golden_cosine.npy")).expect("golden cosine");
    let dcos = (0..100).map(|p| (cosine(fa.row(3, p), fb.row(3, p)) - gc[p] as f64).abs()).fold(0f64, f64::max);
    (d / gmax, dcos)
}
