"""The native reassembly engine on the cases libnids cannot take, in captures built with scapy.

Each test builds a conversation segment by segment (tests/native_captures.py), with exact
sequence numbers, runs the native engine over it, and checks the records: IPv6, fragments of
both IP versions, mid-stream pickup, holes in the capture inside and across HTTP messages,
overlapping segments under each policy, sequence wrap-around, reuse of a 4-tuple, memory
caps, and timers in capture time. Where libnids behaves otherwise the test says so.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from native_captures import Conv, ether, http_get, http_response
from c2scribe.capture import run_chain
from c2scribe.engine import Engine, EngineOptions
from c2scribe.schema import Connection, EngineWarning, HttpTransaction, StreamChunk

from scapy.all import IP, TCP, IPv6, IPv6ExtHdrFragment, fragment, fragment6


def run(path, engine="native", stream_chunks=False, **opts):
    e = Engine(EngineOptions(engine=engine, body_keep=1 << 22, stream_keep=1 << 20,
                             stream_keep_http=True, **opts),
               stream_chunks=stream_chunks)
    recs = list(run_chain(e, [str(path)]))
    return recs, e.final_counters


def txs(recs):
    return sorted((r for r in recs if isinstance(r, HttpTransaction)),
                  key=lambda t: (t.conn_id, t.index))


def conns(recs):
    return [r for r in recs if isinstance(r, Connection)]


BODY1 = bytes(random.Random(1).randrange(256) for _ in range(9000))
BODY2 = b"second body " * 300


def keepalive(conv, bodies, drop=None, chunked=False):
    """GET /1 ... /n on one connection; drop: {(i, 'req'|'resp'): segment numbers kept}."""
    drop = drop or {}
    for i, body in enumerate(bodies, 1):
        conv.send("c", http_get(f"/{i}"), keep=drop.get((i, "req"), True))
        conv.send("s", http_response(body, chunked=chunked), keep=drop.get((i, "resp"), True))
    return conv


# --------------------------------------------------------------------------- IPv6, fragments

def test_ipv6_connection_is_reassembled_by_native_only(tmp_path):
    c = Conv(cli=("2001:db8::1", 40000), srv=("2001:db8::2", 80)).handshake()
    keepalive(c, [BODY1]).close()
    path = c.write(tmp_path / "v6.pcap")
    recs, _ = run(path)
    (t,) = txs(recs)
    assert (t.method, t.uri, t.status_code, t.state) == ("GET", "/1", 200, "complete")
    assert t.response_body == BODY1 and t.src_ip == "2001:db8::1"
    (cn,) = conns(recs)
    assert cn.reassembled and cn.handshake and cn.engine == "native"
    assert cn.end_reason == "fin"
    nids, _ = run(path, engine="nids")
    assert not txs(nids) and not conns(nids)[0].reassembled


def _fragmented(tmp_path, v6: bool, shuffle: bool):
    """A handshake, then a POST whose single 4000-byte segment is cut into IP fragments."""
    cli, srv = (("2001:db8::1", 40001), ("2001:db8::2", 80)) if v6 else \
        (("10.0.0.1", 40001), ("10.0.0.2", 80))
    c = Conv(cli=cli, srv=srv).handshake()
    body = bytes(random.Random(2).randrange(256) for _ in range(4000))
    req = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    seg = c.packet("c", "PA", req, keep=False)
    c.seq["c"] += len(req)
    if v6:
        l3 = seg[IPv6]
        frags = fragment6(IPv6(src=l3.src, dst=l3.dst) / IPv6ExtHdrFragment(id=77) / l3.payload,
                          1280)
    else:
        frags = fragment(seg[IP], fragsize=1200)
    frags = [ether() / f for f in frags]
    if shuffle:
        random.Random(3).shuffle(frags)
        frags.append(frags[1].copy())                  # and a duplicate fragment
    for f in frags:
        c.t += 0.0001
        f.time = c.t
        c.pkts.append(f)
    c.packet("s", "A")
    c.send("s", http_response(b"ok")).close()
    return c.write(tmp_path / "frag.pcap"), body


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_fragmented_segment_is_reassembled(tmp_path, v6, shuffle):
    path, body = _fragmented(tmp_path, v6, shuffle)
    recs, counters = run(path)
    (t,) = txs(recs)
    assert (t.method, t.uri, t.status_code, t.state) == ("POST", "/up", 200, "complete")
    assert t.request_body == body
    assert counters["ip_fragments_reassembled"] == 1
    assert counters["ip_fragments"] >= 4


def test_fragments_time_out_in_capture_time(tmp_path):
    c = Conv().handshake()
    seg = c.packet("c", "PA", http_get("/x") * 40, keep=False)
    frags = fragment(seg[IP], fragsize=400)
    for f in frags[:-1]:                                # the last fragment never comes
        c.t += 0.001
        g = ether() / f
        g.time = c.t
        c.pkts.append(g)
    c.packet("s", "A", dt=61)                           # 61 s of capture time later
    recs, counters = run(c.write(tmp_path / "lost-frag.pcap"))
    assert counters["ip_fragment_timeouts"] == 1
    assert any(isinstance(r, EngineWarning) and r.code == "ip_fragment_timeouts" for r in recs)


# --------------------------------------------------------------------------- mid-stream

def test_midstream_pickup_orients_by_content(tmp_path):
    # the client uses the lower port: the port guess alone would take it for the server
    c = Conv(cli=("10.0.0.1", 1000), srv=("10.0.0.2", 8080))
    keepalive(c, [BODY1, BODY2])
    recs, counters = run(c.write(tmp_path / "mid.pcap"))
    (cn,) = conns(recs)
    assert (cn.src_port, cn.dst_port) == (1000, 8080)
    assert cn.midstream and not cn.handshake and cn.orientation == "content"
    assert cn.orientation_guessed and cn.reassembled
    assert [(t.uri, t.status_code, t.response_body) for t in txs(recs)] == \
        [("/1", 200, BODY1), ("/2", 200, BODY2)]
    assert counters["tcp_midstream"] == 1
    nids, _ = run(tmp_path / "mid.pcap", engine="nids")
    assert not txs(nids)


def test_late_syn_does_not_swap_sides_once_bytes_went_up(tmp_path):
    """Picked up mid-stream (not HTTP: the ports guess the sides, here wrongly), then a SYN
    from the real client turns up late (a merged or reordered capture). Bytes already went to
    decoders with the guessed sides: the connection keeps them, so its record and its
    stream chunks say the same thing about who sent what."""
    c = Conv(cli=("10.0.0.1", 1000), srv=("10.0.0.2", 8080))
    c.send("c", b"\x01hello from the client")
    c.send("s", b"\x02hello from the server")
    c.packet("c", "S", seq=c.seq["c"] - 100, ack=0)
    c.send("c", b"\x01more from the client")
    c.send("s", b"\x02more from the server")
    recs, _ = run(c.write(tmp_path / "late-syn.pcap"), stream_chunks=True)
    (cn,) = conns(recs)
    chunks = [r for r in recs if isinstance(r, StreamChunk)]
    assert cn.midstream and cn.orientation == "ports"
    for ch in chunks:                               # chunks carry the connection's 4-tuple
        assert (ch.src_ip, ch.src_port, ch.dst_ip, ch.dst_port) == \
            (cn.src_ip, cn.src_port, cn.dst_ip, cn.dst_port), ch
    for d, total in (("client_to_server", cn.c2s_bytes), ("server_to_client", cn.s2c_bytes)):
        assert sum(len(ch.data) for ch in chunks if ch.direction == d) == total == 43
    assert {bytes(ch.data[:1]) for ch in chunks if ch.direction == "client_to_server"} == \
        {b"\x02"}                                   # the side the guess took for the client


def test_one_sided_capture_is_handed_over_without_acks(tmp_path):
    c = Conv()
    c.handshake()
    c.send("c", http_get("/only-client"), ack=False)
    c.pkts[:] = [p for p in c.pkts if p[TCP].sport == 40000]    # the server side is lost
    recs, _ = run(c.write(tmp_path / "oneside.pcap"))
    (t,) = txs(recs)
    assert (t.method, t.uri, t.state) == ("GET", "/only-client", "no_response")


# --------------------------------------------------------------------------- capture loss

def test_hole_in_content_length_body_is_filled_and_flagged(tmp_path):
    c = Conv().handshake()
    keepalive(c, [BODY1, BODY2], drop={(1, "resp"): {0, 1, 2, 4, 5, 6}}).close()
    recs, counters = run(c.write(tmp_path / "gap-cl.pcap"))
    t1, t2 = txs(recs)
    head = len(http_response(BODY1)) - len(BODY1)
    lost = (3 * 1400 - head, 4 * 1400 - head)             # body offsets of segment 3
    assert t1.state == "complete" and t1.response_missing_bytes == 1400
    assert "response_gap" in t1.flags and t1.response_body_sha256 is None
    assert len(t1.response_body) == len(BODY1)
    assert t1.response_body[:lost[0]] == BODY1[:lost[0]]
    assert t1.response_body[lost[0]:lost[1]] == bytes(1400)
    assert t1.response_body[lost[1]:] == BODY1[lost[1]:]
    assert (t2.uri, t2.state, t2.response_body, t2.response_missing_bytes) == \
        ("/2", "complete", BODY2, 0)
    assert t2.response_body_sha256 == hashlib.sha256(BODY2).hexdigest()
    (cn,) = conns(recs)
    assert (cn.s2c_gaps, cn.s2c_missing_bytes, cn.c2s_missing_bytes) == (1, 1400, 0)
    assert counters["tcp_gaps"] == 1 and counters["http_gaps_filled"] == 1
    # libnids stalls at the hole: nothing after it, the second exchange is lost
    nids, _ = run(tmp_path / "gap-cl.pcap", engine="nids")
    assert [t.state for t in txs(nids)] != ["complete", "complete"]


def test_hole_inside_a_chunk_is_filled(tmp_path):
    # segment 3 (response bytes 4200-5600) lies inside the second chunk's data (3059-6059)
    c = Conv().handshake()
    keepalive(c, [BODY1, BODY2], chunked=True, drop={(1, "resp"): {0, 1, 2, 4, 5, 6}}).close()
    recs, counters = run(c.write(tmp_path / "gap-chunk.pcap"))
    t1, t2 = txs(recs)
    assert t1.state == "complete" and t1.response_missing_bytes == 1400
    assert t1.response_body_bytes == len(BODY1)
    assert t1.response_body[:4200 - 3059 + 3000] == BODY1[:4200 - 3059 + 3000]
    assert t1.response_body[4141:5541] == bytes(1400)
    assert t1.response_body[5541:] == BODY1[5541:]
    assert (t2.uri, t2.response_body) == ("/2", BODY2)
    assert counters["http_gaps_filled"] == 1


def test_hole_over_chunk_framing_closes_the_message_and_goes_on(tmp_path):
    # the 3000-byte chunks put a chunk-size line near offset 3000 + header: segment 2 holds it
    c = Conv().handshake()
    keepalive(c, [BODY1, BODY2], chunked=True, drop={(1, "resp"): {0, 1, 3, 4, 5, 6}},
              ).close()
    resp = http_response(BODY1, chunked=True)
    assert b"\r\nbb8\r\n" in resp[2 * 1400:3 * 1400], "the dropped segment holds a chunk line"
    recs, counters = run(c.write(tmp_path / "gap-framing.pcap"))
    t1, t2 = txs(recs)
    assert "response_gap" in t1.flags and t1.response_missing_bytes > 0
    assert (t2.uri, t2.status_code, t2.response_body, t2.state) == ("/2", 200, BODY2, "complete")
    assert counters["http_gap_resyncs"] >= 1


def test_lost_request_keeps_requests_and_responses_paired(tmp_path):
    c = Conv().handshake()
    bodies = [b"one" * 100, b"two" * 100, b"three" * 100]
    keepalive(c, bodies, drop={(2, "req"): set()}).close()
    recs, _ = run(c.write(tmp_path / "lost-req.pcap"))
    t1, t2, t3 = txs(recs)
    assert (t1.uri, t1.response_body) == ("/1", bodies[0])
    assert t2.method is None and t2.uri is None and "request_lost_in_gap" in t2.flags
    assert (t2.state, t2.status_code, t2.response_body) == ("response_only", 200, bodies[1])
    assert (t3.uri, t3.response_body, t3.state) == ("/3", bodies[2], "complete")


def test_lost_response_start_keeps_requests_and_responses_paired(tmp_path):
    c = Conv().handshake()
    bodies = [b"one" * 100, b"two" * 1000, b"three" * 100]
    keepalive(c, bodies, drop={(2, "resp"): {1, 2}}).close()      # headers segment lost
    recs, _ = run(c.write(tmp_path / "lost-resp.pcap"))
    t1, t2, t3 = txs(recs)
    assert (t1.uri, t1.response_body) == ("/1", bodies[0])
    assert (t2.uri, t2.status_code, t2.state) == ("/2", None, "no_response")
    assert "response_lost_in_gap" in t2.flags
    assert (t3.uri, t3.status_code, t3.response_body, t3.state) == \
        ("/3", 200, bodies[2], "complete")


@pytest.mark.parametrize("pure_ack", [True, False], ids=["pure-ack", "ack-on-next-data"])
@pytest.mark.parametrize("lost", [("resp", 1), ("resp", 2), ("resp", 3), ("req", 1), ("req", 2),
                                  ("req", 3)], ids=lambda x: f"{x[0]}{x[1]}")
def test_one_lost_message_leaves_the_others_paired(tmp_path, lost, pure_ack):
    """Three exchanges on one connection, one message not captured. The receiver's ACK for
    it comes in a pure ACK, or rides on its next data (then the ACK of a request may be lost
    with the response it came in). Every other exchange keeps its own answer, and the one
    that lost a side says which."""
    c = Conv().handshake()
    bodies = {i: f"body-{i}-".encode() * (40 * i) for i in (1, 2, 3)}
    for i in (1, 2, 3):
        c.send("c", http_get(f"/{i}"), keep=lost != ("req", i), ack=False)
        if pure_ack:
            c.packet("s", "A")
        c.send("s", http_response(bodies[i]), keep=lost != ("resp", i), ack=False)
        if pure_ack:
            c.packet("c", "A")
    c.close()
    recs, _ = run(c.write(tmp_path / "one-lost.pcap"))
    got = {t.index: t for t in txs(recs)}
    assert len(got) == 3, [(t.uri, t.status_code, t.flags) for t in got.values()]
    side, n = lost
    for i, t in got.items():
        if i != n:
            assert (t.uri, t.response_body, t.state) == (f"/{i}", bodies[i], "complete")
        elif side == "req":
            assert t.method is None and "request_lost_in_gap" in t.flags
            assert (t.state, t.response_body) == ("response_only", bodies[i])
            assert t.flags == ["request_lost_in_gap"]
        else:
            assert (t.uri, t.status_code, t.state) == (f"/{i}", None, "no_response")
            assert "response_lost_in_gap" in t.flags


def test_first_request_lost_then_pipelined_one_keeps_pairing(tmp_path):
    """The first request is lost and the client's next bytes (a pipelined request) arrive
    before any response: the connection is known to be HTTP from the client's side, and the
    lost request still gets its stand-in, so each response pairs with its own request."""
    c = Conv().handshake()
    bodies = [b"one" * 100, b"two" * 100]
    c.send("c", http_get("/1"), keep=False, ack=False)
    c.send("c", http_get("/2"), ack=False)
    c.packet("s", "A")                              # acknowledges both requests
    for b in bodies:
        c.send("s", http_response(b))
    c.close()
    recs, _ = run(c.write(tmp_path / "lost-first-pipelined.pcap"))
    t1, t2 = txs(recs)
    assert t1.method is None and t1.flags == ["request_lost_in_gap"]
    assert (t1.state, t1.response_body) == ("response_only", bodies[0])
    assert (t2.uri, t2.response_body, t2.state) == ("/2", bodies[1], "complete")


def test_stream_decoders_are_told_of_the_gap(tmp_path):
    c = Conv(srv=("10.0.0.2", 4444)).handshake()
    data = bytes(range(256)) * 20
    c.send("s", data, keep={0, 1, 3}).close()
    recs, _ = run(c.write(tmp_path / "raw-gap.pcap"), stream_chunks=True)
    chunks = [r for r in recs if isinstance(r, StreamChunk) and r.direction == "server_to_client"]
    assert [(ch.stream_offset, ch.gap_before, len(ch.data)) for ch in chunks] == \
        [(0, 0, 1400), (1400, 0, 1400), (4200, 1400, 920)]
    assert chunks[2].data == data[4200:]


def test_hole_without_acks_is_skipped_after_the_hole_timeout(tmp_path):
    # one-sided (no ACKs at all): a hole with bytes behind it waits, then is skipped
    c = Conv()
    c.handshake()
    c.send("c", b"A" * 1000, ack=False)
    c.send("c", b"B" * 1000, keep=False, ack=False)
    c.send("c", b"C" * 1000, ack=False)
    c.packet("c", "A", dt=6)                             # 6 s of capture time later
    c.pkts[:] = [p for p in c.pkts if p[TCP].sport == 40000]
    recs, counters = run(c.write(tmp_path / "aged.pcap"), stream_chunks=True)
    chunks = [r for r in recs if isinstance(r, StreamChunk)]
    assert [len(ch.data) for ch in chunks] == [1000, 1000]
    assert chunks[1].gap_before == 1000 and chunks[1].data == b"C" * 1000
    assert counters["tcp_gaps"] == 1


# --------------------------------------------------------------------------- overlaps

def _overlap(tmp_path, first: bytes, second: bytes, second_off: int, policy: str,
             host_policies=()):
    """Two client segments in flight (not yet acknowledged) that overlap: first at offset 0,
    second at second_off; then the server acknowledges both."""
    c = Conv().handshake()
    base = c.seq["c"]
    c.packet("c", "PA", first, seq=base)
    c.packet("c", "PA", second, seq=base + second_off)
    c.seq["c"] = base + max(len(first), second_off + len(second))
    c.packet("s", "A")
    c.close()
    recs, counters = run(c.write(tmp_path / f"ovl-{policy}.pcap"), tcp_policy=policy,
                         host_policies=host_policies)
    (cn,) = conns(recs)
    return cn, counters


@pytest.mark.parametrize("policy,want", [
    ("first", b"GOODGOOD"), ("last", b"EVILEVIL"), ("bsd", b"GOODGOOD"),
    ("linux", b"GOODGOOD"), ("old-linux", b"EVILEVIL"), ("solaris", b"EVILEVIL"),
    ("windows", b"GOODGOOD"), ("vista", b"GOODGOOD"),
])
def test_exact_overlap_follows_the_policy(tmp_path, policy, want):
    cn, counters = _overlap(tmp_path, b"GOODGOOD", b"EVILEVIL", 0, policy)
    assert cn.c2s_data == want
    assert cn.overlap_conflicts == 1 and counters["tcp_overlap_conflicts"] == 1
    (sample,) = cn.overlap_conflict_samples
    kept = "fresh" if want == b"EVILEVIL" else "held"
    assert sample == (f"client_to_server offset=0 length=8 kept={kept} "
                      f"held={b'GOODGOOD'.hex()} fresh={b'EVILEVIL'.hex()}")


@pytest.mark.parametrize("policy,want", [
    # the second segment starts 2 bytes before the first held one and ends with it
    ("first", b"xxGOODGOOD"), ("bsd", b"xxEVILEVIL"), ("linux", b"xxEVILEVIL"),
    ("solaris", b"xxEVILEVIL"), ("vista", b"xxGOODGOOD"), ("last", b"xxEVILEVIL"),
])
def test_overlap_starting_before_follows_the_policy(tmp_path, policy, want):
    c = Conv().handshake()
    base = c.seq["c"]
    c.packet("c", "PA", b"GOODGOOD", seq=base + 2)
    c.packet("c", "PA", b"xxEVILEVIL", seq=base)
    c.seq["c"] = base + 10
    c.packet("s", "A")
    c.close()
    recs, _ = run(c.write(tmp_path / "before.pcap"), tcp_policy=policy)
    assert conns(recs)[0].c2s_data == want


def test_host_policy_applies_to_the_receiving_host(tmp_path):
    # the server 10.0.0.2 takes the last copy; other hosts keep the default (bsd)
    cn, _ = _overlap(tmp_path, b"GOODGOOD", b"EVILEVIL", 0, "bsd",
                     host_policies=("10.0.0.0/24=bsd", "10.0.0.2/32=last"))
    assert cn.c2s_data == b"EVILEVIL"
    cn, _ = _overlap(tmp_path, b"GOODGOOD", b"EVILEVIL", 0, "bsd",
                     host_policies=("10.0.0.1/32=last",))
    assert cn.c2s_data == b"GOODGOOD"


def test_retransmitted_bytes_are_not_duplicated(tmp_path):
    c = Conv().handshake()
    base = c.seq["c"]
    req = http_get("/r")
    for _ in range(3):
        c.packet("c", "PA", req, seq=base)
    c.seq["c"] += len(req)
    c.packet("s", "A")
    c.packet("c", "PA", req, seq=base)                  # a late one, already acknowledged
    c.send("s", http_response(b"x")).close()
    recs, counters = run(c.write(tmp_path / "rexmit.pcap"))
    (cn,) = conns(recs)
    assert cn.c2s_data == req and cn.overlap_conflicts == 0
    assert len(txs(recs)) == 1


# --------------------------------------------------------------------------- numbers, tuples

def test_sequence_numbers_wrap(tmp_path):
    c = Conv(isn_c=2**32 - 700, isn_s=2**32 - 5).handshake()
    keepalive(c, [BODY1]).close()
    recs, _ = run(c.write(tmp_path / "wrap.pcap"))
    (t,) = txs(recs)
    assert t.response_body == BODY1 and t.state == "complete"
    (cn,) = conns(recs)
    assert cn.c2s_missing_bytes == cn.s2c_missing_bytes == 0


def test_reused_4tuple_gives_two_connections(tmp_path):
    c = Conv().handshake()
    keepalive(c, [b"first"]).close()
    d = Conv(isn_c=9_000_000, isn_s=7_000_000, t0=c.t + 1, pkts=c.pkts).handshake()
    keepalive(d, [b"second"]).close()
    recs, _ = run(c.write(tmp_path / "reuse.pcap"))
    assert [t.response_body for t in sorted(txs(recs), key=lambda t: t.start_us)] == \
        [b"first", b"second"]
    assert len(conns(recs)) == 2


def test_rst_hands_over_what_was_not_acknowledged(tmp_path):
    c = Conv().handshake()
    c.send("c", http_get("/rst"))
    c.send("s", http_response(b"payload before reset"), ack=False)
    c.packet("s", "RA")
    recs, _ = run(c.write(tmp_path / "rst.pcap"))
    (t,) = txs(recs)
    assert t.response_body == b"payload before reset"
    assert conns(recs)[0].end_reason == "rst"


# --------------------------------------------------------------------------- bounds

def test_out_of_order_flood_is_bounded(tmp_path):
    # a hole at the start, then 2 MB queued behind it and never acknowledged
    c = Conv(srv=("10.0.0.2", 5555)).handshake()
    c.packet("c", "PA", b"x" * 100, keep=False)
    c.seq["c"] += 100
    for _ in range(1500):
        c.packet("c", "PA", b"y" * 1400)
        c.seq["c"] += 1400
    recs, counters = run(c.write(tmp_path / "flood.pcap"), tcp_conn_max=256 << 10,
                         stream_chunks=True)
    assert counters["tcp_connection_memcap"] >= 1
    got = sum(len(r.data) for r in recs if isinstance(r, StreamChunk))
    assert got == 1500 * 1400                            # everything, with the hole skipped
    (cn,) = conns(recs)
    assert cn.c2s_missing_bytes == 100


def test_zeros_for_lost_bytes_are_bounded_by_the_capture(tmp_path):
    """A hostile sender: a huge Content-Length, then thousands of 1-byte segments each 60 kB
    past the last, each acknowledged. Every hole lies inside the body, so each would be
    filled with zeros (through libhtp and SHA-256); in all they may not pass 256 MiB + 4x the
    capture's bytes. Past that, the message is closed at the gap, and the warning says so."""
    import struct
    c = Conv().handshake()
    c.send("c", b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    c.send("s", b"HTTP/1.1 200 OK\r\nContent-Length: 4000000000\r\n\r\nab", ack=False)
    data_pkt, ack_pkt = bytes(c.packet("s", "A", b"z", keep=False)), \
        bytes(c.packet("c", "A", keep=False))
    base = c.write(tmp_path / "head.pcap").read_bytes()
    seq_at = 14 + 20 + 4                                   # Ethernet, IPv4, TCP ports
    s_seq, c_seq = c.seq["s"], c.seq["c"]
    gaps, step, recs = 6000, 60_000, []
    t = int(c.t) + 1
    for i in range(gaps):
        s_seq += step
        d = bytearray(data_pkt)
        d[seq_at:seq_at + 4] = struct.pack("!I", s_seq & 0xFFFFFFFF)
        s_seq += 1
        a = bytearray(ack_pkt)
        a[seq_at:seq_at + 8] = struct.pack("!II", c_seq & 0xFFFFFFFF, s_seq & 0xFFFFFFFF)
        for frame in (d, a):
            recs.append(struct.pack("<IIII", t, i, len(frame), len(frame)) + frame)
    path = tmp_path / "fill.pcap"
    path.write_bytes(base + b"".join(recs))
    e = Engine(EngineOptions(body_keep=0))
    recs = list(run_chain(e, [str(path)]))
    counters = e.final_counters
    budget = (256 << 20) + 4 * counters["bytes"]                # the packets' bytes
    assert counters["bytes"] < path.stat().st_size
    assert counters["tcp_gaps"] == gaps
    assert counters["http_gap_fill_budget"] >= 1
    # the budget grows with the bytes read so far: at least the free part, at most the whole
    assert (256 << 20) - step <= counters["http_gaps_filled"] * step <= budget
    (tx,) = txs(recs)
    assert tx.response_missing_bytes == (counters["http_gaps_filled"] + 1) * step  # + where it stopped
    assert tx.state == "partial_response" and "response_gap" in tx.flags
    (cn,) = conns(recs)
    assert cn.s2c_missing_bytes == gaps * step                 # TCP still counts every hole
    assert any(isinstance(r, EngineWarning) and r.code == "http_gap_fill_budget" for r in recs)
