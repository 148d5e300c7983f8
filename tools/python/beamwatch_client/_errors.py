"""Exceptions raised by the beamwatch client."""


class BeamwatchError(Exception):
    """Base class of every error the beamwatch client raises on purpose."""


class BeamwatchTimeout(BeamwatchError, TimeoutError):
    """Nothing arrived, or nobody took a message, within the time allowed."""


class ProtocolError(BeamwatchError, ValueError):
    """A message from the daemon is not what docs/wire-format.md describes."""


class SessionFormatError(BeamwatchError, ValueError):
    """A file is not a beamwatch session file, or one this client cannot read."""
