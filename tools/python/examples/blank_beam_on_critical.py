#!/usr/bin/env python3
# Runs on: the PC where `beamwatch run` runs (its results socket is on loopback by default), or the
# microscope PC if the daemon's [sinks] pub_endpoint is reachable from it — whichever can blank
# the beam. By default it only PRINTS what it would do: replace blank_beam() with your
# microscope's call (a few are sketched below; none is tested here).
#
# Subscribes to beamwatch's alarms and, on every CRITICAL alarm (e.g. "damage-spreading", a
# "dose-budget" rule), calls blank_beam(alarm). The daemon debounces alarms (hold_frames,
# clear_fraction), so one damage event gives one call.
#
# The daemon can also run a program itself on every alarm, with the alarm JSON on its stdin:
# [sinks] command = ["/path/to/blank-beam"]. This script is the Python route, for a blanking call
# that needs a live connection to the microscope.
#
#   python blank_beam_on_critical.py [--endpoint tcp://127.0.0.1:5557] [--rule damage-spreading]

import argparse
import time
from typing import Any, Dict

import beamwatch_client as bw


def blank_beam(alarm: Dict[str, Any]) -> None:
    """Blanks the beam. Replace the print with your microscope's call, for example (untested):

    - Thermo Fisher AutoScript TEM:  microscope.optics.blank()
    - Thermo Fisher AutoScript SEM/FIB:  microscope.beams.electron_beam.blank()
    - Nion Swift (inside Swift):  the instrument controller's blanker property,
      api.get_instrument_by_id(...).set_property_as_bool(<blanker property>, True) — its name
      depends on the instrument
    - A TTL blanker on a DAQ card:  set its digital line high.
    """
    print(f"{time.strftime('%H:%M:%S')} WOULD BLANK THE BEAM: [{alarm['level']}] {alarm['rule']} "
          f"in series {alarm['series']} at frame {alarm['frame']}: {alarm['message']}")


def main() -> None:
    p = argparse.ArgumentParser(description="Blank the beam on beamwatch's critical alarms.")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5557", help="the daemon's [sinks] pub_endpoint")
    p.add_argument("--rule", action="append", help="only these rules (repeatable); default: every critical alarm")
    a = p.parse_args()
    with bw.Subscriber(a.endpoint) as sub:
        print(f"watching {a.endpoint} for critical alarms; Ctrl-C to stop")
        try:
            for alarm in sub.alarms(levels="critical", rules=a.rule):
                try:
                    blank_beam(alarm)
                except Exception as e:  # a failed blanking call must not end the watch
                    print(f"blanking failed: {e!r}")
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
