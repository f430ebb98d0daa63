"""The sans-IO engine: capture bytes (or packets) in, records out.

Wires capture parsing, link-layer normalisation, reassembly and HTTP parsing (all in C, see
c2scribe/_core) and turns what comes out into schema records. No file, thread, Beam or
printing here: the CLI, the Beam DoFn and the tests all drive this same object.

Two reassembly engines sit behind the same records: ``native`` (c2scribe's own: IPv4 and IPv6,
fragments, mid-stream pickup, gaps, overlap policies) and ``nids`` (libnids: IPv4, a handshake
needed, a lost segment stalls its direction). Only one Engine may be live at a time (libnids
is one global state per process, and the C side reaches the engine through a global);
finish() it (or let it go) before making the next.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from . import _core
from .errors import ConfigError
from .render.jsonl import dumps
from .schema import (_DATASET, CORE_KEYS, SCHEMA_VERSION, CaptureError, Connection,
                     ConnectionEnd, EngineWarning, Record, from_core, json_from_core)

_core.set_key_names(CORE_KEYS, SCHEMA_VERSION)
_COLUMNAR = ("connection", "http")      # the kinds Engine(columns=True) gives as batches

ENGINES = ("native", "nids")
#: Overlap policies (Suricata's host-os-policy names) for TCP segments and IP fragments.
TCP_POLICIES = ("first", "last", "bsd", "linux", "old-linux", "solaris", "hpux11", "hpux10",
                "irix", "macos", "windows", "windows2k3", "vista", "bsd-right", "old-solaris")
FRAG_POLICIES = ("first", "last", "bsd", "linux", "windows", "solaris")

#: Counters that mean something was skipped or could not be done, with what to tell the user.
WARNINGS = {
    "unsupported_link_type": "frames of a link type c2scribe does not decode were skipped",
    "truncated_link_header": "frames too short for their link-layer header were skipped",
    "ipv6_tcp_not_reassembled": "IPv6 TCP packets: connections are reported, but the nids "
                                "engine cannot reassemble IPv6",
    "ipv6_fragments_skipped": "IPv6 fragments were skipped (nids engine: IPv4 only)",
    "tcp_bad_header": "TCP/IP packets with an impossible header were skipped",
    "nids_ip_bad_header": "libnids dropped IPv4 packets with a bad header or truncated by the snap length",
    "nids_ip_source_route": "libnids dropped IPv4 packets with source-route options",
    "nids_ip_oversized": "libnids dropped oversized reassembled IPv4 fragments",
    "nids_ip_invalid_fragment_list": "libnids dropped invalid IPv4 fragment lists",
    "nids_ip_fragment_overlap": "libnids saw overlapping IPv4 fragments",
    "nids_tcp_bad_header": "libnids dropped TCP segments with a bad header",
    "nids_tcp_too_many_streams": "libnids' stream table was full: oldest streams were evicted",
    "nids_tcp_out_of_order_queue_overflow": "more than 64 KiB queued out of order: libnids "
                                            "dropped the queue (capture loss?)",
    "nids_tcp_bad_flags": "libnids saw TCP segments with bad flags",
    "nids_other": "other libnids warnings",
    "flows_evicted": "the connection table was full: oldest connections were ended early",
    "http_unparsed_bytes_dropped": "bytes libhtp could not consume in time were dropped",
    "http_parser_errors": "libhtp stopped parsing a direction of a connection after an error",
    "time_went_backwards": "packets with a timestamp earlier than the previous packet",
    # the native engine
    "ip_fragment_timeouts": "IP datagrams whose fragments never all arrived (timed out in capture "
                            "time) were dropped",
    "ip_fragment_conflicts": "overlapping IP fragments carried different bytes (resolved by the "
                             "fragment policy)",
    "ip_fragments_evicted": "the IP fragment table was full: oldest incomplete datagrams dropped",
    "ip_fragments_malformed": "malformed IP fragments were dropped",
    "ip_fragments_too_many": "IP datagrams with too many fragments were dropped",
    "tcp_gaps": "holes in TCP streams (bytes the capture does not hold) were skipped; the "
                "connection records count them (c2scribe.tcp.*.missing_bytes)",
    "tcp_overlap_conflicts": "overlapping TCP segments carried different bytes (resolved by the "
                             "overlap policy; connection records keep samples of both copies)",
    "tcp_out_of_window": "TCP segments or acknowledgements far outside their stream were ignored",
    "tcp_connection_memcap": "a connection held more unacknowledged or out-of-order bytes than "
                             "its limit: they were handed over early",
    "tcp_total_memcap": "all connections held more bytes than the engine's limit: the oldest "
                        "were handed over early",
    "tcp_unacked_flushes": "bytes never acknowledged by the receiver were handed over after a "
                           "delay (ACKs missing from the capture?)",
    "http_gap_resyncs": "a capture gap broke an HTTP message: it was closed and parsing went on "
                        "from the next message",
    "http_bytes_skipped_after_gap": "bytes after an HTTP gap were skipped until a message started",
    "http_gap_fill_budget": "HTTP gaps were not filled with zeros because the zeros already "
                            "fed reached 256 MiB + 4x the capture bytes read: those messages "
                            "were closed at the gap",
}


#: bytes of each direction of a connection that is not HTTP that the text transcript shows
#: and `c2scribe run` stores by default (raw TCP C2 stays searchable)
STREAM_KEEP = 4096


@dataclass(frozen=True)
class EngineOptions:
    """Limits of one engine. Sizes in bytes, times in seconds of capture time."""
    stream_keep: int = 0                 # reassembled bytes kept per direction (records)
    stream_keep_http: bool = False       # ... for HTTP connections too (their messages are in
                                         # the HTTP records; by default their bytes are not)
    body_keep: int = 65536               # decoded HTTP body bytes kept per message
    http_pending_max: int = 1 << 20      # unconsumed bytes libhtp may leave per direction
    bomb_limit: int = 64 << 20           # libhtp decompression bomb limit
    decompress_time_limit: int = 100_000  # libhtp decompression time limit, microseconds
    idle_timeout: float = 300.0          # connections the engine does not follow
    established_timeout: float = 3600.0  # connections the engine follows
    linger: float = 2.0                  # after FIN/RST, trailing packets still counted
    max_flows: int = 1 << 18             # connections tracked at once (oldest evicted)
    nids_streams: int = 1 << 16          # libnids stream hash size (3/4 of it usable)
    nids_hosts: int = 4096               # libnids IP fragment host table
    # A time window (µs since the epoch, both or neither): report only the connections whose
    # first packet falls in [window_start_us, window_end_us). Reading starts `preroll` seconds
    # before the window (connections seen then began earlier: another window reports them)
    # and stops once the window's connections have ended, or `lookahead` seconds after it;
    # connections still open then end as "window_cut". A connection silent for longer than
    # `preroll` across the window's end ends there as "window_idle" (the next window reports
    # what follows). See docs/pipeline.md.
    window_start_us: int | None = None
    window_end_us: int | None = None
    lookahead: float = 3600.0
    preroll: float = 600.0
    window_last_edge_us: int | None = None   # where the last (open-ended) window starts
    # Reassembly: "native" or "nids"; the rest applies to the native engine only.
    engine: str = "native"
    tcp_policy: str = "bsd"              # which copy of overlapping TCP bytes wins (TCP_POLICIES)
    frag_policy: str = "first"           # ... of overlapping IP fragments (FRAG_POLICIES)
    frag_timeout: float = 60.0           # incomplete IP datagrams are dropped after this
    tcp_conn_max: int = 8 << 20          # bytes held (not yet acknowledged, or out of order)
    tcp_total_max: int = 512 << 20       # ... per connection, and by all connections
    frag_max: int = 32 << 20             # IP fragment bytes held
    hole_timeout: float = 5.0            # a hole with bytes held behind it is skipped after this
    # "CIDR=POLICY" (most specific first wins): the TCP overlap policy of the hosts in a block
    # (as Suricata's host-os-policy); others get tcp_policy
    host_policies: tuple[str, ...] = ()


def parse_host_policies(specs) -> tuple:
    """("10.0.0.0/8=linux", ...) -> ((4, 16-byte address, 8, "linux"), ...), most specific
    first; ConfigError on a bad block or an unknown policy."""
    out = []
    for spec in specs:
        cidr, sep, policy = str(spec).partition("=")
        if not sep or policy not in TCP_POLICIES:
            raise ConfigError(f"host policy {spec!r}: expected CIDR=POLICY with POLICY one of "
                              f"{', '.join(TCP_POLICIES)}")
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as e:
            raise ConfigError(f"host policy {spec!r}: {e}") from None
        out.append((net.version, net.network_address.packed.ljust(16, b"\0"), net.prefixlen,
                    policy))
    out.sort(key=lambda t: -t[2])
    return tuple(out)


def check_options(opts: EngineOptions) -> tuple:
    """ConfigError on an unknown engine or policy or a bad host-policy block (so that a run
    can refuse its options before it starts); the parsed host policies."""
    if opts.engine not in ENGINES:
        raise ConfigError(f"unknown engine {opts.engine!r} (one of {', '.join(ENGINES)})")
    if opts.tcp_policy not in TCP_POLICIES:
        raise ConfigError(f"unknown TCP overlap policy {opts.tcp_policy!r} "
                          f"(one of {', '.join(TCP_POLICIES)})")
    if opts.frag_policy not in FRAG_POLICIES:
        raise ConfigError(f"unknown IP fragment policy {opts.frag_policy!r} "
                          f"(one of {', '.join(FRAG_POLICIES)})")
    return parse_host_policies(opts.host_policies)


class Engine:
    """Capture bytes in, records out. One file after another forms one continuous chain.

    ``stream_chunks=True`` adds a StreamChunk record for every in-order piece of every
    connection's bytes (for stream decoders; Record mode only).

    Output modes: Record objects (default); ``documents=True``: jsonl documents (dicts with the
    schema's external names, as Record.to_json gives them); ``jsonl=True``: (dataset, bytes)
    pairs, each bytes one finished JSON document written by the C engine, the fast path for
    sinks that serialise everything; ``columns=True``: connections and HTTP transactions as
    pyarrow RecordBatches of their ``arrow_schema`` (``batch_rows`` rows or ``batch_bytes``
    of data at most, the last ones at ``finish()``), the other records as Record objects: the
    Parquet sink's fast path; with ``with_records=True`` the connections and transactions come
    as Record objects too (for decoders, while the batches are stored), and with
    ``select`` only those a decoder may want: a transaction becomes a Record when
    ``select(conn_id, index, file, frame, method, uri, host, path, headers,
    x_forwarded_for, user_agent, src_ip, src_port, dst_ip, dst_port)`` (what a decoder's
    RequestHead holds; DecoderRunner.select) is true, when it is reported, and a connection
    comes only as a ConnectionEnd. ``stream_chunks=True``: StreamChunk records of the bytes
    as they are reassembled; with ``stream_select``, only of the connections for which
    ``stream_select(conn_id, src_ip, src_port, dst_ip, dst_port, first, first_direction,
    file, frame)`` (DecoderRunner.stream_select) is true, asked once on the connection's
    first bytes (held until then). ``bodies``: kept content in the jsonl documents and the
    batches.
    """

    def __init__(self, options: EngineOptions | None = None, *, documents: bool = False,
                 jsonl: bool = False, bodies: bool = False, stream_chunks: bool = False,
                 columns: bool = False, batch_rows: int = 4096, batch_bytes: int = 8 << 20,
                 with_records: bool = False, select=None, stream_select=None,
                 **overrides):
        opts = dataclasses.replace(options or EngineOptions(), **overrides)
        self.options = opts
        self.name = opts.engine
        kw = dataclasses.asdict(opts)
        kw["host_policies"] = check_options(opts)
        self.documents = documents
        self.jsonl = jsonl
        self.bodies = bodies
        self.columns = columns and not jsonl
        if self.columns:
            from .arrow import core_columns
            kw["columns"] = core_columns([_DATASET[k] for k in _COLUMNAR])
            kw.update(batch_rows=batch_rows, batch_bytes=batch_bytes, dual=with_records)
            if with_records and select is not None:
                kw["select"] = select
        try:
            records = not jsonl and (with_records or not columns)
            if stream_chunks and records and stream_select is not None:
                kw["stream_select"] = stream_select
            self._core = _core.Engine(**kw, json=jsonl, json_bodies=bodies,
                                      stream_chunks=stream_chunks and records)
        except RuntimeError as e:
            raise ConfigError(str(e)) from None
        self._not_reassembled = 0
        self._finished = False

    def _records(self, raw: list) -> list:
        out = []
        if self.jsonl:
            for kind, doc in raw:
                if kind == "connection" and b'"c2scribe.connection.reassembled":false' in doc:
                    self._not_reassembled += 1
                out.append((_DATASET[kind].dataset, doc))
        elif self.columns:
            for kind, d in raw:
                if isinstance(d, tuple):
                    out.append(self._batch(kind, d))
                elif kind == "connection_end":
                    out.append(ConnectionEnd(d))
                else:                   # the C side derived the fields of its columnar kinds
                    out.append(from_core(kind, d, self.name, derived=kind in _COLUMNAR))
        elif self.documents:
            for kind, d in raw:
                if kind == "connection" and not d["c2scribe.connection.reassembled"]:
                    self._not_reassembled += 1
                out.append(json_from_core(kind, d, self.name, self.bodies))
        else:
            for kind, d in raw:
                rec = from_core(kind, d, self.name)
                if kind == "connection" and not rec.reassembled:
                    self._not_reassembled += 1
                out.append(rec)
        return out

    def _batch(self, kind: str, raw: tuple):
        import pyarrow.compute as pc
        from .arrow import batch_from_core
        cls = _DATASET[kind]
        batch = batch_from_core(cls, raw)
        if cls is Connection:
            done = pc.sum(batch.column("c2scribe.connection.reassembled")).as_py() or 0
            self._not_reassembled += batch.num_rows - done
        return batch

    def _own(self, rec: Record):
        if self.jsonl:
            return (rec.dataset, dumps(rec.to_json(bodies=self.bodies)))
        return rec.to_json(bodies=self.bodies) if self.documents else rec

    def capture_error(self, file: str, offset: int, message: str, packets_before: int):
        """A CaptureError (record or document) for damage found outside the engine."""
        return self._own(CaptureError(file=file, offset=offset, message=message,
                                      packets_before=packets_before))

    def open_file(self, name: str) -> None:
        """Start the next capture file of the chain; open connections carry over."""
        self._core.open_file(name)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        """Bytes of the current capture file (pcap/pcapng), in order, any chunk size."""
        return self._records(self._core.feed(data))

    def close_file(self) -> list[Record]:
        """End of the current file: a file that ends inside a record yields a CaptureError."""
        return self._records(self._core.close_file())

    def feed_packet(self, ts_us: int, linktype: int, frame: bytes) -> list[Record]:
        """One link-layer frame, for callers with their own capture reader."""
        return self._records(self._core.feed_packet(ts_us, linktype, frame))

    def finish(self) -> list[Record]:
        """End of input: every connection still open is flushed, then the run's warnings."""
        if self._finished:
            return []
        counters = None
        try:
            out = self._records(self._core.finish())
        finally:
            self._finished = True
            counters = self._core.counters(True)     # a window: its own counts only
            messages = self._core.http_messages()
        self.final_counters = {k: v[0] for k, v in counters.items()}
        warnings = []
        for code, text in WARNINGS.items():
            n, file, frame = counters[code]
            if n:
                warnings.append(EngineWarning(code=code, count=n, message=text, file=file,
                                              frame=frame or None))
        if self._not_reassembled and self.name == "nids":
            warnings.append(EngineWarning(
                code="connections_not_reassembled", count=self._not_reassembled,
                message="TCP connections seen without their handshake, or over IPv6: reported "
                        "with packet and byte counts, but the nids engine cannot reassemble them",
                file=None, frame=None))
        for text, n in sorted(messages.items()):
            warnings.append(EngineWarning(code="http_parser_message", count=n, message=text,
                                          file=None, frame=None))
        return out + [self._own(w) for w in warnings]

    def window_done(self) -> bool:
        """Windowed engine: nothing more needs reading (the reader may stop)."""
        return self._core.window_done()

    def now_us(self) -> int | None:
        """Capture time of the last packet read, in µs."""
        return self._core.now_us()

    def counters(self) -> dict[str, int]:
        """Running totals (packets, bytes, connections, ...) by name."""
        return {k: v[0] for k, v in self._core.counters().items()}


__all__ = ["Engine", "EngineOptions", "ENGINES", "FRAG_POLICIES", "STREAM_KEEP", "TCP_POLICIES",
           "CaptureError", "check_options"]
