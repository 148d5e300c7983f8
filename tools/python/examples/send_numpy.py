#!/usr/bin/env python3
# Runs on: any PC with Python ≥ 3.9 and the client (pip install ./tools/python); no microscope.
#
# Sends a synthetic damaged series — a crystal lattice whose disordered region grows frame after
# frame, with Poisson shot noise — to `beamwatch run`, with its dose inputs, as an acquisition
# program would. Start the daemon first (or after: the sender waits for it) with
#
#   [ingest]
#   endpoint = "tcp://127.0.0.1:5555"   # this script binds there; the daemon connects
#   mode = "connect"
#   format = "auto"                     # or "beamwatch"
#
# and watch its log, its live view (http://127.0.0.1:8750/) or examples/subscribe_alarms.py.
#
#   python send_numpy.py --frames 40 --onset 15 --fps 5

import argparse
import time

import beamwatch_client as bw
from beamwatch_client.synthetic import DamagedLattice


def main() -> None:
    p = argparse.ArgumentParser(description="Send a synthetic damaged series to beamwatch.")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="where to bind the PUSH socket")
    p.add_argument("--series", default=time.strftime("synthetic_%Y%m%d-%H%M%S"))
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--size", type=int, default=512, help="frame side, pixels")
    p.add_argument("--onset", type=int, default=10, help="first damaged frame")
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--beam-current-pa", type=float, default=5.0)
    p.add_argument("--dwell-time-us", type=float, default=2.0)
    p.add_argument("--pixel-size-a", type=float, default=0.5)
    a = p.parse_args()

    sim = DamagedLattice(shape=(a.size, a.size), frames=a.frames, onset_frame=a.onset,
                         beam_current_pa=a.beam_current_pa, dwell_time_us=a.dwell_time_us,
                         pixel_size_a=a.pixel_size_a)
    print(f"{sim.dose_per_frame_e_per_a2:.0f} e⁻/Å² per frame; damage from frame {a.onset}")
    with bw.Sender(a.endpoint, bind=True, send_timeout_s=None) as tx:
        print(f"waiting for beamwatch to connect to {a.endpoint} …")
        tx.wait_for_receiver()
        tx.start_series(a.series, frames=a.frames, shape=sim.shape, dtype="u16", frame_time_s=1 / a.fps,
                        beam_current_pa=a.beam_current_pa, dwell_time_us=a.dwell_time_us,
                        pixel_size_a=a.pixel_size_a)
        for i in range(a.frames):
            t = time.monotonic()
            tx.send_frame(sim.frame(i), timestamp_ns=time.time_ns())
            print(f"frame {i} sent", end="\r")
            time.sleep(max(0.0, 1 / a.fps - (time.monotonic() - t)))
        tx.end_series()
    print(f"\nseries {a.series}: {a.frames} frames sent")


if __name__ == "__main__":
    main()
