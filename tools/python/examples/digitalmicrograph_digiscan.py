# Runs in: Gatan DigitalMicrograph (GMS 3.4 or later, its Python scripting, on the microscope PC)
# with a DigiScan scan generator. Open it in DM's script window and press Execute.
# UNTESTED: written against DM's documented Python module (DigitalMicrograph: CreateImage,
# GetNumArray, GetID, GetDimensionScale, GetDimensionUnitString, ExecuteScriptString) and
# DigiScan's DM-script commands (DSCreateParameters, DSSetParametersSignal, DSStartAcquisition,
# DSDeleteParameters) without a DigitalMicrograph installation to run it in. Try it on a test
# specimen (or DM's simulated DigiScan) first.
#
# Acquires FRAMES single DigiScan frames one after the other into one image and sends each to
# `beamwatch run` as one series, with the dwell time set here, the scan pixel size from the image
# calibration and the probe current you measured (DigiScan does not know it).
#
# Install the client into DM's Python environment first (GMS ships its own; from its prompt):
#   pip install /path/to/beamwatch/tools/python          (pyzmq and numpy come with it)
#
# The daemon connects to the PUSH socket this script binds:
#   [ingest]  endpoint = "tcp://127.0.0.1:5555"  mode = "connect"  format = "auto"
# (a daemon on another PC: bind "tcp://0.0.0.0:5555" here and connect it to this PC's address).

import time

import numpy as np
import DigitalMicrograph as DM

import beamwatch_client as bw

ENDPOINT = "tcp://127.0.0.1:5555"
FRAMES = 40
WIDTH, HEIGHT = 1024, 1024
DWELL_TIME_US = 2.0
SIGNAL_INDEX = 0           # DigiScan input: 0 is usually HAADF/ADF, 1 BF
BEAM_CURRENT_PA = 20.0     # measured probe current (Faraday cup, or the screen current calibrated)
SERIES = time.strftime("dm_%Y%m%d-%H%M%S")

_UNIT_TO_A = {"nm": 10.0, "Å": 1.0, "A": 1.0, "\xc5": 1.0, "pm": 0.01, "µm": 1e4, "um": 1e4}


def pixel_size_a(img):
    """The image's x calibration in Å, or None when it is not a length."""
    scale = abs(float(img.GetDimensionScale(0)))
    unit = img.GetDimensionUnitString(0)
    unit = unit.decode("latin-1") if isinstance(unit, bytes) else str(unit)
    factor = _UNIT_TO_A.get(unit.strip())
    return scale * factor if factor and scale > 0 else None


def acquire_into(img):
    """One synchronous DigiScan frame into `img` (DigiScan fills the image with that ID)."""
    DM.ExecuteScriptString(
        f"number p = DSCreateParameters({WIDTH}, {HEIGHT}, 0, {DWELL_TIME_US}, 0)\n"
        f"DSSetParametersSignal(p, {SIGNAL_INDEX}, 2, 1, {img.GetID()})\n"  # 2-byte data into our image
        "DSStartAcquisition(p, 0, 1)\n"                                       # single frame, wait for it
        "DSDeleteParameters(p)\n"
    )


def main():
    img = DM.CreateImage(np.zeros((HEIGHT, WIDTH), dtype=np.uint16))
    img.SetName(f"beamwatch {SERIES}")
    img.ShowImage()
    with bw.Sender(ENDPOINT, bind=True, send_timeout_s=30.0) as tx:
        print(f"waiting for beamwatch to connect to {ENDPOINT} …")
        if not tx.wait_for_receiver(60.0):
            print("no beamwatch daemon connected; nothing acquired")
            return
        started = False
        for i in range(FRAMES):
            acquire_into(img)
            pixels = img.GetNumArray()  # a view of the DM image: send_frame copies it
            if not started:
                tx.start_series(SERIES, frames=FRAMES, shape=pixels.shape, dtype=pixels.dtype,
                                beam_current_pa=BEAM_CURRENT_PA, dwell_time_us=DWELL_TIME_US,
                                pixel_size_a=pixel_size_a(img))
                started = True
            tx.send_frame(pixels, timestamp_ns=time.time_ns())
            print(f"frame {i} sent")
        tx.end_series()
    print(f"series {SERIES}: {FRAMES} frames sent")


main()
