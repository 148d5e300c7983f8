#!/usr/bin/env python3
"""Decodes the blobs `beamwatch bench-4d --decode-only --blobs-dir DIR` wrote with the C bitshuffle
library, single-threaded, and prints patterns/s and MB/s: the anchor for beamwatch's own decoder.

Usage: OMP_NUM_THREADS=1 python tools/bench_bitshuffle.py DIR/bslz4_96.bin [DIR/bslz4_192.bin ...]

Each file holds, per pattern, a u64 little-endian length and a bitshuffle-LZ4 blob in the HDF5
filter framing (12-byte header: decoded bytes u64 BE, block bytes u32 BE); the patterns are
square u16. The library's own functions take the blocks after that header.
"""
import os
import struct
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import bitshuffle  # noqa: E402


def read_blobs(path):
    raw = open(path, "rb").read()
    blobs, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<Q", raw, pos)
        blobs.append(raw[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return blobs


def main():
    print("pattern  C bitshuffle patterns/s  MB/s out")
    for path in sys.argv[1:]:
        blobs = read_blobs(path)
        total, block = struct.unpack_from(">QI", blobs[0], 0)
        px = int(round((total // 2) ** 0.5))
        arrays = [np.frombuffer(b, dtype=np.uint8, offset=12) for b in blobs]
        block_elems = block // 2
        first = bitshuffle.decompress_lz4(arrays[0], (px * px,), np.dtype(np.uint16), block_elems)
        assert first.nbytes == total
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for a in arrays:
                bitshuffle.decompress_lz4(a, (px * px,), np.dtype(np.uint16), block_elems)
            best = min(best, time.perf_counter() - t)
        rate = len(arrays) / best
        print(f"{px:>3}×{px:<3}  {rate:>23.0f}  {rate * total / 1e6:>8.0f}")


if __name__ == "__main__":
    main()
