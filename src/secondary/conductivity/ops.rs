//! The 3×3 convolution (stride 1, zero padding 1) of channels-last feature maps as im2col + matrix
//! product, so that candle's autograd runs it through its fast GEMM in both directions.
//!
//! Why not `candle_nn::Conv2d`: on the CPU its backward pass goes through `conv_transpose2d`, a
//! direct loop that made a training step of the Baseline on 64×64 crops about twice as slow as this
//! (measured: 0.65 s vs 0.31 s per batch of 16 on the 2-core development machine). Only the
//! data movement is ours — [`Im2Col`] and its exact adjoint [`Col2Im`]; candle differentiates the
//! matrix products, additions and activations. The unit tests check forward values and gradients
//! against `candle_core::Tensor::conv2d`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `[B, H, W, C]` → `[B·H·W, 9·C]`: row (b, y, x) holds the 3×3 neighbourhood, tap-major
/// (ky, kx, c), zeros outside the map.
pub struct Im2Col;

/// The adjoint of [`Im2Col`]: `[B·H·W, 9·C]` → `[B, H, W, C]`, summing every tap back onto the pixel it
/// was copied from.
pub struct Col2Im {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: only f32 tensors are supported");
    };
    match l.contiguous_offsets() {
        Some((a, z)) => Ok(&v[a..z]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l.shape().dims4()?;
        let src = f32_slice(s, l, "im2col3x3")?;
        let mut out = vec![0f32; b * h * w * 9 * c];
        // One image row per task: disjoint output rows, so the result is the same on any number of
        // threads.
        out.par_chunks_mut(w * 9 * c).enumerate().for_each(|(row, o)| {
            let (bi, y) = (row / h, row % h);
            for ky in 0..3 {
                let Some(yy) = (y + ky).checked_sub(1).filter(|&v| v < h) else { continue };
                let src_row = &src[(bi * h + yy) * w * c..(bi * h + yy + 1) * w * c];
                for x in 0..w {
                    for kx in 0..3 {
                        let Some(xx) = (x + kx).checked_sub(1).filter(|&v| v < w) else { continue };
                        let di = x * 9 * c + (ky * 3 + kx) * c;
                        o[di..di + c].copy_from_slice(&src_row[xx * c..(xx + 1) * c]);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b * h * w, 9 * c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im { b, h, w, c })?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Col2Im { b, h, w, c } = *self;
        let src = f32_slice(s, l, "col2im3x3")?;
        if src.len() != b * h * w * 9 * c {
            candle_core::bail!("col2im3x3: {} values for {b}×{h}×{w}×9×{c}", src.len());
        }
        let mut out = vec![0f32; b * h * w * c];
        // Gather form (each output pixel sums the taps that read it): no two tasks write one value.
        out.par_chunks_mut(w * c).enumerate().for_each(|(row, o)| {
            let (bi, y) = (row / h, row % h);
            for x in 0..w {
                let d = &mut o[x * c..(x + 1) * c];
                for ky in 0..3 {
                    // The output pixel (y, x) was tap ky of the pixel at row y + 1 − ky.
                    let Some(yy) = (y + 1).checked_sub(ky).filter(|&v| v < h) else { continue };
                    for kx in 0..3 {
                        let Some(xx) = (x + 1).checked_sub(kx).filter(|&v| v < w) else { continue };
                        let si = ((bi * h + yy) * w + xx) * 9 * c + (ky * 3 + kx) * c;
                        for (dv, sv) in d.iter_mut().zip(&src[si..si + c]) {
                            *dv += sv;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }
}

/// 3×3 convolution, stride 1, padding 1, of `x` `[B, H, W, Cin]` with `weight` `[Cout, 9·Cin]`
/// (tap-major, see [`Im2Col`]) and `bias` `[Cout]` → `[B, H, W, Cout]`.
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, _) = x.dims4()?;
    let cout = weight.dim(0)?;
    x.contiguous()?.apply_op1(Im2Col)?.matmul(&weight.t()?)?.broadcast_add(bias)?.reshape((b, h, w, cout))
}

/// 2×2 max pooling, stride 2, of `[B, H, W, C]` (H, W even).
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / 2, 2, w / 2, 2, c))?.max(4)?.max(2)
}

/// The torch-layout kernel `[Cout, Cin, 3, 3]` as our `[Cout, 9·Cin]` (tap-major).
pub fn weight_from_torch(k: &Tensor) -> candle_core::Result<Tensor> {
    let (cout, cin, _, _) = k.dims4()?;
    k.permute((0, 2, 3, 1))?.contiguous()?.reshape((cout, 9 * cin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().and_then(|t| t.to_vec1()).unwrap_or_default();
        let b: Vec<f32> = b.flatten_all().and_then(|t| t.to_vec1()).unwrap_or_default();
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn matches_candle_conv2d_values_and_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, cin, cout, h, w) = (2, 3, 5, 7, 6);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?)?;
        let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, cout, &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (b, cout, h, w), &dev)?;

        // Reference: candle's own NCHW conv2d.
        let y_ref = x.conv2d(&k, 1, 1, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
        let g_ref = (&y_ref * &probe)?.sum_all()?.backward()?;

        let x_nhwc = x.permute((0, 2, 3, 1))?;
        let y = conv3x3(&x_nhwc, &weight_from_torch(&k)?, &bias)?.permute((0, 3, 1, 2))?;
        let g = (&y * &probe)?.sum_all()?.backward()?;

        assert!(max_abs_diff(&y, &y_ref) < 1e-4);
        for v in [&x, &k, &bias] {
            let (a, r) = (g.get(v).expect("gradient"), g_ref.get(v).expect("reference gradient"));
            assert!(max_abs_diff(a, r) < 1e-3, "gradient differs by {}", max_abs_diff(a, r));
        }
        Ok(())
    }

    #[test]
    fn max_pool_matches_candle() -> candle_core::Result<()> {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 8), &Device::Cpu)?;
        let ours = max_pool2(&x.permute((0, 2, 3, 1))?.contiguous()?)?.permute((0, 3, 1, 2))?;
        assert!(max_abs_diff(&ours, &x.max_pool2d(2)?) == 0.0);
        Ok(())
    }
}
