//! `beamwatch weights`: import (.pth and safetensors), verify, locate, fetch; and what the analysis
//! commands do with and without weights.

mod common;

use beamwatch::weights::StateDict;
use beamwatch::weights::identity::{self, Provenance};
use common::*;

#[test]
fn pth_checkpoint_imports_to_identical_tensors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sd = StateDict::read(&synthetic_weights()).expect("weights");
    let pth = tmp.path().join("resnet18-synthetic.pth");
    write_pth(&pth, &sd);

    let out = tmp.path().join("imported.safetensors");
    let o = beamwatch(&["weights", "import", pth.to_str().expect("p"), "--out", out.to_str().expect("p")], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let (id, back) = identity::identify(&out).expect("imported file");
    assert_eq!(id.layout, Ok(()));
    for (name, t) in &sd.tensors {
        assert_eq!(&back.tensors[name], t, "tensor {name} changed in the .pth round trip");
    }
    // The fingerprint depends on the numbers only: .pth, its import and the original agree.
    let fp_src = identity::tensor_fingerprint(&sd);
    assert!(fp_src.is_some());
    assert_eq!(id.tensor_fingerprint, fp_src);
    assert_eq!(back.metadata["source_sha256"], identity::sha256_hex(&std::fs::read(&pth).expect("pth")));
    // A .pth carries no "SYNTHETIC" label, so its origin is unknown, not ImageNet.
    assert_eq!(id.provenance, Provenance::Unknown);
}

#[test]
fn safetensors_import_keeps_the_synthetic_label_and_verify_reports_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let o = beamwatch(&["weights", "import", synthetic_weights().to_str().expect("p")], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    // Default destination: the data directory, where `where` and the analysis commands find it.
    let stored = tmp.path().join("data/beamwatch/weights/resnet18.safetensors");
    assert!(stored.is_file());
    let w = beamwatch(&["weights", "where"], tmp.path());
    assert!(stdout(&w).contains(&format!("found   {}", stored.display())), "{}", stdout(&w));

    let v = beamwatch(&["weights", "verify", stored.to_str().expect("p"), "--json"], tmp.path());
    assert!(v.status.success(), "{}", stderr(&v));
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).expect("json");
    assert_eq!(j["provenance"], "synthetic");
    assert_eq!(j["layout"]["Ok"], serde_json::Value::Null);
    // Asking for the genuine weights fails clearly.
    let r = beamwatch(&["weights", "verify", stored.to_str().expect("p"), "--require-imagenet"], tmp.path());
    assert_clean_error(&r, "not torchvision IMAGENET1K_V1");
}

#[test]
fn a_claimed_imagenet_import_with_changed_tensors_is_reported_modified() {
    let mut sd = StateDict::read(&synthetic_weights()).expect("weights");
    sd.metadata.clear();
    sd.metadata.insert("source_sha256".into(), identity::IMAGENET1K_V1_SHA256.into());
    sd.metadata.insert("tensor_fingerprint".into(), identity::tensor_fingerprint(&sd).expect("fp"));
    let id = identity::identify_loaded(std::path::Path::new("x"), "0000", &sd);
    assert_eq!(id.provenance, Provenance::TorchvisionImagenet1kV1, "{}", id.evidence);
    if let Some(t) = sd.tensors.get_mut("layer3.0.conv1.weight") {
        t.data[0] += 1e-3;
    }
    let id = identity::identify_loaded(std::path::Path::new("x"), "0000", &sd);
    assert_eq!(id.provenance, Provenance::Modified);
}

#[test]
fn incomplete_or_broken_weight_files_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut sd = StateDict::read(&synthetic_weights()).expect("weights");
    sd.tensors.remove("layer2.1.bn2.running_var");
    let pth = tmp.path().join("partial.pth");
    write_pth(&pth, &sd);
    let o = beamwatch(&["weights", "import", pth.to_str().expect("p")], tmp.path());
    assert_clean_error(&o, "layer2.1.bn2.running_var");

    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").expect("write");
    let o = beamwatch(&["weights", "verify", junk.to_str().expect("p")], tmp.path());
    assert_clean_error(&o, "junk.safetensors");
}

#[test]
fn fetch_without_network_fails_with_a_way_forward() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Port 9 (discard) on loopback: refused at once, no internet needed to test the failure path.
    let o = beamwatch(&["weights", "fetch", "--url", "http://127.0.0.1:9/resnet18-f37072fd.pth"], tmp.path());
    let line = assert_clean_error(&o, "127.0.0.1:9");
    assert!(line.contains("weights import"), "{line}");
}

#[test]
fn default_metric_falls_back_to_psnr_and_explicit_resnet18_needs_weights() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = golden("golden_frame.npy");
    let b = golden("golden_frame_damaged.npy");
    let out = tmp.path().join("out");
    let args = ["compare", a.to_str().expect("p"), b.to_str().expect("p"), "--out", out.to_str().expect("p")];
    let o = beamwatch(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("falls back to PSNR"), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(s["provenance"]["metric"]["name"], "psnr");
    assert!(s["provenance"]["metric_choice"].as_str().expect("str").contains("fallback"));
    assert_eq!(s["provenance"]["weights"], serde_json::Value::Null);

    let mut explicit = args.to_vec();
    explicit.extend(["--metric", "resnet18"]);
    let o = beamwatch(&explicit, tmp.path());
    let line = assert_clean_error(&o, "no ResNet-18 weights found");
    assert!(line.contains("beamwatch weights fetch"), "{line}");

    // Weights in the torchvision cache are found and used by default.
    let cache = tmp.path().join("torch/hub/checkpoints");
    std::fs::create_dir_all(&cache).expect("mkdir");
    write_pth(&cache.join("resnet18-f37072fd.pth"), &StateDict::read(&synthetic_weights()).expect("weights"));
    let o = beamwatch(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(s["provenance"]["metric"]["name"], "resnet18");
    assert!(stderr(&o).contains("torchvision hub cache"), "{}", stderr(&o));
}
