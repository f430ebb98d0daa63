"""`c2scribe search`: full-text search over the output of `c2scribe run`, with DuckDB.

Three datasets are searched: C2 messages (text, fields, agent, attachments' names and
hashes), HTTP transactions (method, URL, host, headers, user agent, bodies) and connections
(addresses, kept stream bytes). Every word of the query must appear, case-insensitively,
in one record. Filters (time, host, address, agent, decoder) apply to all three: a
transaction or connection is an agent's or a decoder's when one of its C2 messages is. Each
result names its capture file and frames, so the packets are one `tshark -r FILE -Y
frame.number==N` away. Bytes are searched as their text form (DuckDB shows bytes that are not
ASCII as \\xNN): ASCII words find matches in binary bodies too.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import sys
from dataclasses import dataclass, field

from .outputs import Output, OutputError, q
from .render.jsonl import dumps
from .render.safe import safe_line
from .schema import parse_iso

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2
SNIPPET = 160


def parse_time(text: str) -> int:
    """YYYY-MM-DD or an ISO time (UTC unless it says otherwise) -> microseconds."""
    try:
        return parse_iso(text)
    except ValueError as e:
        raise OutputError(str(e)) from None


@dataclass
class Filters:
    """What a search or a report is restricted to."""
    since_us: int | None = None
    until_us: int | None = None
    hosts: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    decoders: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args) -> "Filters":
        f = cls(since_us=parse_time(args.since) if args.since else None,
                until_us=parse_time(args.until) if args.until else None,
                hosts=list(args.host or []), ips=list(args.ip or []),
                agents=list(args.agent or []), decoders=list(args.decoder or []))
        for ip in f.ips:
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise OutputError(f"--ip {ip!r}: not an address or CIDR block") from None
        return f

    def where(self, out: Output, ds: str, params: list) -> list[str]:
        """SQL conditions on the rows of dataset ds (a view of out), params appended."""
        conds = []
        if self.since_us is not None:
            conds.append(f'{q("event.start")} >= make_timestamptz(?)')
            params.append(self.since_us)
        if self.until_us is not None:
            conds.append(f'{q("event.start")} < make_timestamptz(?)')
            params.append(self.until_us)
        if self.ips:
            _register_in_net(out)
            one = " OR ".join(f"c2scribe_in_net({q(side)}, ?)" for side in
                              ("source.ip", "destination.ip") for _ in self.ips)
            conds.append(f"({one})")
            params.extend(ip for _side in (0, 1) for ip in self.ips)
        if self.hosts:
            link = _link(ds, "h", "http")
            if link is None or not out.has("http"):
                conds.append("false")
            else:
                pats = [_rx(fnmatch.translate(h.lower())) for h in self.hosts]
                alias = "" if ds == "http" else "h."      # http rows: the row itself
                match = " OR ".join(
                    f"regexp_full_match(lower(coalesce({alias}{q(col)}, '')), ?)"
                    for _ in pats for col in ("url.domain", "c2scribe.http.request.host"))
                params.extend(p for p in pats for _col in (0, 1))
                conds.append(f"({match})" if ds == "http" else
                             f"EXISTS (SELECT 1 FROM http h WHERE {link} AND ({match}))")
        if self.agents or self.decoders:
            if ds != "c2" and not out.has("c2"):
                conds.append("false")
                return conds
            alias = "" if ds == "c2" else "m."
            sub = []
            if self.agents:
                sub.append(f"{alias}{q('c2scribe.c2.agent')} IN "
                           f"({', '.join('?' * len(self.agents))})")
                params.extend(self.agents)
            if self.decoders:
                sub.append(f"{alias}{q('c2scribe.decoder.name')} IN "
                           f"({', '.join('?' * len(self.decoders))})")
                params.extend(self.decoders)
            conds.append(" AND ".join(sub) if ds == "c2" else
                         f"EXISTS (SELECT 1 FROM c2 m WHERE {_link(ds, 'm', 'c2')} AND "
                         f"{' AND '.join(sub)})")
        return conds


def _rx(translated: str) -> str:
    """fnmatch.translate's regex ((?s:...)\\Z) as one RE2 full match can take."""
    return translated.replace(r"\Z", "")


def _link(ds: str, alias: str, other: str) -> str | None:
    """How a row of ds joins rows of other (alias): by transaction, or by connection."""
    tx, conn = q("c2scribe.http.id"), q("c2scribe.connection.id")
    if ds == other:
        return "true"                  # the caller tests the row itself
    if {ds, other} == {"c2", "http"}:
        return f"{alias}.{tx} = {ds}.{tx}"
    if other in ("c2", "http") and ds in ("c2", "http", "connection"):
        return f"{alias}.{conn} = {ds}.{conn}"
    return None


def _register_in_net(out: Output) -> None:
    if getattr(out, "_in_net", False):
        return
    nets: dict[str, object] = {}

    def in_net(ip: str | None, spec: str) -> bool:
        if ip is None:
            return False
        n = nets.get(spec)
        if n is None:
            n = nets[spec] = ipaddress.ip_network(spec, strict=False)
        try:
            return ipaddress.ip_address(ip) in n
        except ValueError:
            return False

    out.con.create_function("c2scribe_in_net", in_net, ["VARCHAR", "VARCHAR"], "BOOLEAN",
                            null_handling="special")
    out._in_net = True


