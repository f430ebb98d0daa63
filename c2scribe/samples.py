"""Sample captures c2scribe writes itself, for the demo and for tests on a fresh clone.

Real TCP conversations (handshake, MSS-sized segments, ACKs, FIN teardown) over Ethernet and
IPv4, written as classic pcap; one of them gzip-compressed, one rotation of two files with a
connection spanning both, one carrying hostile bytes (terminal escapes) to show they stay inert.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

MSS = 1448


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


class Conversation:
    """Packets of one TCP connection; times advance by small steps."""

    def __init__(self, cli: str, cport: int, srv: str, sport: int, t0: float):
        self.cli, self.srv = _ip4(cli), _ip4(srv)
        self.cport, self.sport = cport, sport
        self.t = t0
        self.seq = [1000, 5000]     # next seq of client, server
        self.packets: list[tuple[float, bytes]] = []
        self.ipid = 1

    def _pkt(self, frm: int, flags: int, payload: bytes = b"") -> None:
        src, dst = (self.cli, self.srv) if frm == 0 else (self.srv, self.cli)
        sp, dp = (self.cport, self.sport) if frm == 0 else (self.sport, self.cport)
        ack = self.seq[1 - frm] if flags & 0x10 else 0
        tcp = struct.pack("!HHIIBBHHH", sp, dp, self.seq[frm], ack, 5 << 4, flags, 65535, 0, 0)
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        c = _csum(pseudo + tcp + payload)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, self.ipid, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        self.ipid += 1
        eth = (b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01") if frm == 0 else \
              (b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02")
        self.packets.append((self.t, eth + b"\x08\x00" + ip + tcp + payload))
        self.seq[frm] = (self.seq[frm] + len(payload) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
        self.t += 0.0005

    def handshake(self) -> "Conversation":
        self._pkt(0, 0x02)
        self._pkt(1, 0x12)
        self._pkt(0, 0x10)
        return self

    def send(self, frm: int, data: bytes) -> "Conversation":
        for i in range(0, len(data), MSS):
            self._pkt(frm, 0x18, data[i:i + MSS])
            if (i // MSS) % 2 == 1 or i + MSS >= len(data):
                self._pkt(1 - frm, 0x10)
        self.t += 0.02
        return self

    def close(self) -> "Conversation":
        self._pkt(0, 0x11)
        self._pkt(1, 0x11)
        self._pkt(0, 0x10)
        return self


def _response(status: str, body: bytes, *headers: str, chunked: bool = False,
              gz: bool = False) -> bytes:
    hs = [f"HTTP/1.1 {status}", "Server: nginx", *headers]
    if gz:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = c.compress(body) + c.flush()
        hs.append("Content-Encoding: gzip")
    if chunked:
        hs.append("Transfer-Encoding: chunked")
        parts = [body[i:i + 700] for i in range(0, len(body), 700)]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        hs.append(f"Content-Length: {len(body)}")
        wire = body
    return ("\r\n".join(hs) + "\r\n\r\n").encode() + wire


def _request(method: str, uri: str, host: str, body: bytes = b"", *headers: str) -> bytes:
    hs = [f"{method} {uri} HTTP/1.1", f"Host: {host}",
          "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)", *headers]
    if body or method == "POST":
        hs.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(hs) + "\r\n\r\n").encode() + body


def _write_pcap(path: str, packets: list[tuple[float, bytes]], compress: bool = False) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, frame in sorted(packets, key=lambda p: p[0]):
        sec = int(t)
        out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(frame), len(frame)))
        out.append(frame)
    data = b"".join(out)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def conversations() -> dict[str, list[Conversation]]:
    t0 = 1_700_000_000.0
    html = (b"<html><head><title>Welcome</title></head><body>" + b"<p>hello world</p>\n" * 200
            + b"</body></html>\n")
    web = Conversation("10.1.1.10", 49200, "93.184.216.34", 80, t0).handshake()
    web.send(0, _request("GET", "/index.html", "www.example.com", b"", "Accept: */*"))
    web.send(1, _response("200 OK", html, "Content-Type: text/html"))
    web.send(0, _request("GET", "/api/status", "www.example.com"))
    web.send(1, _response("200 OK", b'{"status": "ok", "items": [' + b'1,' * 500 + b'2]}',
                          "Content-Type: application/json", chunked=True, gz=True))
    web.send(0, _request("POST", "/login", "www.example.com", b"user=alice&pass=hunter2",
                         "Content-Type: application/x-www-form-urlencoded"))
    web.send(1, _response("302 Found", b"", "Location: /home"))
    web.close()

    beacon = Conversation("10.1.1.23", 51000, "203.0.113.77", 8080, t0 + 5).handshake()
    for i in range(3):
        beacon.send(0, _request("POST", "/beacon", "updates.example.net",
                                b"eyJwYXciOiAiYWJjZGVmIiwgInJlc3VsdHMiOiBbXX0=",
                                "Content-Type: application/octet-stream"))
        beacon.send(1, _response("200 OK", b"eyJzbGVlcCI6IDYwLCAiaW5zdHJ1Y3Rpb25zIjogW119",
                                 "Content-Type: text/plain"))
        beacon.t += 60
    beacon.close()

    shell = Conversation("10.1.1.23", 51002, "203.0.113.77", 4444, t0 + 10).handshake()
    shell.send(1, b"Microsoft Windows [Version 10.0.19045]\r\nC:\\Users\\bob>")
    shell.send(0, b"whoami\r\n")
    shell.send(1, b"corp\\bob\r\nC:\\Users\\bob>")
    shell.close()

    hostile = Conversation("10.1.1.66", 52000, "198.51.100.9", 80, t0 + 20).handshake()
    hostile.send(0, _request("GET", "/\x1b[2J\x1b]0;pwned\x07", "evil.example",
                             b"", "X-Note: \x1b[31mred\x1b[0m \u202eexe.txt"))
    hostile.send(1, _response("200 OK", b"\x1b[2Jcleared?\x1b]52;c;ZWNobyBwd25lZA==\x07\n",
                              "Content-Type: text/plain"))
    hostile.close()

    big = Conversation("10.1.1.10", 49300, "192.0.2.50", 80, t0 + 30).handshake()
    big.send(0, _request("GET", "/download/update.bin", "cdn.example.org"))
    big.send(1, _response("200 OK", bytes(range(256)) * 400, "Content-Type: application/octet-stream"))
    big.close()
    return {"web": [web], "beacon": [beacon, shell], "hostile": [hostile], "big": [big]}


def write_samples(directory: str) -> list[str]:
    """Write the sample captures; returns their paths, in the order to read them."""
    os.makedirs(directory, exist_ok=True)
    conv = conversations()
    paths = []

    def put(name: str, convs: list[Conversation], compress: bool = False) -> None:
        path = os.path.join(directory, name)
        _write_pcap(path, [p for c in convs for p in c.packets], compress)
        paths.append(path)

    put("web-keepalive.pcap", conv["web"])
    put("beacon-and-shell.pcap.gz", conv["beacon"], compress=True)
    put("hostile-bytes.pcap", conv["hostile"])
    # a rotation: the download is cut in the middle, across two files
    pk = conv["big"][0].packets
    half = len(pk) // 2
    for i, part in enumerate((pk[:half], pk[half:])):
        path = os.path.join(directory, f"rotation.pcap{i}")
        _write_pcap(path, part)
        paths.append(path)
    return paths
