"""What a report shows, read from an output directory with DuckDB: plain dicts, bounded.

Every query applies the report's filters (search.Filters, the same as `c2scribe search`).
Values that can be large (message text, fields, bodies, kept stream bytes, header lists) are
cut in SQL, with their full length alongside, so a 1 MB line or a 64 MB body never reaches
Python whole. Caps on the number of rows are applied here too; each loader says how many rows
there were in all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..outputs import Output, q
from ..search import Filters

# how much of one value is read (the renderer shows less still)
TEXT_READ = 16_001          # characters of a message's text
FIELDS_READ = 4_001         # characters of a message's fields (JSON)
URI_READ = 2_001            # characters of a URL
BODY_READ = 4_097           # bytes of an HTTP body (one more than is shown: "more" is known)
STREAM_READ = 1_025         # bytes of a connection's kept stream
HEADERS_READ = 100          # headers of one message

# how many rows a report holds, at most
MAX_AGENTS = 100
MAX_MESSAGES_PER_AGENT = 2_000
MAX_MESSAGES = 6_000         # of all agents together
MAX_CONNECTIONS = 500
MAX_TRANSACTIONS = 1_000
MAX_FILES = 1_000
MAX_RUN_RECORDS = 200        # warnings, capture errors, decode errors (each)

_TS = q("event.start")


def _us(col: str) -> str:
    return f"epoch_us({q(col)})"


def _seq(idcol: str) -> str:
    """The sequence number a record id ends with (messages of one connection, in order)."""
    return f"TRY_CAST(regexp_extract({q(idcol)}, '-([0-9]+)$', 1) AS BIGINT)"


def _n_attachments() -> str:
    """How many attachments a message has (0 when the column is not valid JSON)."""
    a = q("c2scribe.c2.attachments")
    return f"(CASE WHEN json_valid({a}) THEN coalesce(json_array_length({a}), 0) ELSE 0 END)"


def _where(conds: list[str]) -> str:
    return (" WHERE " + " AND ".join(f"({c})" for c in conds)) if conds else ""


@dataclass
class Section:
    """Rows of one kind, and how many there were before the cap."""
    rows: list[dict] = field(default_factory=list)
    total: int = 0
    sums: dict = field(default_factory=dict)     # totals over all rows, not just those kept

    @property
    def hidden(self) -> int:
        return max(0, self.total - len(self.rows))


# ------------------------------------------------------------------------------------ C2

_MSG_COLS = {
    "id": "c2scribe.c2.id", "decoder": "c2scribe.decoder.name",
    "decoder_version": "c2scribe.decoder.version", "family": "threat.software.name",
    "agent": "c2scribe.c2.agent", "direction": "c2scribe.c2.direction",
    "kind": "c2scribe.c2.kind", "command_id": "c2scribe.c2.command_id",
    "attachments": "c2scribe.c2.attachments", "conn_id": "c2scribe.connection.id",
    "tx_id": "c2scribe.http.id", "src_ip": "source.ip", "src_port": "source.port",
    "dst_ip": "destination.ip", "dst_port": "destination.port",
    "file": "c2scribe.capture.file", "frame_first": "c2scribe.capture.frame_first",
    "frame_last": "c2scribe.capture.frame_last",
}


def _msg_select() -> str:
    cols = [f"{q(ext)} AS {name}" for name, ext in _MSG_COLS.items()]
    cols += [f"{_us('event.start')} AS ts",
             f"substr({q('message')}, 1, {TEXT_READ}) AS text",
             f"length({q('message')}) AS text_len",
             f"substr({q('c2scribe.c2.fields')}, 1, {FIELDS_READ}) AS fields",
             f"length({q('c2scribe.c2.fields')}) AS fields_len"]
    return ", ".join(cols)


def _msg_order() -> str:
    return (f"{_TS} NULLS LAST, {q('c2scribe.connection.id')}, {_seq('c2scribe.c2.id')}, "
            f"{q('c2scribe.c2.id')}")


def _parse_json(text: str | None, default):
    if not text:
        return default
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return default


def _finish_message(m: dict) -> dict:
    atts = _parse_json(m["attachments"], [])
    m["attachments"] = [a for a in atts if isinstance(a, dict)] if isinstance(atts, list) else []
    return m


def load_agents(out: Output, filters: Filters) -> Section:
    """One row per agent (None: messages without one), ordered by first message."""
    if not out.has("c2"):
        return Section()
    params: list = []
    conds = filters.where(out, "c2", params)
    kind = q("c2scribe.c2.kind")
    sql = (f"SELECT {q('c2scribe.c2.agent')} AS agent, min({_us('event.start')}) AS first, "
           f"max({_us('event.start')}) AS last, count(*) AS messages, "
           f"count(*) FILTER (WHERE {kind} = 'command') AS commands, "
           f"count(*) FILTER (WHERE {kind} = 'output') AS outputs, "
           f"count(*) FILTER (WHERE {kind} = 'checkin') AS checkins, "
           f"count(*) FILTER (WHERE {kind} = 'error') AS errors, "
           f"count(*) FILTER (WHERE {kind} IN ('upload', 'download')) AS transfers, "
           f"count(DISTINCT {q('c2scribe.connection.id')}) AS connections, "
           f"list(DISTINCT {q('c2scribe.decoder.name')} || ' ' || "
           f"coalesce({q('c2scribe.decoder.version')}, '')) AS decoders, "
           f"list(DISTINCT {q('threat.software.name')}) "
           f"FILTER (WHERE {q('threat.software.name')} IS NOT NULL) AS families, "
           f"list(DISTINCT {q('source.ip')}) FILTER (WHERE {q('source.ip')} IS NOT NULL) "
           f"AS src_ips, "
           f"sum({_n_attachments()}) AS files "
           f"FROM c2{_where(conds)} GROUP BY 1 ORDER BY 2 NULLS LAST, 1 NULLS LAST")
    rows = out.rows(sql, params)
    for r in rows:
        r["decoders"] = sorted(d.strip() for d in r["decoders"] or [])
        r["families"] = sorted(r["families"] or [])
        r["src_ips"] = sorted(r["src_ips"] or [])
        r["files"] = int(r["files"] or 0)
    sums = {k: sum(r[k] for r in rows) for k in ("messages", "commands", "outputs", "checkins",
                                                  "errors", "transfers", "files")}
    return Section(rows[:MAX_AGENTS], len(rows), sums)


def load_messages(out: Output, filters: Filters, agent: str | None, total: int,
                  limit: int | None = None) -> Section:
    """The messages of one agent in time order (across connections), the first `limit`
    (at most MAX_MESSAGES_PER_AGENT) of its `total` (load_agents' count)."""
    limit = MAX_MESSAGES_PER_AGENT if limit is None else min(limit, MAX_MESSAGES_PER_AGENT)
    params: list = []
    conds = filters.where(out, "c2", params)
    if agent is None:
        conds.append(f"{q('c2scribe.c2.agent')} IS NULL")
    else:
        conds.append(f"{q('c2scribe.c2.agent')} = ?")
        params.append(agent)
    if limit <= 0:
        return Section([], total)
    rows = out.rows(f"SELECT {_msg_select()} FROM c2{_where(conds)} ORDER BY {_msg_order()} "
                    f"LIMIT {int(limit)}", params)
    return Section([_finish_message(r) for r in rows], total)


def load_files(out: Output, filters: Filters) -> Section:
    """Every attachment of the selected messages, with the message it came with."""
    if not out.has("c2"):
        return Section()
    params: list = []
    conds = filters.where(out, "c2", params)
    conds.append(f"{_n_attachments()} > 0")
    rows = out.rows(f"SELECT {_msg_select()} FROM c2{_where(conds)} ORDER BY {_msg_order()} "
                    f"LIMIT {MAX_FILES + 1}", params)
    files = []
    for m in rows:
        _finish_message(m)
        for a in m["attachments"]:
            files.append({"attachment": a, "message": m})
    total_sql = f"SELECT coalesce(sum({_n_attachments()}), 0) AS n FROM c2{_where(conds)}"
    total = out.rows(total_sql, params)[0]["n"]
    return Section(files[:MAX_FILES], int(total))


# ------------------------------------------------------------------------- HTTP, TCP

_TX_COLS = {
    "conn_id": "c2scribe.connection.id", "tx_id": "c2scribe.http.id",
    "index": "c2scribe.http.index", "method": "http.request.method",
    "version": "http.version", "host": "c2scribe.http.request.host",
    "url_domain": "url.domain", "user_agent": "user_agent.original",
    "status_code": "http.response.status_code", "status_text": "c2scribe.http.response.status",
    "status_phrase": "c2scribe.http.response.status_phrase",
    "state": "c2scribe.http.state", "flags": "c2scribe.http.flags",
    "tunnel": "c2scribe.http.tunnel", "src_ip": "source.ip", "src_port": "source.port",
    "dst_ip": "destination.ip", "dst_port": "destination.port",
    "file": "c2scribe.capture.file", "frame_first": "c2scribe.capture.frame_first",
    "frame_last": "c2scribe.capture.frame_last",
    "req_mime": "http.request.mime_type", "resp_mime": "http.response.mime_type",
    "req_bytes": "http.request.body.bytes", "resp_bytes": "http.response.body.bytes",
    "req_sha256": "c2scribe.http.request.body.sha256",
    "resp_sha256": "c2scribe.http.response.body.sha256",
    "req_truncated": "c2scribe.http.request.body.truncated",
    "resp_truncated": "c2scribe.http.response.body.truncated",
    "req_missing": "c2scribe.http.request.missing_bytes",
    "resp_missing": "c2scribe.http.response.missing_bytes",
}


def _tx_select() -> str:
    cols = [f"{q(ext)} AS {name}" for name, ext in _TX_COLS.items()]
    rb, sb = q("c2scribe.http.request.body.content"), q("c2scribe.http.response.body.content")
    cols += [f"{_us('event.start')} AS ts", f"{_us('event.end')} AS ts_end",
             f"substr({q('url.original')}, 1, {URI_READ}) AS uri",
             f"length({q('url.original')}) AS uri_len",
             f"{q('c2scribe.http.request.headers')}[1:{HEADERS_READ}] AS req_headers",
             f"len({q('c2scribe.http.request.headers')}) AS req_headers_n",
             f"{q('c2scribe.http.response.headers')}[1:{HEADERS_READ}] AS resp_headers",
             f"len({q('c2scribe.http.response.headers')}) AS resp_headers_n",
             f"({rb})[1:{BODY_READ}] AS req_body", f"octet_length({rb}) AS req_kept",
             f"({sb})[1:{BODY_READ}] AS resp_body", f"octet_length({sb}) AS resp_kept"]
    return ", ".join(cols)


def _load_linked(out: Output, filters: Filters, view: str, id_col: str, ids: set[str],
                 select: str, order: str, limit: int) -> Section:
    """Rows the filters select, plus the ones (by id) that a shown record points at."""
    if not out.has(view):
        return Section()
    params: list = []
    conds = filters.where(out, view, params)
    sel = " AND ".join(f"({c})" for c in conds) if conds else "true"
    where = f" WHERE ({sel}) OR list_contains(?, {q(id_col)})"
    params.append(sorted(ids))
    total = out.rows(f"SELECT count(*) AS n FROM {view}{where}", params)[0]["n"]
    rows = out.rows(f"SELECT {select} FROM {view}{where} ORDER BY {order} LIMIT {limit}",
                    params)
    return Section(rows, total)


def load_transactions(out: Output, filters: Filters, tx_ids: set[str]) -> Section:
    """HTTP transactions the filters select, or that a shown message came from."""
    order = (f"{_TS} NULLS LAST, {q('c2scribe.connection.id')}, "
             f"{q('c2scribe.http.index')}")
    return _load_linked(out, filters, "http", "c2scribe.http.id", tx_ids, _tx_select(),
                        order, MAX_TRANSACTIONS)


_CONN_COLS = {
    "conn_id": "c2scribe.connection.id", "community_id": "network.community_id",
    "src_ip": "source.ip", "src_port": "source.port", "dst_ip": "destination.ip",
    "dst_port": "destination.port", "transport": "network.transport",
    "protocol": "network.protocol", "file": "c2scribe.capture.file",
    "frame_first": "c2scribe.capture.frame_first", "file_last": "c2scribe.capture.file_last",
    "frame_last": "c2scribe.capture.frame_last", "src_packets": "source.packets",
    "dst_packets": "destination.packets", "src_bytes": "source.bytes",
    "dst_bytes": "destination.bytes",
    "c2s_stream": "c2scribe.tcp.client_to_server.stream_bytes",
    "s2c_stream": "c2scribe.tcp.server_to_client.stream_bytes",
    "c2s_sha256": "c2scribe.tcp.client_to_server.sha256",
    "s2c_sha256": "c2scribe.tcp.server_to_client.sha256",
    "c2s_gaps": "c2scribe.tcp.client_to_server.gaps",
    "s2c_gaps": "c2scribe.tcp.server_to_client.gaps",
    "c2s_missing": "c2scribe.tcp.client_to_server.missing_bytes",
    "s2c_missing": "c2scribe.tcp.server_to_client.missing_bytes",
    "overlap_conflicts": "c2scribe.tcp.overlap_conflicts",
    "history": "c2scribe.connection.history", "handshake": "c2scribe.connection.handshake",
    "midstream": "c2scribe.connection.midstream",
    "orientation_guessed": "c2scribe.connection.orientation_guessed",
    "reassembled": "c2scribe.connection.reassembled",
    "end_reason": "c2scribe.connection.end_reason",
    "http_transactions": "c2scribe.connection.http_transactions",
    "engine": "c2scribe.engine",
}


def _conn_select() -> str:
    cols = [f"{q(ext)} AS {name}" for name, ext in _CONN_COLS.items()]
    cs, sc = (q("c2scribe.tcp.client_to_server.content"),
              q("c2scribe.tcp.server_to_client.content"))
    cols += [f"{_us('event.start')} AS ts", f"{_us('event.end')} AS ts_end",
             f"({cs})[1:{STREAM_READ}] AS c2s_data", f"octet_length({cs}) AS c2s_kept",
             f"({sc})[1:{STREAM_READ}] AS s2c_data", f"octet_length({sc}) AS s2c_kept"]
    return ", ".join(cols)


def load_connections(out: Output, filters: Filters, conn_ids: set[str]) -> Section:
    """Connections the filters select, or that a shown message or transaction came over."""
    order = f"{_TS} NULLS LAST, {q('c2scribe.connection.id')}"
    return _load_linked(out, filters, "connection", "c2scribe.connection.id", conn_ids,
                        _conn_select(), order, MAX_CONNECTIONS)


# ------------------------------------------------------------------------------ runs

def load_run_records(out: Output) -> dict[str, Section]:
    """Warnings, capture errors and decode errors of every run in the output (no filter:
    they have no time of their own)."""
    spec = {
        "warning": ("code", "c2scribe.warning.code", "count", "c2scribe.warning.count",
                    "message", "message", "file", "c2scribe.capture.file",
                    "frame", "c2scribe.capture.frame_first"),
        "capture_error": ("file", "c2scribe.capture.file", "offset", "c2scribe.capture.offset",
                          "packets_before", "c2scribe.capture.packets_before",
                          "message", "error.message"),
        "decode_error": ("decoder", "c2scribe.decoder.name",
                         "decoder_version", "c2scribe.decoder.version",
                         "hook", "c2scribe.decoder.hook", "error_type", "error.type",
                         "message", "error.message", "conn_id", "c2scribe.connection.id",
                         "tx_id", "c2scribe.http.id", "file", "c2scribe.capture.file",
                         "frame", "c2scribe.capture.frame_first"),
    }
    res = {}
    for ds, pairs in spec.items():
        if not out.has(ds):
            res[ds] = Section()
            continue
        names, cols = pairs[0::2], pairs[1::2]
        sel = ", ".join(f"substr(CAST({q(c)} AS VARCHAR), 1, 2001) AS {n}"
                        if n in ("message", "file") else f"{q(c)} AS {n}"
                        for n, c in zip(names, cols))
        order = "2 DESC, 1" if ds == "warning" else "1"
        total = out.count(ds)
        rows = out.rows(f"SELECT {sel} FROM {ds} ORDER BY {order} LIMIT {MAX_RUN_RECORDS}")
        res[ds] = Section(rows, total)
    return res


def totals(out: Output) -> dict[str, int]:
    """Records per dataset in the whole output, whatever the filters."""
    return {name: out.count(name) for name in ("c2", "http", "connection")}
