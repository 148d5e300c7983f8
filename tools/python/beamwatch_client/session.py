"""Reading the HDF5 session files the daemon records (docs/session-format.md). Needs h5py."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ._errors import SessionFormatError

FORMAT_PREFIX = "beamwatch-session/"
#: Session format versions this reader knows (newer ones are read as far as they are the same).
KNOWN_VERSIONS = (1, 2)

_SOURCES = {0: "missing", 1: "frame header", 2: "series header", 3: "configuration"}


def decode_dose_sources(code: int) -> Dict[str, Any]:
    """One ``/received/dose_sources`` byte in words: where each dose input came from
    (``"missing"``, ``"frame header"``, ``"series header"``, ``"configuration"``), whether the dose
    per frame was set directly in the configuration, and whether it is an upper estimate (scan
    pixel smaller than the probe)."""
    code = int(code)
    return {
        "beam_current_pa": _SOURCES[code & 3],
        "dwell_time_us": _SOURCES[(code >> 2) & 3],
        "pixel_size_a": _SOURCES[(code >> 4) & 3],
        "per_frame_from_config": bool(code & 64),
        "upper_estimate": bool(code & 128),
    }


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray) and v.dtype == np.uint8:
        return v.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


def _attr(v: Any) -> Any:
    """An HDF5 attribute as plain Python."""
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        if v.shape == ():
            return _attr(v[()])
        return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json_or_none(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _alarm_texts(ds: Any) -> List[str]:
    """Alarm JSON texts from ``/alarms`` in any of its layouts: (A, 4096) u8 NUL-padded rows
    (format 1), fixed-length strings (format 2) or variable-length strings."""
    data = ds[()]
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        if data.ndim != 2:
            raise SessionFormatError(f"/alarms: u8 data of shape {data.shape}, expected (A, bytes per alarm)")
        return [row.tobytes().split(b"\0", 1)[0].decode("utf-8", errors="replace") for row in data]
    arr = np.asarray(data)
    if arr.dtype.kind not in "SUO":
        raise SessionFormatError(f"/alarms: unexpected type {arr.dtype} (expected u8 rows or strings)")
    return [_text(v).split("\0", 1)[0] for v in arr.reshape(-1)]


def _parse_alarm(text: str) -> Dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError as e:
        # An alarm longer than a row is cut when stored; keep what there is.
        return {"raw": text, "error": f"not complete JSON: {e}"}
    return v if isinstance(v, dict) else {"raw": text, "error": "JSON but not an object"}


def _table(group: Any, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Every dataset of a group, cut to the shortest first dimension (after a crash a row's
    columns can differ by one)."""
    if group is None:
        return {}
    names = names or [k for k in group.keys() if hasattr(group[k], "shape")]
    cols = {k: group[k][()] for k in names}
    n = min((len(v) for v in cols.values()), default=0)
    return {k: v[:n] for k, v in cols.items()}


def _open(path: str) -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "read_session needs h5py: pip install h5py (or pip install 'beamwatch-client[session]')"
        ) from None
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such session file: {path}")
    # SWMR read works on a file that is still being written and on one whose writer was killed
    # (a plain open of that fails with "file is already open for write").
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError as swmr_error:
        try:
            return h5py.File(path, "r")
        except OSError:
            raise SessionFormatError(f"{path}: cannot open as HDF5: {swmr_error}") from None


def read_session(path: Union[str, "os.PathLike[str]"], frames: bool = True) -> Dict[str, Any]:
    """Reads a beamwatch session file (one series, written by ``beamwatch run`` or ``replay``).

    Returns a dict:

    - ``path``, ``format`` (``"beamwatch-session/1"`` …), ``series``, ``complete`` (closed
      cleanly), ``stopped_early`` (why recording stopped early, or ``None``), ``attrs`` (every
      root attribute), ``summary`` and ``provenance`` (parsed JSON, or ``None``)
    - ``frames``: the stored frames, (N, H, W) in the recorded pixel type (``None`` when no frames
      were stored or ``frames=False``); ``frame_index`` (N,): frame number of each
    - ``received``: the per-received-frame table, every column of ``/received`` as an array of K
      rows (``index``, ``received_unix_ns``, ``timestamp_ns``, ``dose_e_per_a2``,
      ``cumulative_e_per_a2``, ``beam_current_pa``, ``dwell_time_us``, ``pixel_size_a``,
      ``dose_sources``; decode a source byte with :func:`decode_dose_sources`)
    - ``received_index``, ``dose_per_frame_e_per_a2``, ``cumulative_dose_e_per_a2``: shortcuts to
      that table (dose in e⁻/Å², NaN where unknown)
    - ``analysis``: every column of ``/analysis`` (M rows, the reference frame is not one), and the
      shortcuts ``analysis_index`` (M,), ``dissimilarity`` and ``similarity`` (M, rows, cols) f32
      (NaN: not analysed), ``status`` (M, rows, cols) u8 (0 analysed, 1 gaps filled, 2 excluded
      for gaps, 3 outside the drift-corrected overlap)
    - ``alarms``: a list of dicts, the same JSON the PUB socket carries (an alarm cut at its row's
      length comes back as ``{"raw": text, "error": …}``)

    The file is opened in SWMR-read mode, so one still being written, or left by a writer that
    was killed, can be read; tables are cut to their shortest column. Needs h5py.
    """
    path = os.fspath(path)
    with _open(path) as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        fmt = attrs.get("beamwatch_format")
        if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
            raise SessionFormatError(f"{path}: not a beamwatch session file (beamwatch_format = {fmt!r})")
        try:
            version = int(fmt[len(FORMAT_PREFIX):])
        except ValueError:
            raise SessionFormatError(f"{path}: unknown session format {fmt!r}") from None
        if version not in KNOWN_VERSIONS:
            warnings.warn(f"{path}: session format {fmt} is newer than this client knows; reading what it can")

        out: Dict[str, Any] = {
            "path": path,
            "format": fmt,
            "series": attrs.get("series"),
            "complete": attrs.get("complete") == 1,
            "stopped_early": attrs.get("stopped_early"),
            "attrs": attrs,
            "summary": _json_or_none(attrs.get("summary")),
            "provenance": _json_or_none(attrs.get("provenance")),
        }

        # Frames: /frames and /frame_index (in format 2 soft links into the EMD group /data/frames).
        if "frames" in f and "frame_index" in f:
            idx = f["frame_index"][()]
            n = min(len(idx), f["frames"].shape[0])
            out["frame_index"] = idx[:n]
            out["frames"] = f["frames"][:n] if frames else None
        else:
            out["frame_index"] = np.zeros(0, dtype=np.uint64)
            out["frames"] = None

        received = _table(f.get("received"))
        out["received"] = received
        out["received_index"] = received.get("index", np.zeros(0, dtype=np.uint64))
        out["dose_per_frame_e_per_a2"] = received.get("dose_e_per_a2", np.zeros(0))
        out["cumulative_dose_e_per_a2"] = received.get("cumulative_e_per_a2", np.zeros(0))

        analysis = _table(f.get("analysis"))
        out["analysis"] = analysis
        out["analysis_index"] = analysis.get("index", np.zeros(0, dtype=np.uint64))
        for k in ("dissimilarity", "similarity", "status"):
            out[k] = analysis.get(k)

        out["alarms"] = [_parse_alarm(t) for t in _alarm_texts(f["alarms"])] if "alarms" in f else []
    return out
