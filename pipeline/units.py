"""Work-unit planning: capture files -> chains (one per sensor), plain Python, no Beam graph.

A unit is one sensor's rotation: the files that belong together, ordered by the time of their
first packet, read by one engine as ONE continuous stream (connections spanning files come out
whole). Files are grouped by their parent directory, or by the named group ``sensor`` of a
regular expression searched in the path. Files whose first packet cannot be read (not a
capture, empty, unreadable) go last in their chain, by path: the engine reports them.

Unit ids are deterministic (sensor name + hash of the grouping key), so a re-run writes the
same output names and replaces the previous outputs.

Large chains still parallelise: with a window length, each chain is cut into time windows on
a grid aligned to the epoch (so window names stay the same when files are added), and each
window becomes its own unit. A window reports the connections whose first packet falls in
it; it reads from `preroll` seconds before its start (to recognise connections that began
earlier) until its own connections have ended, or `lookahead` seconds past its end. Each
window gets only the files whose time span overlaps what it reads. The last window is
open-ended, because the end of the last file is not known without reading it. The engine
does the rest (see EngineOptions.window_start_us and docs/pipeline.md).
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import struct
from dataclasses import dataclass, field

from c2scribe.capture.files import read_chunks
from c2scribe.errors import CaptureOpenError

_HEAD_LIMIT = 1 << 20          # bytes of decompressed head searched for the first packet


@dataclass(frozen=True)
class Unit:
    """One chain of capture files, read in order by one engine."""
    unit_id: str
    sensor: str
    files: tuple[str, ...]
    first_ts_us: tuple = field(default=())     # per file: first-packet time or None
    sizes: tuple = field(default=())           # per file: size in bytes (as stored) or None
    window: "Window | None" = None             # a time window of the chain, or the whole chain
    owned: tuple = field(default=())           # windowed: per file, whether this window owns
                                               # its status record (the window of its start)

    def engine_window(self) -> dict:
        """EngineOptions fields for this unit's window (empty: the whole chain)."""
        w = self.window
        if w is None:
            return {}
        return {"window_start_us": w.start_us,
                "window_end_us": w.end_us if w.end_us is not None else OPEN_END_US,
                "window_last_edge_us": w.last_edge_us, "preroll": w.preroll,
                "lookahead": w.lookahead}


#: the end of an open-ended window (the chain's last): far beyond any capture
OPEN_END_US = 1 << 62


@dataclass(frozen=True)
class Window:
    """[start_us, end_us) of a chain's time grid; end_us None: open-ended (the last one)."""
    start_us: int
    end_us: int | None
    last_edge_us: int          # start of the chain's last window: no edge beyond it
    preroll: float
    lookahead: float


# ------------------------------------------------------------------------------- first packet