#: what each dataset is searched in, and how a result describes itself
_HAY = {
    "c2": ["message", "c2scribe.c2.fields", "c2scribe.c2.agent", "c2scribe.c2.command_id",
           "threat.software.name", "c2scribe.c2.attachments"],
    "http": ["http.request.method", "url.original", "url.domain", "c2scribe.http.request.host",
             "user_agent.original", "c2scribe.http.request.x_forwarded_for",
             "c2scribe.http.response.status", "c2scribe.http.request.headers",
             "c2scribe.http.response.headers", "c2scribe.http.request.body.content",
             "c2scribe.http.response.body.content"],
    "connection": ["source.ip", "destination.ip", "network.protocol",
                   "c2scribe.tcp.client_to_server.content",
                   "c2scribe.tcp.server_to_client.content"],
}
_SHOW = {
    "c2": ["event.start", "c2scribe.decoder.name", "c2scribe.c2.agent", "c2scribe.c2.kind",
           "c2scribe.c2.direction", "message", "c2scribe.c2.id", "c2scribe.http.id",
           "c2scribe.connection.id", "source.ip", "source.port", "destination.ip",
           "destination.port", "c2scribe.capture.file", "c2scribe.capture.frame_first",
           "c2scribe.capture.frame_last"],
    "http": ["event.start", "http.request.method", "url.original", "url.domain",
             "http.response.status_code", "c2scribe.http.state", "c2scribe.http.id",
             "c2scribe.connection.id", "source.ip", "source.port", "destination.ip",
             "destination.port", "c2scribe.capture.file", "c2scribe.capture.frame_first",
             "c2scribe.capture.frame_last"],
    "connection": ["event.start", "network.protocol", "c2scribe.connection.end_reason",
                   "source.bytes", "destination.bytes", "c2scribe.connection.id", "source.ip",
                   "source.port", "destination.ip", "destination.port",
                   "c2scribe.capture.file", "c2scribe.capture.frame_first",
                   "c2scribe.capture.frame_last"],
}


def _haystack(ds: str) -> str:
    return "concat_ws(' ', " + ", ".join(f"CAST({q(c)} AS VARCHAR)" for c in _HAY[ds]) + ")"


def _like(word: str) -> str:
    return "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search(out: Output, query: str, filters: Filters, datasets=("c2", "http", "connection"),
           limit: int = 100) -> list[dict]:
    """The matching records, oldest first, each a dict: dataset, the fields of _SHOW, and a
    snippet around the first word of the query."""
    words = query.split()
    results = []
    for ds in datasets:
        if not out.has(ds):
            continue
        params: list = []
        hay = _haystack(ds)
        conds = [f"lower({hay}) LIKE ? ESCAPE '\\'" for _ in words]
        for w in words:
            params.append(_like(w))
        conds += filters.where(out, ds, params)
        snippet = "NULL"
        sparams: list = []
        if words:
            snippet = (f"substr({hay}, greatest(1, instr(lower({hay}), ?) - 50), {SNIPPET})")
            sparams = [words[0].lower()]
        sql = (f"SELECT {', '.join(q(c) for c in _SHOW[ds])}, {snippet} AS snippet FROM {ds}"
               + (f" WHERE {' AND '.join(conds)}" if conds else "")
               + f' ORDER BY {q("event.start")} NULLS LAST LIMIT {int(limit)}')
        for row in out.rows(sql, sparams + params):
            row["dataset"] = ds
            results.append(row)
    results.sort(key=lambda r: (r["event.start"] is None, r["event.start"] or 0))
    return results[:limit]


def _summary(r: dict) -> str:
    ds = r["dataset"]
    if ds == "c2":
        return (f"[{r['c2scribe.decoder.name']}] {r['c2scribe.c2.agent'] or '?'} "
                f"{r['c2scribe.c2.kind']}: {r['message']}")
    if ds == "http":
        return (f"{r['http.request.method'] or '-'} {r['url.original'] or '-'} -> "
                f"{r['http.response.status_code'] or '-'} ({r['url.domain'] or '?'})")
    return (f"{r['network.protocol'] or 'tcp'} {r['source.bytes']}/{r['destination.bytes']} "
            f"bytes, {r['c2scribe.connection.end_reason']}")


def _where(r: dict) -> str:
    f, a, b = (r["c2scribe.capture.file"], r["c2scribe.capture.frame_first"],
               r["c2scribe.capture.frame_last"])
    return f"{f or '?'}#{a}" + (f"-{b}" if b and b != a else "")


def _jsonable(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        if isinstance(v, dt.datetime):
            v = v.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        out[k] = v
    return out


def print_table(results: list[dict], fp=sys.stdout) -> None:
    for r in results:
        t = r["event.start"]
        when = t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "-"
        ends = (f"{r['source.ip']}:{r['source.port']} > {r['destination.ip']}:"
                f"{r['destination.port']}")
        fp.write(f"{when}  {r['dataset']:<10} {safe_line(ends, 90)}  {safe_line(_where(r), 200)}\n")
        fp.write(f"    {safe_line(_summary(r), 300)}\n")
        if r.get("snippet"):
            fp.write(f"    … {safe_line(r['snippet'], SNIPPET)} …\n")


def run_search_command(args) -> int:
    try:
        filters = Filters.from_args(args)
        with Output(args.output_dir) as out:
            results = search(out, args.query, filters, tuple(args.datasets) or
                             ("c2", "http", "connection"), args.limit)
    except OutputError as e:
        print(f"c2scribe search: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "jsonl":
        for r in results:
            sys.stdout.write(dumps(_jsonable(r)).decode("ascii") + "\n")
    else:
        print_table(results)
    print(f"c2scribe search: {len(results)} result(s)"
          + (f" (the first {args.limit}; --limit for more)" if len(results) >= args.limit else ""),
          file=sys.stderr)
    return EXIT_OK if results else EXIT_NOTHING


__all__ = ["Filters", "parse_time", "run_search_command", "search"]
