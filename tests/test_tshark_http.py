"""c2scribe's HTTP requests and responses against tshark's, on real captures.

For every TCP connection (matched by its 4-tuple, direction-free) the multiset of requests
(method, uri) and the multiset of response status codes must be the same in c2scribe's
HttpTransaction records and in tshark 4's HTTP dissector:

    tshark -n -r F -o tcp.check_checksum:FALSE -Y 'tcp && (http.request || http.response)'

(JSON output, so several messages in one frame and commas in URIs are kept apart; the
4-tuple is the innermost IP/TCP one, so tunnels such as VXLAN compare on the inner flow).
A 100 Continue answered before the final response counts as a response of its own, as
tshark shows it.

Captures: every ORACLES.jsonl line with http_complete and tshark_agrees (tshark already
agrees with the upstream oracle there), then more HTTP and C2 captures of the shared testdata.

Both reassembly engines are compared. Differences come in these kinds:
* a libnids limit (IPv6, no SYN/SYN-ACK in the capture, capture loss): listed in
  LIBNIDS_LIMITS and an expected failure only when every differing connection is explained
  by it on both sides (tshark shows the cause, c2scribe's Connection record the effect);
* the native engine beyond tshark (NATIVE_BEYOND_TSHARK): after a hole in the capture, or
  without the handshake, tshark's TCP reassembly waits for bytes that never come and shows
  nothing more; the native engine skips the hole and decodes what follows. Every difference
  must then be messages only c2scribe has, on a connection whose record shows the hole
  (missing bytes) or the missing handshake, exactly as many as listed;
* a tshark limit on an extra capture, where c2scribe is right and tshark cannot show a
  message: TSHARK_LIMITS gives the exact difference expected and the evidence;
* anything else fails: see the report of the test session for the ones that do.
"""
from __future__ import annotations

import ast
import concurrent.futures
import functools
import os
import re
import shutil

import pytest

from c2scribe.engine import ENGINES
from helpers import (Connection, HttpTransaction, c2_http_by_conn, c2_records, capture,
                     diff_http_keyed, libnids_limit, of_type, oracles, find_testdata,
                     tshark_http_by_conn, tshark_tcp_evidence, tool)

pytestmark = [pytest.mark.shared, pytest.mark.tools]

#: tshark options for the extra captures: reorder out-of-order segments (tshark 4.0 does not
#: by default and then misses messages whose segments came out of order).
OOO = ("-o", "tcp.reassemble_out_of_order:TRUE")
#: ... and report a message before its whole body is reassembled (bodies cut by a gap).
NO_BODY_WAIT = OOO + ("-o", "http.desegment_body:FALSE")

MAIN = sorted({o["capture"] for o in oracles()
               if o.get("http_complete") and o.get("tshark_agrees")})

EXTRA = {
    # zeek HTTP traces without a complete oracle or where tshark disagrees with the oracle
    "zeek/Traces/http/bro.org.pcap": OOO,
    "zeek/Traces/http/get-gzip.pcap": OOO,
    "zeek/Traces/http/post.pcap": OOO,
    "zeek/Traces/http/get-without-fins.pcap": OOO,
    "zeek/Traces/http/http-large-gap.pcap": OOO,
    "zeek/Traces/http/get_nosyn.pcap": OOO,
    "zeek/Traces/http/zero-length-bodies-with-drops.pcap": OOO,
    "zeek/Traces/http/entity_gap.pcap": NO_BODY_WAIT,
    "zeek/Traces/http/entity_gap2.pcap": NO_BODY_WAIT,
    "zeek/Traces/http/content-range-gap.pcap": NO_BODY_WAIT,
    "zeek/Traces/http/putty-upload.pcap": NO_BODY_WAIT,
    "zeek/Traces/http/http-single-conn-22.pcap": OOO + ("-d", "tcp.port==22,http"),
    "zeek/Traces/tcp-http-with-padding.pcap": OOO + ("-d", "tcp.port==27272,http"),
    "zeek/Traces/wikipedia.pcap": OOO,
    "zeek/Traces/http/methods.pcap": OOO,
    "zeek/Traces/http/connect-with-smtp.pcap": OOO,
    "zeek/Traces/http/261/variant-01-chunk_2pow64_overflow.pcap": OOO,
    # arkime captures without a per-transaction oracle
    "arkime/80211http.pcap": OOO,
    "arkime/http-post-upload.pcap": OOO,
    "arkime/long-session.pcap": OOO,
    "arkime/mpls-basic.pcap": OOO,
    "arkime/pppoe.pcap": OOO,
    "arkime/smb-port80.pcap": OOO,
    "arkime/socks4-https.pcap": OOO,
    "arkime/tcpseq_synthetic.pcap": OOO,
    "arkime/websocket.pcap": OOO,
    "arkime/single-packets.pcap": OOO,
    "arkime/wireshark-retrans.pcap": OOO,
    "arkime/arkime_synthetic.pcap": OOO,
    # C2 captures
    "corelight-zeek-agenttesla-detector/testing/Traces/0e328ab7-12b2-4843-8717-a5b3ebef33a8.pcap": OOO,
    "corelight-zeek-agenttesla-detector/testing/Traces/a30789ce-1e1c-4f96-a097-78c34b9fb612.pcap": OOO,
    "corelight-zeek-agenttesla-detector/testing/Traces/db9f075c-7879-4957-923a-f79fac957a2d.pcap": OOO,
    "corelight-zeek-agenttesla-detector/testing/Traces/f9421792-7d2c-47d3-90e0-07eb54ae12fa.pcap": OOO,
    "corelight-zeek-caldera-detector/testing/Traces/ragdoll.pcap": OOO,
    "corelight-zeek-caldera-detector/testing/Traces/sandcat.pcap": OOO,
    "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap": OOO,
}