def _pcap_first_ts(buf: bytes) -> int | None | bool:
    """First-packet time (µs) of a classic pcap head; False: need more bytes."""
    if len(buf) < 24 + 16:
        return False
    magic = buf[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        bo, nano = "<", False
    elif magic == b"\xa1\xb2\xc3\xd4":
        bo, nano = ">", False
    elif magic == b"\x4d\x3c\xb2\xa1":
        bo, nano = "<", True
    elif magic == b"\xa1\xb2\x3c\x4d":
        bo, nano = ">", True
    else:
        return None
    sec, frac = struct.unpack(bo + "II", buf[24:32])
    return sec * 1_000_000 + (frac // 1000 if nano else frac)


def _tsresol_us(opts: bytes, bo: str) -> tuple[int, int]:
    """(numerator, denominator) turning pcapng timestamp units into µs, from IDB options."""
    off = 0
    while off + 4 <= len(opts):
        code, length = struct.unpack(bo + "HH", opts[off:off + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = opts[off + 4]
            if v & 0x80:
                # units of 2^-n s
                return 1_000_000, 1 << (v & 0x7F)
            return 1_000_000, 10 ** v
        off += 4 + length + (-length % 4)
    return 1, 1                               # default: microseconds


def _pcapng_first_ts(buf: bytes) -> int | None | bool:
    """First-packet time (µs) of a pcapng head; False: need more bytes; None: no packet."""
    if len(buf) < 12:
        return False
    bom = buf[8:12]
    if bom == b"\x4d\x3c\x2b\x1a":
        bo = "<"
    elif bom == b"\x1a\x2b\x3c\x4d":
        bo = ">"
    else:
        return None
    resol: list[tuple[int, int]] = []
    off = 0
    while True:
        if off + 12 > len(buf):
            return False
        btype, blen = struct.unpack(bo + "II", buf[off:off + 8])
        if blen < 12 or blen % 4:
            return None
        if btype == 0x0A0D0D0A:               # section header: interfaces start over
            if off + 12 <= len(buf):
                sbo = buf[off + 8:off + 12]
                bo = "<" if sbo == b"\x4d\x3c\x2b\x1a" else ">" if sbo == b"\x1a\x2b\x3c\x4d" else None
                if bo is None:
                    return None
                blen = struct.unpack(bo + "I", buf[off + 4:off + 8])[0]
            resol = []
        if off + blen > len(buf):
            return False
        body = buf[off + 8:off + blen - 4]
        if btype == 1:                         # interface description
            resol.append(_tsresol_us(body[8:], bo) if len(body) >= 8 else (1, 1))
        elif btype in (6, 2):                  # enhanced / obsolete packet block
            if btype == 6:
                ifid, hi, lo = struct.unpack(bo + "III", body[:12])
            else:
                ifid, _drops, hi, lo = struct.unpack(bo + "HHII", body[:12])
            num, den = resol[ifid] if ifid < len(resol) else (1, 1)
            return ((hi << 32) | lo) * num // den
        off += blen


def first_packet_us(path: str) -> int | None:
    """Time of the first packet of a capture file (pcap/pcapng, any compression c2scribe
    reads), in µs since the epoch; None when there is none or the file cannot be read."""
    buf = b""
    try:
        for chunk in read_chunks(path, 1 << 16):
            buf += chunk
            if buf[:4] == b"\x0a\x0d\x0d\x0a":
                r = _pcapng_first_ts(buf)
            else:
                r = _pcap_first_ts(buf)
            if r is not False:
                return r
            if len(buf) >= _HEAD_LIMIT:
                return None
    except (CaptureOpenError, struct.error, IndexError):
        return None
    return None


# ------------------------------------------------------------------------------- matching

def _is_local(pattern: str) -> bool:
    return "://" not in pattern


def match_files(patterns: list[str]) -> list[tuple[str, int | None]]:
    """(path, size) of every file the patterns match, sorted, without duplicates.

    Local patterns use glob with recursive ``**``; other schemes (gs://, s3://, hdfs://, ...)
    go through Beam's FileSystems.match. A pattern naming an existing file matches that file.
    """
    found: dict[str, int | None] = {}
    for pat in patterns:
        if _is_local(pat):
            for p in glob.glob(os.path.expanduser(pat), recursive=True):
                if os.path.isfile(p):
                    ap = os.path.abspath(p)
                    found[ap] = os.path.getsize(ap)
        else:
            from apache_beam.io.filesystems import FileSystems
            for res in FileSystems.match([pat]):
                for md in res.metadata_list:
                    found[md.path] = md.size_in_bytes
    return sorted(found.items())


# ------------------------------------------------------------------------------- planning

def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sensor"
    return s[:60]


def sensor_of(path: str, sensor_pattern: str | None) -> tuple[str, str]:
    """(sensor name, grouping key) of a path. Default: the parent directory (key: its path).

    With a pattern, its named group ``sensor`` (searched in the path) is both; a path the
    pattern does not match falls back to the parent directory.
    """
    if sensor_pattern:
        m = re.search(sensor_pattern, path)
        if m and m.group("sensor") is not None:
            return m.group("sensor"), "re:" + m.group("sensor")
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    return parent.rsplit("/", 1)[-1] or "root", "dir:" + parent


def plan_units(files: list[tuple[str, int | None]], sensor_pattern: str | None = None,
               first_ts=first_packet_us) -> list[Unit]:
    """Group files into chains by sensor, order each by first-packet time; sorted by id."""
    if sensor_pattern:
        rx = re.compile(sensor_pattern)
        if "sensor" not in rx.groupindex:
            raise ValueError("--sensor-pattern needs a named group (?P<sensor>...)")
    groups: dict[str, tuple[str, list]] = {}
    for path, size in files:
        name, key = sensor_of(path, sensor_pattern)
        groups.setdefault(key, (name, []))[1].append((path, size))
    units = []
    for key, (name, members) in groups.items():
        timed = [(first_ts(p), p, s) for p, s in members]
        # files with a first packet by time (then path); the rest last, by path
        timed.sort(key=lambda t: (t[0] is None, t[0] or 0, t[1]))
        uid = f"{_safe(name)}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        units.append(Unit(uid, name, tuple(p for _t, p, _s in timed),
                          tuple(t for t, _p, _s in timed), tuple(s for _t, _p, s in timed)))
    units.sort(key=lambda u: u.unit_id)
    return units


def split_windows(unit: Unit, window: float, preroll: float = 600.0,
                  lookahead: float = 3600.0) -> list[Unit]:
    """Cut one chain into time windows of `window` seconds (see the module docstring).

    File i spans [its first packet, the next file's first packet); the last file has no known
    end. Files with no readable first packet go to the first window only (they are reported
    there). A chain with no readable file stays one unit.
    """
    if window <= 0:
        raise ValueError("--window must be positive")
    if preroll < 0 or lookahead < 0:
        raise ValueError("--preroll and --lookahead must not be negative")
    known = [(t, p, s) for t, p, s in zip(unit.first_ts_us, unit.files, unit.sizes or
                                          (None,) * len(unit.files)) if t is not None]
    unknown = [(t, p, s) for t, p, s in zip(unit.first_ts_us, unit.files, unit.sizes or
                                            (None,) * len(unit.files)) if t is None]
    if not known:
        return [unit]
    w_us = max(1, int(window * 1_000_000))
    pre_us, look_us = int(preroll * 1_000_000), int(lookahead * 1_000_000)
    starts = [t for t, _p, _s in known]
    spans = sorted(b - a for a, b in zip(starts, starts[1:]))
    # the last file probably lasts as long as the others (a rotation): windows up to there,
    # then one open-ended window catches whatever comes after
    last_span = spans[len(spans) // 2] if spans else 0
    grid0 = starts[0] // w_us * w_us
    n = max(1, -(-(starts[-1] + last_span - grid0) // w_us))
    last_edge = grid0 + (n - 1) * w_us
    out = []
    for k in range(n):
        ws = grid0 + k * w_us
        we = None if k == n - 1 else ws + w_us
        members, owned = [], []
        for i, (t, p, s) in enumerate(known):
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            if we is not None and t >= we + look_us:
                break
            if nxt is not None and nxt <= ws - pre_us:
                continue
            members.append((t, p, s))
            owned.append(ws <= t and (we is None or t < we))
        if k == 0:
            members += unknown
            owned += [True] * len(unknown)
        out.append(Unit(f"{unit.unit_id}-w{ws // 1_000_000}", unit.sensor,
                        tuple(p for _t, p, _s in members), tuple(t for t, _p, _s in members),
                        tuple(s for _t, _p, s in members),
                        Window(ws, we, last_edge, preroll, lookahead), tuple(owned)))
    return out


def auto_window(unit: Unit, window_bytes: int) -> float | None:
    """A window length giving about window_bytes of capture per window, for a chain larger
    than that (None: keep the chain whole). Whole minutes, at least one."""
    sizes = [s for s in (unit.sizes or ()) if s]
    total = sum(sizes)
    times = [t for t in unit.first_ts_us if t is not None]
    if total <= window_bytes or len(times) < 2:
        return None
    spans = sorted(b - a for a, b in zip(times, times[1:]))
    duration_s = (times[-1] - times[0] + spans[len(spans) // 2]) / 1e6
    if duration_s <= 0:
        return None
    return max(60.0, -(-duration_s * window_bytes / total // 60) * 60)


def plan(patterns: list[str], sensor_pattern: str | None = None, window: float | str = 0,
         preroll: float = 600.0, lookahead: float = 3600.0,
         window_bytes: int = 2 << 30) -> list[Unit]:
    """Match, group into chains, and cut chains into windows (window: seconds, 0 or "auto")."""
    units = plan_units(match_files(patterns), sensor_pattern)
    out = []
    for u in units:
        w = auto_window(u, window_bytes) if window == "auto" else window
        out += split_windows(u, w, preroll, lookahead) if w else [u]
    return out
