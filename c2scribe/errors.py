"""One base for every c2scribe error.

Malformed traffic is expected and becomes a record (CaptureError, a warning, a transaction
flag); these exceptions are for what the caller must act on.
"""


class C2ScribeError(Exception):
    """Base of every c2scribe error."""


class ConfigError(C2ScribeError):
    """The caller asked for something impossible (bad option, second engine in a process)."""


class CaptureOpenError(C2ScribeError):
    """A capture file could not be opened or decompressed."""

    def __init__(self, path: str, message: str, offset: int = 0):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.offset = offset