#: Captures where libnids cannot give c2scribe some connection's bytes. Verified on each
#: capture with tshark (flags, IP version, "previous segment not captured") and with
#: c2scribe's own Connection records (reassembled false / stream shorter than the payload).
LIBNIDS_LIMITS = {
    "arkime/http-100-continue.pcap": "the only connection is IPv6 (102:304:ef6e::...)",
    "arkime/http-empty-useragent.pcap": "the only connection is IPv6 (::1 -> ::1:9200)",
    "zeek/Traces/http/connect-with-header.pcap": "the only connection is IPv6 (::1 -> ::1:80)",
    "arkime/http-syn-ack.pcap": "the capture starts at the SYN-ACK: no SYN (frame 1)",
    "arkime/no-syn-ack.pcap": "10.12.12.12:61181 -> :80 has a SYN but no SYN-ACK",
    "zeek/Traces/http/get_nosyn.pcap": "the handshake is not in the capture",
    "zeek/Traces/wikipedia.pcap": "141.142.220.118:35634 is captured mid-stream (3 frames, "
                                  "no SYN)",
    "arkime/single-packets.pcap": "nine one-packet connections, no handshake",
    "arkime/arkime_synthetic.pcap": "its HTTP connections between 2001:db8::1-8 are IPv6 "
                                    "(the other differences there are not libnids limits)",
    "zeek/Traces/http/bro.org.pcap": "10.0.2.15:55081: server segment lost before frame 179 "
                                     "(tshark: previous segment not captured); libnids' "
                                     "server->client stream stops at 7240 of 48305 bytes",
}

#: The native engine decodes past what tshark can show (see the module docstring).
NATIVE_BEYOND_TSHARK = {       # capture: (messages only c2scribe has, by kind; why)
    "zeek/Traces/http/bro.org.pcap": (
        {"responses": 6}, "10.0.2.15:55081: a 7240-byte server segment before frame 179 is "
        "not in the capture; c2scribe skips it and decodes the 6 responses after it"),
    "zeek/Traces/http/zero-length-bodies-with-drops.pcap": (
        {"requests": 4, "responses": 5}, "10.0.0.118:51534: segments are missing from the "
        "capture (the file's name says so); c2scribe decodes the requests and responses after "
        "them"),
    "arkime/no-syn-ack.pcap": (
        {"responses": 1}, "10.12.12.12:61181 has a SYN but no SYN-ACK; c2scribe picks the "
        "connection up without it and decodes its response"),
}

#: Extra captures where tshark cannot show a message c2scribe rightly reports: the exact
#: difference expected (the diff lines) and why.
TSHARK_LIMITS = {
    "corelight-zeek-caldera-detector/testing/Traces/sandcat.pcap": (
        ["(('172.18.0.2', 8888), ('172.18.0.3', 58326)) responses: only c2scribe {200: 1}, "
         "only tshark {}"],
        "the 7 MB response to POST /file/download misses segments before the server FIN "
        "(tshark frame 126: previous segment not captured); tshark shows an HTTP response "
        "only once its whole Content-Length body is reassembled, c2scribe reports the "
        "response head with the body bytes it has"),
}


