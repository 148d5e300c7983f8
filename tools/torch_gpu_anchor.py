#!/usr/bin/env python3
"""PyTorch's ResNet-18 trunk on the GPU: the anchor for `beamwatch bench --backend cuda`.

usage (run by tools/gpu-check.sh on the GPU machine; needs torch with CUDA, torchvision, safetensors):
    python3 tools/torch_gpu_anchor.py WEIGHTS --patches 2601,10404 [--iters 20] > anchor.json

What it times, per patch count N (the isolated 20x20 patches of a 1024^2 / 2048^2 frame):
torchvision's resnet18 with the given weights, fc removed (conv1 .. layer4, global average pool:
512 features per patch), eval mode, input N x 3 x 20 x 20 float32 already on the GPU (random, not
zeros), cudnn.benchmark on. Three warm-up passes, then --iters passes each between CUDA events;
the median and minimum in ms. Three precisions:
  - fp32: TF32 off for convolutions and matmuls (the same arithmetic class as beamwatch's fp32
    kernels);
  - tf32: TF32 allowed (cuDNN's tensor cores), for context: beamwatch has no TF32 path;
  - bf16: the model and its input in bfloat16 (cuDNN's bf16 tensor cores): the anchor for
    beamwatch's `--precision bf16` (bf16 operands, f32 accumulation).
The time is the network alone: cutting the frame into patches, normalising and the cosine to the
reference are left out, which favours PyTorch; beamwatch's kernel time covers all of them.
Prints one JSON object. `--device cpu` runs the same code on the CPU (a check of the script where
there is no GPU; its figures are no anchor for anything).
"""
import argparse
import json
import statistics
import time

import torch
import torchvision
from safetensors.torch import load_file


def time_passes(model, x, iters):
    cuda = x.is_cuda
    with torch.no_grad():
        for _ in range(3):
            model(x)
        if cuda:
            torch.cuda.synchronize()
        ms = []
        for _ in range(iters):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                model(x)
                b.record()
                b.synchronize()
                ms.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                model(x)
                ms.append((time.perf_counter() - t) * 1e3)
    return {"ms_median": round(statistics.median(ms), 3), "ms_min": round(min(ms), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--patches", default="2601,10404")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return
    model = torchvision.models.resnet18(weights=None)
    missing, unexpected = model.load_state_dict(load_file(args.weights), strict=False)
    model.fc = torch.nn.Identity()
    model = model.to(args.device).eval()
    torch.backends.cudnn.benchmark = True
    out = {
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (script check only)",
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "runs": {},
    }
    g = torch.Generator(device=args.device).manual_seed(0)
    for n in (int(s) for s in args.patches.split(",")):
        x = torch.rand((n, 3, 20, 20), device=args.device, generator=g)
        row = {}
        for name, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            row[name] = time_passes(model, x, args.iters)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        row["bf16"] = time_passes(model.to(torch.bfloat16), x.to(torch.bfloat16), args.iters)
        model.float()
        out["runs"][str(n)] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
