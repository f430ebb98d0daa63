"""Open capture files whatever their compression, and read them in chunks.

Compression is recognised by magic bytes, not by the file name: rotated archives are often
renamed. Decompression is streamed, so memory stays flat whatever the file size.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import BinaryIO, Iterator

from ..errors import CaptureOpenError

CHUNK = 1 << 20

_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
]


def _zstd_reader(raw: BinaryIO) -> BinaryIO:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise CaptureOpenError(getattr(raw, "name", "?"), "zstd-compressed, but the "
                               "'zstandard' package is not installed") from None
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


def open_capture(path: str) -> tuple[BinaryIO, str]:
    """Open a capture for reading; returns (file, compression name or 'none')."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise CaptureOpenError(path, f"cannot open: {e.strerror or e}") from None
    head = raw.read(6)
    raw.seek(0)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if kind == "gzip":
                return gzip.GzipFile(fileobj=raw, mode="rb"), kind
            if kind == "zstd":
                return _zstd_reader(raw), kind
            if kind == "bzip2":
                return bz2.BZ2File(raw), kind
            return lzma.LZMAFile(raw), kind
    return raw, "none"


def read_chunks(path: str, size: int = CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of a capture file, chunk by chunk.

    A damaged compressed stream raises CaptureOpenError with the decompressed offset reached.
    """
    f, kind = open_capture(path)
    done = 0
    try:
        while True:
            try:
                chunk = f.read(size)
            except (OSError, EOFError, lzma.LZMAError, ValueError, io.UnsupportedOperation) as e:
                raise CaptureOpenError(path, f"{kind} stream damaged after {done} bytes: {e}",
                                       offset=done) from None
            except Exception as e:  # zstandard.ZstdError and friends
                raise CaptureOpenError(path, f"{kind} stream damaged after {done} bytes: {e}",
                                       offset=done) from None
            if not chunk:
                return
            done += len(chunk)
            yield chunk
    finally:
        f.close()
