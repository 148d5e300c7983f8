#!/usr/bin/env python3
"""beamwatch against onnxruntime, side by side, alternating in one run.

usage:
    pip install onnx onnxruntime safetensors numpy      # into any venv; none of it is a beamwatch dependency
    python tools/bench_vs_onnxruntime.py [--binary target/release/beamwatch]
        [--weights ../shared/weights/resnet18_synthetic_seed0.safetensors]
        [--rounds 5] [--threads 2] [--size 1020] [--frames 5] [--precision fp32,bf16] [--json]

What it does:
1. Builds an ONNX graph of torchvision's ResNet-18 trunk up to global average pooling (conv1 7x7/2
   pad 3, bn, relu, maxpool 3x3/2 pad 1, layer1..layer4 basic blocks with their 1x1/2 downsample,
   GAP -> 512 features) from a safetensors file with torchvision's key names. Batch-norm goes in as
   BatchNormalization nodes (--fold-bn folds it into the convolutions in numpy instead); onnxruntime's
   own graph optimiser (ORT_ENABLE_ALL) fuses Conv+BN+ReLU either way, so the timing is the same.
   Input N x 3 x 20 x 20 float32: the gray patch replicated to RGB and ImageNet-normalised, exactly
   what beamwatch feeds its trunk (README "Network input"). Dense: onnxruntime multiplies the padding,
   beamwatch skips it (26.1 M vs 11.2 M multiply-adds per patch) -- that is the point of the comparison.
2. Checks correctness once, before timing: onnxruntime's features of the 100 golden patches against
   PyTorch's (../shared/golden/golden_features.npy, <= 1e-4 of the largest value), and onnxruntime's
   cosines of the golden pair against what `beamwatch compare` writes to similarity.csv (<= 1e-5).
   beamwatch has no command that prints raw features, so the cosine is where the two meet directly.
3. Times, alternating in the same process (ort, beamwatch, ort, beamwatch, ...), fp32, on the
   (size/20)^2 isolated 20x20 patches of a size x size frame (1020: 2,601 patches):
   - onnxruntime, intra_op_num_threads=N, inter_op_num_threads=1, sequential execution, one session
     built once; per frame once in 256-patch chunks and once as one batch of all patches; one untimed
     warm-up frame per round, then --frames timed frames, median. The faster of the two is the anchor.
     The time is session.run only (patching and the cosine in numpy are left out, which favours
     onnxruntime slightly; beamwatch's figure includes patching, cosine to the reference and summary).
   - `beamwatch bench --size S --frames F --threads N --backend cpu --prefilter-sigma 0`
     (bf16 with `--force-precision`: bf16 is timed even where the daemon's probe would keep fp32)
     (one untimed warm-up frame inside, median of F frames as printed in its JSON line).
   Prints per round ms/frame for both and ort/beamwatch, medians, the CPU model line, the load
   average at start and end, onnxruntime's version; --json prints one JSON line instead.

The machine may be shared: the load average is printed so that a noisy run can be told apart.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(REPO), "shared")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
PATCH_PX = 20
BN_EPS = 1e-5


# ---------------------------------------------------------------- graph


class TrunkGraph:
    """Accumulates ONNX nodes and initialisers for the ResNet-18 trunk."""

    def __init__(self, weights, fold_bn):
        self.w = weights
        self.fold_bn = fold_bn
        self.nodes = []
        self.inits = []
        self.n = 0

    def _name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def _init(self, name, array):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def _node(self, op, inputs, **attrs):
        from onnx import helper

        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv_bn(self, x, conv, bn, stride, pad, relu):
        w = self.w[f"{conv}.weight"]
        k = w.shape[2]
        conv_attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        gamma, beta = self.w[f"{bn}.weight"], self.w[f"{bn}.bias"]
        mean, var = self.w[f"{bn}.running_mean"], self.w[f"{bn}.running_var"]
        if self.fold_bn:
            scale = gamma / np.sqrt(var + BN_EPS)
            wf = w * scale[:, None, None, None]
            bf = beta - mean * scale
            y = self._node("Conv", [x, self._init(f"{conv}.w", wf), self._init(f"{conv}.b", bf)], **conv_attrs)
        else:
            y = self._node("Conv", [x, self._init(f"{conv}.weight", w)], **conv_attrs)
            y = self._node(
                "BatchNormalization",
                [y] + [self._init(f"{bn}.{p}", self.w[f"{bn}.{p}"]) for p in ("weight", "bias", "running_mean", "running_var")],
                epsilon=BN_EPS,
            )
        return self._node("Relu", [y]) if relu else y

    def basic_block(self, x, prefix, stride):
        h = self.conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", stride, 1, relu=True)
        h = self.conv_bn(h, f"{prefix}.conv2", f"{prefix}.bn2", 1, 1, relu=False)
        if f"{prefix}.downsample.0.weight" in self.w:
            x = self.conv_bn(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, 0, relu=False)
        return self._node("Relu", [self._node("Add", [h, x])])

    def build(self):
        from onnx import TensorProto, helper

        h = self.conv_bn("input", "conv1", "bn1", 2, 3, relu=True)
        h = self._node("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
            for block in (0, 1):
                h = self.basic_block(h, f"{layer}.{block}", stride if block == 0 else 1)
        h = self._node("GlobalAveragePool", [h])
        self.nodes.append(helper.make_node("Flatten", [h], ["features"], axis=1, name="flatten"))
        graph = helper.make_graph(
            self.nodes,
            "resnet18_trunk",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, PATCH_PX, PATCH_PX])],
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 512])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # old enough for any onnxruntime of the last years
        import onnx

        onnx.checker.check_model(model)
        return model


def make_session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- input


def patches_of(frame):
    """Isolated 20x20 patches, row-major, gray -> RGB, ImageNet-normalised: (N, 3, 20, 20) float32."""
    h, w = frame.shape
    rows, cols = h // PATCH_PX, w // PATCH_PX
    g = frame[: rows * PATCH_PX, : cols * PATCH_PX].reshape(rows, PATCH_PX, cols, PATCH_PX)
    g = g.transpose(0, 2, 1, 3).reshape(rows * cols, 1, PATCH_PX, PATCH_PX)
    return np.ascontiguousarray((g - MEAN[None, :, None, None]) / STD[None, :, None, None], np.float32)


def run_features(sess, x, chunk):
    if chunk >= len(x):
        return sess.run(["features"], {"input": x})[0]
    return np.concatenate([sess.run(["features"], {"input": x[i : i + chunk]})[0] for i in range(0, len(x), chunk)])


def cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------- correctness


def check_correctness(sess, binary, weights, golden_dir, threads):
    frame0 = np.load(os.path.join(golden_dir, "golden_frame.npy"))
    frame1 = np.load(os.path.join(golden_dir, "golden_frame_damaged.npy"))
    golden = np.load(os.path.join(golden_dir, "golden_features.npy"))
    ours = run_features(sess, patches_of(frame0), 256)
    feat_rel = float(np.abs(ours - golden).max() / np.abs(golden).max())
    ort_cos = cosine(ours, run_features(sess, patches_of(frame1), 256))

    out = tempfile.mkdtemp(prefix="bw-ort-compare-")
    try:
        cmd = [binary, "-q", "compare", os.path.join(golden_dir, "golden_frame.npy"),
               os.path.join(golden_dir, "golden_frame_damaged.npy"), "--out", out, "--weights", weights,
               "--prefilter-sigma", "0", "--backend", "cpu", "--threads", str(threads)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        with open(os.path.join(out, "similarity.csv")) as f:
            header = f.readline().strip().split(",")
            col = header.index("similarity")
            bw_cos = np.array([float(line.split(",")[col]) for line in f if line.strip()])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    cos_abs = float(np.abs(bw_cos - ort_cos).max())
    ok = feat_rel <= 1e-4 and cos_abs <= 1e-5 and len(bw_cos) == len(ort_cos)
    return {"ok": ok, "ort_vs_pytorch_features_rel": feat_rel, "ort_vs_beamwatch_cosine_abs": cos_abs,
            "patches": int(len(ort_cos))}


# ---------------------------------------------------------------- timing


def time_ort(sess, x, chunk, frames):
    run_features(sess, x, chunk)  # untimed warm-up
    ms = []
    for _ in range(frames):
        t0 = time.perf_counter()
        run_features(sess, x, chunk)
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def time_beamwatch(binary, weights, size, frames, threads, precision="fp32"):
    cmd = [binary, "-q", "bench", "--size", str(size), "--frames", str(frames), "--threads", str(threads),
           "--backend", "cpu", "--prefilter-sigma", "0", "--weights", weights, "--precision", precision]
    if precision != "fp32":
        # Time bf16 itself, also where beamwatch's start-up probe finds it slower than fp32 and a
        # daemon would run fp32 (README "Precision").
        cmd.append("--force-precision")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("{"))
    return json.loads(line)


def cpu_model():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
    except OSError:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}, {os.cpu_count()} logical CPUs, {' '.join(isa)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "beamwatch"))
    ap.add_argument("--weights", default=os.path.join(SHARED, "weights", "resnet18_synthetic_seed0.safetensors"))
    ap.add_argument("--golden", default=os.path.join(SHARED, "golden"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=1020)
    ap.add_argument("--frames", type=int, default=5, help="timed frames per round and engine")
    ap.add_argument("--chunk", type=int, default=256, help="onnxruntime's chunked batch size")
    ap.add_argument("--fold-bn", action="store_true", help="fold batch-norm in numpy instead of BatchNormalization nodes")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    ap.add_argument("--precision", default="fp32",
                    help="beamwatch's CPU number formats to time, comma-separated (fp32,bf16); each round "
                         "times every one after onnxruntime (always fp32)")
    args = ap.parse_args()

    import onnxruntime as ort
    from safetensors.numpy import load_file

    load_start = os.getloadavg()
    weights = {k: v.astype(np.float32) for k, v in load_file(args.weights).items()}
    sess = make_session(TrunkGraph(weights, args.fold_bn).build(), args.threads)
    check = check_correctness(sess, args.binary, args.weights, args.golden, args.threads)
    if not check["ok"]:
        print(json.dumps({"error": "onnxruntime and beamwatch disagree", **check}), file=sys.stderr)
        sys.exit(1)

    # Timing does not depend on the pixel values; a fixed random frame like beamwatch bench's.
    frame = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    x = patches_of(frame)
    rounds = []
    precisions = [p for p in args.precision.split(",") if p]
    for r in range(args.rounds):
        ort_chunk = time_ort(sess, x, args.chunk, args.frames)
        ort_whole = time_ort(sess, x, len(x), args.frames)
        ort_best = min(ort_chunk, ort_whole)
        row = {"ort_chunk_ms": round(ort_chunk, 1), "ort_whole_ms": round(ort_whole, 1), "ort_ms": round(ort_best, 1)}
        text = f"round {r + 1}: ort {args.chunk}-chunks {ort_chunk:7.1f} ms  ort whole {ort_whole:7.1f} ms"
        for p in precisions:
            bw = time_beamwatch(args.binary, args.weights, args.size, args.frames, args.threads, p)
            if bw["patches"] != len(x):
                sys.exit(f"beamwatch timed {bw['patches']} patches, onnxruntime {len(x)}")
            if bw.get("precision", "fp32") != p:
                sys.exit(f"beamwatch ran {bw.get('precision')} where {p} was asked (no AVX512-BF16 here?)")
            sfx = "" if p == "fp32" else "_" + p
            row["beamwatch" + sfx + "_ms"] = bw["ms_per_frame_median"]
            row["ratio" + sfx] = round(ort_best / bw["ms_per_frame_median"], 3)
            text += f"  beamwatch {p} {bw['ms_per_frame_median']:7.1f} ms ({row['ratio' + sfx]:.2f}x)"
        rounds.append(row)
        if not args.json:
            print(text, flush=True)

    med = lambda k: round(statistics.median(r[k] for r in rounds), 3)
    result = {
        "cpu": cpu_model(),
        "threads": args.threads,
        "size_px": args.size,
        "patches": len(x),
        "onnxruntime": ort.__version__,
        "bn": "folded in numpy" if args.fold_bn else "BatchNormalization nodes (fused by onnxruntime)",
        "load_avg_start": [round(v, 2) for v in load_start],
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "correctness": check,
        "rounds": rounds,
        "median_ort_chunk_ms": med("ort_chunk_ms"),
        "median_ort_whole_ms": med("ort_whole_ms"),
        "median_ort_ms": med("ort_ms"),
    }
    for p in precisions:
        sfx = "" if p == "fp32" else "_" + p
        result["median_beamwatch" + sfx + "_ms"] = med("beamwatch" + sfx + "_ms")
        result["median_ratio" + sfx] = med("ratio" + sfx)
        result["ratio" + sfx + "_range"] = [min(r["ratio" + sfx] for r in rounds), max(r["ratio" + sfx] for r in rounds)]
    if args.json:
        print(json.dumps(result))
        return
    print(f"CPU: {result['cpu']}")
    print(f"onnxruntime {result['onnxruntime']}, {result['bn']}; {args.threads} threads, fp32, "
          f"{len(x)} patches of a {args.size}x{args.size} frame")
    print(f"correctness: ort vs PyTorch features {check['ort_vs_pytorch_features_rel']:.1e} of max, "
          f"ort vs beamwatch cosine {check['ort_vs_beamwatch_cosine_abs']:.1e}")
    print(f"median ms/frame: ort {args.chunk}-chunks {result['median_ort_chunk_ms']}, ort whole "
          f"{result['median_ort_whole_ms']}")
    for p in precisions:
        sfx = "" if p == "fp32" else "_" + p
        rng = result["ratio" + sfx + "_range"]
        print(f"beamwatch {p}: median {result['median_beamwatch' + sfx + '_ms']} ms/frame; ort/beamwatch median "
              f"{result['median_ratio' + sfx]:.2f}x, rounds {rng[0]:.2f}-{rng[1]:.2f}x")
    print(f"load average start {result['load_avg_start']}, end {result['load_avg_end']}")


if __name__ == "__main__":
    main()