TSHARK_LIMITS.update({
    "arkime/twovlan.pcap": (
        ["(('10.0.0.1', 54422), ('10.0.0.2', 80)) responses: only c2scribe {200: 1}, "
         "only tshark {}"],
        "the capture ends inside the response body (3.3 KiB of it); tshark shows a response "
        "only once its body is complete, c2scribe reports it with state partial_response"),
    # libhtp (Suricata's parser) treats these request-smuggling variants as parser errors and
    # stops parsing the request direction; tshark and Zeek read on and find the smuggled
    # request. c2scribe flags the first transaction (request_invalid_content_length /
    # request_invalid_transfer_encoding) instead of inventing a second one.
    "zeek/Traces/http/261/variant-02-cl_uint64max.pcap": (
        ["(('192.168.1.100', 40002), ('192.168.1.200', 80)) requests: only c2scribe {}, "
         "only tshark {('GET', '/smuggled-cl-uint64max'): 1}"],
        "Content-Length 18446744073709551615: libhtp stops at the invalid length"),
    "zeek/Traces/http/261/variant-03-cl_negative.pcap": (
        ["(('192.168.1.100', 40003), ('192.168.1.200', 80)) requests: only c2scribe {}, "
         "only tshark {('GET', '/smuggled-cl-negative'): 1}"],
        "Content-Length -1: libhtp stops at the invalid length"),
    "zeek/Traces/http/261/variant-10-multi_value_te.pcap": (
        ["(('192.168.1.100', 40010), ('192.168.1.200', 80)) requests: only c2scribe {}, "
         "only tshark {('GET', '/smuggled-multi-te'): 1}"],
        "Transfer-Encoding: chunked, identity: libhtp stops at the invalid coding"),
    "zeek/Traces/http/http-11-request-then-cruft.pcap": (
        ["(('192.0.78.212', 80), ('192.168.12.5', 51792)) requests: only c2scribe "
         "{('T', '/'): 3}, only tshark {}"],
        "after a valid request the client sends cruft; libhtp parses its lines as requests "
        "with method 'T' (flagged), tshark's dissector knows a fixed method list and skips them"),
})


def _malformed_request_lines_only(lines: list[str]) -> bool:
    """methods.pcap: every difference is a broken request line ("GET/", "OPTIONSHTTP/1.1",
    non-ASCII methods) that libhtp reports as a request and tshark does not (tshark only
    counts the one it can split, as OPTIONS with an empty URI where libhtp has none)."""
    return bool(lines) and all(
        " requests: only c2scribe {" in ln and
        (ln.endswith("only tshark {}") or ln.endswith("only tshark {('OPTIONS', ''): 1}"))
        for ln in lines)


DEFINITIONAL = {
    "zeek/Traces/http/methods.pcap": (
        _malformed_request_lines_only,
        "the responses (400/405) agree; broken request lines are split differently"),
}


@functools.lru_cache(maxsize=None)
def _tshark_all() -> dict:
    """tshark's view of every capture of this module, computed once, two tshark at a time.

    tshark spends most of its time starting up; running the captures in parallel keeps this
    module well under half a minute. Errors are kept and raised by the test of that capture.
    """
    td = find_testdata()
    if td is None or shutil.which("tshark") is None:
        return {}
    jobs = {c: a for c, a in [(c, None) for c in MAIN] + list(EXTRA.items())
            if (td / c).is_file()}

    def one(item):
        cap, args = item
        try:
            return cap, tshark_http_by_conn(td / cap, args or ())
        except Exception as e:  # noqa: BLE001 - re-raised in the test
            return cap, e

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        return dict(ex.map(one, jobs.items()))


def _params():
    caps = [(c, None) for c in MAIN] + [(c, args) for c, args in EXTRA.items() if c not in MAIN]
    if find_testdata() is None:
        return [pytest.param(None, None, None, id="no-testdata")]
    if not MAIN:
        caps.insert(0, (None, None))
    return [pytest.param(engine, c, a, id=f"{engine}:{c or 'no-oracles'}")
            for engine in ENGINES for c, a in caps]


def _native_beyond_tshark(diffs, recs) -> tuple[list[str], dict[str, int]]:
    """(the differences that are not messages only c2scribe has on a connection with a hole
    or without its handshake, how many messages only c2scribe has by kind)."""
    conns = {frozenset(((c.src_ip, c.src_port), (c.dst_ip, c.dst_port))): c
             for c in of_type(recs, Connection)}
    bad, extra = [], {}
    for key, line in diffs:
        c = conns.get(frozenset(key))
        cause = c is not None and (c.c2s_missing_bytes or c.s2c_missing_bytes or not c.handshake)
        m = re.search(r"\) (requests|responses): only c2scribe (\{.*\}), only tshark \{\}$", line)
        if m is None or not cause:
            bad.append(line)
            continue
        extra[m[1]] = extra.get(m[1], 0) + sum(ast.literal_eval(m[2]).values())
    return bad, extra


