"""Load the normalised oracles (ORACLES.jsonl) and compare one capture's c2scribe records with one.

The oracles were produced by other tools (Zeek, Arkime, Suricata; see the testdata's ORACLES.md).
Each ``compare_*`` function takes an oracle line and what c2scribe made of its capture and returns
an :class:`Outcome`: comparable or not, the differences (empty = agreement), and transaction
counts for the report. Nothing here knows which captures are expected to fail: that lives in
``expectations.py``.

Definitions used to put both sides on the same footing (each is a difference of *definition*,
not of behaviour; they are applied to every capture alike):

* Zeek ``uri`` is percent-decoded (``%XX`` -> byte; ``+`` untouched) and then shown as UTF-8 when
  valid, else Latin-1. Our ``uri`` is the request-target as sent; it is decoded the same way
  (:func:`zeek_uri`) before comparing.
* Zeek logs a CONNECT whose request line reads ``CONNECT host:port / HTTP/1.0`` with uri
  ``host:port /`` (ORACLES.md caveats); libhtp, like tshark, takes the first token: a Zeek
  CONNECT uri ending in `` /`` matches ours without it.
* Columns absent from a Zeek ``http.log.cut`` (listed in the line's notes) are not compared;
  a ``-`` in a complete log is compared as "none" (e.g. no request seen: our method is None).
* Zeek ``host`` is the Host header value as sent (port included); libhtp's ``hostname`` is the
  host from an absolute URI or the Host header, lowercased, port removed. A Zeek host matches if
  it equals our ``host_header``, or equals our ``hostname`` once lowercased and stripped of a port.
  A Zeek host of ``-`` (null) means "no Host header": ours must have no Host header either.
* Zeek ``version`` is the reply's HTTP version (``0.9`` when Zeek read the reply as HTTP/0.9):
  it is compared with our response protocol, else with our ``version``. Zeek ``info_code`` 100
  must be matched by our ``continue_100``.
* Zeek/Arkime/Suricata body lengths are of the decoded entity (de-chunked, decompressed), like
  our ``request_body_bytes``/``response_body_bytes``. Suricata's ``http.length`` is different: it
  is libhtp's ``response_message_len`` (de-chunked, still compressed) = our
  ``response_body_wire_bytes``.
* Arkime per-session sets: hosts are compared lowercased without port; paths are the raw path
  without query; statuses as sets. Arkime's ``request_count`` (sum of its method counters) is
  compared only when non-zero: Arkime does not count a request that upgrades the connection (101)
  nor one whose method it does not know. Arkime's ``md5`` is of the body as transferred after
  de-chunking but *before* Content-Encoding decoding, and only of messages that completed
  (http-content-gzip.pcap: Arkime md5 5ff7b2c6.. = md5 of the 190 gzip bytes on the wire). Ours are
  of decoded bodies, so: md5s of our complete bodies without Content-Encoding must be in Arkime's
  set, and Arkime may have at most as many extra md5s as we have content-encoded bodies.
* Suricata http events: ``host`` is libhtp's hostname (ours), ``uri`` the raw request-target,
  ``protocol`` the request's. ``tx_id`` is not compared: Suricata restarts it at 0 when it
  re-parses the inside of a CONNECT tunnel, ours is the position in the connection.
* Suricata "files" (fileinfo events, ``file_data``) are: each non-empty response body, each
  multipart/form-data part of a request that carries a filename, and any other non-empty request
  body (Suricata 7+ tracks a plain POST/PUT body as a file too). The
  file name is the Content-Disposition ``filename`` if any, else the percent-decoded URI path.
  An alert on a body buffer counts transactions (Suricata raises a signature once per
  transaction); a rule that also requires the parser event http.request_body_unexpected counts
  only requests with body bytes but neither Content-Length nor Transfer-Encoding (when libhtp
  raises it); a ``tcp-stream`` alert counts "present in some reassembled stream" (Suricata
  may raise it more than once per stream, so a count > 1 is compared as ">= 1").
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote_to_bytes

from c2scribe.capture import run_chain
from c2scribe.engine import Engine
from c2scribe.schema import CaptureError, Connection, EngineWarning, HttpTransaction

TESTDATA_ENV = "C2SCRIBE_TESTDATA"
REPORT_ENV = "C2SCRIBE_CONFORMANCE_REPORT"

#: The EICAR test string every http-evader capture delivers (the start of the file).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"
EVADER_PREFIX = "suricata-verify/http-evader/"

BODY_KEEP = 1 << 24        # bodies up to 16 MiB are kept whole, so md5/contains are exact
STREAM_KEEP = 1 << 22      # reassembled stream kept per direction for tcp-stream checks


# --------------------------------------------------------------------------- loading

def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def testdata_root() -> Path | None:
    """The shared test data folder, or None when it is not there."""
    env = os.environ.get(TESTDATA_ENV)
    p = Path(env) if env else repo_root().parent / "shared" / "testdata"
    return p if (p / "ORACLES.jsonl").is_file() else None


def testdata_hint() -> str:
    env = os.environ.get(TESTDATA_ENV)
    where = env if env else str(repo_root().parent / "shared" / "testdata")
    return f"no ORACLES.jsonl under {where} (set {TESTDATA_ENV} to the testdata folder)"


@functools.lru_cache(maxsize=2)
def load_oracles(root: Path) -> tuple[dict, ...]:
    with open(root / "ORACLES.jsonl", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


# --------------------------------------------------------------------------- running c2scribe

@dataclass
class Run:
    """What c2scribe made of one capture."""
    capture: str
    http: list[HttpTransaction]
    conns: list[Connection]
    warnings: dict[str, int]
    errors: list[CaptureError]

    def conn_of(self, tx: HttpTransaction) -> Connection | None:
        for c in self.conns:
            if c.conn_id == tx.conn_id:
                return c
        return None


ENGINES = ("nids", "native")


@functools.lru_cache(maxsize=8)
def run_capture(root: Path, capture: str, stream: bool = False, engine: str = "nids",
                host_policies: tuple[str, ...] = ()) -> Run:
    """Run c2scribe over one capture (the whole run_chain is consumed before returning)."""
    eng = Engine(body_keep=BODY_KEEP, stream_keep=STREAM_KEEP if stream else 0, engine=engine,
                 host_policies=host_policies, stream_keep_http=True)
    recs = list(run_chain(eng, [str(root / capture)]))
    http = [r for r in recs if isinstance(r, HttpTransaction)]
    conns = [r for r in recs if isinstance(r, Connection)]
    warnings: dict[str, int] = {}
    for r in recs:
        if isinstance(r, EngineWarning):
            warnings[r.code] = warnings.get(r.code, 0) + r.count
    errors = [r for r in recs if isinstance(r, CaptureError)]
    http.sort(key=lambda t: (t.conn_id, t.index))
    return Run(capture, http, conns, warnings, errors)


# --------------------------------------------------------------------------- outcome

@dataclass
class Outcome:
    capture: str
    kind: str
    comparable: bool = True
    diffs: list[str] = field(default_factory=list)
    ours: int | None = None          # our HTTP transactions (or files, see unit)
    theirs: int | None = None        # the oracle's
    note: str = ""                   # why not comparable / what was left out

    @property
    def ok(self) -> bool:
        return self.comparable and not self.diffs

    def one_line(self, limit: int = 300) -> str:
        if not self.comparable:
            return self.note
        s = "; ".join(self.diffs) if self.diffs else "agrees"
        return s if len(s) <= limit else s[: limit - 3] + "..."


# --------------------------------------------------------------------------- small helpers

def ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def tx_src(t: HttpTransaction | Connection) -> str:
    return ep(t.src_ip, t.src_port)


def tx_dst(t: HttpTransaction | Connection) -> str:
    return ep(t.dst_ip, t.dst_port)


def latin1_or_utf8(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def zeek_uri(uri: str | None) -> str | None:
    """Our raw request-target decoded the way Zeek logs it (%XX -> byte, '+' kept)."""
    if uri is None:
        return None
    enc = "latin-1" if _is_latin1(uri) else "utf-8"
    raw = uri.encode(enc, "surrogateescape")
    return latin1_or_utf8(unquote_to_bytes(raw))


def _is_latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


def strip_port(host: str) -> str:
    h = host.strip()
    if h.startswith("["):
        end = h.find("]")
        return h[: end + 1] if end > 0 else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h


def host_matches(oracle_host: str | None, t: HttpTransaction) -> bool:
    if oracle_host is None:
        return t.host_header is None
    if t.host_header is not None and oracle_host == t.host_header.strip():
        return True
    return t.hostname is not None and strip_port(oracle_host).lower() == t.hostname.lower()


def md5(b: bytes | None) -> str | None:
    return hashlib.md5(b).hexdigest() if b is not None else None


def header(headers: list | None, name: str) -> str | None:
    for k, v in headers or ():
        if k.lower() == name.lower():
            return v
    return None


def short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 4] + "...'"


def body_sha256(t: HttpTransaction, direction: str) -> str | None:
    """The body's sha256. A body with a hole has none in the records (a hash of bytes the
    capture does not hold means nothing); compared here as the oracles store such a body:
    Zeek extracts it with the hole as zeros, as c2scribe keeps it."""
    sha = t.request_body_sha256 if direction == "request" else t.response_body_sha256
    missing = t.request_missing_bytes if direction == "request" else t.response_missing_bytes
    body = t.request_body if direction == "request" else t.response_body
    if sha is None and missing and body is not None and body_complete(t, direction):
        return hashlib.sha256(body).hexdigest()
    return sha


def body_complete(t: HttpTransaction, direction: str) -> bool:
    """True when the kept body is the whole decoded body (body_keep was large enough)."""
    if direction == "request":
        return not t.request_body_truncated
    return not t.response_body_truncated


# --------------------------------------------------------------------------- zeek http.log

ZEEK_FIELDS = ("method", "host", "uri", "status", "request_body_len", "response_body_len",
               "response_body_md5")


#: Zeek http.log column -> key of an oracle `http` entry.
ZEEK_COLUMNS = {"method": "method", "host": "host", "uri": "uri", "status_code": "status",
                "request_body_len": "request_body_len", "response_body_len": "response_body_len",
                "trans_depth": "trans_depth"}


def zeek_absent(orc: dict) -> set[str]:
    """Oracle keys whose column is absent from a `.cut` http.log (null = unknown, not '-')."""
    m = re.search(r"absent columns -> null: ([^;]+)", orc.get("notes") or "")
    if not m:
        return set()
    return {ZEEK_COLUMNS[c.strip()] for c in m.group(1).split(",") if c.strip() in ZEEK_COLUMNS}


def zeek_field_diffs(o: dict, t: HttpTransaction, absent: set[str] = frozenset()) -> list[str]:
    o = {k: v for k, v in o.items() if k not in absent}
    out = []
    if "method" in o and o["method"] != t.method:
        out.append(f"method {short(t.method)} != {short(o.get('method'))}")
    if "host" in o and not host_matches(o.get("host"), t):
        out.append(f"host {short(t.host_header)}/{short(t.hostname)} != {short(o.get('host'))}")
    if "uri" in o and (o.get("uri") is not None or o.get("method") is not None):
        ours = zeek_uri(t.uri)
        theirs = o.get("uri")
        if (theirs is not None and t.method == "CONNECT" and theirs.endswith(" /")
                and ours == theirs[:-2]):
            theirs = ours          # Zeek's CONNECT uri form "host:port /" (ORACLES.md caveats)
        if theirs is not None and ours != theirs:
            out.append(f"uri {short(ours)} != {short(theirs)}")
        elif theirs is None and o.get("method") is not None and ours not in (None, ""):
            out.append(f"uri {short(ours)} != None")
    if "status" in o and (o.get("status") is not None or o.get("method") is not None):
        theirs = o.get("status")
        ours = t.status_code
        # Zeek logs status 0 / '-' when it saw no status line; ours is None then.
        if (theirs or None) != ours:
            out.append(f"status {ours} != {theirs}")
    if o.get("request_body_len") is not None and o["request_body_len"] != t.request_body_bytes:
        out.append(f"request_body_len {t.request_body_bytes} != {o['request_body_len']}")
    if o.get("response_body_len") is not None and o["response_body_len"] != t.response_body_bytes:
        out.append(f"response_body_len {t.response_body_bytes} != {o['response_body_len']}")
    if o.get("version") is not None:
        # Zeek's version is the reply's (0.9 when it read the reply as HTTP/0.9)
        rs = t.response_protocol or ""
        ours = rs[5:] if rs.upper().startswith("HTTP/") else t.version
        if ours != o["version"]:
            out.append(f"version {ours} != {o['version']}")
    if o.get("info_code") == 100 and not t.continue_100:
        out.append("no 100 Continue seen (Zeek info_code 100)")
    if o.get("response_body_md5") is not None:
        ours = md5(t.response_body) if body_complete(t, "response") else "<truncated>"
        if ours != o["response_body_md5"]:
            out.append(f"response_body_md5 {ours} != {o['response_body_md5']}")
    return out


def _group_ours(run: Run) -> dict[tuple[str, str], list[HttpTransaction]]:
    g: dict[tuple[str, str], list[HttpTransaction]] = {}
    for t in run.http:
        g.setdefault((tx_src(t), tx_dst(t)), []).append(t)
    for v in g.values():
        v.sort(key=lambda t: t.index)
    return g


def _align_unordered(oracle: list[dict], ours: list[HttpTransaction], diff_fn, label: str) -> list[str]:
    """Match oracle entries to our transactions when the oracle gives no order: best first."""
    diffs = []
    free = list(ours)
    for o in oracle:
        best, best_d = None, None
        for t in free:
            d = diff_fn(o, t)
            if best_d is None or len(d) < len(best_d):
                best, best_d = t, d
            if not d:
                break
        if best is None:
            diffs.append(f"{label}: missing {o.get('method')} {short(o.get('uri'))}")
            continue
        free.remove(best)
        if best_d:
            diffs.append(f"{label} {o.get('method')} {short(o.get('uri'), 40)}: " + ", ".join(best_d))
    for t in free:
        diffs.append(f"{label}: extra tx {t.method} {short(t.uri, 40)} ({t.state})")
    return diffs


def compare_zeek_http(orc: dict, run: Run) -> Outcome:
    oh = orc.get("http") or []
    out = Outcome(orc["capture"], orc["kind"], ours=len(run.http), theirs=len(oh))
    absent = zeek_absent(orc)

    def diff_fn(o, t):
        return zeek_field_diffs(o, t, absent)

    ours_by_conn = _group_ours(run)
    keyed = [o for o in oh if o.get("src") and o.get("dst")]
    loose = [o for o in oh if not (o.get("src") and o.get("dst"))]
    used: set[tuple[str, str]] = set()
    by_conn: dict[tuple[str, str], list[dict]] = {}
    for o in keyed:
        by_conn.setdefault((o["src"], o["dst"]), []).append(o)
    for (s, d), os_ in by_conn.items():
        key = (s, d) if (s, d) in ours_by_conn else (d, s)
        ours = ours_by_conn.get(key, [])
        used.add(key)
        label = f"{s}>{d}"
        if not ours:
            out.diffs.append(f"{label}: no transactions (oracle {len(os_)})")
            continue
        if all(o.get("trans_depth") for o in os_):
            by_index = {t.index: t for t in ours}
            for o in os_:
                t = by_index.pop(o["trans_depth"], None)
                if t is None:
                    out.diffs.append(f"{label}#{o['trans_depth']}: missing {o.get('method')} "
                                     f"{short(o.get('uri'), 40)}")
                    continue
                d = diff_fn(o, t)
                if d:
                    out.diffs.append(f"{label}#{o['trans_depth']}: " + ", ".join(d))
            for t in by_index.values():
                out.diffs.append(f"{label}#{t.index}: extra tx {t.method} {short(t.uri, 40)} ({t.state})")
        else:
            out.diffs += _align_unordered(os_, ours, diff_fn, label)
    if loose:
        rest = [t for k, v in ours_by_conn.items() if k not in used for t in v]
        out.diffs += _align_unordered(loose, rest, diff_fn, "capture")
    elif keyed:
        for k, v in ours_by_conn.items():
            if k not in used:
                for t in v:
                    out.diffs.append(f"{k[0]}>{k[1]}#{t.index}: extra tx {t.method} "
                                     f"{short(t.uri, 40)} ({t.state})")
    if orc.get("bodies"):
        out.diffs += body_diffs(orc["bodies"], run)
    return out


def body_diffs(bodies: list[dict], run: Run) -> list[str]:
    """Each Zeek-extracted body (sha256, size) must be one of our decoded bodies."""
    diffs = []
    for b in bodies:
        direction = b.get("direction") or "response"
        have = []
        for t in run.http:
            if direction in ("request", "any"):
                have.append((body_sha256(t, "request"), t.request_body_bytes))
            if direction in ("response", "any"):
                have.append((body_sha256(t, "response"), t.response_body_bytes))
        if (b["sha256"], b["size"]) in have:
            continue
        sizes = sorted({n for _, n in have if n})
        diffs.append(f"{direction} body sha256 {b['sha256'][:12]}.. size {b['size']} not among ours "
                     f"(our {direction} body sizes {sizes[:6]})")
    return diffs


def compare_zeek_files(orc: dict, run: Run) -> Outcome:
    out = Outcome(orc["capture"], orc["kind"], ours=len(run.http), theirs=None)
    out.diffs = body_diffs(orc["bodies"], run)
    return out


# --------------------------------------------------------------------------- arkime

def _encoded(headers: list | None) -> bool:
    ce = (header(headers, "content-encoding") or "").strip().lower()
    return ce not in ("", "identity")


def _arkime_md5s(ts: Iterable[HttpTransaction]) -> tuple[set[str], int]:
    """(md5s comparable with Arkime's, how many content-encoded bodies were left out)."""
    s, encoded = set(), set()
    for t in ts:
        for b, hs, done in ((t.request_body, t.request_headers,
                             not t.state.startswith("partial_request")),
                            (t.response_body, t.response_headers,
                             t.state in ("complete", "response_only"))):
            if not b:
                continue
            if _encoded(hs):
                encoded.add(md5(b))
            elif done:
                s.add(md5(b))
    return s, len(encoded)


def _arkime_md5_diff(ours: list[HttpTransaction], theirs: Iterable[str]) -> str | None:
    mine, n_encoded = _arkime_md5s(ours)
    theirs = set(theirs)
    only_ours, only_theirs = mine - theirs, theirs - mine
    if only_ours or len(only_theirs) > n_encoded:
        return (f"body md5 only ours {sorted(x[:8] for x in only_ours)}, only oracle "
                f"{sorted(x[:8] for x in only_theirs)} (content-encoded bodies of ours: {n_encoded})")
    return None


def _find_conn_txs(run: Run, src: str, dst: str) -> list[HttpTransaction] | None:
    g = _group_ours(run)
    if (src, dst) in g:
        return g[(src, dst)]
    if (dst, src) in g:
        return g[(dst, src)]
    return None


def arkime_session_diffs(s: dict, ours: list[HttpTransaction]) -> list[str]:
    h = s.get("http") or {}
    d = []
    reqs = [t for t in ours if t.method is not None]
    if h.get("request_count") and h["request_count"] != len(reqs):
        d.append(f"requests {len(reqs)} != {h['request_count']}")
    if "method" in h:
        mine = sorted({t.method for t in reqs})
        if mine != sorted(h["method"]):
            d.append(f"methods {mine} != {sorted(h['method'])}")
    if "host" in h:
        mine = sorted({strip_port(x).lower() for t in ours for x in (t.host_header, t.hostname)
                       if x is not None})
        theirs = sorted({strip_port(x).lower() for x in h["host"]})
        if mine != theirs:
            d.append(f"hosts {mine} != {theirs}")
    if "path" in h:
        mine = sorted({t.url_path for t in reqs if t.url_path is not None})
        if mine != sorted(h["path"]):
            d.append(f"paths {short(mine, 80)} != {short(sorted(h['path']), 80)}")
    if "statuscode" in h:
        mine = sorted({t.status_code for t in ours if t.status_code is not None})
        if mine != sorted(h["statuscode"]):
            d.append(f"status {mine} != {sorted(h['statuscode'])}")
    if "md5" in h or ours:
        m = _arkime_md5_diff(ours, h.get("md5") or ())
        if m:
            d.append(m)
    return d


def arkime_tx_diffs(o: dict, t: HttpTransaction, all_in_conn: list[HttpTransaction]) -> list[str]:
    d = []
    if o.get("method") is not None and o["method"] != t.method:
        d.append(f"method {t.method} != {o['method']}")
    if o.get("host") is not None and not (
            (t.host_header and strip_port(t.host_header).lower() == strip_port(o["host"]).lower())
            or (t.hostname and t.hostname.lower() == strip_port(o["host"]).lower())):
        d.append(f"host {t.host_header}/{t.hostname} != {o['host']}")
    if o.get("uri") is not None and o["uri"] != t.uri:
        d.append(f"uri {short(t.uri)} != {short(o['uri'])}")
    if o.get("status") is not None and o["status"] != t.status_code:
        d.append(f"status {t.status_code} != {o['status']}")
    if o.get("status_set") is not None:
        # Arkime's set also holds interim codes (100): ours reports the final code and continue_100.
        mine = {x.status_code for x in all_in_conn if x.status_code is not None}
        mine |= {100 for x in all_in_conn if x.continue_100}
        if sorted(mine) != sorted(o["status_set"]):
            d.append(f"status set {sorted(mine)} != {o['status_set']}")
    m = _arkime_md5_diff(all_in_conn, o.get("session_body_md5") or ())
    if m:
        d.append(m)
    return d


def compare_arkime(orc: dict, run: Run) -> Outcome:
    out = Outcome(orc["capture"], orc["kind"], ours=len(run.http))
    if orc.get("http"):
        out.theirs = len(orc["http"])
        seen = set()
        for o in orc["http"]:
            ours = _find_conn_txs(run, o["src"], o["dst"])
            label = f"{o['src']}>{o['dst']}"
            if not ours:
                out.diffs.append(f"{label}: no transactions")
                continue
            seen.add(id(ours[0]))
            reqs = [t for t in ours if t.method is not None] or ours
            if len(reqs) != 1:
                out.diffs.append(f"{label}: {len(reqs)} requests != 1")
            d = arkime_tx_diffs(o, reqs[0], ours)
            if d:
                out.diffs.append(f"{label}: " + ", ".join(d))
        return out
    sessions = [s for s in orc.get("sessions", [])
                if s.get("http") and "http" in (s.get("protocols") or ())]
    out.theirs = sum((s["http"].get("request_count") or 0) for s in sessions)
    if not sessions:
        out.comparable = False
        out.note = "no Arkime session carries HTTP fields"
        return out
    for s in sessions:
        label = f"{s['src']}>{s['dst']}"
        ours = _find_conn_txs(run, s["src"], s["dst"]) if s.get("src") else None
        if not ours:
            out.diffs.append(f"{label}: no transactions (oracle {s['http'].get('request_count')} requests)")
            continue
        d = arkime_session_diffs(s, ours)
        if d:
            out.diffs.append(f"{label}: " + ", ".join(d))
    return out


# --------------------------------------------------------------------------- suricata

@dataclass
class File:
    """One Suricata-style file: a decoded body (or a multipart part) of one transaction."""
    tx: HttpTransaction
    direction: str          # request / response
    data: bytes | None      # None when not kept whole
    size: int
    sha256: str | None
    filename: str | None
    complete: bool
    missing: int = 0        # bytes of it the capture does not hold (zeros in data)


def _multipart_parts(t: HttpTransaction) -> list[tuple[str | None, bytes]] | None:
    ctype = t.request_content_type or header(t.request_headers, "content-type") or ""
    m = re.search(r'boundary="?([^";\s]+)"?', ctype, re.I)
    if "multipart/form-data" not in ctype.lower() or not m or t.request_body is None:
        return None
    delim = b"--" + m.group(1).encode("latin-1")
    body = t.request_body
    parts = []
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith(b"\n"):
            chunk = chunk[1:]
        sep = chunk.find(b"\r\n\r\n")
        seplen = 4
        if sep < 0:
            sep, seplen = chunk.find(b"\n\n"), 2
        if sep < 0:
            continue
        head, data = chunk[:sep], chunk[sep + seplen:]
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        fn = re.search(rb'filename="([^"]*)"|filename=([^;\r\n]+)', head, re.I)
        name = None
        if fn:
            name = latin1_or_utf8((fn.group(1) if fn.group(1) is not None else fn.group(2)).strip())
        parts.append((name, data))
    return parts


def _filename(t: HttpTransaction) -> str | None:
    cd = header(t.response_headers, "content-disposition")
    if cd:
        m = re.search(r'filename\*?="?([^";]+)"?', cd, re.I)
        if m:
            return m.group(1).strip()
    if t.url_path is not None:
        return latin1_or_utf8(unquote_to_bytes(t.url_path.encode("latin-1", "replace")))
    return None


def files_of(t: HttpTransaction) -> list[File]:
    out = []
    parts = _multipart_parts(t)
    if parts is not None:
        for name, data in parts:
            if name is not None:
                out.append(File(t, "request", data, len(data), hashlib.sha256(data).hexdigest(),
                                name, t.state == "complete" or t.state == "no_response"))
    elif t.request_body_bytes:
        out.append(File(t, "request", t.request_body if body_complete(t, "request") else None,
                        t.request_body_bytes, body_sha256(t, "request"), _filename(t),
                        not t.state.startswith("partial_request"), t.request_missing_bytes))
    if t.response_body_bytes:
        out.append(File(t, "response", t.response_body if body_complete(t, "response") else None,
                        t.response_body_bytes, body_sha256(t, "response"), _filename(t),
                        t.state in ("complete", "response_only"), t.response_missing_bytes))
    return out


def _http_field(t: HttpTransaction, name: str, f: File | None = None) -> Any:
    """Our value for a neutral Suricata match name (see ORACLES.md)."""
    if name == "method":
        return t.method
    if name == "host":
        return t.hostname
    if name == "uri":
        return t.uri
    if name == "status":
        return t.status_code
    if name == "status_string":
        return t.status_text
    if name == "protocol":
        return t.request_protocol
    if name == "user_agent":
        return t.user_agent
    if name == "content_type":
        ct = t.response_content_type
        return ct.split(";")[0].strip() if ct else ct
    if name == "redirect":
        return header(t.response_headers, "location")
    if name == "body_len":
        return f.size if f else t.response_body_wire_bytes
    if name == "http_body_len":
        return t.response_body_wire_bytes
    if name in ("src_ip", "dst_ip", "src_port", "dst_port"):
        swap = f is not None and f.direction == "response"
        if swap:
            name = {"src_ip": "dst_ip", "dst_ip": "src_ip", "src_port": "dst_port",
                    "dst_port": "src_port"}[name]
        return getattr(t, name)
    if name == "app_proto":
        return "http"
    if f is not None:
        if name == "filename":
            return f.filename
        if name == "body_sha256":
            return f.sha256
        if name == "body_md5":
            return md5(f.data) if f.data is not None else "<not kept>"
        if name == "file_state":
            return "CLOSED" if f.complete and not f.missing else "TRUNCATED"
        if name == "gaps":
            return f.missing > 0              # (libnids never hands over data across a hole)
        if name in ("range_start", "range_end"):
            cr = header(t.response_headers, "content-range") or ""
            m = re.match(r"\s*bytes\s+(\d+)-(\d+)/", cr)
            if not m:
                return None
            return int(m.group(1) if name == "range_start" else m.group(2))
    raise KeyError(name)


_OTHER_HDR = re.compile(r"http\.(request|response)_headers(?:\[(\d+)\]\.(name|value)|\.__len)$")


def _other_ok(t: HttpTransaction, other: dict) -> bool:
    """The few `other` keys we can check: header lists and tx_id."""
    for k, v in (other or {}).items():
        m = _OTHER_HDR.match(k)
        if m:
            hs = t.request_headers if m.group(1) == "request" else t.response_headers
            if m.group(2) is None:
                if len(hs or []) != v:
                    return False
            else:
                i = int(m.group(2))
                if i >= len(hs or []) or hs[i][0 if m.group(3) == "name" else 1] != v:
                    return False
    return True


def _match_http(t: HttpTransaction, match: dict, other: dict) -> bool:
    for k, v in match.items():
        if _http_field(t, k) != v:
            return False
    return _other_ok(t, other)


def _match_file(f: File, match: dict) -> bool:
    for k, v in match.items():
        if _http_field(f.tx, k, f) != v:
            return False
    return True


def _rule_buffers(rule: str) -> tuple[str, int]:
    """(buffer kind, number of buffer keywords) of an alert rule: file / request / response / stream."""
    if rule.split()[1:2] == ["tcp-stream"] or "tcp-stream" in rule.split()[1:2]:
        return "stream", 1
    n_file = len(re.findall(r"\bfile[._]data\s*;", rule))
    if n_file:
        return "file", n_file
    if re.search(r"http_client_body|http\.request_body", rule):
        return "request", 1
    if re.search(r"http_server_body|http\.response_body", rule):
        return "response", 1
    return "file", 1


def _url_decode(b: bytes) -> bytes:
    return unquote_to_bytes(b.replace(b"+", b" "))


def _contains(buf: bytes, needles: list[bytes], ordered: bool, nocase: bool) -> bool:
    if nocase:
        buf = buf.lower()
        needles = [n.lower() for n in needles]
    pos = 0
    for n in needles:
        i = buf.find(n, pos if ordered else 0)
        if i < 0:
            return False
        if ordered:
            pos = i + len(n)
    return True


def _needles(m: dict) -> list[bytes]:
    if "body_contains_hex" in m:
        vals = m["body_contains_hex"]
        vals = vals if isinstance(vals, list) else [vals]
        return [bytes.fromhex(v) for v in vals]
    key = "stream_contains" if "stream_contains" in m else "body_contains"
    vals = m[key]
    vals = vals if isinstance(vals, list) else [vals]
    return [v.encode("utf-8") if not _is_latin1(v) else v.encode("latin-1") for v in vals]


def _tx_buffers(t: HttpTransaction, kind: str, direction: str) -> list[tuple[bytes, str | None]]:
    """(data, file name) of the buffers a body rule inspects in one transaction."""
    out = []
    want_req = direction in ("request", "toserver", "any", None)
    want_res = direction in ("response", "toclient", "any", None)
    if kind == "file":
        for f in files_of(t):
            if f.data is None:
                continue
            if (f.direction == "request" and want_req) or (f.direction == "response" and want_res):
                out.append((f.data, f.filename))
    if kind == "request" and want_req and t.request_body:
        out.append((t.request_body, None))
    if kind == "response" and want_res and t.response_body:
        out.append((t.response_body, None))
    return out


def _unexpected_request_body(t: HttpTransaction) -> bool:
    """libhtp's 'Unexpected request body' (Suricata event http.request_body_unexpected): the
    request carries body bytes although it has neither Content-Length nor Transfer-Encoding."""
    return bool(t.request_body_bytes) and not header(t.request_headers, "content-length") \
        and not header(t.request_headers, "transfer-encoding")


#: Parser events an alert rule may also require, and how to tell them from our records.
KNOWN_EVENTS = {"app-layer-event:http.request_body_unexpected": _unexpected_request_body}


def alert_count(check: dict, run: Run) -> int:
    m = check["match"]
    rule = check.get("rule") or ""
    kind, n_buf = _rule_buffers(rule)
    needles = _needles(m)
    extra = m.get("rule_extra") or []
    ordered = any(str(x).startswith(("distance", "within")) for x in extra)
    nocase = bool(m.get("nocase"))
    negated = bool(m.get("negated"))
    decode = any(str(x) == "url_decode" for x in extra)
    direction = m.get("dir")
    if kind == "stream":
        hits = 0
        for c in run.conns:
            bufs = []
            if direction in ("any", "toserver", "request", None):
                bufs.append(c.c2s_data or b"")
            if direction in ("any", "toclient", "response", None):
                bufs.append(c.s2c_data or b"")
            if any(_contains(b, needles, ordered, nocase) != negated for b in bufs if b):
                hits += 1
        return hits
    fname = m.get("filename_contains")
    events = [KNOWN_EVENTS[str(x)] for x in extra if str(x) in KNOWN_EVENTS]
    n = 0
    for t in run.http:
        if not all(e(t) for e in events):
            continue
        bufs = _tx_buffers(t, kind, direction)
        if fname:
            bufs = [(d, fn) for d, fn in bufs if fn and fname in fn]
        if decode:
            bufs = [(_url_decode(d), fn) for d, fn in bufs]
        if n_buf > 1 and len(needles) > 1:
            # one content per buffer keyword: each may be found in a different buffer of the tx
            hit = all(any(_contains(d, [nd], False, nocase) for d, _ in bufs) for nd in needles)
        else:
            hit = any(_contains(d, needles, ordered, nocase) for d, _ in bufs)
        if negated:
            hit = bool(bufs) and not hit
        n += hit
    return n


#: Match names of http/fileinfo checks that we can evaluate.
SURICATA_HTTP_NAMES = {"method", "host", "uri", "status", "status_string", "protocol", "user_agent",
                       "content_type", "redirect", "body_len", "src_ip", "dst_ip", "src_port",
                       "dst_port", "app_proto", "http_body_len"}
SURICATA_FILE_NAMES = SURICATA_HTTP_NAMES | {"filename", "body_sha256", "body_md5", "file_state",
                                             "gaps", "range_start", "range_end"}


def suricata_checks(orc: dict) -> tuple[list[dict], list[str]]:
    """The checks this suite evaluates, and what it leaves out (with why)."""
    keep, left = [], []
    for c in orc.get("checks") or []:
        ev = c["event"]
        m = c.get("match") or {}
        if ev == "http" and set(m) <= SURICATA_HTTP_NAMES:
            keep.append(c)
        elif ev == "fileinfo" and set(m) <= SURICATA_FILE_NAMES:
            keep.append(c)
        elif ev == "alert" and any("app-layer-event" in str(x) and str(x) not in KNOWN_EVENTS
                                   for x in m.get("rule_extra") or ()):
            left.append(f"alert sid {c.get('sid')} also needs a libhtp parser event, which the "
                        f"records do not carry per transaction")
        elif ev == "alert" and ("body_contains" in m or "body_contains_hex" in m
                                or "stream_contains" in m):
            keep.append(c)
        elif ev == "flow":
            left.append("flow byte/packet counts (Suricata counts whole frames)")
        else:
            left.append(f"{ev} check on {sorted(m)}")
    return keep, left


def suricata_check_result(c: dict, run: Run) -> tuple[int, str]:
    """(our count, description) for one check."""
    ev, m = c["event"], c.get("match") or {}
    if ev == "http":
        n = sum(_match_http(t, m, c.get("other") or {}) for t in run.http)
        hint = _closest(m, [(t, None) for t in run.http]) if n < c["count"] else ""
        return n, f"http{_desc(m, c.get('other'))}{hint}"
    if ev == "fileinfo":
        files = [f for t in run.http for f in files_of(t)]
        n = sum(_match_file(f, m) for f in files)
        hint = _closest(m, [(f.tx, f) for f in files]) if n < c["count"] else ""
        return n, f"fileinfo{_desc(m)}{hint}"
    n = alert_count(c, run)
    what = m.get("stream_contains") or m.get("body_contains") or m.get("body_contains_hex")
    where = "stream" if "stream_contains" in m else "body"
    return n, f"alert sid {c.get('sid')} {where} contains {short(what, 50)}"


def _closest(m: dict, cands: list[tuple[HttpTransaction, File | None]]) -> str:
    """' (closest: field ours != theirs, ...)' for the candidate that misses fewest fields."""
    best = None
    for t, f in cands:
        miss = [(k, _http_field(t, k, f), v) for k, v in m.items() if _http_field(t, k, f) != v]
        if best is None or len(miss) < len(best):
            best = miss
    if not best:
        return ""
    return " (closest: " + ", ".join(f"{k} {short(a, 30)} != {short(b, 30)}" for k, a, b in best) + ")"


def _desc(m: dict, other: dict | None = None) -> str:
    items = dict(m)
    for k, v in (other or {}).items():
        if _OTHER_HDR.match(k):
            items[k] = v
    if not items:
        return ""
    return "{" + ", ".join(f"{k}={short(v, 40)}" for k, v in items.items()) + "}"


def needs_stream(orc: dict) -> bool:
    return any("stream_contains" in (c.get("match") or {}) for c in orc.get("checks") or [])


def compare_suricata(orc: dict, run: Run) -> Outcome:
    keep, left = suricata_checks(orc)
    out = Outcome(orc["capture"], orc["kind"], ours=len(run.http))
    if orc.get("http"):                     # the lua log list (host/uri/user agent)
        out.theirs = len(orc["http"])
        g = _align_unordered(orc["http"], run.http, _lua_diffs, "lua")
        out.diffs += g
    if not keep and not orc.get("http"):
        out.comparable = False
        out.note = "no HTTP/file/body check upstream"
        if left:
            out.note += f" (left out: {', '.join(sorted(set(left)))})"
        return out
    empty_http = [c["count"] for c in keep
                  if c["event"] == "http" and not c.get("match") and not c.get("other")]
    if empty_http and out.theirs is None:
        out.theirs = max(empty_http)
    for c in keep:
        n, desc = suricata_check_result(c, run)
        want = c["count"]
        stream = "stream_contains" in (c.get("match") or {})
        good = (n >= 1) if (stream and want >= 1) else (n == want)
        if not good:
            out.diffs.append(f"{desc}: {n} != {want}")
    notes = []
    st = suricata_settings(orc)
    if st:
        notes.append("oracle ran with " + ", ".join(st))
    if left:
        notes.append("not compared: " + ", ".join(sorted(set(left))))
    out.note = "; ".join(notes)
    return out


#: Suricata settings that change what a passive IPv4 first-wins reassembler can agree with.
_SETTINGS = (("stream.midstream=true", "midstream pickup"),
             ("async-oneside=true", "one-sided streams"),
             ("--simulate-ips", "simulated IPS (drops)"),
             ("midstream-policy", "a midstream policy"),
             ("host-os-policy", "a host-OS overlap policy"))


def suricata_settings(orc: dict) -> list[str]:
    text = json.dumps(orc.get("settings") or {})
    return [label for key, label in _SETTINGS if key in text]


def _lua_diffs(o: dict, t: HttpTransaction) -> list[str]:
    d = []
    if o.get("host") is not None and not host_matches(o["host"], t):
        d.append(f"host {t.hostname} != {o['host']}")
    if o.get("uri") is not None and o["uri"] != t.uri:
        d.append(f"uri {short(t.uri)} != {short(o['uri'])}")
    if o.get("user_agent") is not None and o["user_agent"] != t.user_agent:
        d.append(f"user_agent {short(t.user_agent)} != {short(o['user_agent'])}")
    if o.get("src") and (o["src"], o["dst"]) not in ((tx_src(t), tx_dst(t)), (tx_dst(t), tx_src(t))):
        d.append(f"endpoints {tx_src(t)}>{tx_dst(t)} != {o['src']}>{o['dst']}")
    return d


def evader_decoded(run: Run) -> bool:
    """True when some decoded body carries the EICAR string (what every http-evader case hides)."""
    return any(EICAR in (t.response_body or b"") or EICAR in (t.request_body or b"") for t in run.http)


# --------------------------------------------------------------------------- dispatch

NOT_HTTP_KINDS = {
    "zeek-conn-log": "oracle is conn.log only (bytes/history), no HTTP transaction or body",
    "zeek-other": "oracle is free-form btest output, not parsed into HTTP transactions",
    "zeek-notice": "oracle is C2-detector notices, no HTTP transaction list",
    "njrat-log": "oracle is a decoded njRAT transcript (not HTTP)",
}


def oracle_has_http(orc: dict) -> bool:
    return orc["kind"] not in NOT_HTTP_KINDS


def compare(orc: dict, run: Run) -> Outcome:
    kind = orc["kind"]
    if kind == "zeek-http-log":
        return compare_zeek_http(orc, run)
    if kind == "zeek-files":
        return compare_zeek_files(orc, run)
    if kind == "arkime-test":
        return compare_arkime(orc, run)
    if kind == "suricata-verify":
        out = compare_suricata(orc, run)
        if orc["capture"].startswith(EVADER_PREFIX) and not evader_decoded(run):
            out.diffs.append("EICAR string not in any decoded body")
        return out
    return Outcome(orc["capture"], kind, comparable=False, ours=len(run.http),
                   note=NOT_HTTP_KINDS.get(kind, f"unknown oracle kind {kind}"))


def host_policies(orc: dict) -> tuple[str, ...]:
    """Suricata's host-os-policy (suricata.yaml, per address) as the native engine's
    host_policies: "CIDR=POLICY", the most specific address first."""
    settings = orc.get("settings") or {}
    if "suricata_yaml" not in settings and all(isinstance(v, dict) for v in settings.values()):
        merged: dict = {}
        for v in settings.values():
            merged.update(v.get("suricata_yaml") or {})
        yaml = merged
    else:
        yaml = settings.get("suricata_yaml") or {}
    out = []
    for key, addrs in yaml.items():
        if key.startswith("host-os-policy.") and isinstance(addrs, list):
            for a in addrs:
                cidr = a if "/" in a else (a + ("/128" if ":" in a else "/32"))
                out.append(f"{cidr}={key.split('.', 1)[1]}")
    return tuple(sorted(out, key=lambda x: -int(x.split("=")[0].split("/")[1])))


def evaluate(root: Path, orc: dict, engine: str = "nids") -> tuple[Outcome, Run | None]:
    """Run c2scribe (unless the oracle has nothing comparable) and compare."""
    if not oracle_has_http(orc):
        return Outcome(orc["capture"], orc["kind"], comparable=False,
                       note=NOT_HTTP_KINDS[orc["kind"]]), None
    run = run_capture(root, orc["capture"], needs_stream(orc), engine,
                      host_policies(orc) if engine == "native" else ())
    return compare(orc, run), run
