"""beamwatch client: send frames to the beamwatch beam-damage monitor, receive its alarms, read its
session files.

- :class:`Sender` — a ZeroMQ PUSH socket speaking beamwatch's own wire format
  (docs/wire-format.md): series start, frames from 2-D numpy arrays, series end.
- :class:`Subscriber` — a ZeroMQ SUB socket on the daemon's results endpoint
  (``[sinks] pub_endpoint``): alarms, per-frame results, series summaries.
- :func:`read_session` — a recorded session file (HDF5, docs/session-format.md) as numpy arrays
  and dicts; needs h5py.
- :func:`dose_per_frame_e_per_a2` — D = I · t / (e · Δx²), as the daemon computes it.

Units are in the names: ``beam_current_pa`` (pA), ``dwell_time_us`` (µs), ``pixel_size_a`` (Å),
``frame_time_s`` (s), ``timestamp_ns`` (ns), doses in e⁻/Å².

Depends on pyzmq and numpy only; h5py for :func:`read_session`.
"""

from ._errors import BeamwatchError, BeamwatchTimeout, ProtocolError, SessionFormatError
from .session import decode_dose_sources, read_session
from .subscribe import ALARM_TOPIC, ALL_TOPICS, FRAME_TOPIC, SUMMARY_TOPIC, Subscriber, parse_message
from .wire import (
    DOSE_KEYS,
    ELEMENTARY_CHARGE_C,
    HTYPE_END,
    HTYPE_FRAME,
    HTYPE_START,
    Sender,
    dose_per_frame_e_per_a2,
    encode_frame,
    encode_series_end,
    encode_series_start,
    to_wire_array,
    wire_dtype,
)

__version__ = "0.1.0"

__all__ = [
    "ALARM_TOPIC",
    "ALL_TOPICS",
    "BeamwatchError",
    "BeamwatchTimeout",
    "DOSE_KEYS",
    "ELEMENTARY_CHARGE_C",
    "FRAME_TOPIC",
    "HTYPE_END",
    "HTYPE_FRAME",
    "HTYPE_START",
    "ProtocolError",
    "SUMMARY_TOPIC",
    "Sender",
    "SessionFormatError",
    "Subscriber",
    "decode_dose_sources",
    "dose_per_frame_e_per_a2",
    "encode_frame",
    "encode_series_end",
    "encode_series_start",
    "parse_message",
    "read_session",
    "to_wire_array",
    "wire_dtype",
]
