//! The tensors of torchvision's `resnet18` state dict (102, without `num_batches_tracked`).

/// Channel widths of layer1..layer4.
pub const LAYER_CHANNELS: [usize; 4] = [64, 128, 256, 512];

/// Every tensor name with its shape, in a fixed order.
pub fn resnet18_tensors() -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("conv1.weight".to_string(), vec![64, 3, 7, 7])];
    bn(&mut out, "bn1", 64);
    let mut cin = 64;
    for (li, &c) in LAYER_CHANNELS.iter().enumerate() {
        for b in 0..2 {
            let p = format!("layer{}.{}", li + 1, b);
            let block_in = if b == 0 { cin } else { c };
            out.push((format!("{p}.conv1.weight"), vec![c, block_in, 3, 3]));
            bn(&mut out, &format!("{p}.bn1"), c);
            out.push((format!("{p}.conv2.weight"), vec![c, c, 3, 3]));
            bn(&mut out, &format!("{p}.bn2"), c);
            if b == 0 && li > 0 {
                out.push((format!("{p}.downsample.0.weight"), vec![c, cin, 1, 1]));
                bn(&mut out, &format!("{p}.downsample.1"), c);
            }
        }
        cin = c;
    }
    out.push(("fc.weight".into(), vec![1000, 512]));
    out.push(("fc.bias".into(), vec![1000]));
    out
}

fn bn(out: &mut Vec<(String, Vec<usize>)>, prefix: &str, c: usize) {
    for s in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{prefix}.{s}"), vec![c]));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn torchvision_resnet18_has_102_tensors() {
        let t = super::resnet18_tensors();
        assert_eq!(t.len(), 102);
        let params: usize = t.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        // 11,689,512 trainable parameters + 2 × 4,800 BN running statistics.
        assert_eq!(params, 11_689_512 + 9_600);
    }
}
