"""Documented expected failures of the conformance suite, each with its reason and evidence.

Two kinds only:

* **libnids limits** - c2scribe's reassembly is libnids, which follows a TCP connection only
  from a SYN, SYN-ACK, ACK it saw, over IPv4, keeps the first copy of overlapping bytes, and
  stalls a direction at the first byte it never saw. Captures that depend on anything else
  cannot agree with an oracle that reassembles differently.
* **definitions** - c2scribe and the oracle answer a different question about the same bytes
  (how a request line with no version is read, what Zeek counts as a body, Suricata's range
  reassembly ...). Each says exactly which values differ and why.

A c2scribe *bug* is never listed here: it stays a failing test until it is fixed.

Every entry is strict. Its ``checks`` are re-verified on every run against the capture itself
(read with scapy, see evidence.py) or against c2scribe's records, so a reason that stops being
true fails the test. An entry with ``diffs`` accounts only for the differences matching those
regular expressions (each must still occur; any other difference is a failure); an entry
without ``diffs`` accounts for the whole capture. When a capture with an entry starts to agree
with its oracle, the test fails with "unexpectedly passing, update expectations".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import evidence as ev

#: What each category means; the per-capture reason says why the capture is in it.
CATEGORIES = {
    "ipv6": "libnids reassembles IPv4 only: IPv6 TCP connections are reported (packets, bytes) "
            "but never reassembled, so they have no HTTP transactions",
    "handshake": "libnids follows a TCP connection only after seeing its SYN, SYN-ACK and the ACK "
                 "of ISN+1; mid-stream pickup, a missing SYN or SYN-ACK, or a split/odd "
                 "handshake means the connection is never reassembled",
    "one-sided": "a capture of one direction only: libnids never sees the handshake complete "
                 "(and has no other side to pair requests with)",
    "tfo": "TCP Fast Open: the request rides in the SYN; libnids does not follow such a "
           "connection",
    "gap": "capture loss: a segment missing from the capture stalls that direction in libnids; "
           "nothing after the hole is delivered (Zeek/Suricata skip the hole and go on)",
    "overlap-policy": "overlapping segments with different bytes: libnids keeps the first copy; "
                      "the oracle was run with another host-OS policy",
    "tunnel": "the HTTP is inside an encapsulation c2scribe does not take apart",
    "definition": "c2scribe and the oracle define the compared value differently",
}


#: Categories that are libnids' limits: the native engine has none of them.
NIDS_LIMITS = frozenset({"ipv6", "handshake", "one-sided", "tfo", "gap", "overlap-policy"})


@dataclass(frozen=True)
class Expect:
    category: str
    reason: str
    checks: tuple = ()
    diffs: tuple[str, ...] = ()        # regexes over the diff lines; () = the whole capture
    engines: tuple[str, ...] = ()      # the engines it concerns; () = by category

    def __post_init__(self):
        assert self.category in CATEGORIES, self.category

    def concerns(self, engine: str) -> bool:
        if self.engines:
            return engine in self.engines
        return engine == "nids" or self.category not in NIDS_LIMITS


# --------------------------------------------------------------------------- helpers

def _no_token_method(line: bytes) -> bool:
    """The line does not start with an ASCII method token followed by a space."""
    return re.match(rb"[A-Za-z_-]+ ", line) is None


def _http09(line: bytes) -> bool:
    return re.fullmatch(rb"[A-Z_]+ /HTTP/1\.1\r?", line) is not None


def _ports(*ps: int) -> str:
    return "|".join(str(p) for p in ps)


def _tx(run, index: int = 1):
    return next((t for t in run.http if t.index == index), None)


def _client_sent(needle: bytes) -> ev.Check:
    def check(ctx: ev.Ctx) -> str | None:
        if any(needle in s.payload for s in ctx.segs):
            return None
        return f"no segment carries {needle!r}"
    check.__doc__ = f"a segment carries {needle!r}"
    return check


def _not_reassembled(run) -> bool:
    return any(not c.reassembled for c in run.conns)


NOT_REASSEMBLED = ev.check_run(_not_reassembled, "a connection c2scribe reports but did not reassemble")


# --------------------------------------------------------------------------- per capture

METHODS_ODD = (46564, 46565, 46569, 46570, 46572, 46573, 46574, 46575, 46576, 46579, 46580,
               46584, 46585, 46589, 46590, 46594, 46595, 46599, 46600, 46604, 46605, 46609, 46610)
METHODS_09 = (46568, 46578, 46583, 46588, 46593, 46598, 46603, 46608)

EXPECTED: dict[str, tuple[Expect, ...]] = {
    # ----------------------------------------------------------------- IPv6
    "zeek/Traces/http/connect-with-header.pcap": (Expect(
        "ipv6", "the CONNECT is between [::1]:52522 and [::1]:80 (IPv6 loopback)",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "arkime/http-100-continue.pcap": (Expect(
        "ipv6", "the POST with 100-continue is over IPv6 ([102:304:ef6e::...]:61273 > [...]:80)",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "arkime/http-empty-useragent.pcap": (Expect(
        "ipv6", "the only HTTP session is [::1]:57722 > [::1]:9200",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "suricata-verify/compress_ipv6-01/input.pcap": (Expect(
        "ipv6", "the HTTP flow is fe80::...:cf38 > fe80::...:ab42 port 80 (the test checks "
                "Suricata's compressed IPv6 addresses)",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "suricata-verify/file-match-crossed/http-multipart-post.pcap": (Expect(
        "ipv6", "the multipart POST is between 2a01:e0a:... and 2001:41d0:... (IPv6 only)",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "suricata-verify/http-ipv6/input.pcap": (Expect(
        "ipv6", "HTTP over IPv6 loopback (host [::1]); BSD loopback link type",
        (ev.check_ipv6(),)),),
    "suricata-verify/http-post-file/input.pcap": (Expect(
        "ipv6", "the POST carrying EICAR is between [::1]:52093 and [::1]:8065",
        (ev.check_ipv6(), NOT_REASSEMBLED)),),
    "arkime/arkime_synthetic.pcap": (Expect(
        "ipv6", "the four HTTP sessions 2001:db8::1>::2, ::3>::4, ::5>::6 (port 80) and "
                "::7>::8 (port 5985) are IPv6; their IPv4 twins are compared normally",
        (ev.check_ipv6(), NOT_REASSEMBLED), diffs=(r"^\[2001:db8::[1357]\]:\d+>",)), Expect(
        "definition", "10.0.38.100:54344 opens with the HTTP/2 prior-knowledge preface 'PRI * "
                      "HTTP/2.0' (h2c): c2scribe does not parse HTTP/2 frames as HTTP/1.x, "
                      "Arkime counts the preface as an HTTP/1 request session",
        (_client_sent(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),),
        diffs=(r"^10\.0\.38\.100:54344>10\.0\.38\.1:443: ",))),

    # ----------------------------------------------------------------- handshake
    "arkime/CVE-2018-6794.pcap": (Expect(
        "handshake", "the server sends its 85-byte reply and FIN right after the SYN-ACK "
                     "(frames 3-4), before the client's ACK; that ACK (frame 5) acknowledges "
                     "seq 87, never ISN+1, so libnids never sees the handshake complete (the "
                     "CVE-2018-6794 evasion)",
        (ev.check_data_before_handshake_ack(), NOT_REASSEMBLED)),),
    "arkime/http-syn-ack.pcap": (Expect(
        "handshake", "the capture starts with the server's SYN-ACK (frame 1); the client's SYN "
                     "is missing",
        (ev.check_no_syn(), NOT_REASSEMBLED)),),
    "arkime/no-syn-ack.pcap": (Expect(
        "handshake", "10.12.12.12:61181 > 10.13.13.13:80 has a SYN (frame 6) but no SYN-ACK: "
                     "the next packet is the client's ACK",
        (ev.check_no_synack(("10.12.12.12:61181", "10.13.13.13:80")), NOT_REASSEMBLED)),),
    "arkime/single-packets.pcap": (Expect(
        "handshake", "each of the 9 connections is a single data packet (8 requests, 1 reply), "
                     "no SYN at all",
        (ev.check_no_syn(), NOT_REASSEMBLED)),),
    "suricata-verify/alert-testmyids-midstream/input.pcap": (Expect(
        "handshake", "midstream (test runs with stream.midstream=true): the first packet is the "
                     "server's HTTP/1.1 200 reply, no SYN and no request",
        (ev.check_no_syn(), NOT_REASSEMBLED)),),
    "suricata-verify/alert-testmyids-midstream3/input.pcap": (Expect(
        "handshake", "midstream (stream.midstream=true): the first packet is the GET itself "
                     "(flags PA), no SYN",
        (ev.check_no_syn(), NOT_REASSEMBLED)),),
    "suricata-verify/alert-testmyids-midstream5/input.pcap": (Expect(
        "handshake", "midstream (stream.midstream=true): the capture starts with the SYN-ACK, "
                     "the client's SYN is missing",
        (ev.check_no_syn(), NOT_REASSEMBLED)),),
    "suricata-verify/tcp-split-handshake-01-4whs/split-handshake-4whs.pcap": (Expect(
        "handshake", "four-way split handshake: client SYN, server SYN, client SYN-ACK, server "
                     "ACK (frames 1-4); libnids expects SYN-ACK from the server",
        (ev.check_split_handshake(), NOT_REASSEMBLED)),),

    # ----------------------------------------------------------------- one-sided / TFO
    "suricata-verify/http-async-cli/input.pcap": (Expect(
        "one-sided", "only the client side (127.0.0.1:50215 > :8080: SYN, ACK, two GETs) is in "
                     "the capture (test runs with stream.async-oneside=true)",
        (ev.check_one_sided(), NOT_REASSEMBLED)),),
    "suricata-verify/http-async-srv/input.pcap": (Expect(
        "one-sided", "only the server side (SYN-ACK, two HTTP/1.0 200 replies) is in the capture "
                     "(stream.async-oneside=true)",
        (ev.check_one_sided(), ev.check_no_syn(), NOT_REASSEMBLED)),),
    "suricata-verify/tcp-fastopen-01/tfo.pcap": (Expect(
        "tfo", "the second connection (10.99.99.1:55534) sends its GET inside the SYN (TCP Fast "
               "Open); the first, normal connection agrees with the oracle",
        (ev.check_syn_with_data(), NOT_REASSEMBLED)),),
    "suricata-verify/tcp-fastopen-07/tcp_fastopen_segmentation.pcap": (Expect(
        "tfo", "both connections carry request bytes in the SYN (frame 1: 65 bytes "
               "'GET /index.php ...')",
        (ev.check_syn_with_data(), NOT_REASSEMBLED)),),

    # ----------------------------------------------------------------- capture loss
    "suricata-verify/eve-overlap-payload-05-gap/tcp-simple-gap2.pcap": (Expect(
        "gap", "client bytes 4-7 are never sent ('VERY' then 'DATA' at +8); libnids stops at the "
               "hole so 'DATA' is never delivered",
        (ev.check_seq_hole(),)),),
    "suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap": (Expect(
        "gap", "client bytes 4-7 missing between 'VERY' and 'DATA'",
        (ev.check_seq_hole(),)),),
    "suricata-verify/http-gap-beyond-body/input.pcap": (Expect(
        "gap", "server bytes 136-262 are missing (hole before frame 14): the second response "
               "is cut, libnids stalls there",
        (ev.check_seq_hole(),)),),
    "suricata-verify/http-gap-simple/input.pcap": (Expect(
        "gap", "server bytes 263-276 are missing (hole before frame 18) inside the second "
               "response body; the third response after it is never delivered",
        (ev.check_seq_hole(),)),),
    "suricata-verify/http-gap-whole-body/input.pcap": (Expect(
        "gap", "server bytes 136-149 (the whole first body) are missing; libnids delivers "
               "nothing after them, so responses 2 and 3 are lost",
        (ev.check_seq_hole(),)),),
    "suricata-verify/tcp-rst-unacked-stream-09/TLPW1-tcp-110.37.219.134-10.12.14.101-tcp-990-49230.pcap": (Expect(
        "gap", "server bytes 3864-7727 are not in the capture (frame 12 jumps to seq 7729 while "
               "the client ACKs past it); 7 holes in all: the body stops at the first",
        (ev.check_seq_hole(),)),),
    "suricata-verify/tcp-rst-unacked-stream-11/TLPW1-tcp-47.32.209.86-10.11.23.101-tcp-80-49470.pcap": (Expect(
        "gap", "server bytes 1576-2863 missing (before frame 11), 5 holes in all: the second "
               "response body stops at the first hole",
        (ev.check_seq_hole(),)),),
    "suricata-verify/tcp-rst-unacked-stream-12/TLPW1-tcp-110.37.219.134-10.12.14.101-tcp-990-49254.pcap": (Expect(
        "gap", "the server's first 1288 bytes are missing (first data frame 8 starts at +1288), "
               "17 holes: nothing of the response is delivered",
        (ev.check_seq_hole(),)),),
    "zeek/Traces/http/content-range-gap.pcap": (Expect(
        "gap", "server bytes 1985-3364 are missing (hole before frame 11): our body stops after "
               "1380 bytes; Zeek's extracted file continues after the hole",
        (ev.check_seq_hole(),)),),
    "zeek/Traces/http/entity_gap.pcap": (Expect(
        "gap", "server bytes 1448-2895 missing (hole before frame 7): our body stops at 1146 "
               "of 4705 bytes",
        (ev.check_seq_hole(),)),),
    "zeek/Traces/http/entity_gap2.pcap": (Expect(
        "gap", "server bytes 2896-4343 missing (hole before frame 8): our body stops at 2594 "
               "of 4705 bytes",
        (ev.check_seq_hole(),)),),

    # ----------------------------------------------------------------- overlap policy
    "suricata-verify/eve-overlap-payload-02-policy-oldlinux/tcp-overlap.pcap": (Expect(
        "overlap-policy", "frames 5 ('GOOD') and 6 ('EVIL') cover the same client bytes; the "
                          "test runs Suricata with the old-linux policy for 2.2.2.2 (last copy "
                          "wins), libnids keeps GOOD",
        (ev.check_overlap_differs(),)),),
    "suricata-verify/eve-payload-02-tcp-exact-overlap-policy-oldlinux/tcp-overlap.pcap": (Expect(
        "overlap-policy", "frames 5 ('GOOD') and 6 ('EVIL') overlap exactly; old-linux policy "
                          "in the oracle, first-wins in libnids",
        (ev.check_overlap_differs(),)),),

    # ----------------------------------------------------------------- definitions
    "zeek/Traces/http/261/variant-01-chunk_2pow64_overflow.pcap": (Expect(
        "definition", "request smuggling: the POST's chunk size is 10000000000000000 (hex, "
                      "2^64); libhtp rejects it ('Request chunk encoding: Invalid chunk length') "
                      "and stops parsing requests, Zeek wraps it and logs the smuggled "
                      "'GET /smuggled-chunk-2pow64' (tshark, like libhtp, sees one request)",
        (_client_sent(b"\r\n10000000000000000\r\n"),),
        diffs=(r"missing GET '/smuggled-chunk-2pow64'",)),),
    "zeek/Traces/http/261/variant-02-cl_uint64max.pcap": (Expect(
        "definition", "request smuggling: Content-Length 18446744073709551615 (2^64-1) does "
                      "not fit libhtp's signed length ('C-L value with extra data in the end'), "
                      "so libhtp stops parsing requests; Zeek reads the smuggled GET",
        (_client_sent(b"Content-Length: 18446744073709551615"),),
        diffs=(r"missing GET '/smuggled-cl-uint64max'",)),),
    "zeek/Traces/http/261/variant-03-cl_negative.pcap": (Expect(
        "definition", "request smuggling: 'Content-Length: -1'; libhtp takes the remaining 52 "
                      "bytes (the whole smuggled GET) as the POST's body, Zeek ignores the "
                      "length and logs 'GET /smuggled-cl-negative'",
        (_client_sent(b"Content-Length: -1\r\n"),
         ev.check_run(lambda r: _tx(r) is not None and _tx(r).request_body_bytes == 52,
                      "the POST's request body is the 52 bytes of the smuggled GET")),
        diffs=(r"missing GET '/smuggled-cl-negative'",)),),
    "zeek/Traces/http/261/variant-10-multi_value_te.pcap": (Expect(
        "definition", "request smuggling: 'Transfer-Encoding: chunked, identity'; libhtp treats "
                      "the list as invalid and stops parsing requests (HTP_STREAM_ERROR), Zeek "
                      "applies chunked, sees the 0 chunk and logs the smuggled GET",
        (_client_sent(b"Transfer-Encoding: chunked, identity"),),
        diffs=(r"missing GET '/smuggled-multi-te'",)),),
    "zeek/Traces/http/curl_http_09.pcap": (Expect(
        "definition", "the server answers 'GET /zeek.html HTTP/1.1' with 51 bytes of bare HTML, "
                      "no status line; Zeek logs no status and response_body_len 0, libhtp "
                      "reads the 51 bytes as the (HTTP/0.9-style) response body",
        (ev.check_server_first_bytes_not_status(),),
        diffs=(r"response_body_len 51 != 0",)),),
    "zeek/Traces/http/http-11-request-then-cruft.pcap": (Expect(
        "definition", "after the real GET the client sends 'T / HTTP' lines; libhtp (IDS "
                      "personality) accepts any token as a method and makes transactions of "
                      "them (the server answers the first with 400), Zeek raises "
                      "bad_HTTP_request and logs only the GET (tshark: one request too)",
        (_client_sent(b"T / HTTP\n"),),
        diffs=(r"extra tx",)),),
    "zeek/Traces/http/http-single-conn-22.pcap": (Expect(
        "definition", "reply without Content-Length, read until close: the server sends 12649 "
                      "bytes (31 + 9 x 1402), of which 19 are 'HTTP/1.1 200 OK\\r\\n\\r\\n', so the "
                      "body is 12630 bytes (ours); Zeek's response_body_len says 12632",
        (ev.check_run(lambda r: bool(r.conns) and any(
            c.s2c_bytes == 12649 for c in r.conns) and _tx(r) is not None
            and _tx(r).response_body_bytes == 12649 - 19,
            "server stream 12649 bytes, body = stream - 19 header bytes"),),
        diffs=(r"response_body_len 12630 != 12632",)),),
    "zeek/Traces/http/smuggle-http-request.pcap": (Expect(
        "definition", "POST /first declares Content-Type message/rfc822 and Content-Encoding "
                      "gzip; its 80 body bytes are a 15-byte gzip/stored-block header announcing "
                      "255 bytes and 65 bytes of data. libhtp counts the 65 decoded bytes; Zeek "
                      "parses the decoded entity as a nested MIME message (weird "
                      "HTTP_nested_transfer_encoding_header) and counts 57",
        (ev.check_run(lambda r: _tx(r) is not None and _tx(r).request_body_bytes == 65
                      and "rfc822" in (_tx(r).request_content_type or ""),
                      "tx 1: 65 decoded request bytes, Content-Type message/rfc822"),),
        diffs=(r"#1: request_body_len 65 != 57",)),),
    "zeek/Traces/http/methods.pcap": (
        Expect("definition", "'OPTIONS HTTP/1.1' (port 46563) has two tokens: libhtp reads "
                             "'HTTP/1.1' as the URI of an HTTP/0.9 request (tshark too, see "
                             "ORACLES.md), Zeek as the version with an empty URI",
               (ev.check_request_lines((46563,), lambda l: l.rstrip(b"\r") == b"OPTIONS HTTP/1.1",
                                       "'OPTIONS HTTP/1.1'"),),
               diffs=(r":46563>.*uri 'HTTP/1\.1' != ''",)),
        Expect("definition", "the first request line has no method token followed by a "
                             "space ('GET/ HTTP/1.1', 'OPTIONSHTTP/1.1', 'OPTIONS', a non-ASCII "
                             "method); the server answers 400/405. Zeek cannot parse the line "
                             "(weird bad_HTTP_request) and logs the reply with no request "
                             "(method and host '-'); libhtp (IDS personality) takes the first "
                             "token as the method (e.g. 'GET/') and parses the headers",
               (ev.check_request_lines(METHODS_ODD, _no_token_method,
                                       "without an ASCII method token and a space"),),
               diffs=(rf":({_ports(*METHODS_ODD)})>[^#]*#1: method '[^']*' != None",)),
        Expect("definition", "'X /HTTP/1.1' (no space before HTTP) is an HTTP/0.9 request: Zeek "
                             "then reads the whole reply as a 0.9 body (status 0, body = all "
                             "reply bytes), libhtp still parses the reply's status line and "
                             "headers (status 400/403/411, body after the headers)",
               (ev.check_request_lines(METHODS_09, _http09, "'METHOD /HTTP/1.1'"),),
               diffs=(rf":({_ports(*METHODS_09)})>.*status \d+ != 0",)),
    ),
    "suricata-verify/http-connect/http-connect-simple/input.pcap": (Expect(
        "definition", "after 'CONNECT abc:443' is answered 200 the client sends a plain "
                      "'GET / HTTP/1.1' through the tunnel. c2scribe ends HTTP parsing at a 2xx "
                      "CONNECT answer (docs/STATUS.md) and marks the CONNECT tunnel=true; Suricata "
                      "re-detects the protocol inside the tunnel and logs the GET as a new tx 0",
        (_client_sent(b"GET / HTTP/1.1\r\n"),
         ev.check_run(lambda r: any(t.method == "CONNECT" and t.status_code == 200 and t.tunnel
                                    for t in r.http), "CONNECT answered 200, tunnel=true")),
        diffs=(r"^http\{method='GET', protocol='HTTP/1.1', status=200\}.*: 0 != 1$",)),),
    "suricata-verify/http-connect/http-connect-fragmented/input.pcap": (Expect(
        "definition", "as http-connect-simple, with the tunnelled GET split over two segments "
                      "('GE' + 'T / HTTP/1.1'): c2scribe stops at the 2xx CONNECT answer "
                      "(docs/STATUS.md), Suricata parses the GET inside the tunnel",
        (_client_sent(b"T / HTTP/1.1\r\n"),
         ev.check_run(lambda r: any(t.method == "CONNECT" and t.status_code == 200 and t.tunnel
                                    for t in r.http), "CONNECT answered 200, tunnel=true")),
        diffs=(r"^http\{method='GET', protocol='HTTP/1.1', status=200\}.*: 0 != 1$",)),),
    "suricata-verify/http-not09/input.pcap": (Expect(
        "definition", "'GET /' with no version, then lines 'FakeHeader', 'Host: localhost', "
                      "'User-Agent: myscript': libhtp 0.5.42 looks for a colon on the next line "
                      "only ('FakeHeader' has none), so this is HTTP/0.9 and the lines are request "
                      "body; Suricata 8 (libhtp-rs) parses them as headers (user_agent myscript)",
        (ev.check_run(lambda r: _tx(r) is not None and _tx(r).http_09
                      and b"User-Agent: myscript" in (_tx(r).request_body or b""),
                      "tx 1 is HTTP/0.9 and its request body holds 'User-Agent: myscript'"),),
        diffs=(r"user_agent='myscript'",)),),
    # libhtp (like Suricata's parser) hands bytes that follow a finished message to that
    # message's body; c2scribe keeps them there (data hidden past a forged length must stay
    # visible) and flags the transaction. Zeek, tshark and Suricata's file store stop at the
    # message's end.
    "suricata-verify/output-eve-fileinfo/input.pcap": (Expect(
        "definition", "after 'Content-length: 68' and the 68-byte EICAR body the server sends "
                      "4 more bytes ('\\r\\n\\r\\n'); libhtp counts them as body (72, flagged "
                      "response_bytes_after_body), Suricata's file is 68 bytes",
        (ev.check_run(lambda r: _tx(r) is not None and _tx(r).response_body_bytes == 72
                      and "response_bytes_after_body" in _tx(r).flags,
                      "tx 1: 72 body bytes, flagged response_bytes_after_body"),),
        diffs=(r"^fileinfo\{.*body_len=68",)),),
    "zeek/Traces/http/interleaved-http-entity.pcap": (Expect(
        "definition", "'Content-Length: 3' then 'fin\\n': libhtp counts the 4th byte as body "
                      "('Unexpected response body', flagged response_bytes_after_body); Zeek "
                      "stops at 3",
        (ev.check_run(lambda r: _tx(r) is not None and "response_bytes_after_body" in _tx(r).flags,
                      "tx 1 flagged response_bytes_after_body"),),
        diffs=(r"response_body_len 4 != 3",)),),
    "zeek/Traces/mixed-vlan-mpls.pcap": (Expect(
        "definition", "10.20.80.1:50343 sends the HTTP/0.9 request 'GET /' then an empty line: "
                      "libhtp reads the 2 bytes after the request line as its body (flagged "
                      "request_bytes_after_body), Zeek logs request_body_len 0",
        (ev.check_run(lambda r: any(t.http_09 and t.request_body_bytes == 2
                                    and "request_bytes_after_body" in t.flags for t in r.http),
                      "an HTTP/0.9 request with 2 body bytes, flagged"),),
        diffs=(r"request_body_len 2 != 0",)),),
    # Debian's libhtp 0.5.42 limits, kept visible by c2scribe's flags and states.
    "suricata-verify/http-encoding-gzip-uncompressed/input.pcap": (Expect(
        "definition", "the POST says 'Content-Encoding: gzip' but carries 106 bytes of plain "
                      "JSON; libhtp 0.5.42's inflate fails and it passes on what came out (216 "
                      "bytes, flagged request_body_decoding_failed); Suricata 8 falls back to "
                      "the raw bytes, so its body rule matches",
        (ev.check_run(lambda r: _tx(r) is not None
                      and "request_body_decoding_failed" in _tx(r).flags,
                      "tx 1 flagged request_body_decoding_failed"),),
        diffs=(r"alert sid 2038629 ",)),),
    "suricata-verify/http-multiple100/input.pcap": (Expect(
        "definition", "the server answers '100 Continue' twice before its 200 (tshark frames 6, "
                      "18, 45); libhtp 0.5.42 stops at the second 100 ('Already seen "
                      "100-Continue'), so c2scribe reports status 100 with state "
                      "partial_response; Suricata 8 logs the 200",
        (ev.check_run(lambda r: _tx(r) is not None and _tx(r).status_code == 100
                      and _tx(r).state == "partial_response",
                      "tx 1: status 100, partial_response"),),
        diffs=(r"http\{status=200\}",)),),
    "suricata-verify/http-range-file/input.pcap": (Expect(
        "definition", "the file comes as HTTP 206 responses with Content-Range 'bytes a-b/146515'; "
                      "Suricata reassembles the ranges into one 146515-byte file, c2scribe "
                      "reports each response body on its own",
        (ev.check_run(lambda r: sum(1 for t in r.http if t.status_code == 206 and (
            ev_header(t.response_headers, "content-range") or "").endswith("/146515")) >= 2,
            "at least two 206 responses with Content-Range .../146515"),),
        diffs=(r"fileinfo\{body_len=146515\}",)),),
    "suricata-verify/output-multi-eve/input.pcap": (Expect(
        "definition", "the test runs Suricata as a simulated IPS (--simulate-ips) whose rules drop "
                      "the log4shell flows (4 drop events upstream), so eve-nsm.json has one http "
                      "event; c2scribe is passive and reports the 3 requests in the capture "
                      "(tshark: frames 4, 23 and 409)",
        (ev.check_run(lambda r: len([t for t in r.http if t.method]) == 3, "3 requests"),),
        diffs=(r"^http: 3 != 1$",)),),
}


def ev_header(headers, name):
    for k, v in headers or ():
        if k.lower() == name:
            return v
    return None


# --------------------------------------------------------------------------- native engine

def _tx_with(pred) -> callable:
    return lambda run: any(pred(t) for t in run.http)


def _rst_hashes_differ(ctx: ev.Ctx) -> str | None:
    """None when no way of reading the server's bytes (holes as zeros, holes left out, cut at
    the first hole) gives a body whose sha256 Suricata reports, with holes in the stream."""
    segs = [s for s in ctx.segs if s.payload and s.src.endswith((":990", ":80"))]
    if not segs:
        return "no server data"
    base = min(s.seq for s in segs)
    filled, skipped, cut, end = bytearray(), bytearray(), None, 0
    for s in sorted(segs, key=lambda s: s.seq):
        off = s.seq - base
        if off > end:
            filled += b"\0" * (off - end)
            cut = len(filled) - (off - end) if cut is None else cut
        if off + len(s.payload) <= end:
            continue
        d = s.payload[max(0, end - off):]
        filled += d
        skipped += d
        end = off + len(s.payload)
    if cut is None:
        return "the server stream has no hole"
    import hashlib
    wanted = {c["match"]["body_sha256"] for c in ctx.oracle_checks()
              if "body_sha256" in (c.get("match") or {})}
    for b in (filled, skipped, filled[:cut]):
        i = bytes(b).find(b"\r\n\r\n")
        body = bytes(b[i + 4:]) if i >= 0 else b""
        if hashlib.sha256(body).hexdigest() in wanted:
            return "one of our readings gives Suricata's hash"
    return None


NATIVE_EXPECTED: dict[str, tuple[Expect, ...]] = {
    "suricata-verify/exception-policy-midstream-06/input-http-ACK.pcap": (Expect(
        "definition", "the flow starts mid-stream (an ACK, then the GET; no SYN) and the test "
                      "runs Suricata as an IPS with stream.midstream-policy=drop-flow, so it "
                      "drops the flow and logs no HTTP; the native engine picks it up",
        (ev.check_no_syn(), ev.check_run(_tx_with(lambda t: t.method == "GET"),
                                         "a GET picked up mid-stream")),
        engines=("native",)),),
    "zeek/Traces/wikipedia.pcap": (Expect(
        "definition", "141.142.220.118:35634 is captured mid-stream (3 frames, no SYN): the "
                      "native engine reports its 'GET /', as tshark does (ORACLES.md: tshark has "
                      "the same extra request); Zeek's http.log has no line for it",
        (ev.check_no_syn(("141.142.220.118:35634", "208.80.152.2:80")),),
        diffs=(r"^141\.142\.220\.118:35634>208\.80\.152\.2:80#1: extra tx GET '/'",),
        engines=("native",)),),
    "suricata-verify/file-match-crossed/http-multipart-post.pcap": (Expect(
        "definition", "sid 1 asks for 'bateau' in file.data and 'titi.txt' in file.name: "
                      "Suricata matches the two across the two parts of the POST ('bateau' is in "
                      "toto.txt, the test's point: crossed matching); c2scribe checks each part",
        (ev.check_run(_tx_with(lambda t: t.request_body is not None and
                               b'filename="toto.txt"' in t.request_body and
                               b"dans un bateau" in t.request_body and
                               b'filename="titi.txt"' in t.request_body),
                      "one POST with toto.txt holding 'bateau' and titi.txt"),),
        diffs=(r"^alert sid 1 body contains 'bateau'",), engines=("native",)),),
    "zeek/Traces/http/content-range-gap.pcap": (Expect(
        "definition", "a 206 answer with Content-Range bytes 20001-30353/30354: Zeek writes it "
                      "into the extracted file at offset 20001 (30354 bytes, zeros before); "
                      "c2scribe's body is the message body (10353 bytes, with its own 1380-byte "
                      "hole as zeros)",
        (ev.check_seq_hole(), ev.check_run(_tx_with(
            lambda t: t.status_code == 206 and t.response_body_bytes == 10353 and
            "bytes 20001-30353/30354" in dict(t.response_headers).get("Content-Range", "")),
            "a 206 of 10353 body bytes for range 20001-30353/30354")),
        engines=("native",)),),
}
for _cap in ("suricata-verify/tcp-rst-unacked-stream-09/TLPW1-tcp-110.37.219.134-10.12.14.101-tcp-990-49230.pcap",
             "suricata-verify/tcp-rst-unacked-stream-11/TLPW1-tcp-47.32.209.86-10.11.23.101-tcp-80-49470.pcap",
             "suricata-verify/tcp-rst-unacked-stream-12/TLPW1-tcp-110.37.219.134-10.12.14.101-tcp-990-49254.pcap"):
    NATIVE_EXPECTED[_cap] = (Expect(
        "definition", "the server's stream has holes (the client acknowledges past them) and "
                      "ends with a RST: Suricata's file hash is of none of the bodies the bytes "
                      "allow (holes as zeros, as c2scribe keeps them; holes left out; cut at the "
                      "first hole), so it reflects how Suricata cuts files at gaps and RSTs",
        (ev.check_seq_hole(), _rst_hashes_differ), engines=("native",)),)
_rst_hashes_differ.__doc__ = ("no reading of the server bytes gives Suricata's body sha256")
for _cap, _extra in NATIVE_EXPECTED.items():
    EXPECTED[_cap] = EXPECTED.get(_cap, ()) + _extra


# --------------------------------------------------------------------------- http-evader

#: Expected failures among the 442 http-evader captures: name -> category key of
#: EVADER_CATEGORIES. Every capture not listed must decode EICAR. (Empty: libhtp, Suricata's own
#: parser, decodes all of them today.)
EVADER_EXPECTED: dict[str, str] = {}

EVADER_CATEGORIES: dict[str, Expect] = {}


def expectations_for(capture: str, engine: str = "nids") -> tuple[Expect, ...]:
    got: tuple[Expect, ...] = ()
    if capture in EXPECTED:
        got = EXPECTED[capture]
    elif capture.startswith("suricata-verify/http-evader/"):
        name = capture.split("/")[2]
        if name in EVADER_EXPECTED:
            got = (EVADER_CATEGORIES[EVADER_EXPECTED[name]],)
    return tuple(e for e in got if e.concerns(engine))


# --------------------------------------------------------------------------- judging

@dataclass
class Verdict:
    status: str                 # pass / fail / xfail / xpass / stale / not-comparable
    reason: str                 # one line for the report
    details: list[str] = field(default_factory=list)

    @property
    def test_fails(self) -> bool:
        return self.status in ("fail", "xpass", "stale")


def judge(outcome, expects: tuple[Expect, ...], ctx: ev.Ctx | None) -> Verdict:
    """Combine an oracle comparison with the documented expectations of its capture."""
    if not outcome.comparable:
        return Verdict("not-comparable", outcome.note)
    # every documented reason must still be true
    broken = []
    for e in expects:
        for check in e.checks:
            msg = check(ctx) if ctx is not None else None
            if msg:
                broken.append(f"[{e.category}] {check.__doc__}: {msg}")
    diffs = list(outcome.diffs)
    if not expects:
        if diffs:
            return Verdict("fail", outcome.one_line(), diffs)
        return Verdict("pass", outcome.note or "agrees")
    whole = [e for e in expects if not e.diffs]
    covered: set[int] = set()
    stale = []
    for e in expects:
        if not e.diffs:
            continue
        for pat in e.diffs:
            hit = [i for i, d in enumerate(diffs) if re.search(pat, d)]
            if not hit:
                stale.append(f"[{e.category}] no difference matches {pat!r}")
            covered.update(hit)
    rest = [d for i, d in enumerate(diffs) if i not in covered]
    cats = "/".join(sorted({e.category for e in expects}))
    reason = "; ".join(e.reason for e in expects)
    if broken:
        return Verdict("stale", "documented reason no longer holds: " + "; ".join(broken), diffs)
    if not diffs:
        return Verdict("xpass", f"unexpectedly passing, update expectations ({cats}: {reason})")
    if whole:
        return Verdict("xfail", f"{cats}: {reason}", diffs)
    if rest:
        extra = f"; also stale: {'; '.join(stale)}" if stale else ""
        return Verdict("fail", "; ".join(rest) + f"  (documented and still seen: {cats}){extra}",
                       rest)
    if stale:
        return Verdict("xpass", "unexpectedly passing in part, update expectations: "
                       + "; ".join(stale), diffs)
    return Verdict("xfail", f"{cats}: {reason}", diffs)
