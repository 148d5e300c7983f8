"""What the daemon publishes: a SUB socket on its ``[sinks] pub_endpoint``.

Every message has two parts, ``[topic, JSON]`` (docs/wire-format.md, "Output sockets"):

- ``beamwatch.alarm``: an alarm fired (rule, level, series, frame, time, cumulative dose, value,
  threshold, worst patches, forecast, message)
- ``beamwatch.frame``: every analysed frame's result (dose, summary statistics, drift, analysis
  time, the per-patch dissimilarity grid)
- ``beamwatch.summary``: a series ended (the series summary)
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Union

import zmq

from ._errors import BeamwatchError, BeamwatchTimeout, ProtocolError

ALARM_TOPIC = "beamwatch.alarm"
FRAME_TOPIC = "beamwatch.frame"
SUMMARY_TOPIC = "beamwatch.summary"
#: Every topic the daemon publishes on its results endpoint.
ALL_TOPICS = (ALARM_TOPIC, FRAME_TOPIC, SUMMARY_TOPIC)


def parse_message(parts: Iterable[bytes]) -> Tuple[str, Dict[str, Any]]:
    """``[topic, JSON]`` → ``(topic, dict)``; :class:`ProtocolError` for anything else."""
    parts = list(parts)
    if len(parts) != 2:
        raise ProtocolError(f"expected a two-part [topic, JSON] message, got {len(parts)} part(s)")
    try:
        topic = bytes(parts[0]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"topic is not UTF-8: {e}") from None
    try:
        body = json.loads(bytes(parts[1]))
    except ValueError as e:
        raise ProtocolError(f"{topic}: body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{topic}: body is JSON but not an object ({type(body).__name__})")
    return topic, body


class Subscriber:
    """A ZeroMQ SUB socket connected to the daemon's PUB endpoint (``[sinks] pub_endpoint``).

    ``topics`` are topic prefixes to receive: a string, a sequence of strings, or ``None`` / ``""``
    for everything (alarms, every frame's result and the series summaries; the frame results are
    one message per analysed frame). The daemon binds the PUB socket on this machine only by
    default (``tcp://127.0.0.1:5557``).

    Like every ZeroMQ subscriber it sees only what is published after it has connected: create
    it before the acquisition starts. ::

        with Subscriber() as sub:
            for alarm in sub.alarms():
                print(alarm["level"], alarm["rule"], alarm["message"])
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5557",
        topics: Union[str, Iterable[str], None] = (ALARM_TOPIC,),
        *,
        context: Optional[zmq.Context] = None,
    ) -> None:
        self.endpoint = endpoint
        if topics is None or topics == "":
            self.topics: Tuple[str, ...] = ("",)
        elif isinstance(topics, str):
            self.topics = (topics,)
        else:
            self.topics = tuple(topics)
            if not all(isinstance(t, str) for t in self.topics):
                raise TypeError(f"topics must be strings, got {topics!r}")
        self._ctx = context or zmq.Context.instance()
        self._socket: Optional[zmq.Socket] = self._ctx.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        for t in self.topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise BeamwatchError(f"cannot connect to {endpoint}: {e}") from e

    def _wants(self, topic: str) -> bool:
        return any(topic.startswith(t) for t in self.topics)

    def recv(self, timeout_s: Optional[float] = None) -> Tuple[str, Dict[str, Any]]:
        """The next message as ``(topic, dict)``.

        Waits up to ``timeout_s`` seconds (``None``: for ever) and raises :class:`BeamwatchTimeout`
        (a ``TimeoutError``) when nothing came; :class:`ProtocolError` for a message that is not
        ``[topic, JSON object]``.
        """
        if self._socket is None:
            raise BeamwatchError("this Subscriber is closed")
        if timeout_s is not None:
            if not self._socket.poll(max(0, int(timeout_s * 1000))):
                raise BeamwatchTimeout(
                    f"nothing published on {self.endpoint} (topics {', '.join(map(repr, self.topics))}) "
                    f"within {timeout_s} s"
                )
        return parse_message(self._socket.recv_multipart())

    def __iter__(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Every message, ``(topic, dict)``, for ever (stop with ``break`` or Ctrl-C)."""
        while True:
            yield self.recv()

    def alarms(
        self,
        timeout_s: Optional[float] = None,
        levels: Optional[Iterable[str]] = None,
        rules: Optional[Iterable[str]] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Yields each alarm as a dict (keys: ``type``, ``rule``, ``level``, ``when``, ``series``,
        ``frame``, ``time``, ``cumulative_dose_e_per_a2``, ``dose_per_frame_e_per_a2``, ``value``,
        ``threshold``, ``worst_patches``, ``forecast``, ``message``).

        ``levels`` (``"warning"``, ``"critical"``) and ``rules`` (rule names, e.g.
        ``"damage-onset"``) keep only those. Without ``timeout_s`` it runs for ever; with it, it
        ends once no (wanted) alarm has come for ``timeout_s`` seconds. Messages on other topics
        are passed over.
        """
        if not self._wants(ALARM_TOPIC):
            raise ValueError(f"this Subscriber is not subscribed to {ALARM_TOPIC!r} (topics: {self.topics})")
        levels = None if levels is None else {levels} if isinstance(levels, str) else set(levels)
        rules = None if rules is None else {rules} if isinstance(rules, str) else set(rules)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                topic, body = self.recv(left)
            except BeamwatchTimeout:
                return
            if topic != ALARM_TOPIC:
                continue
            if levels is not None and body.get("level") not in levels:
                continue
            if rules is not None and body.get("rule") not in rules:
                continue
            yield body
            if timeout_s is not None:
                deadline = time.monotonic() + timeout_s

    def close(self) -> None:
        """Closes the socket. Safe to call twice."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    @property
    def closed(self) -> bool:
        return self._socket is None

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<beamwatch_client.Subscriber {self.endpoint} topics={self.topics}{' (closed)' if self.closed else ''}>"
