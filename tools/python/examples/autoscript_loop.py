#!/usr/bin/env python3
# Runs on: the Thermo Fisher microscope PC (or the support PC) where AutoScript TEM is installed,
# in AutoScript's Python environment, with the client installed into it:
#   pip install /path/to/beamwatch/tools/python          (pyzmq and numpy come with it)
# UNTESTED: written against AutoScript TEM's documented client (TemMicroscopeClient, connect,
# acquisition.acquire_stem_image(detector, size, dwell_time), AdornedImage.data and
# .metadata.binary_result.pixel_size) without AutoScript or a microscope to run it on. Try it on
# a test specimen, or AutoScript's offline/simulation mode, first.
#
# Acquires STEM frames in a loop and sends each to `beamwatch run` as one series, with the dwell
# time, the scan pixel size from the image metadata and the probe current you give (AutoScript
# does not report it). With --blank-on-critical it also watches beamwatch's alarms and blanks the
# beam and stops at the first critical one.
#
# The daemon connects to the PUSH socket this script binds:
#   [ingest]  endpoint = "tcp://127.0.0.1:5555"  mode = "connect"  format = "auto"
#
#   python autoscript_loop.py --frames 40 --size 1024 --dwell-time-us 2 --beam-current-pa 20

import argparse
import time

import beamwatch_client as bw
from autoscript_tem_microscope_client import TemMicroscopeClient


def pixel_size_a(image):
    """The scan pixel size in Å from an AdornedImage's metadata (metres there), or None."""
    try:
        x = float(image.metadata.binary_result.pixel_size.x)
    except (AttributeError, TypeError, ValueError):
        return None
    return x * 1e10 if x > 0 else None


def main() -> None:
    p = argparse.ArgumentParser(description="Acquire STEM frames with AutoScript and send them to beamwatch.")
    p.add_argument("--microscope", default="", help="address of the microscope PC ('' = this PC)")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="where to bind the PUSH socket")
    p.add_argument("--alarms", default="tcp://127.0.0.1:5557", help="the daemon's [sinks] pub_endpoint")
    p.add_argument("--detector", default="HAADF")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=1024, help="frame side, pixels")
    p.add_argument("--dwell-time-us", type=float, default=2.0)
    p.add_argument("--beam-current-pa", type=float, required=True, help="measured probe current, pA")
    p.add_argument("--blank-on-critical", action="store_true")
    a = p.parse_args()

    microscope = TemMicroscopeClient()
    if a.microscope:
        microscope.connect(a.microscope)
    else:
        microscope.connect()
    series = time.strftime("autoscript_%Y%m%d-%H%M%S")
    alarms = bw.Subscriber(a.alarms, topics=bw.ALARM_TOPIC) if a.blank_on_critical else None
    try:
        with bw.Sender(a.endpoint, bind=True, send_timeout_s=30.0) as tx:
            print(f"waiting for beamwatch to connect to {a.endpoint} …")
            if not tx.wait_for_receiver(60.0):
                raise SystemExit("no beamwatch daemon connected; nothing acquired")
            for i in range(a.frames):
                image = microscope.acquisition.acquire_stem_image(a.detector, a.size, a.dwell_time_us * 1e-6)
                if i == 0:
                    tx.start_series(series, frames=a.frames, shape=image.data.shape, dtype=image.data.dtype,
                                    beam_current_pa=a.beam_current_pa, dwell_time_us=a.dwell_time_us,
                                    pixel_size_a=pixel_size_a(image))
                tx.send_frame(image.data, timestamp_ns=time.time_ns())
                print(f"frame {i} sent")
                if alarms is not None:
                    critical = next(alarms.alarms(timeout_s=0.01, levels="critical"), None)
                    if critical is not None:
                        microscope.optics.blank()
                        print(f"beam blanked: [{critical['level']}] {critical['rule']}: {critical['message']}")
                        break
            tx.end_series()
    finally:
        if alarms is not None:
            alarms.close()


if __name__ == "__main__":
    main()