@pytest.mark.parametrize("engine,cap,tshark_args", _params())
def test_http_messages_match_tshark(engine, cap, tshark_args):
    if cap is None:
        pytest.skip("shared testdata or its ORACLES.jsonl is missing")
    tool("tshark")
    path = capture(cap)
    recs = c2_records(path, body_keep=0, stream_keep=0, engine=engine)
    c2 = c2_http_by_conn(recs)
    ts = _tshark_all().get(cap)
    if ts is None:
        ts = tshark_http_by_conn(path, tshark_args or ())
    if isinstance(ts, Exception):
        raise ts
    diffs = diff_http_keyed(c2, ts)
    lines = [line for _k, line in diffs]

    if cap in TSHARK_LIMITS:
        expected, why = TSHARK_LIMITS[cap]
        assert lines == expected, (
            f"expected exactly the documented tshark-limit difference ({why}), got:\n"
            + "\n".join(lines))
        return

    if cap in DEFINITIONAL:
        check, why = DEFINITIONAL[cap]
        assert check(lines), (f"expected only the documented difference ({why}), got:\n"
                              + "\n".join(lines))
        return

    if engine == "native" and cap in NATIVE_BEYOND_TSHARK:
        assert diffs, f"{cap}: tshark now shows everything (drop it from NATIVE_BEYOND_TSHARK)"
        bad, extra = _native_beyond_tshark(diffs, recs)
        assert not bad, ("differences that are not c2scribe decoding past a hole or a missing "
                         "handshake:\n" + "\n".join(bad))
        want, why = NATIVE_BEYOND_TSHARK[cap]
        assert extra == want, f"{cap}: expected exactly {want} only in c2scribe ({why})"
        return

    if engine == "nids" and cap in LIBNIDS_LIMITS:
        assert diffs, (f"{cap} is listed as hitting a libnids limit "
                       f"({LIBNIDS_LIMITS[cap]}) but c2scribe now agrees with tshark: "
                       "drop it from LIBNIDS_LIMITS")
        ev = tshark_tcp_evidence(path)
        conns = of_type(recs, Connection)
        explained, unexplained = {}, []
        for key, line in diffs:
            why = libnids_limit(key, ev, conns)
            if why is None:
                unexplained.append(line)
            else:
                explained[key] = why
        assert not unexplained, ("differences not explained by a libnids limit:\n"
                                 + "\n".join(unexplained))
        pytest.xfail(f"libnids limit: {LIBNIDS_LIMITS[cap]}; verified: "
                     + "; ".join(explained.values()))

    assert not diffs, (f"c2scribe and tshark disagree on {cap}:\n" + "\n".join(lines))


def _complete_body_params():
    if find_testdata() is None:
        return [pytest.param(None, id="no-testdata")]
    caps = list(dict.fromkeys(MAIN + list(EXTRA)))
    return [pytest.param(c, id=c) for c in caps]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cap", _complete_body_params())
def test_complete_response_has_its_content_length(cap, engine):
    """A response c2scribe calls complete carries its whole Content-Length body.

    Independent of tshark, but found by comparing with it: a transaction whose state is
    "complete" and whose response declares Content-Length N (no Transfer-Encoding, not an
    answer to HEAD, not 1xx/204/304) must have N body bytes on the wire, or be flagged
    truncated.
    """
    if cap is None:
        pytest.skip("shared testdata missing")
    path = capture(cap)
    bad = []
    # interleaved-http-entity: the server sends "fin\n" after "Content-Length: 3". libhtp
    # (like Suricata) counts bytes after a body that are not a status line as that body's
    # ("Unexpected response body" warning, which c2scribe reports); Zeek and tshark stop at 3.
    allowed = {"zeek/Traces/http/interleaved-http-entity.pcap":
               ["127.0.0.1:35474 tx 1 POST /: Content-Length 3, 4 body bytes on the wire, "
                "state complete, not truncated"]}.get(cap, [])
    for t in of_type(c2_records(path, body_keep=0, stream_keep=0, engine=engine), HttpTransaction):
        if t.state != "complete" or t.method == "HEAD" or t.status_code is None:
            continue
        if t.status_code < 200 or t.status_code in (204, 304):
            continue
        hs = {k.lower(): v for k, v in t.response_headers}
        if "transfer-encoding" in hs or "content-length" not in hs:
            continue
        try:
            cl = int(hs["content-length"].strip())
        except ValueError:
            continue
        if t.response_body_wire_bytes != cl and not t.response_body_truncated:
            bad.append(f"{t.src_ip}:{t.src_port} tx {t.index} {t.method} {t.uri}: "
                       f"Content-Length {cl}, {t.response_body_wire_bytes} body bytes on "
                       f"the wire, state complete, not truncated")
    assert bad == allowed, "\n".join(bad)
