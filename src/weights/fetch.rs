//! Download of torchvision's ResNet-18 from PyTorch's model store, checked by sha256.

use std::io::{Read, Write};
use std::path::Path;

use super::WeightsError;
use super::identity::{IMAGENET1K_V1_SHA256, IMAGENET1K_V1_URL, sha256_hex};

/// Downloads `url` to `dest` (via a `.partial` file), shows progress, checks the sha256.
pub fn download_imagenet(dest: &Path, url: Option<&str>) -> Result<(), WeightsError> {
    let url = url.unwrap_or(IMAGENET1K_V1_URL);
    let fail = |what: String| WeightsError::Fetch(format!("{url}: {what}"));
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(15)))
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .new_agent();
    let resp = agent.get(url).call().map_err(|e| {
        fail(format!(
            "{e}. This machine cannot reach PyTorch's model store; on a machine with internet run \
             `beamwatch weights fetch` there, or download the file and run `beamwatch weights import \
             resnet18-f37072fd.pth`"
        ))
    })?;
    let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let bar = crate::progress::bytes_bar(total, "downloading resnet18-f37072fd.pth");
    let mut body = resp.into_body().into_reader();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(100 << 20) as usize);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let got = sha256_hex(&bytes);
    if got != IMAGENET1K_V1_SHA256 {
        return Err(fail(format!("sha256 {got} differs from the published {IMAGENET1K_V1_SHA256}")));
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    let tmp = dest.with_extension("pth.partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
    f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dest).map_err(|e| fail(format!("{}: {e}", dest.display())))?;
    Ok(())
}
