"""End-to-end check of the Python client against a running `beamwatch run` (tests/python_client.rs
runs it; it also runs by hand against a daemon you started).

  python live_series.py send  --endpoint tcp://127.0.0.1:5555 --pub tcp://127.0.0.1:5557 --out DIR
      binds a Sender on --endpoint (the daemon connects to it), subscribes to alarms and summaries on
      --pub, sends a synthetic damaged series with dose metadata, waits for the series summary, and
      writes DIR/sent.npz (the frames and the dose sent) and DIR/received.json (what came back)
  python live_series.py check --session FILE --out DIR
      reads the session file with read_session() and prints, as JSON, how it compares with what
      `send` sent

Exit status 0 unless something could not run at all; the comparisons are for the caller to judge.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import beamwatch_client as bw
from beamwatch_client.synthetic import DamagedLattice

SERIES = "python-client_01"
DWELL_TIME_US = 2.0
PIXEL_SIZE_A = 0.5


def beam_current_pa(i: int) -> float:
    """A probe current that wanders a little, sent in every frame header."""
    return 5.0 * (1.0 + 0.05 * math.sin(0.7 * i))


def send(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = DamagedLattice(shape=(args.size, args.size), frames=args.frames, onset_frame=args.onset, seed=3,
                         beam_current_pa=beam_current_pa(0), dwell_time_us=DWELL_TIME_US, pixel_size_a=PIXEL_SIZE_A)
    frames = np.stack([sim.frame(i) for i in range(args.frames)])
    currents = np.array([beam_current_pa(i) for i in range(args.frames)])
    doses = np.array([bw.dose_per_frame_e_per_a2(c, DWELL_TIME_US, PIXEL_SIZE_A) for c in currents])
    np.savez(out / "sent.npz", frames=frames, beam_current_pa=currents, dose_e_per_a2=doses)

    alarms, summaries, other = [], [], []

    def drain(sub: bw.Subscriber, timeout_s: float) -> None:
        try:
            topic, body = sub.recv(timeout_s)
        except bw.BeamwatchTimeout:
            return
        while True:
            {bw.ALARM_TOPIC: alarms, bw.SUMMARY_TOPIC: summaries}.get(topic, other).append(body)
            try:
                topic, body = sub.recv(0)
            except bw.BeamwatchTimeout:
                return

    t0 = time.monotonic()
    with bw.Subscriber(args.pub, topics=(bw.ALARM_TOPIC, bw.SUMMARY_TOPIC)) as sub, \
            bw.Sender(args.endpoint, bind=True, send_timeout_s=args.timeout) as tx:
        if not tx.wait_for_receiver(args.timeout):
            print(f"no daemon connected to {args.endpoint} within {args.timeout} s", file=sys.stderr)
            return 2
        # The subscription reaches the daemon's PUB socket a moment after it connects.
        time.sleep(0.5)
        tx.start_series(SERIES, frames=args.frames, shape=frames.shape[1:], dtype=frames.dtype,
                        frame_time_s=1.0 / args.fps, dwell_time_us=DWELL_TIME_US, pixel_size_a=PIXEL_SIZE_A)
        for i, f in enumerate(frames):
            tx.send_frame(f, timestamp_ns=time.time_ns(), beam_current_pa=float(currents[i]))
            drain(sub, 1.0 / args.fps)
        tx.end_series()
        deadline = time.monotonic() + args.timeout
        while not summaries and time.monotonic() < deadline:
            drain(sub, 0.2)
        drain(sub, 0.5)
        sent = tx.frames_sent
    received = {
        "series": SERIES,
        "frames_sent": sent,
        "shape": list(frames.shape[1:]),
        "dtype": str(frames.dtype),
        "alarms": alarms,
        "summaries": summaries,
        "seconds": time.monotonic() - t0,
    }
    (out / "received.json").write_text(json.dumps(received, indent=1))
    print(json.dumps({"frames_sent": sent, "alarms": [a.get("rule") for a in alarms], "summaries": len(summaries)}))
    return 0


def check(args: argparse.Namespace) -> int:
    out = Path(args.out)
    sent = np.load(out / "sent.npz")
    frames, doses = sent["frames"], sent["dose_e_per_a2"]
    s = bw.read_session(args.session)
    stored = s["frames"]
    idx = s["frame_index"].astype(int)
    # Pixel values of a couple of frames (the reference, one in the middle, the last), and of all.
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    pos = {int(f): k for k, f in enumerate(idx)}
    picked_equal = {str(i): bool(i in pos and np.array_equal(stored[pos[i]], frames[i])) for i in picks}
    all_equal = bool(stored is not None and len(idx) and np.array_equal(stored, frames[idx]))
    recv_idx = s["received_index"].astype(int)
    session_dose = s["dose_per_frame_e_per_a2"]
    expected = doses[recv_idx]
    rel = np.abs(session_dose - expected) / expected
    # The session's own inputs must give its own dose by D = I·t/(e·Δx²).
    r = s["received"]
    own = np.array([bw.dose_per_frame_e_per_a2(i, t, x)
                    for i, t, x in zip(r["beam_current_pa"], r["dwell_time_us"], r["pixel_size_a"])])
    own_rel = np.abs(own - session_dose) / session_dose
    cum_rel = np.abs(s["cumulative_dose_e_per_a2"] - np.cumsum(session_dose)) / np.cumsum(session_dose)
    report = {
        "format": s["format"],
        "series": s["series"],
        "complete": s["complete"],
        "frames_shape": list(stored.shape) if stored is not None else None,
        "frames_dtype": str(stored.dtype) if stored is not None else None,
        "sent_shape": list(frames.shape),
        "sent_dtype": str(frames.dtype),
        "frame_index": idx.tolist(),
        "picked_frames_equal": picked_equal,
        "all_frames_equal": all_equal,
        "dissimilarity_shape": list(s["dissimilarity"].shape),
        "dissimilarity_dtype": str(s["dissimilarity"].dtype),
        "status_shape": list(s["status"].shape),
        "grid": [int(s["attrs"]["grid_rows"]), int(s["attrs"]["grid_cols"])],
        "patch_px": int(s["attrs"]["patch_px"]),
        "analysis_index": s["analysis_index"].astype(int).tolist(),
        "received_index": recv_idx.tolist(),
        "dose_rel_err_vs_sent": float(rel.max()) if rel.size else None,
        "dose_rel_err_vs_own_inputs": float(own_rel.max()) if own_rel.size else None,
        "cumulative_rel_err": float(cum_rel.max()) if cum_rel.size else None,
        "beam_current_rel_err": float(np.max(np.abs(r["beam_current_pa"] - sent["beam_current_pa"][recv_idx])
                                             / sent["beam_current_pa"][recv_idx])) if recv_idx.size else None,
        "dose_sources_first": bw.decode_dose_sources(r["dose_sources"][0]) if recv_idx.size else None,
        "alarms": s["alarms"],
        "alarm_rules": [a.get("rule") for a in s["alarms"]],
        "summary_frames_received": (s["summary"] or {}).get("frames_received"),
    }
    print(json.dumps(report))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("send")
    ps.add_argument("--endpoint", required=True)
    ps.add_argument("--pub", required=True)
    ps.add_argument("--out", required=True)
    ps.add_argument("--frames", type=int, default=24)
    ps.add_argument("--size", type=int, default=256)
    ps.add_argument("--onset", type=int, default=8)
    ps.add_argument("--fps", type=float, default=10.0)
    ps.add_argument("--timeout", type=float, default=60.0)
    pc = sub.add_parser("check")
    pc.add_argument("--session", required=True)
    pc.add_argument("--out", required=True)
    args = p.parse_args()
    return send(args) if args.cmd == "send" else check(args)


if __name__ == "__main__":
    sys.exit(main())
