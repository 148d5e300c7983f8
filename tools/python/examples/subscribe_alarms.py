#!/usr/bin/env python3
# Runs on: the PC where `beamwatch run` runs (its results socket binds on loopback by default:
# [sinks] pub_endpoint = "tcp://127.0.0.1:5557"), or any PC that can reach it if it binds elsewhere.
#
# Prints every alarm as it fires, and with --frames a line per analysed frame, and the series
# summary when a series ends. Ctrl-C stops it.
#
#   python subscribe_alarms.py
#   python subscribe_alarms.py --frames --endpoint tcp://127.0.0.1:5557

import argparse

import beamwatch_client as bw


def fmt(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description="Print beamwatch's alarms as they fire.")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5557", help="the daemon's [sinks] pub_endpoint")
    p.add_argument("--frames", action="store_true", help="also a line per analysed frame")
    a = p.parse_args()
    topics = [bw.ALARM_TOPIC, bw.SUMMARY_TOPIC] + ([bw.FRAME_TOPIC] if a.frames else [])
    with bw.Subscriber(a.endpoint, topics=topics) as sub:
        print(f"listening on {a.endpoint} ({', '.join(topics)}); Ctrl-C to stop")
        try:
            for topic, msg in sub:
                if topic == bw.ALARM_TOPIC:
                    dose = msg.get("cumulative_dose_e_per_a2")
                    dose_text = f", {dose:.0f} e⁻/Å²" if dose is not None else ""
                    print(f"ALARM [{msg['level']}] {msg['rule']}: series {msg['series']} frame {msg['frame']}"
                          f"{dose_text}: {msg['message']}")
                elif topic == bw.SUMMARY_TOPIC:
                    fit = msg.get("critical_dose_fit") or {}
                    dc = fit.get("critical_dose_e_per_a2")
                    print(f"series {msg['series']} ended: {msg['frames_received']} frames received, "
                          f"{len(msg.get('alarms', []))} alarms"
                          + (f", critical dose {dc:.0f} e⁻/Å²" if dc is not None else ""))
                else:
                    # Per-frame result: dose, summary statistics, drift and the dissimilarity grid
                    # (msg["dissimilarity"], msg["rows"] × msg["cols"], row-major, None = excluded).
                    s = msg.get("summary") or {}
                    dose = (msg.get("dose") or {}).get("cumulative_e_per_a2")
                    print(f"frame {msg['frame']} of {msg['series']}: mean dissimilarity "
                          f"{fmt(s.get('mean_dissimilarity'))}, significant patches {fmt(s.get('fraction_above_threshold'))}, "
                          f"damaged area {fmt(s.get('damaged_area_fraction'))}, cumulative dose {fmt(dose, '.0f')} e⁻/Å²")
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
