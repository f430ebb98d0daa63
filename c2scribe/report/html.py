"""The report as one HTML5 page: no script, no external resource, one hashed stylesheet.

Browsing needs no JavaScript: sections are linked from the top bar, connections and
transactions are <details> (collapsed), and every message links to the transaction or
connection it came from by an anchor of ours (ids are counters the report makes, never values
from the data). Everything that came off the wire goes through escape.esc (or the blocks
built on it) and is placed as element content only: never in an attribute, a URL or CSS.
URLs from the traffic are text, never links.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections import defaultdict

from .data import MAX_MESSAGES, Section
from .escape import Budget, bytes_block, cut_note, esc, text_block

# ----------------------------------------------------------------------------- limits

JUMP_US = 300 * 1_000_000          # a pause this long between messages is marked
GROUP_CHECKINS = 2                 # runs of this many check-ins or more fold into one line
TEXT_BUDGET = 4_000_000            # characters of traffic text in the whole report
MAX_TX_PER_CONN = 300
MAX_PROBLEMS = 500
MAX_COMMAND_SUMMARY = 300

# -------------------------------------------------------------------------- stylesheet

CSS = """\
*{box-sizing:border-box}
html{background:#f3f4f7}
body{margin:0;color:#1f2430;font:14px/1.5 "DejaVu Sans","Segoe UI",Roboto,Helvetica,Arial,sans-serif}
code,pre,.mono,time,.hash{font-family:"DejaVu Sans Mono","Liberation Mono",Menlo,Consolas,monospace;font-size:12.5px}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;tab-size:4}
a{color:#1b5fc4;text-decoration:none}
a:hover{text-decoration:underline}
.top{background:#18202f;color:#e9edf4;padding:18px 28px 16px}
.top h1{margin:0 0 4px;font-size:22px;font-weight:600;overflow-wrap:anywhere}
.top p{margin:0;color:#aeb8c9;font-size:13px;overflow-wrap:anywhere}
.toc{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #dce0e7;padding:7px 28px;display:flex;flex-wrap:wrap;gap:2px 20px;font-size:13px}
.toc .n{color:#6b7588}
main{max-width:1320px;margin:0 auto;padding:6px 28px 80px}
section{margin:26px 0}
h2{font-size:18px;margin:0 0 10px;padding-bottom:5px;border-bottom:2px solid #d7dce4}
h3{font-size:16px;margin:0 0 4px;overflow-wrap:anywhere}
h4{font-size:13px;margin:14px 0 6px;color:#4a5468;text-transform:uppercase;letter-spacing:.04em}
.panel{background:#fff;border:1px solid #dce0e7;border-radius:8px;padding:14px 18px;margin:12px 0}
.muted{color:#6b7588}
.small{font-size:12px}
.note{color:#4a5468;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid #eceef2;overflow-wrap:anywhere}
th{font-weight:600;color:#4a5468;background:#f7f8fa;white-space:nowrap}
td.num,th.num{text-align:right;white-space:nowrap}
td.nw{white-space:nowrap}
table.kv th{width:210px;background:none;font-weight:normal;color:#5b6578}
dl.facts{display:grid;grid-template-columns:170px 1fr;gap:3px 14px;margin:0}
dl.facts dt{color:#5b6578}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.counts{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0 4px}
.count{background:#f7f8fa;border:1px solid #e3e6ec;border-radius:6px;padding:6px 12px;min-width:104px}
.count b{display:block;font-size:19px;line-height:1.2}
.count span{font-size:12px;color:#5b6578}
.x{color:#9c1475;background:#fbe9f4;border-radius:2px}
.cut{color:#7c5800;background:#fff3cf;border-radius:3px;padding:0 5px;font-style:italic;font-family:"DejaVu Sans",sans-serif;font-size:11.5px;white-space:normal}
.badge{display:inline-block;font-size:11.5px;line-height:1.55;padding:0 7px;border-radius:9px;background:#eceff3;color:#3d4657;margin:1px 4px 1px 0;white-space:nowrap}
.b-gap{background:#ffedcc;color:#854600}
.b-err{background:#fde3e3;color:#a0161b}
.b-ok{background:#e2f3e7;color:#1c6633}
.b-info{background:#e6eefc;color:#1c4f9c}
ul.notes{margin:8px 0 0;padding:0;list-style:none}
ul.notes li{margin:3px 0;padding:3px 10px;border-radius:5px;font-size:13px}
ul.notes li.gap{background:#fff6e3;border-left:3px solid #e3a008}
ul.notes li.err{background:#fdf0f0;border-left:3px solid #c62828}
ul.notes li.info{background:#f1f5fc;border-left:3px solid #7c9fd6}
.agent{background:#fff;border:1px solid #dce0e7;border-radius:8px;padding:16px 18px;margin:16px 0}
.agent>.meta{color:#4a5468;font-size:13px;margin:0}
.aname{font-family:"DejaVu Sans Mono","Liberation Mono",monospace}
details.glance{margin:12px 0 4px}
details>summary{cursor:pointer}
details.glance>summary{font-weight:600;font-size:13px;color:#4a5468}
ol.tl{list-style:none;margin:14px 0 0;padding:0}
ol.tl>li{display:grid;grid-template-columns:118px minmax(0,1fr);column-gap:0}
ol.tl .when{text-align:right;padding:9px 14px 0 0;color:#3d4657;line-height:1.25}
ol.tl .when time{display:block}
ol.tl .when .dt{display:block;font-size:11px;color:#8a93a3}
ol.tl .rail{position:relative;border-left:2px solid #d3d8e0;padding:3px 0 3px 18px;min-width:0}
ol.tl .rail::before{content:"";position:absolute;left:-7px;top:12px;width:12px;height:12px;border-radius:50%;background:#a3acb9;border:2px solid #fff}
ol.tl li.k-command .rail::before{background:#2f6fd6}
ol.tl li.k-output .rail::before{background:#2e8b57}
ol.tl li.k-error .rail::before{background:#c62828}
ol.tl li.k-upload .rail::before,ol.tl li.k-download .rail::before{background:#7b3fc4}
ol.tl li.day .rail,ol.tl li.jump .rail{padding:6px 0 6px 18px}
ol.tl li.day .rail::before,ol.tl li.jump .rail::before{display:none}
ol.tl li.day .rail{font-weight:600;color:#3d4657;border-left-color:#d3d8e0}
ol.tl li.jump .rail{border-left:2px dashed #e0a030;color:#8a5a00;font-style:italic;font-size:13px}
ol.tl li.edge .rail{color:#5b6578;font-size:12.5px}
ol.tl li.edge .rail::before{background:#fff;border-color:#a3acb9}
.card{border:1px solid #dce0e7;border-left:4px solid #b8c0cc;border-radius:6px;background:#fff;padding:6px 10px;min-width:0}
.k-command>.rail>.card{border-left-color:#2f6fd6;background:#f3f7ff}
.k-output>.rail>.card{border-left-color:#2e8b57;background:#f3faf5}
.k-error>.rail>.card{border-left-color:#c62828;background:#fdf2f2}
.k-upload>.rail>.card,.k-download>.rail>.card{border-left-color:#7b3fc4;background:#f7f2fd}
.k-checkin>.rail>.card{background:#fafbfc}
.head{display:flex;flex-wrap:wrap;gap:0 10px;align-items:baseline;font-size:12px;color:#5b6578}
.kind{font-weight:700;text-transform:uppercase;letter-spacing:.05em;font-size:11px;color:#3d4657}
.k-command .kind{color:#1f55b0}
.k-output .kind,.reply .kind{color:#1c6e42}
.k-error .kind{color:#a0161b}
.cid{color:#8a93a3}
pre.text{margin:3px 0 2px;font-size:12.5px}
pre.cmd{background:#1c2331;color:#e9edf4;padding:5px 9px;border-radius:4px}
pre.cmd .x{color:#ff9bd7;background:#3b2340}
pre.cmd .cut{color:#ffe3a3;background:#4a3b16}
pre.box{background:#f7f8fa;border:1px solid #e6e9ee;border-radius:4px;padding:5px 8px;max-height:520px;overflow:auto}
.empty{color:#8a93a3;font-style:italic;font-size:12px}
.reply{margin:6px 0 2px 14px;border-left:3px solid #2e8b57;background:#fff;border-radius:0 5px 5px 0;padding:4px 10px}
.reply.k-error{border-left-color:#c62828;background:#fdf2f2}
.reply.k-upload,.reply.k-download{border-left-color:#7b3fc4}
.noreply{margin:5px 0 2px 14px;font-size:12px;color:#854600}
.att{font-size:12.5px;margin:3px 0}
.att .hash{font-size:11.5px;color:#3d4657}
details.fields{margin:2px 0 0;font-size:12px}
details.fields>summary{color:#6b7588}
details.group>summary{font-size:13px;color:#3d4657}
ol.sub{list-style:none;margin:6px 0 2px;padding:0;font-size:12.5px}
ol.sub li{padding:1px 0;border-top:1px solid #f0f1f4;overflow-wrap:anywhere}
ol.sub time{color:#5b6578;margin-right:8px}
:target{outline:2px solid #f0b400;outline-offset:2px}
details.conn{background:#fff;border:1px solid #dce0e7;border-radius:6px;margin:6px 0}
details.conn>summary,details.tx>summary{list-style:none;display:grid;align-items:baseline;gap:0 12px;padding:6px 10px}
details.conn>summary::-webkit-details-marker,details.tx>summary::-webkit-details-marker{display:none}
details.conn>summary::before,details.tx>summary::before{content:"\\25b8";color:#8a93a3}
details.conn[open]>summary::before,details.tx[open]>summary::before{content:"\\25be"}
details.conn>summary{grid-template-columns:12px 40px minmax(230px,2.2fr) 64px 150px minmax(120px,1fr) minmax(150px,1.5fr)}
details.conn[open]>summary{border-bottom:1px solid #e6e9ee;background:#f7f8fa}
.inner{padding:8px 14px 14px}
details.tx{border-top:1px solid #eceef2}
details.tx>summary{grid-template-columns:12px 44px 92px minmax(200px,3fr) 120px minmax(120px,1.4fr) 130px;font-size:12.5px;padding:4px 6px}
details.tx[open]>summary{background:#f3f6fb}
.txd{padding:4px 10px 12px 30px}
.txd>div{margin:4px 0 10px;min-width:0}
.txd p{overflow-wrap:anywhere;margin:2px 0 6px}
details.conn>summary>span,details.tx>summary>span{min-width:0;overflow-wrap:anywhere}
.txd h5{margin:6px 0 3px;font-size:12px;color:#4a5468}
.txd table{font-size:12px}
.txd table td{padding:1px 6px}
.txh{font-size:11px;color:#6b7588;display:grid;grid-template-columns:12px 44px 92px minmax(200px,3fr) 120px minmax(120px,1.4fr) 130px;gap:0 12px;padding:2px 6px}
.ends{overflow-wrap:anywhere}
td.fname{min-width:150px}
.txd table td:first-child{width:26%}
td.fhash{min-width:230px}
td.fnotes{max-width:340px}
.safety{font-size:12.5px;color:#4a5468;background:#f5f7fb;border:1px solid #e1e6ef;border-radius:6px;padding:7px 12px;margin:12px 0 0}
.more{font-size:13px;color:#7c5800;background:#fff6dd;border-radius:5px;padding:5px 10px;margin:8px 0}
"""


def csp_hash(css: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode()


def csp(css: str) -> str:
    return (f"default-src 'none'; style-src '{csp_hash(css)}'; img-src 'none'; "
            "font-src 'none'; connect-src 'none'; media-src 'none'; object-src 'none'; "
            "frame-src 'none'; child-src 'none'; worker-src 'none'; manifest-src 'none'; "
            "script-src 'none'; base-uri 'none'; form-action 'none'")


# -------------------------------------------------------------------------- formatting

def fmt_ts(us: int | None, *, date: bool = True, ms: bool = True) -> str:
    if us is None:
        return "-"
    d = dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc)
    s = d.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return s + (f".{d.microsecond // 1000:03d}" if ms else "")


def fmt_day(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%A %Y-%m-%d (UTC)")


def fmt_dur(us: int | None) -> str:
    if us is None:
        return "-"
    s = us / 1e6
    if us <= 0:
        return "0 s"
    if s < 1:
        return f"{us / 1000:.0f} ms" if us >= 1000 else f"{us} µs"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 100_000:
        return f"{n:,} bytes" if n != 1 else "1 byte"
    for unit, k in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        if n < k * 1000 or unit == "TB":
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _status(t: dict, none: str = "(none)") -> str:
    return str(t["status_code"]) if t["status_code"] is not None else (t["status_text"] or none)


def _num(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def badge(text: str, cls: str = "") -> str:
    """A badge of the report's own words (text is escaped all the same)."""
    return f'<span class="badge{" " + cls if cls else ""}">{esc(text, 200)}</span>'


def ends(ip, port) -> str:
    if ip is None:
        return "?"
    ip = str(ip)
    return esc((f"[{ip}]" if ":" in ip else ip) + (f":{port}" if port is not None else ""), 80)


_ARROW = {"to_implant": "operator → implant", "to_operator": "implant → operator"}
_GAP_WORDS = {"request_gap": "request bytes missing", "response_gap": "response bytes missing",
              "request_lost_in_gap": "request lost in a capture gap",
              "response_lost_in_gap": "response lost in a capture gap"}


def tx_problems(t: dict) -> list[tuple[str, str]]:
    """What is incomplete about a transaction: [(text, css class)]."""
    out = []
    for f in t.get("flags") or []:
        side = "req_missing" if f.startswith("request") else "resp_missing"
        if f in ("request_gap", "response_gap") and t.get(side):
            continue                            # the missing bytes say it, with a number
        if f in _GAP_WORDS or "gap" in f:
            out.append((_GAP_WORDS.get(f, f), "b-gap"))
    for side, key in (("request", "req_missing"), ("response", "resp_missing")):
        if t.get(key):
            out.append((f"{fmt_bytes(t[key])} of the {side} missing", "b-gap"))
    st = t.get("state")
    if st and st != "complete":
        out.append((st.replace("_", " "), "b-gap"))
    return out


def conn_problems(c: dict) -> list[tuple[str, str]]:
    out = []
    for side, gaps, miss in (("client→server", "c2s_gaps", "c2s_missing"),
                             ("server→client", "s2c_gaps", "s2c_missing")):
        if c.get(miss) or c.get(gaps):
            out.append((f"{fmt_bytes(c.get(miss) or 0)} missing {side} "
                        f"({plural(c.get(gaps) or 0, 'gap')})", "b-gap"))
    if c.get("midstream"):
        out.append(("began before the capture (midstream)", "b-gap"))
    if c.get("overlap_conflicts"):
        out.append((f"{plural(c['overlap_conflicts'], 'overlap conflict')}", "b-gap"))
    if c.get("end_reason") == "open_at_end":
        out.append(("still open when the capture ended", "b-info"))
    elif c.get("end_reason") and c["end_reason"] != "fin":
        out.append((f"ended: {c['end_reason']}", "b-info"))
    return out


_KINDS = ("checkin", "command", "output", "upload", "download", "error", "other")
_KIND_WORDS = {"checkin": "check-in", "other": "other message", "error": "error message"}


def kind_class(m: dict) -> str:
    """A CSS class for a message's kind: one of ours, whatever the data says."""
    return m["kind"] if m["kind"] in _KINDS else "other"


def _fields_json(m: dict) -> str | None:
    raw = m.get("fields")
    if not raw or raw in ("{}", "null"):
        return None
    if (m.get("fields_len") or 0) <= len(raw):
        try:
            return json.dumps(json.loads(raw), indent=1, ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    return raw


def _fields_dict(m: dict) -> dict:
    try:
        v = json.loads(m.get("fields") or "{}")
    except (ValueError, RecursionError):
        return {}
    return v if isinstance(v, dict) else {}


# ----------------------------------------------------------------------------- report

class Page:
    """The whole report, from loaded sections (see data.py)."""

    def __init__(self, *, title: str, output_dir: str, filters_text: list[str],
                 agents: Section, messages: dict, transactions: Section,
                 connections: Section, files: Section, runs: dict, totals: dict,
                 generated_us: int, version: str):
        self.title = title
        self.output_dir = output_dir
        self.filters_text = filters_text
        self.agents = agents
        self.messages = messages          # agent index -> Section
        self.transactions = transactions
        self.connections = connections
        self.files = files
        self.runs = runs
        self.totals = totals
        self.generated_us = generated_us
        self.version = version
        self.budget = Budget(TEXT_BUDGET)
        self._ids()

    # ids: counters of ours, never values from the data
    def _ids(self) -> None:
        self.conn_no: dict[str, int] = {}
        for i, c in enumerate(self.connections.rows, 1):
            self.conn_no.setdefault(c["conn_id"], i)
        self.tx_by_id: dict[str, dict] = {}
        self.tx_by_conn: dict[str | None, list[dict]] = defaultdict(list)
        extra = len(self.conn_no)
        for t in self.transactions.rows:
            self.tx_by_id[t["tx_id"]] = t
            self.tx_by_conn[t["conn_id"]].append(t)
        for t in self.transactions.rows:     # transactions of connections not loaded
            if t["conn_id"] not in self.conn_no:
                extra += 1
                self.conn_no[t["conn_id"]] = extra
        for conn, txs in self.tx_by_conn.items():
            txs.sort(key=lambda t: (t["index"] is None, t["index"] or 0, t["ts"] or 0))
        self._tx_anchor: dict[str, str] = {}
        for conn, txs in self.tx_by_conn.items():
            for i, t in enumerate(txs, 1):
                self._tx_anchor[t["tx_id"]] = f"tx-{self.conn_no[conn]}-{i}"
        self.conn_by_id = {c["conn_id"]: c for c in self.connections.rows}
        self.msg_anchor: dict[str, str] = {}
        self.msgs_by_tx: dict[str, list[dict]] = defaultdict(list)
        self.msgs_by_conn: dict[str, list[dict]] = defaultdict(list)
        self.agent_of: dict[str, int] = {}
        n = 0
        for ai, sec in self.messages.items():
            for m in sec.rows:
                n += 1
                self.msg_anchor[m["id"]] = f"m-{n}"
                self.agent_of[m["id"]] = ai
                if m["tx_id"]:
                    self.msgs_by_tx[m["tx_id"]].append(m)
                if m["conn_id"]:
                    self.msgs_by_conn[m["conn_id"]].append(m)

    def conn_link(self, conn_id: str | None, label: str | None = None) -> str:
        if conn_id is None or conn_id not in self.conn_no:
            return esc(f"connection {conn_id}", 80) if conn_id else ""
        n = self.conn_no[conn_id]
        return f'<a href="#conn-{n}">{esc(label or f"connection {n}")}</a>'

    def tx_label(self, t: dict) -> str:
        return f"HTTP {self.conn_no[t['conn_id']]}.{t['index'] if t['index'] is not None else '?'}"

    def tx_link(self, tx_id: str | None) -> str:
        t = self.tx_by_id.get(tx_id) if tx_id else None
        if t is None:
            return esc(f"transaction {tx_id}", 80) if tx_id else ""
        return f'<a href="#{self._tx_anchor[tx_id]}">{esc(self.tx_label(t))}</a>'

    def msg_link(self, msg_id: str, label: str) -> str:
        a = self.msg_anchor.get(msg_id)
        return f'<a href="#{a}">{esc(label)}</a>' if a else esc(label)

    # ---------------------------------------------------------------- the page
    def render(self) -> str:
        problems = self._problems()
        body = [self._header(), self._toc(problems), "<main>", self._summary(),
                self._agents(), self._files(), self._problems_section(problems),
                self._connections(), self._runs(), "</main>"]
        return page(self.title, "\n".join(body))

    def _header(self) -> str:
        return (f'<header class="top"><h1>{esc(self.title, 300)}</h1>'
                f'<p>c2scribe report of <span class="mono">{esc(self.output_dir, 500)}</span>'
                f' · generated {esc(fmt_ts(self.generated_us, ms=False))} UTC'
                f' · c2scribe {esc(self.version, 40)}</p></header>')

    def _toc(self, problems: list) -> str:
        items = [("summary", "Summary", None), ("agents", "Agents", self.agents.total),
                 ("files", "Carved files", self.files.total),
                 ("problems", "Gaps and errors", len(problems)),
                 ("connections", "Connections and HTTP", self.connections.total),
                 ("runs", "Run warnings", sum(s.total for s in self.runs.values()))]
        links = [f'<a href="#{i}">{esc(t)}' + (f' <span class="n">({n:,})</span>' if n is not None
                                                 else "") + "</a>" for i, t, n in items]
        return '<nav class="toc">' + "".join(links) + "</nav>"

    # ---------------------------------------------------------------- summary
    def _span(self) -> tuple[int | None, int | None]:
        ts = [a["first"] for a in self.agents.rows if a["first"] is not None]
        ts += [a["last"] for a in self.agents.rows if a["last"] is not None]
        for c in self.connections.rows:
            ts += [x for x in (c["ts"], c["ts_end"]) if x is not None]
        for t in self.transactions.rows:
            ts += [x for x in (t["ts"], t["ts_end"]) if x is not None]
        return (min(ts), max(ts)) if ts else (None, None)

    def _summary(self) -> str:
        lo, hi = self._span()
        kinds = defaultdict(int, self.agents.sums)
        counts = [(self.agents.total, "agents"), (kinds["messages"], "C2 messages"),
                  (kinds["commands"], "commands"),
                  (kinds["outputs"], "outputs"), (kinds["errors"], "decoder errors"),
                  (self.files.total, "carved files"),
                  (self.connections.total, "connections"),
                  (self.transactions.total, "HTTP transactions")]
        filt = ("; ".join(esc(f, 300) for f in self.filters_text) if self.filters_text
                else "none: everything in the output")
        tot = self.totals
        facts = [("Output directory", f'<span class="mono">{esc(self.output_dir, 500)}</span>'),
                 ("Filters", filt),
                 ("Time span", f"{esc(fmt_ts(lo))} → {esc(fmt_ts(hi))} UTC"
                  + (f" ({esc(fmt_dur(hi - lo))})" if lo is not None else "")),
                 ("In the whole output", esc(f"{tot.get('c2', 0):,} C2 messages, "
                                             f"{tot.get('http', 0):,} HTTP transactions, "
                                             f"{tot.get('connection', 0):,} connections"))]
        warn = self.runs.get("warning", Section())
        cap = self.runs.get("capture_error", Section())
        dec = self.runs.get("decode_error", Section())
        runs = []
        if cap.total:
            runs.append(f'<a href="#runs">{esc(plural(cap.total, "capture error"))}</a>')
        if dec.total:
            runs.append(f'<a href="#runs">{esc(plural(dec.total, "decoder failure"))}</a>')
        if warn.total:
            codes = ", ".join(esc(f"{w['code']} ×{w['count']}") for w in warn.rows[:8])
            runs.append(f'<a href="#runs">{esc(plural(warn.total, "warning"))}</a> ({codes}'
                        + (", …" if len(warn.rows) > 8 else "") + ")")
        facts.append(("Runs", "; ".join(runs) if runs else "no warnings, capture errors or "
                      "decoder failures"))
        dl = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
        cnt = "".join(f'<div class="count"><b>{n:,}</b><span>{esc(t)}</span></div>'
                      for n, t in counts)
        return (f'<section id="summary"><h2>Summary</h2><div class="panel">'
                f'<dl class="facts">{dl}</dl><div class="counts">{cnt}</div>'
                f'{self._agent_table()}'
                '<p class="safety">Everything taken from the traffic is shown as inert text. '
                'Control characters, bidirectional overrides, invisible characters and bytes '
                'that are not UTF-8 appear as escapes such as '
                '<span class="x">\\x1b</span> or <span class="x">\\u202e</span>; long values are '
                'cut, and each cut says how much was left out. URLs are not links. This page '
                'runs no script and loads nothing. Times are UTC.</p></div></section>')

    def _agent_table(self) -> str:
        if not self.agents.rows:
            return '<p class="note">No C2 messages in this selection.</p>'
        rows = []
        for i, a in enumerate(self.agents.rows, 1):
            name = esc(a["agent"], 120) if a["agent"] is not None else "<i>(no agent key)</i>"
            errs = (f'<span class="badge b-err">{a["errors"]:,}</span>' if a["errors"]
                    else "0")
            rows.append(
                f'<tr><td><a href="#agent-{i}" class="aname">{name}</a></td>'
                f'<td>{esc(", ".join(a["decoders"]), 200)}</td>'
                f'<td class="nw">{esc(fmt_ts(a["first"], ms=False))}</td>'
                f'<td class="nw">{esc(fmt_dur((a["last"] or 0) - (a["first"] or 0)))}</td>'
                f'<td class="num">{a["messages"]:,}</td><td class="num">{a["commands"]:,}</td>'
                f'<td class="num">{a["outputs"]:,}</td><td class="num">{errs}</td>'
                f'<td class="num">{a["files"]:,}</td><td class="num">{a["connections"]:,}</td>'
                "</tr>")
        more = (f'<p class="more">{self.agents.hidden:,} more agents not shown (the report '
                f'shows the first {len(self.agents.rows):,} by first message; narrow it with '
                "--agent, --since, --until)</p>" if self.agents.hidden else "")
        return ('<h4>Agents</h4><table><thead><tr><th>agent</th><th>decoder</th>'
                '<th>first seen (UTC)</th><th>active for</th><th class="num">messages</th>'
                '<th class="num">commands</th><th class="num">outputs</th>'
                '<th class="num">errors</th><th class="num">files</th>'
                '<th class="num">connections</th></tr></thead><tbody>' + "".join(rows)
                + "</tbody></table>" + more)

    # ---------------------------------------------------------------- agents
    def _agents(self) -> str:
        parts = ['<section id="agents"><h2>Agents: timelines</h2>',
                 '<p class="note">Each agent\'s C2 messages in time order, across connections. '
                 'A command is shown with its output(s) below it (paired by command id); '
                 'runs of check-ins are folded. Pauses of 5 minutes or more, capture gaps, '
                 'incomplete transactions and decoder errors are marked.</p>']
        if not self.agents.rows:
            parts.append('<p class="panel muted">No C2 messages in this selection.</p>')
        for i, a in enumerate(self.agents.rows, 1):
            parts.append(self._agent(i, a, self.messages.get(i, Section())))
        if self.agents.hidden:
            parts.append(f'<p class="more">{self.agents.hidden:,} more agents not shown.</p>')
        parts.append("</section>")
        return "\n".join(parts)

    def _agent(self, i: int, a: dict, sec: Section) -> str:
        msgs = sec.rows
        name = esc(a["agent"], 200) if a["agent"] is not None else "(no agent key)"
        kinds = defaultdict(int)
        for m in msgs:
            kinds[m["kind"]] += 1
        what = ", ".join(plural(n, _KIND_WORDS.get(k, k))
                         for k, n in sorted(kinds.items(), key=lambda x: -x[1]))
        fam = (" · " + esc(", ".join(a["families"]), 200)) if a["families"] else ""
        src = (" · from " + esc(", ".join(a["src_ips"][:5]), 300)
               + (" …" if len(a["src_ips"]) > 5 else "")) if a["src_ips"] else ""
        head = (f'<article class="agent" id="agent-{i}"><h3>Agent <span class="aname">{name}'
                f'</span></h3><p class="meta">{esc(", ".join(a["decoders"]), 200)}{fam} · '
                f'{esc(plural(a["messages"], "message"))} ({esc(what)}) over '
                f'{esc(plural(a["connections"], "connection"))}{src} · '
                f'{esc(fmt_ts(a["first"]))} → {esc(fmt_ts(a["last"]))} UTC '
                f'({esc(fmt_dur((a["last"] or 0) - (a["first"] or 0)))})</p>')
        replies, consumed = self._pair(msgs)
        notes = self._agent_notes(msgs, replies, sec)
        glance = self._glance(msgs, replies)
        tl = self._timeline(msgs, replies, consumed)
        return head + notes + glance + tl + "</article>"

    @staticmethod
    def _pair(msgs: list[dict]):
        """Replies (outputs, files, errors) of each command, by command id: the command of
        that id last sent before the reply (else the first)."""
        by_cmd: dict[str, list[dict]] = defaultdict(list)
        for m in msgs:
            if m["kind"] == "command" and m["command_id"]:
                by_cmd[m["command_id"]].append(m)
        replies: dict[str, list[dict]] = defaultdict(list)
        consumed: set[str] = set()
        for m in msgs:
            if m["kind"] in ("command", "checkin") or not m["command_id"]:
                continue
            cands = by_cmd.get(m["command_id"])
            if not cands:
                continue
            before = [c for c in cands if (c["ts"] or 0) <= (m["ts"] or 0)]
            cmd = before[-1] if before else cands[0]
            replies[cmd["id"]].append(m)
            consumed.add(m["id"])
        return replies, consumed

    def _agent_notes(self, msgs: list[dict], replies: dict, sec: Section) -> str:
        notes = []
        conns = []
        for m in msgs:
            if m["conn_id"] and m["conn_id"] not in conns:
                conns.append(m["conn_id"])
        for cid in conns:
            c = self.conn_by_id.get(cid)
            if c is None:
                continue
            for text, cls in conn_problems(c):
                kind = "gap" if cls == "b-gap" else "info"
                notes.append((kind, f"{self.conn_link(cid)} "
                              f"({ends(c['src_ip'], c['src_port'])} → "
                              f"{ends(c['dst_ip'], c['dst_port'])}): {esc(text)}"))
        txs = {m["tx_id"] for m in msgs if m["tx_id"]}
        bad_tx = [t for t in (self.tx_by_id.get(x) for x in txs) if t and tx_problems(t)]
        if bad_tx:
            bad_tx.sort(key=lambda t: t["ts"] or 0)
            links = ", ".join(self.tx_link(t["tx_id"]) for t in bad_tx[:10])
            notes.append(("gap", f"{esc(plural(len(bad_tx), 'HTTP transaction'))} of this agent "
                          f"incomplete or with capture gaps: {links}"
                          + (" …" if len(bad_tx) > 10 else "")))
        errs = [m for m in msgs if m["kind"] == "error"]
        if errs:
            notes.append(("err", f"{esc(plural(len(errs), 'decoder error message'))}: "
                          + ", ".join(self.msg_link(m["id"], fmt_ts(m["ts"], date=False))
                                      for m in errs[:10]) + (" …" if len(errs) > 10 else "")))
        if any(m["command_id"] for m in msgs if m["kind"] != "command"):
            lone = [m for m in msgs if m["kind"] == "command" and not replies.get(m["id"])]
            if lone:
                notes.append(("gap", f"{esc(plural(len(lone), 'command'))} without output in "
                              "this selection: " + ", ".join(
                                  self.msg_link(m["id"], fmt_ts(m["ts"], date=False))
                                  for m in lone[:10]) + (" …" if len(lone) > 10 else "")))
        if sec.hidden:
            notes.append(("gap", f"{sec.hidden:,} later messages of this agent are not shown "
                          f"(the report keeps the first {len(msgs):,} of each agent and "
                          f"{MAX_MESSAGES:,} in all; narrow it with --agent, --since and "
                          "--until)"))
        if not notes:
            return ""
        return '<ul class="notes">' + "".join(f'<li class="{k}">{t}</li>' for k, t in notes) \
            + "</ul>"

    def _glance(self, msgs: list[dict], replies: dict) -> str:
        cmds = [m for m in msgs if m["kind"] == "command"]
        if not cmds:
            return ""
        rows = []
        for m in cmds[:MAX_COMMAND_SUMMARY]:
            out = replies.get(m["id"], [])
            first = next((r for r in out if r["kind"] == "output"), out[0] if out else None)
            if first is None:
                res = '<span class="muted">-</span>'
            else:
                text = (first["text"] or "").strip("\r\n")
                line, more = text.split("\n", 1)[0], "…" if "\n" in text else ""
                res = (esc(line, 140) + more) if line else '<span class="empty">(empty)</span>'
                if first["kind"] != "output":
                    cls = "b-err" if first["kind"] == "error" else ""
                    res = badge(first["kind"], cls) + res
            cmd_line = (m["text"] or "").split("\n", 1)[0]
            rows.append(f'<tr><td class="nw">{self.msg_link(m["id"], fmt_ts(m["ts"], date=False))}'
                        f'</td><td><code>{esc(cmd_line, 200)}</code></td>'
                        f'<td class="small"><code>{res}</code></td></tr>')
        more = (f'<tr><td colspan="3" class="more">{len(cmds) - MAX_COMMAND_SUMMARY:,} more '
                'commands: see the timeline</td></tr>' if len(cmds) > MAX_COMMAND_SUMMARY else "")
        return (f'<details class="glance" open><summary>{esc(plural(len(cmds), "command"))} at '
                'a glance</summary><table><thead><tr><th>time (UTC)</th><th>command</th>'
                '<th>first line of its output</th></tr></thead><tbody>' + "".join(rows) + more
                + "</tbody></table></details>")

    def _timeline(self, msgs: list[dict], replies: dict, consumed: set) -> str:
        entries: list = []              # a message, or a list of check-ins folded into one
        for m in msgs:
            if m["id"] in consumed:
                continue
            if (m["kind"] == "checkin" and entries and isinstance(entries[-1], list)):
                entries[-1].append(m)
            elif m["kind"] == "checkin":
                entries.append([m])
            else:
                entries.append(m)
        out = ['<ol class="tl">']
        first_conn_starts = self._edges(msgs)
        for text in first_conn_starts[0]:
            out.append(f'<li class="edge"><div class="when"></div><div class="rail">{text}'
                       '</div></li>')
        prev_end = None
        day = None
        for e in entries:
            group = e if isinstance(e, list) else [e]
            t0 = group[0]["ts"]
            if t0 is not None:
                d = fmt_day(t0)
                if d != day:
                    out.append(f'<li class="day"><div class="when"></div><div class="rail">'
                               f'{esc(d)}</div></li>')
                    day = d
                if prev_end is not None and t0 - prev_end >= JUMP_US:
                    out.append(f'<li class="jump"><div class="when"></div><div class="rail">'
                               f'{esc(fmt_dur(t0 - prev_end))} without messages</div></li>')
            delta = (f'<span class="dt">+{esc(fmt_dur(t0 - prev_end))}</span>'
                     if prev_end is not None and t0 is not None and t0 - prev_end >= 1000
                     else "")
            when = f'<div class="when"><time>{esc(fmt_ts(t0, date=False))}</time>{delta}</div>'
            if len(group) >= GROUP_CHECKINS:
                out.append(f'<li class="k-checkin">{when}<div class="rail">'
                           f'{self._checkins(group)}</div></li>')
            else:
                m = group[0]
                out.append(f'<li class="k-{kind_class(m)}" id="{self.msg_anchor[m["id"]]}">'
                           f'{when}<div class="rail">{self._card(m, replies)}</div></li>')
            ends_ = [x["ts"] for x in group if x["ts"] is not None]
            ends_ += [r["ts"] for x in group for r in replies.get(x["id"], [])
                      if r["ts"] is not None]
            if ends_:
                prev_end = max(ends_ + ([prev_end] if prev_end is not None else []))
        for text in first_conn_starts[1]:
            out.append(f'<li class="edge"><div class="when"></div><div class="rail">{text}'
                       '</div></li>')
        out.append("</ol>")
        return "".join(out)

    def _edges(self, msgs: list[dict]) -> tuple[list[str], list[str]]:
        """Notes at the start (connections that began before the capture) and the end
        (connections still open when it ended) of a timeline."""
        start, end, seen = [], [], set()
        for m in msgs:
            cid = m["conn_id"]
            if not cid or cid in seen or cid not in self.conn_by_id:
                continue
            seen.add(cid)
            c = self.conn_by_id[cid]
            if c.get("midstream"):
                start.append(f"{self.conn_link(cid)} began before the capture did: earlier "
                             "messages may be missing")
            if c.get("end_reason") == "open_at_end":
                end.append(f"{self.conn_link(cid)} was still open when the capture ended: the "
                           "session may have gone on")
        return start, end

    def _checkins(self, group: list[dict]) -> str:
        t0, t1 = group[0]["ts"], group[-1]["ts"]
        every = ""
        if t0 is not None and t1 is not None and len(group) > 1:
            every = f", about every {fmt_dur((t1 - t0) // (len(group) - 1))}"
        problems = [self._msg_problems(m) for m in group]
        probs = sum(1 for p in problems if p)
        lines = []
        for m, mp in zip(group, problems):
            badges = "".join(badge(t, c) for t, c in mp)
            link = self.tx_link(m["tx_id"]) if m["tx_id"] else self.conn_link(m["conn_id"])
            lines.append(f'<li id="{self.msg_anchor[m["id"]]}"><time>'
                         f'{esc(fmt_ts(m["ts"], date=False))}</time>{badges}'
                         f'{esc(m["text"], 300, total=m["text_len"])} '
                         f'<span class="small">{link}</span></li>')
        summary = (f"{plural(len(group), 'check-in')}, {fmt_ts(t0, date=False, ms=False)} → "
                   f"{fmt_ts(t1, date=False, ms=False)}{every}")
        extra = (" " + badge(f"{probs} with capture gaps", "b-gap")) if probs else ""
        text = esc(group[0]["text"], 160, total=group[0]["text_len"])
        return (f'<details class="card group"><summary><span class="kind">check-in</span> '
                f'{esc(summary)}{extra} <span class="muted small">{text}</span></summary>'
                f'<ol class="sub">{"".join(lines)}</ol></details>')

    def _msg_problems(self, m: dict) -> list[tuple[str, str]]:
        out = []
        t = self.tx_by_id.get(m["tx_id"]) if m["tx_id"] else None
        if t is not None:
            out += tx_problems(t)
        f = _fields_dict(m)
        if f.get("partial") is True and not any(x[0] == "partial" for x in out):
            out.append(("partial", "b-gap"))
        return out

    def _msg_head(self, m: dict, *, reply_to: dict | None = None) -> str:
        parts = [f'<span class="kind">{esc(m["kind"], 20)}</span>']
        if reply_to is not None:
            parts.append(f'<span>{esc(fmt_ts(m["ts"], date=False))}'
                         + (f' (+{esc(fmt_dur(m["ts"] - reply_to["ts"]))} after the command)'
                            if m["ts"] is not None and reply_to["ts"] is not None
                            and m["ts"] >= reply_to["ts"] else "") + "</span>")
        if m["kind"] != "other":
            parts.append(f'<span>{esc(_ARROW.get(m["direction"], m["direction"] or "?"), 40)}'
                         "</span>")
        parts.append(f'<span>{esc(m["decoder"], 60)}</span>')
        if m["tx_id"]:
            parts.append(f"<span>{self.tx_link(m['tx_id'])}</span>")
        if m["conn_id"]:
            parts.append(f"<span>{self.conn_link(m['conn_id'])}</span>")
        if m["file"]:
            fr = m["frame_first"]
            fr = (f" #{fr}" + (f"–{m['frame_last']}" if m["frame_last"] not in (None, fr) else "")
                  if fr is not None else "")
            parts.append(f'<span class="mono small">{esc(os.path.basename(m["file"]) + fr, 120)}'
                         "</span>")
        if m["command_id"]:
            parts.append(f'<span class="cid">id {esc(m["command_id"], 60)}</span>')
        return '<div class="head">' + "".join(parts) + "</div>"

    def _msg_body(self, m: dict) -> str:
        out = []
        probs = self._msg_problems(m)
        if probs:
            out.append("<div>" + "".join(badge(t, c) for t, c in probs) + "</div>")
        if m["text"]:
            cls = "text cmd" if m["kind"] == "command" else "text"
            out.append(f'<pre class="{cls}">'
                       f'{text_block(m["text"], total=m["text_len"], budget=self.budget)}</pre>')
        else:
            out.append('<div class="empty">(empty)</div>')
        for a in m["attachments"]:
            out.append(self._attachment(a))
        fj = _fields_json(m)
        if fj:
            block = text_block(fj, total=m["fields_len"], max_chars=4000, budget=self.budget)
            out.append('<details class="fields"><summary>decoder fields</summary>'
                       f'<pre class="box">{block}</pre></details>')
        return "".join(out)

    def _attachment(self, a: dict) -> str:
        size = a.get("size")
        size_s = (f"{size:,} bytes" if isinstance(size, int) else esc(size, 40)) \
            if size is not None else "size unknown"
        return (f'<div class="att">{badge("file", "b-info")}<b>{esc(a.get("name"), 120)}</b> · '
                f'{size_s} · sha256 <span class="hash">{esc(a.get("sha256"), 80)}</span></div>')

    def _card(self, m: dict, replies: dict) -> str:
        parts = [f'<div class="card">{self._msg_head(m)}{self._msg_body(m)}']
        for r in sorted(replies.get(m["id"], []), key=lambda r: (r["ts"] or 0)):
            parts.append(f'<div class="reply k-{kind_class(r)}" '
                         f'id="{self.msg_anchor[r["id"]]}">{self._msg_head(r, reply_to=m)}'
                         f'{self._msg_body(r)}</div>')
        if m["kind"] == "command" and m["command_id"] and not replies.get(m["id"]):
            parts.append('<div class="noreply">no output for this command in this selection '
                         "(not sent yet, lost in a capture gap, or outside the filters)</div>")
        parts.append("</div>")
        return "".join(parts)

    # ---------------------------------------------------------------- files
    def _files(self) -> str:
        head = ('<section id="files"><h2>Carved files</h2><p class="note">Files the decoders '
                'found in C2 messages (the report lists them; the output does not keep their '
                'bytes: <code>c2scribe transcript --carve DIR</code> writes them).</p>')
        if not self.files.rows:
            return head + '<p class="panel muted">No carved files in this selection.</p></section>'
        rows = []
        for n, f in enumerate(self.files.rows, 1):
            a, m = f["attachment"], f["message"]
            size = a.get("size")
            fields = _fields_dict(m)
            notes = []
            if fields.get("partial") is True:
                notes.append(badge("partial", "b-gap"))
            for key, label in (("missing_bytes", "missing"), ("received_bytes", "received")):
                if isinstance(fields.get(key), int):
                    notes.append(esc(f"{label} {fields[key]:,} bytes") + " ")
            agent = (esc(m["agent"], 60) if m["agent"] is not None
                     else '<span class="muted">(no agent)</span>')
            rows.append(
                f'<tr><td class="num">{n}</td>'
                f'<td class="fname"><b>{esc(a.get("name"), 120)}</b></td>'
                f'<td class="num">{(f"{size:,}" if isinstance(size, int) else esc(size, 30))}</td>'
                f'<td class="fhash"><span class="hash">{esc(a.get("sha256"), 80)}</span></td>'
                f'<td class="nw">{esc(m["kind"], 20)}<br><span class="small">'
                f'{esc(_ARROW.get(m["direction"], m["direction"] or ""), 40)}</span></td>'
                f'<td>{agent}</td>'
                f'<td class="nw">{self.msg_link(m["id"], fmt_ts(m["ts"]))}<br>'
                f'<span class="small">{self.tx_link(m["tx_id"]) or self.conn_link(m["conn_id"])}'
                f'</span></td><td class="small fnotes">{"".join(notes)}'
                f'{esc(m["text"], 120, total=m["text_len"])}</td></tr>')
        more = (f'<p class="more">{self.files.hidden:,} more files not shown.</p>'
                if self.files.hidden else "")
        return (head + '<div class="panel"><table><thead><tr><th class="num">#</th><th>name</th>'
                '<th class="num">bytes</th><th>sha256</th><th>kind</th><th>agent</th>'
                '<th>message</th><th>notes</th></tr></thead><tbody>' + "".join(rows)
                + "</tbody></table>" + more + "</div></section>")

    # ---------------------------------------------------------------- problems
    def _problems(self) -> list[tuple[int | None, str, str, str]]:
        """(time, class, what, where) for everything that is missing or went wrong."""
        out = []
        for sec in self.messages.values():
            for m in sec.rows:
                if m["kind"] == "error":
                    out.append((m["ts"], "err", f"decoder error ({esc(m['decoder'], 60)}): "
                                + esc(m["text"], 400, total=m["text_len"]),
                                self.msg_link(m["id"], "message")))
        for t in self.transactions.rows:
            p = tx_problems(t)
            if p:
                out.append((t["ts"], "gap", "HTTP " + "".join(badge(x, c) for x, c in p)
                            + " " + esc(t["method"] or "?", 20) + " "
                            + esc(t["uri"], 200, total=t["uri_len"]),
                            self.tx_link(t["tx_id"])))
        for c in self.connections.rows:
            p = [(x, cl) for x, cl in conn_problems(c) if cl == "b-gap"]
            if p:
                out.append((c["ts"], "gap", "connection " + "".join(badge(x, cl) for x, cl in p)
                            + f" {ends(c['src_ip'], c['src_port'])} → "
                            f"{ends(c['dst_ip'], c['dst_port'])}", self.conn_link(c["conn_id"])))
        out.sort(key=lambda x: (x[0] is None, x[0] or 0))
        return out

    def _problems_section(self, problems: list) -> str:
        head = ('<section id="problems"><h2>Gaps, errors and incomplete sessions</h2>'
                '<p class="note">What the capture does not hold or the decoders could not '
                'read, in this selection: anything the attacker did there is missing from the '
                'timelines. Failures of the runs themselves are under '
                '<a href="#runs">Run warnings</a>.</p>')
        if not problems:
            return head + '<p class="panel muted">None.</p></section>'
        rows = "".join(f'<tr><td class="nw">{esc(fmt_ts(t))}</td><td>{what}</td>'
                       f'<td class="nw">{where}</td></tr>'
                       for t, _cls, what, where in problems[:MAX_PROBLEMS])
        more = (f'<p class="more">{len(problems) - MAX_PROBLEMS:,} more not shown.</p>'
                if len(problems) > MAX_PROBLEMS else "")
        return (head + '<div class="panel"><table><thead><tr><th>time (UTC)</th><th>what</th>'
                '<th>where</th></tr></thead><tbody>' + rows + "</tbody></table>" + more
                + "</div></section>")

    # ---------------------------------------------------------------- connections
    def _connections(self) -> str:
        parts = ['<section id="connections"><h2>Connections and HTTP transactions</h2>',
                 '<p class="note">Every connection of this selection, oldest first; open one '
                 'for its details and HTTP transactions, open a transaction for its headers '
                 'and bodies (the first 4 KiB of text, or a hexdump of the first 1 KiB).</p>']
        if not self.connections.rows and not self.transactions.rows:
            parts.append('<p class="panel muted">No connections in this selection.</p>')
        for c in self.connections.rows:
            parts.append(self._conn(c))
        orphans = [cid for cid in self.tx_by_conn if cid not in self.conn_by_id]
        for cid in orphans:
            parts.append(self._conn({"conn_id": cid}, placeholder=True))
        if self.connections.hidden:
            parts.append(f'<p class="more">{self.connections.hidden:,} more connections not '
                         f'shown (the report keeps the first {len(self.connections.rows):,}).'
                         "</p>")
        if self.transactions.hidden:
            parts.append(f'<p class="more">{self.transactions.hidden:,} more HTTP transactions '
                         f'not shown (the report keeps the first '
                         f'{len(self.transactions.rows):,}).</p>')
        parts.append("</section>")
        return "\n".join(parts)

    def _conn(self, c: dict, placeholder: bool = False) -> str:
        cid = c["conn_id"]
        n = self.conn_no[cid]
        txs = self.tx_by_conn.get(cid, [])
        if placeholder:
            t0 = txs[0] if txs else {}
            summary = (f'<span class="muted">#{n}</span><span class="ends mono">'
                       f'{ends(t0.get("src_ip"), t0.get("src_port"))} → '
                       f'{ends(t0.get("dst_ip"), t0.get("dst_port"))}</span><span>http</span>'
                       f'<span class="small">{esc(fmt_ts(t0.get("ts"), ms=False))}</span>'
                       f'<span>{esc(plural(len(txs), "transaction"))}</span>'
                       f'<span class="muted small">connection record not shown</span>')
            kv = ('<table class="kv"><tr><th>connection id</th>'
                  f'<td class="mono">{esc(cid, 80)}</td></tr></table>')
        else:
            probs = conn_problems(c)
            nmsg = len(self.msgs_by_conn.get(cid, []))
            summary = (f'<span class="muted">#{n}</span><span class="ends mono">'
                       f'{ends(c["src_ip"], c["src_port"])} → {ends(c["dst_ip"], c["dst_port"])}'
                       f'</span><span>{esc(c["protocol"] or c["transport"] or "tcp", 20)}</span>'
                       f'<span class="small">{esc(fmt_ts(c["ts"], ms=False))}<br>'
                       f'{esc(fmt_dur((c["ts_end"] or c["ts"] or 0) - (c["ts"] or 0)))}</span>'
                       f'<span class="small">{esc(fmt_bytes(c["src_bytes"]))} ↑ '
                       f'{esc(fmt_bytes(c["dst_bytes"]))} ↓<br>'
                       f'{esc(plural(c["http_transactions"] or 0, "HTTP transaction"))}'
                       + (f", {esc(plural(nmsg, 'message'))}" if nmsg else "") + "</span>"
                       f'<span>{"".join(badge(t, cl) for t, cl in probs)}</span>')
            kv = self._conn_kv(c)
        body = [kv]
        if txs:
            body.append("<h4>HTTP transactions</h4>")
            body.append('<div class="txh"><span></span><span>#</span><span>time</span>'
                        '<span>request</span><span>status</span><span>state, flags</span>'
                        '<span>bytes (req / resp)</span></div>')
            for t in txs[:MAX_TX_PER_CONN]:
                body.append(self._tx(t))
            if len(txs) > MAX_TX_PER_CONN:
                body.append(f'<p class="more">{len(txs) - MAX_TX_PER_CONN:,} more transactions '
                            "of this connection not shown.</p>")
        elif not placeholder and c.get("http_transactions"):
            body.append(f'<p class="note">{c["http_transactions"]:,} HTTP transactions, not in '
                        "this selection.</p>")
        return (f'<details class="conn" id="conn-{n}"><summary>{summary}</summary>'
                f'<div class="inner">{"".join(body)}</div></details>')

    def _conn_kv(self, c: dict) -> str:
        def row(k, v):
            return f"<tr><th>{esc(k)}</th><td>{v}</td></tr>"

        def where(f, a, fl=None, b=None):
            s = esc(f or "?", 500) + (f" #{a}" if a is not None else "")
            if b is not None and (fl != f or b != a):
                s += " → " + (esc(fl, 500) + " " if fl and fl != f else "") + f"#{b}"
            return f'<span class="mono small">{s}</span>'

        rows = [row("connection id", f'<span class="mono">{esc(c["conn_id"], 80)}</span>'
                    + (f' · community id <span class="mono">{esc(c["community_id"], 80)}</span>'
                       if c.get("community_id") else "")),
                row("capture", where(c["file"], c["frame_first"], c["file_last"],
                                     c["frame_last"])),
                row("time", f"{esc(fmt_ts(c['ts']))} → {esc(fmt_ts(c['ts_end']))}"),
                row("packets", esc(f"{c['src_packets'] or 0:,} from the client, "
                                   f"{c['dst_packets'] or 0:,} from the server")),
                row("bytes (IP)", esc(f"{c['src_bytes'] or 0:,} from the client, "
                                      f"{c['dst_bytes'] or 0:,} from the server")),
                row("stream bytes", esc(f"{c['c2s_stream'] or 0:,} client→server, "
                                        f"{c['s2c_stream'] or 0:,} server→client"))]
        for side, sha in (("client→server", "c2s_sha256"), ("server→client", "s2c_sha256")):
            if c.get(sha):
                rows.append(row(f"sha256 {side}", f'<span class="hash">{esc(c[sha], 80)}</span>'))
        gaps = []
        for side, g, mb in (("client→server", "c2s_gaps", "c2s_missing"),
                            ("server→client", "s2c_gaps", "s2c_missing")):
            if c.get(g) or c.get(mb):
                gaps.append(badge(f"{side}: {plural(c.get(g) or 0, 'gap')}, "
                                  f"{c.get(mb) or 0:,} bytes missing", "b-gap"))
        rows.append(row("capture gaps", "".join(gaps) or badge("none", "b-ok")))
        flags = []
        if c.get("midstream"):
            flags.append(badge("began before the capture (midstream)", "b-gap"))
        if c.get("handshake") is False:
            flags.append(badge("no handshake seen", "b-gap"))
        if c.get("orientation_guessed"):
            flags.append(badge("client/server guessed", "b-info"))
        if c.get("reassembled") is False:
            flags.append(badge("not reassembled", "b-gap"))
        if c.get("overlap_conflicts"):
            flags.append(badge(plural(c["overlap_conflicts"], "overlap conflict"), "b-gap"))
        rows.append(row("end", esc(c.get("end_reason") or "?", 40) + " "
                        + "".join(flags)))
        rows.append(row("history", f'<span class="mono">{esc(c.get("history"), 200)}</span>'))
        msgs = self.msgs_by_conn.get(c["conn_id"], [])
        if msgs:
            agents = []
            for m in msgs:
                ai = self.agent_of[m["id"]]
                if ai not in agents:
                    agents.append(ai)
            links = ", ".join(f'<a href="#agent-{ai}">'
                              f'{esc(self.agents.rows[ai - 1]["agent"] or "(no agent key)", 80)}'
                              "</a>" for ai in agents[:20])
            rows.append(row("C2 messages", esc(plural(len(msgs), "message")) + " of " + links))
        for side, key, kept in (("client→server", "c2s_data", "c2s_kept"),
                                ("server→client", "s2c_data", "s2c_kept")):
            if c.get(key):
                rows.append(row(f"kept bytes {side}", '<pre class="box">'
                                + bytes_block(c[key], total=c.get(kept), text_limit=1024,
                                              hex_limit=512, budget=self.budget) + "</pre>"))
        return '<table class="kv">' + "".join(rows) + "</table>"

    def _tx(self, t: dict) -> str:
        probs = tx_problems(t)
        status = _status(t, "-")
        phrase = esc(t["status_phrase"], 40) if t["status_phrase"] else ""
        flags = [f for f in (t["flags"] or []) if f not in _GAP_WORDS]
        state = ("".join(badge(x, c) for x, c in probs)
                 or badge(t["state"] or "?", "b-ok" if t["state"] == "complete" else ""))
        state += "".join(badge(f) for f in flags)
        req = (f'<b>{esc(t["method"] or "?", 20)}</b> '
               f'<span class="mono">{esc(t["uri"], 160, total=t["uri_len"])}</span>')
        summary = (f'<span class="muted">{t["index"] if t["index"] is not None else "?"}</span>'
                   f'<span class="mono small">{esc(fmt_ts(t["ts"], date=False))}</span>'
                   f'<span>{req}</span><span>{esc(status, 20)} '
                   f'<span class="small muted">{phrase}</span></span><span>{state}</span>'
                   f'<span class="small">{esc(fmt_bytes(t["req_bytes"]))} / '
                   f'{esc(fmt_bytes(t["resp_bytes"]))}</span>')
        return (f'<details class="tx" id="{self._tx_anchor[t["tx_id"]]}"><summary>{summary}'
                f'</summary><div class="txd">{self._tx_detail(t)}</div></details>')

    def _tx_detail(self, t: dict) -> str:
        def headers(hs, n):
            if not hs:
                return '<p class="empty">no headers</p>'
            rows = "".join(f'<tr><td class="mono"><b>{esc(h.get("name"), 200)}</b></td>'
                           f'<td class="mono">{esc(h.get("value"), 1000)}</td></tr>'
                           for h in hs)
            more = (f'<tr><td colspan="2">{cut_note((n or 0) - len(hs), "headers")}</td></tr>'
                    if n and n > len(hs) else "")
            return f"<table>{rows}{more}</table>"

        def body(data, kept, total, sha, truncated, missing, mime):
            if not total and not kept and not missing:
                return '<p class="small muted">no body</p>'
            facts = [f"body: {total or 0:,} bytes"]
            if mime:
                facts.append(esc(mime, 100))
            if sha:
                facts.append(f'sha256 <span class="hash">{esc(sha, 80)}</span>')
            if missing:
                facts.append(badge(f"{missing:,} bytes missing (capture gap)", "b-gap"))
            if (total or 0) and kept is None:
                facts.append("not stored (run with --body-keep to keep bodies)")
            elif kept is not None and total and kept < total:
                facts.append(esc(f"stored: the first {kept:,} bytes (--body-keep)"))
            elif truncated:
                facts.append(esc("stored cut (--body-keep)"))
            head = f'<p class="small muted">{" · ".join(facts)}</p>'
            if not data:
                return head
            return head + ('<pre class="box">' + bytes_block(data, total=kept,
                                                            budget=self.budget) + "</pre>")

        parts = [f'<div class="full small"><span class="muted">transaction id</span> '
                 f'<span class="mono">{esc(t["tx_id"], 80)}</span> · '
                 f'{ends(t["src_ip"], t["src_port"])} → {ends(t["dst_ip"], t["dst_port"])} · '
                 f'<span class="mono">{esc(os.path.basename(t["file"] or "?"), 200)}'
                 f' #{t["frame_first"]}–{t["frame_last"]}</span></div>']
        msgs = self.msgs_by_tx.get(t["tx_id"], [])
        if msgs:
            links = ", ".join(self.msg_link(m["id"], f"{m['kind']} {fmt_ts(m['ts'], date=False)}")
                              for m in msgs[:20])
            parts.append(f'<div class="full small"><span class="muted">C2 messages:</span> '
                         f"{links}</div>")
        parts.append('<div><h5>Request</h5><p class="mono small">'
                     f'<b>{esc(t["method"] or "?", 20)}</b> '
                     f'{esc(t["uri"], 2000, total=t["uri_len"])} '
                     f'{esc("HTTP/" + t["version"] if t["version"] else "", 20)}</p>'
                     + headers(t["req_headers"], t["req_headers_n"])
                     + body(t["req_body"], t["req_kept"], t["req_bytes"], t["req_sha256"],
                            t["req_truncated"], t["req_missing"], t["req_mime"]) + "</div>")
        parts.append('<div><h5>Response</h5><p class="mono small">'
                     f'{esc(_status(t), 40)}'
                     f' {esc(t["status_phrase"], 300)}</p>'
                     + headers(t["resp_headers"], t["resp_headers_n"])
                     + body(t["resp_body"], t["resp_kept"], t["resp_bytes"], t["resp_sha256"],
                            t["resp_truncated"], t["resp_missing"], t["resp_mime"]) + "</div>")
        return "".join(parts)

    # ---------------------------------------------------------------- runs
    def _runs(self) -> str:
        head = ('<section id="runs"><h2>Run warnings and errors</h2><p class="note">What the '
                'runs that wrote this output reported, for the whole output (these records '
                'have no time, so the filters do not apply).</p>')
        parts = []
        cap = self.runs.get("capture_error", Section())
        if cap.rows:
            rows = "".join(f'<tr><td class="mono small">{esc(r["file"], 500)}</td>'
                           f'<td class="num">{_num(r["offset"])}</td>'
                           f'<td class="num">{_num(r["packets_before"])}</td>'
                           f'<td>{esc(r["message"], 500)}</td></tr>' for r in cap.rows)
            parts.append(self._run_table(
                "Capture errors (files not read to their end)", '<th>file</th><th class="num">'
                'byte offset</th><th class="num">packets before</th><th>error</th>', rows, cap))
        dec = self.runs.get("decode_error", Section())
        if dec.rows:
            rows = "".join(f'<tr><td>{esc(r["decoder"], 60)} {esc(r["decoder_version"], 20)}</td>'
                           f'<td>{esc(r["hook"], 30)}</td><td>{esc(r["error_type"], 80)}: '
                           f'{esc(r["message"], 500)}</td><td class="small">'
                           f'{self.tx_link(r["tx_id"]) or self.conn_link(r["conn_id"])}</td></tr>'
                           for r in dec.rows)
            parts.append(self._run_table(
                "Decoder failures", "<th>decoder</th><th>hook</th><th>error</th><th>where</th>",
                rows, dec))
        warn = self.runs.get("warning", Section())
        if warn.rows:
            rows = "".join(f'<tr><td class="mono">{esc(r["code"], 60)}</td>'
                           f'<td class="num">{_num(r["count"])}</td>'
                           f'<td>{esc(r["message"], 500)}</td><td class="mono small">'
                           f'{esc(os.path.basename(r["file"]) if r["file"] else "-", 200)}'
                           + (f' #{r["frame"]}' if r["frame"] is not None else "")
                           + "</td></tr>" for r in warn.rows)
            parts.append(self._run_table(
                "Engine warnings", '<th>code</th><th class="num">count</th><th>what</th>'
                "<th>first at</th>", rows, warn))
        if not parts:
            return head + '<p class="panel muted">None.</p></section>'
        return head + '<div class="panel">' + "".join(parts) + "</div></section>"

    def _run_table(self, title: str, heads: str, rows: str, sec: Section) -> str:
        return (f"<h4>{title}</h4><table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody>"
                "</table>" + self._more(sec))

    @staticmethod
    def _more(sec: Section) -> str:
        return f'<p class="more">{sec.hidden:,} more not shown.</p>' if sec.hidden else ""


def page(title: str, body: str, css: str = CSS) -> str:
    """The document: CSP first in <head>, then the one stylesheet (its hash is in the CSP)."""
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp(css)}">\n'
            '<meta name="referrer" content="no-referrer">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="color-scheme" content="light">\n'
            f"<title>{esc(title, 300)}</title>\n"
            f"<style>{css}</style>\n"
            f"</head><body>\n{body}\n</body></html>\n")


__all__ = ["CSS", "Page", "csp", "csp_hash", "page"]
