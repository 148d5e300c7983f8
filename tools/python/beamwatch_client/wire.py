"""beamwatch's own wire format (docs/wire-format.md) and a PUSH socket that speaks it.

Three messages, each one ZeroMQ multipart message whose first part is a UTF-8 JSON object:

- series start, 1 part: ``{"htype": "beamwatch/series-start/1", "series": ID, ...}``
- frame, 2 parts: ``{"htype": "beamwatch/frame/1", "series": ID, "frame": N, "shape": [rows, cols],
  "dtype": "u16", "byte_order": "<", ...}`` and the pixels, row-major, no padding
- series end, 1 part: ``{"htype": "beamwatch/series-end/1", "series": ID}``
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import zmq

from ._errors import BeamwatchError, BeamwatchTimeout

HTYPE_START = "beamwatch/series-start/1"
HTYPE_FRAME = "beamwatch/frame/1"
HTYPE_END = "beamwatch/series-end/1"

#: Elementary charge (C), the value beamwatch uses (src/dose.rs).
ELEMENTARY_CHARGE_C = 1.602176634e-19
#: Largest frame beamwatch accepts, rows × cols (src/limits.rs).
MAX_FRAME_PIXELS = 268_435_456
#: The dose inputs a series start or a frame header may carry (their units are in their names).
DOSE_KEYS = ("beam_current_pa", "dwell_time_us", "pixel_size_a")

#: numpy dtype → wire name, for the four pixel types beamwatch reads.
_WIRE_NAMES = {np.dtype("uint8"): "u8", np.dtype("uint16"): "u16", np.dtype("uint32"): "u32", np.dtype("float32"): "f32"}
_NAME_ALIASES = {"u8": "u8", "uint8": "u8", "u16": "u16", "uint16": "u16", "u32": "u32", "uint32": "u32",
                 "f32": "f32", "float32": "f32"}

SeriesId = Union[str, int]


def dose_per_frame_e_per_a2(beam_current_pa: float, dwell_time_us: float, pixel_size_a: float) -> float:
    """Dose per frame D = I · t / (e · Δx²) in e⁻/Å², as the daemon computes it.

    ``beam_current_pa`` is the probe current (pA), ``dwell_time_us`` the dwell time per scan pixel
    (µs) and ``pixel_size_a`` the scan pixel size (Å).
    """
    electrons_per_px = beam_current_pa * 1e-12 * dwell_time_us * 1e-6 / ELEMENTARY_CHARGE_C
    return electrons_per_px / (pixel_size_a * pixel_size_a)


def wire_dtype(dtype: Any) -> str:
    """The wire name (``u8``, ``u16``, ``u32``, ``f32``) a frame of numpy ``dtype`` is sent as.

    The rule, applied by :func:`to_wire_array` and :meth:`Sender.send_frame`:

    - ``uint8``, ``uint16``, ``uint32``, ``float32`` are sent as they are (big-endian arrays are
      byte-swapped to little-endian);
    - ``bool`` becomes ``u8`` (0 and 1);
    - every other real type — ``int8`` … ``int64``, ``uint64``, ``float16``, ``float64`` — becomes
      ``f32``: beamwatch analyses every frame in 32-bit float, so nothing it would use is lost
      (integers beyond ±2²⁴ are rounded to the nearest float32);
    - complex, string and object arrays are refused (``TypeError``).

    A wire name or a numpy dtype both work as the argument (``"u16"``, ``np.uint16``).
    """
    if isinstance(dtype, str) and dtype in _NAME_ALIASES:
        return _NAME_ALIASES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"not a pixel type: {dtype!r} ({e})") from None
    native = dt.newbyteorder("=")
    if native in _WIRE_NAMES:
        return _WIRE_NAMES[native]
    if dt.kind == "b":
        return "u8"
    if dt.kind in "iuf":
        return "f32"
    raise TypeError(
        f"beamwatch cannot take {dt} pixels: send a real-valued array (u8, u16, u32, f32; other integer "
        "and float types are converted to f32)"
    )


def to_wire_array(array: Any) -> Tuple[np.ndarray, str, bool]:
    """A 2-D array as beamwatch's wire wants it: ``(pixels, wire name, copied)``.

    ``pixels`` is C-contiguous and little-endian, of the type :func:`wire_dtype` gives; ``copied``
    says whether it is a new array (``False``: it shares memory with ``array``). Raises
    ``ValueError`` for an array that is not 2-D, is empty, is larger than beamwatch accepts, or is a
    float array with NaN or infinity (the daemon rejects those frames), and ``TypeError`` for a
    pixel type beamwatch cannot take.
    """
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"a frame must be a 2-D array (rows, cols), got shape {a.shape}")
    rows, cols = a.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"a frame must not be empty, got shape {a.shape}")
    if rows * cols > MAX_FRAME_PIXELS:
        raise ValueError(f"frame {rows}×{cols} exceeds beamwatch's limit of {MAX_FRAME_PIXELS} pixels")
    name = wire_dtype(a.dtype)
    target = {"u8": np.dtype("<u1"), "u16": np.dtype("<u2"), "u32": np.dtype("<u4"), "f32": np.dtype("<f4")}[name]
    if a.dtype.kind == "f" and a.dtype.itemsize > 4:
        big = np.abs(a[np.isfinite(a)]).max(initial=0.0) > np.finfo(np.float32).max
        if big:
            raise ValueError("frame has values beyond float32's range; scale it before sending")
    out = np.ascontiguousarray(a, dtype=target)
    if a.dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError("frame contains NaN or infinity; beamwatch rejects such frames (replace them first)")
    copied = not np.shares_memory(out, a) if out.size else True
    return out, name, copied


def _check_series(series: Any) -> SeriesId:
    if isinstance(series, bool) or not isinstance(series, (str, numbers.Integral)):
        raise TypeError(f"a series id is a string or a non-negative integer, got {series!r}")
    if isinstance(series, numbers.Integral):
        if series < 0:
            raise ValueError(f"a numeric series id must be non-negative, got {series}")
        return int(series)
    if not series:
        raise ValueError("a series id must not be empty")
    return series


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _dose(values: Dict[str, Any]) -> Optional[Dict[str, float]]:
    unknown = sorted(set(values) - set(DOSE_KEYS))
    if unknown:
        raise TypeError(f"unknown dose input(s) {', '.join(unknown)}: beamwatch takes {', '.join(DOSE_KEYS)}")
    dose = {k: _check_positive(k, v) for k, v in values.items() if v is not None}
    return dose or None


def _check_shape(shape: Sequence[int]) -> List[int]:
    try:
        rows, cols = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (rows, cols), got {shape!r}") from None
    if rows <= 0 or cols <= 0 or rows * cols > MAX_FRAME_PIXELS:
        raise ValueError(f"shape {rows}×{cols} is empty or exceeds {MAX_FRAME_PIXELS} pixels")
    return [rows, cols]


def encode_series_start(
    series: SeriesId,
    frames: Optional[int] = None,
    shape: Optional[Sequence[int]] = None,
    dtype: Any = None,
    frame_time_s: Optional[float] = None,
    beam_current_pa: Optional[float] = None,
    dwell_time_us: Optional[float] = None,
    pixel_size_a: Optional[float] = None,
) -> List[bytes]:
    """The one-part series-start message (see :meth:`Sender.start_series` for the arguments)."""
    h: Dict[str, Any] = {"htype": HTYPE_START, "series": _check_series(series)}
    if frames is not None:
        if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 0:
            raise ValueError(f"frames must be a non-negative integer, got {frames!r}")
        h["frames"] = int(frames)
    if shape is not None:
        h["shape"] = _check_shape(shape)
    if dtype is not None:
        h["dtype"] = wire_dtype(dtype)
    if frame_time_s is not None:
        h["frame_time_s"] = _check_positive("frame_time_s", frame_time_s)
    dose = _dose({"beam_current_pa": beam_current_pa, "dwell_time_us": dwell_time_us, "pixel_size_a": pixel_size_a})
    if dose:
        h["dose"] = dose
    return [json.dumps(h).encode()]


def encode_frame(
    pixels: np.ndarray,
    series: SeriesId,
    index: int,
    timestamp_ns: Optional[int] = None,
    **dose: Optional[float],
) -> List[Any]:
    """The two-part frame message: the JSON header and the pixel bytes of ``pixels``.

    ``pixels`` must already be what :func:`to_wire_array` returns; the second part is a
    ``memoryview`` of it (no copy).
    """
    name = _WIRE_NAMES.get(pixels.dtype.newbyteorder("="))
    if pixels.ndim != 2 or name is None or not pixels.flags.c_contiguous or pixels.dtype.byteorder == ">":
        raise ValueError("encode_frame takes what to_wire_array returns")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
        raise ValueError(f"the frame index must be a non-negative integer, got {index!r}")
    h: Dict[str, Any] = {
        "htype": HTYPE_FRAME,
        "series": _check_series(series),
        "frame": int(index),
        "shape": [int(pixels.shape[0]), int(pixels.shape[1])],
        "dtype": name,
        "byte_order": "<",
    }
    if timestamp_ns is not None:
        if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, numbers.Integral) or timestamp_ns < 0:
            raise ValueError(f"timestamp_ns must be a non-negative integer (nanoseconds), got {timestamp_ns!r}")
        h["timestamp_ns"] = int(timestamp_ns)
    d = _dose(dose)
    if d:
        h["dose"] = d
    return [json.dumps(h).encode(), memoryview(pixels).cast("B")]


def encode_series_end(series: SeriesId) -> List[bytes]:
    """The one-part series-end message."""
    return [json.dumps({"htype": HTYPE_END, "series": _check_series(series)}).encode()]


class Sender:
    """A ZeroMQ PUSH socket that sends frames to ``beamwatch run`` in beamwatch's own wire format.

    By default it binds ``endpoint`` and the daemon connects to it (``[ingest] endpoint`` the same
    address, ``mode = "connect"``, ``format = "beamwatch"`` or ``"auto"``). With ``bind=False`` it
    connects instead, to a daemon with ``mode = "bind"``. To let a daemon on another PC connect,
    bind ``"tcp://0.0.0.0:5555"``.

    A PUSH socket holds messages until a daemon is connected: a send waits up to
    ``send_timeout_s`` seconds for one (``None``: for ever) and then raises
    :class:`BeamwatchTimeout`. ``linger_s`` is how long :meth:`close` keeps trying to deliver what
    is still queued.

    Use it as a context manager, or call :meth:`close`::

        with Sender("tcp://127.0.0.1:5555") as s:
            s.start_series("llzo_03", beam_current_pa=20.0, dwell_time_us=2.0, pixel_size_a=0.49)
            for frame in frames:
                s.send_frame(frame)
            s.end_series()
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        bind: bool = True,
        *,
        send_timeout_s: Optional[float] = 30.0,
        linger_s: float = 10.0,
        context: Optional[zmq.Context] = None,
    ) -> None:
        self.endpoint = endpoint
        self.bind = bind
        self.send_timeout_s = send_timeout_s
        self.linger_s = linger_s
        self._ctx = context or zmq.Context.instance()
        self._socket: Optional[zmq.Socket] = self._ctx.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDTIMEO, -1 if send_timeout_s is None else max(0, int(send_timeout_s * 1000)))
        self._socket.setsockopt(zmq.LINGER, max(0, int(linger_s * 1000)))
        self._monitor = self._socket.get_monitor_socket()
        self._peers = 0
        try:
            if bind:
                self._socket.bind(endpoint)
            else:
                self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self._close_now()
            raise BeamwatchError(f"cannot {'bind' if bind else 'connect to'} {endpoint}: {e}") from e
        self._series: Optional[SeriesId] = None
        self._next: Dict[SeriesId, int] = {}
        self._shape: Dict[SeriesId, Tuple[int, int, str]] = {}
        self.frames_sent = 0

    # -- connection state -------------------------------------------------------------------

    def _poll_monitor(self, timeout_ms: int = 0) -> None:
        from zmq.utils.monitor import recv_monitor_message

        up = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", None) or (zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED)
        while self._monitor is not None and self._monitor.poll(timeout_ms):
            ev = recv_monitor_message(self._monitor)["event"]
            if ev & up:
                self._peers += 1
            elif ev & zmq.EVENT_DISCONNECTED:
                self._peers = max(0, self._peers - 1)
            timeout_ms = 0

    @property
    def receivers(self) -> int:
        """How many daemons (or other PULL sockets) are connected now, as far as ZeroMQ has said."""
        self._poll_monitor()
        return self._peers

    def wait_for_receiver(self, timeout_s: Optional[float] = None) -> bool:
        """Waits until a daemon is connected; ``True`` when one is, ``False`` after ``timeout_s``.

        Not needed before sending (a send waits for a receiver by itself), but a way to tell the
        user "waiting for beamwatch…" and to know frames will not sit in a queue.
        """
        import time

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._poll_monitor()
            if self._peers > 0:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._poll_monitor(100 if left is None else max(1, min(100, int(left * 1000))))

    # -- messages --------------------------------------------------------------------------

    def _send(self, parts: List[Any], what: str, copy: bool = True) -> None:
        if self._socket is None:
            raise BeamwatchError("this Sender is closed")
        try:
            self._socket.send_multipart(parts, copy=copy)
        except zmq.Again:
            where = "connect to" if self.bind else "bind"
            raise BeamwatchTimeout(
                f"no beamwatch daemon took the {what} within {self.send_timeout_s} s on {self.endpoint}: "
                f"is `beamwatch run` running, with [ingest] endpoint set to {where} this address?"
            ) from None

    def start_series(
        self,
        series: SeriesId,
        frames: Optional[int] = None,
        shape: Optional[Sequence[int]] = None,
        dtype: Any = None,
        frame_time_s: Optional[float] = None,
        beam_current_pa: Optional[float] = None,
        dwell_time_us: Optional[float] = None,
        pixel_size_a: Optional[float] = None,
    ) -> None:
        """Starts a series: the next frame sent is its reference frame.

        ``series`` is the series id (a string, or a non-negative integer). Optional: ``frames``
        announced, ``shape`` ``(rows, cols)``, ``dtype`` (``"u16"`` or a numpy dtype; sent as
        :func:`wire_dtype` maps it), ``frame_time_s`` (seconds per frame) and the dose inputs for
        every frame of the series — ``beam_current_pa`` (probe current, pA), ``dwell_time_us``
        (dwell time per scan pixel, µs), ``pixel_size_a`` (scan pixel size, Å). A frame's own dose
        inputs override these; what neither gives comes from the daemon's ``[dose]`` table.
        """
        parts = encode_series_start(series, frames, shape, dtype, frame_time_s, beam_current_pa, dwell_time_us,
                                    pixel_size_a)
        sid = _check_series(series)
        self._send(parts, "series start")
        self._series = sid
        self._next[sid] = 0
        self._shape.pop(sid, None)
        if shape is not None:
            r, c = _check_shape(shape)
            self._shape[sid] = (r, c, "announced")

    def send_frame(
        self,
        array: Any,
        series: Optional[SeriesId] = None,
        index: Optional[int] = None,
        timestamp_ns: Optional[int] = None,
        **dose: Optional[float],
    ) -> int:
        """Sends one frame (a 2-D numpy array, rows × cols) and returns its index.

        ``series`` defaults to the series last started; ``index`` to one more than the last frame
        sent in it (0 for the first, the reference). ``timestamp_ns`` is the acquisition time in
        nanoseconds, any epoch (e.g. ``time.time_ns()``); omitted when ``None``. ``dose`` takes
        ``beam_current_pa``, ``dwell_time_us`` and ``pixel_size_a`` for this frame only.

        Pixels go as :func:`wire_dtype` says: u8, u16, u32 and f32 as they are, bool as u8, every
        other real type as f32; always C-contiguous, little-endian. Integer pixels at their type's
        maximum (255, 65535, 4294967295) are taken by beamwatch as detector gaps. Raises
        ``ValueError`` for a frame that is not 2-D, holds NaN or infinity, or differs in shape from
        the series' first frame (the daemon would reject it), and :class:`BeamwatchTimeout` when
        no daemon takes it in time.
        """
        if series is None:
            if self._series is None:
                raise ValueError("no series started: call start_series() first, or pass series=")
            series = self._series
        sid = _check_series(series)
        pixels, name, copied = to_wire_array(array)
        rows, cols = pixels.shape
        known = self._shape.get(sid)
        if known is not None and known[:2] != (rows, cols):
            raise ValueError(
                f"frame of {rows}×{cols} in series {sid!r}, whose {known[2]} shape is {known[0]}×{known[1]}: "
                "beamwatch rejects a shape that changes within a series (start a new series)"
            )
        if known is None or known[2] == "announced":
            self._shape[sid] = (rows, cols, "first frame's")
        if index is None:
            index = self._next.get(sid, 0)
        parts = encode_frame(pixels, sid, index, timestamp_ns, **dose)
        # The caller's buffer may be reused (an acquisition loop): copy it unless it is ours.
        self._send(parts, f"frame {index}", copy=not copied or pixels.nbytes < 65536)
        self._next[sid] = int(index) + 1
        self.frames_sent += 1
        return int(index)

    def end_series(self, series: Optional[SeriesId] = None) -> None:
        """Ends a series (default: the one last started); the daemon writes and publishes its summary."""
        if series is None:
            if self._series is None:
                raise ValueError("no series started: pass series=")
            series = self._series
        sid = _check_series(series)
        self._send(encode_series_end(sid), "series end")
        self._next.pop(sid, None)
        self._shape.pop(sid, None)
        if self._series == sid:
            self._series = None

    # -- lifetime ----------------------------------------------------------------------------

    def _close_now(self) -> None:
        if self._socket is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def close(self, linger_s: Optional[float] = None) -> None:
        """Closes the socket, first trying for ``linger_s`` (default: the constructor's) to deliver
        what is still queued. Safe to call twice."""
        if self._socket is not None and linger_s is not None:
            self._socket.setsockopt(zmq.LINGER, max(0, int(linger_s * 1000)))
        self._close_now()

    @property
    def closed(self) -> bool:
        return self._socket is None

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._close_now()
        except Exception:
            pass

    def __repr__(self) -> str:
        how = "bound to" if self.bind else "connected to"
        return f"<beamwatch_client.Sender {how} {self.endpoint}{' (closed)' if self.closed else ''}>"
