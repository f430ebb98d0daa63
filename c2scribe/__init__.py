"""c2scribe: full-packet-capture archives in, transcripts of attacker C2 traffic out.

The core is sans-IO: :class:`c2scribe.engine.Engine` takes capture bytes and returns records
(:mod:`c2scribe.schema`). Reading files, rendering and pipelines are thin drivers around it.
"""
__version__ = "0.1.0"

from .errors import C2ScribeError, CaptureOpenError, ConfigError  # noqa: E402
from .schema import CaptureError, Connection, EngineWarning, HttpTransaction  # noqa: E402

__all__ = [
    "C2ScribeError", "CaptureOpenError", "ConfigError",
    "CaptureError", "Connection", "EngineWarning", "HttpTransaction", "__version__",
]
