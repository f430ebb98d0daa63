"""Open capture files whatever their compression, and read them in chunks.

Compression is recognised by magic bytes, not by the file name: rotated archives are often
renamed. Decompression is streamed with incremental decompressors, so memory stays flat
whatever the file size, and a damaged or cut compressed file still yields every byte that
decompresses before the damage.
"""
from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Iterator

from ..errors import CaptureOpenError

CHUNK = 1 << 20

_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
]


def compression_of(head: bytes) -> str:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


def _zstd():
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return zstandard.ZstdDecompressor().decompressobj()


def _inflate(f, kind: str, first: bytes, size: int) -> Iterator[bytes]:
    """Decompressed output in chunks of at most `size` (zstd: bounded by small input steps).

    Raises ValueError("cut") when the input ends inside a compressed member.
    """
    make = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "bzip2": bz2.BZ2Decompressor,
            "xz": lzma.LZMADecompressor, "zstd": _zstd}[kind]
    d = make()
    if d is None:
        raise ValueError("zstd-compressed, but the 'zstandard' package is not installed")
    step = 4096 if kind == "zstd" else 1 << 16
    buf, started = first, False
    while True:
        if d.eof:                                   # next member, if any
            buf = d.unused_data + buf
            if not buf:
                buf = f.read(step)
                if not buf:
                    return
            d, started = make(), False
        if kind == "gzip":
            if not buf:
                buf = f.read(step)
                if not buf:
                    break
            out = d.decompress(buf, size)
            buf = d.unconsumed_tail
        elif kind == "zstd":
            if not buf:
                buf = f.read(step)
                if not buf:
                    break
            out = d.decompress(buf[:step])
            buf = buf[step:]
        elif d.needs_input:
            if not buf:
                buf = f.read(step)
                if not buf:
                    break
            out = d.decompress(buf, size)
            buf = b""
        else:
            out = d.decompress(b"", size)
        started = True
        if out:
            yield out
    if started and not d.eof:
        raise ValueError("cut")


def _open(path: str):
    """A local file, or an object (gs://, s3://, hdfs://, ...) through Beam's FileSystems
    when the pipeline extras are installed; never decompressed by the filesystem layer
    (compression is recognised by content here)."""
    if "://" not in path:
        try:
            return open(path, "rb")
        except OSError as e:
            raise CaptureOpenError(path, f"cannot open: {e.strerror or e}") from None
    try:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        raise CaptureOpenError(path, "cannot open: reading URLs needs Apache Beam's "
                               "filesystems (pip install 'c2scribe[pipeline]' and the "
                               "extra for the store, e.g. apache-beam[gcp])") from None
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001 - BeamIOError, missing filesystem, auth, ...
        raise CaptureOpenError(path, f"cannot open: {e}") from None


def read_chunks(path: str, size: int = CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of a capture file, chunk by chunk (chunks of at most `size`).

    A damaged or cut compressed stream raises CaptureOpenError, with the decompressed offset
    reached, after every byte before the damage was yielded.
    """
    f = _open(path)
    with f:
        head = f.read(6)
        kind = compression_of(head)
        if kind == "none":
            chunk = head + f.read(size - len(head))
            while chunk:
                yield chunk
                chunk = f.read(size)
            return
        done = 0
        try:
            for out in _inflate(f, kind, head, size):
                done += len(out)
                yield out
        except ValueError as e:
            if str(e) == "cut":
                msg = f"{kind} stream cut short after {done} decompressed bytes (file truncated?)"
            else:
                msg = f"{kind} stream damaged after {done} decompressed bytes: {e}"
            raise CaptureOpenError(path, msg, offset=done) from None
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise CaptureOpenError(path, f"{kind} stream damaged after {done} decompressed "
                                   f"bytes: {e}", offset=done) from None
        except Exception as e:  # zstandard.ZstdError
            if type(e).__module__.startswith("zstandard"):
                raise CaptureOpenError(path, f"{kind} stream damaged after {done} decompressed "
                                       f"bytes: {e}", offset=done) from None
            raise
