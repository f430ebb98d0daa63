"""Drive an engine over a chain of capture files, read as one continuous stream.

Files are fed in the order given (a sensor's rotation, oldest first): a connection that spans
file N and N+1 comes out once and whole. A file that cannot be read becomes a CaptureError
record and the chain goes on with the next file.

With a windowed engine (EngineOptions.window_start_us/window_end_us), reading stops as soon
as the engine says the window is done, and a file's damage is reported only by the window
whose time span holds the last packet read before it, so that every window reading the same
file does not report it again. A file with no readable packet is reported by every window
it is given to: the planner gives such files to one window only.
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
    opts = getattr(engine, "options", None)
    window = None
    if opts is not None and getattr(opts, "window_start_us", None) is not None:
        window = (opts.window_start_us, opts.window_end_us)

    def ours(rec) -> bool:
        """Windowed: is this capture error this window's to report?"""
        if window is None or not _is_capture_error(rec) or read_here() == 0:
            return True
        now = engine.now_us()
        return now is None or window[0] <= now < window[1]

    for path in paths:
        engine.open_file(path)
        failed = False
        done = 0
        packets_at_start = engine.counters()["packets"] + engine.counters().get(
            "window_packets_skipped", 0)
        stop = False

        def read_here() -> int:
            c = engine.counters()
            return c["packets"] + c.get("window_packets_skipped", 0) - packets_at_start

        try:
            for chunk in read_chunks(path, chunk_size):
                done += len(chunk)
                for rec in engine.feed(chunk):
                    if ours(rec):
                        yield rec
                if progress:
                    progress(path, done)
                if window is not None and engine.window_done():
                    stop = True
                    break
        except CaptureOpenError as e:
            failed = True
            err = engine.capture_error(path, e.offset, e.message, read_here())
            if ours(err):
                yield err
        for rec in engine.close_file():
            if not (failed and _is_capture_error(rec)) and ours(rec):
                yield rec
        if stop:
            break
    yield from engine.finish()
