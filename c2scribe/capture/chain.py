"""Drive an engine over a chain of capture files, read as one continuous stream.

Files are fed in the order given (a sensor's rotation, oldest first): a connection that spans
file N and N+1 comes out once and whole. A file that cannot be read becomes a CaptureError
record and the chain goes on with the next file.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from ..errors import CaptureOpenError
from ..schema import CaptureError, Record
from .files import CHUNK, read_chunks


def _is_capture_error(rec) -> bool:
    """Whatever form the engine gives (record, document, or (dataset, bytes))."""
    if isinstance(rec, tuple):
        return rec[0] == CaptureError.dataset
    if isinstance(rec, dict):
        return rec.get("event.dataset") == CaptureError.dataset
    return isinstance(rec, CaptureError)


def run_chain(engine, paths: Iterable[str], chunk_size: int = CHUNK,
              progress=None) -> Iterator[Record]:
    """Feed every file of paths to engine, then finish it; yields records as they complete.

    progress, if given, is called with (path, bytes read so far in this file) after each chunk.
    """
    for path in paths:
        engine.open_file(path)
        failed = False
        done = 0
        packets_at_start = engine.counters()["packets"]
        try:
            for chunk in read_chunks(path, chunk_size):
                done += len(chunk)
                yield from engine.feed(chunk)
                if progress:
                    progress(path, done)
        except CaptureOpenError as e:
            failed = True
            yield engine.capture_error(path, e.offset, e.message,
                                       engine.counters()["packets"] - packets_at_start)
        for rec in engine.close_file():
            if not (failed and _is_capture_error(rec)):
                yield rec
    yield from engine.finish()
