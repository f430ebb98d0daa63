#!/usr/bin/env python3
"""Compare c2scribe/capture (through tests/c/test_capture) with tshark on every capture.

For each *.pcap / *.pcapng under the test data:
  * reading: same packet count, timestamps (to the microsecond), captured and original lengths;
  * link layer: every packet tshark decodes as IPv4/IPv6 must be found by cs_link_to_ip, and the
    header found must be the innermost one tshark reaches through the tunnels we implement
    (same IP version and source address);
  * chunking: the driver output is identical whatever the chunk size (4096, 1 and 7 bytes).
With --variants, every capture is also rewritten in the formats the test data lacks (pcapng,
nanosecond pcap via editcap; big-endian pcap; big-endian multi-section pcapng with if_tsoffset,
extra blocks and options; little-endian pcapng with 2^-20 s resolution and obsolete Packet
Blocks), and cut 3 bytes short (both tools must report the damage and agree on the packets
before it); each rewrite is compared with tshark the same way.
Prints a summary table (and a few examples per row); exit status 1 on any mismatch.

Remaining differences, none counted as mismatches:
  * arkime/arkime_synthetic.pcap packet 623 (row "explained"): a Geneve packet whose UDP *source*
    port is 6081 (destination 12345). tshark decodes UDP by either port; we decapsulate
    VXLAN/Geneve by destination port only (the brief's rule; a reply from the tunnel endpoint
    has the well-known port as destination too), so we return the outer IPv4 header.
  * Tunnels we do not decapsulate stop the comparison at the last IP header before them (GTP,
    Teredo, L2TP, IP inside ICMP errors, ...), as do fragmented outer packets: tshark runs with
    IP reassembly off, so it does not decapsulate those either.
  * "info" rows are statistics (tunnels decoded, damaged captures both tools report, IP found
    where tshark stops earlier), not differences.
"""
import argparse
import collections
import concurrent.futures
import decimal
import ipaddress
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# tshark protocol names we walk through after the first IP header: the tunnels we implement
THROUGH = {"ip", "ipv6", "ipv6.hopopts", "ipv6.routing", "ipv6.dstopts", "gre", "eth",
           "ethertype", "vlan", "ieee8021ad", "mpls", "pwethheuristic", "pwethcw", "pwethnocw",
           "pppoes", "ppp", "vxlan", "geneve", "erspan", "llc", "nsh", "cmd"}
MAX_IP_LAYERS = 5  # outer header + 4 decapsulations (MAX_TUNNELS in linktype.c)

# (capture relative to the test data, packet number) -> why we differ from tshark
EXPLAINED = {
    ("arkime/arkime_synthetic.pcap", 623): "Geneve by UDP source port (see the top comment)",
}

TSHARK_FIELDS = ["frame.number", "frame.time_epoch", "frame.len", "frame.cap_len",
                 "frame.protocols", "ip.src", "ipv6.src"]


def expected_inner(protocols, ip_srcs, ip6_srcs):
    """(version, source) of the innermost IP header tshark reaches through our tunnels."""
    toks = protocols.split(":")
    n4 = n6 = 0
    inner = None
    for i, t in enumerate(toks):
        if t in ("ip", "ipv6"):
            if t == "ip":
                n4 += 1
                inner = (4, ip_srcs[n4 - 1] if n4 <= len(ip_srcs) else None)
            else:
                n6 += 1
                inner = (6, ip6_srcs[n6 - 1] if n6 <= len(ip6_srcs) else None)
            if n4 + n6 == MAX_IP_LAYERS:
                break
        elif inner and t not in THROUGH and not (
                t == "udp" and toks[i + 1:i + 2] in (["vxlan"], ["geneve"])):
            break
    return inner


def run_tshark(path):
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-o", "tcp.desegment_tcp_streams:FALSE", "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=,", "-E", "separator=/t"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    rows = []
    for line in p.stdout.splitlines():
        f = line.split("\t")
        f += [""] * (len(TSHARK_FIELDS) - len(f))
        rows.append({"ts": f[1], "len": f[2], "caplen": f[3], "protocols": f[4],
                     "ip.src": [x for x in f[5].split(",") if x],
                     "ipv6.src": [x for x in f[6].split(",") if x]})
    err = "\n".join(l for l in p.stderr.splitlines() if "Running as user" not in l).strip()
    return rows, err


def run_driver(driver, path, chunk):
    p = subprocess.run([driver, "-s", "-c", str(chunk), path], capture_output=True, text=True,
                       errors="replace")
    pkts, status = [], None
    for line in p.stdout.splitlines():
        if line.startswith("# status"):
            status = line
        elif not line.startswith("#"):
            pkts.append(line.split())
    if p.returncode not in (0, 1) or status is None or p.stderr.strip():
        status = "# status CRASH rc=%d %s" % (p.returncode, p.stderr.strip()[-300:])
    body = p.stdout.split("\n", 1)[-1]           # without the "# file" line
    return pkts, status, body


def usec_total(epoch):
    d = decimal.Decimal(epoch)
    return int((d * 1000000).to_integral_value(rounding=decimal.ROUND_FLOOR))


def compare_file(driver, path, chunks, name):
    """Returns a list of (category, detail)."""
    out = []
    rows, terr = run_tshark(path)
    pkts, status, text = run_driver(driver, path, chunks[0])
    for c in chunks[1:]:
        if run_driver(driver, path, c)[2] != text:
            out.append(("chunking: output differs", "chunk %d vs %d" % (c, chunks[0])))
    if "CRASH" in status:
        return out + [("driver crashed", status)]
    ok = status.startswith("# status ok")
    if not ok and not terr:
        out.append(("read: reader error, tshark ok", status))
    elif ok and terr:
        out.append(("read: tshark error, reader ok", terr.splitlines()[0]))
    elif not ok:
        out.append(("info: damaged capture (both report it)", status.split(": ", 1)[-1]))
    if len(pkts) != len(rows):
        out.append(("read: packet count differs", "reader %d, tshark %d" % (len(pkts), len(rows))))
    for i, (p, r) in enumerate(zip(pkts, rows)):
        out.append(("info: packets compared", ""))
        where = "packet %d (offset %s)" % (i + 1, p[0])
        sec, usec = p[1].split(".")
        if not r["ts"] or int(sec) * 1000000 + int(usec) != usec_total(r["ts"]):
            out.append(("read: timestamp differs", "%s: %s vs %s" % (where, p[1], r["ts"])))
        if p[3] != r["caplen"] or p[4] != r["len"]:
            out.append(("read: lengths differ", "%s: caplen/len %s/%s vs %s/%s" % (
                where, p[3], p[4], r["caplen"], r["len"])))
        exp = expected_inner(r["protocols"], r["ip.src"], r["ipv6.src"])
        found = p[5] == "0"
        if exp is None:
            if found:
                out.append(("info: ip found, tshark has none", "%s: %s" % (where, r["protocols"])))
            continue
        out.append(("info: IP packets (per tshark) checked", ""))
        if not found:
            out.append(("l3: IP packet not found", "%s: status %s, %s" % (
                where, p[5], r["protocols"])))
            continue
        ver = int(p[6])
        src = str(ipaddress.ip_address(bytes.fromhex(p[8])))
        esrc = str(ipaddress.ip_address(exp[1])) if exp[1] else None
        if ver != exp[0] or (esrc and src != esrc):
            cat = "l3: innermost IP differs"
            if (name, i + 1) in EXPLAINED:
                cat = "info: explained (EXPLAINED table)"
            out.append((cat, "%s: v%d %s vs v%d %s (%s)" % (where, ver, src, exp[0], esrc,
                                                           r["protocols"])))
        elif int(p[9]):
            out.append(("info: packets with encap bits", "%s: %s" % (where, p[9])))
    return out


# ---- format variants ------------------------------------------------------------------------

def read_pcap(path):
    """(linktype, snaplen, [(t_usec, origlen, data)]) of a little-endian microsecond pcap."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 24 or b[:4] != b"\xd4\xc3\xb2\xa1":
        return None
    snaplen, linktype = struct.unpack_from("<II", b, 16)
    pkts, off = [], 24
    while off + 16 <= len(b):
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", b, off)
        if off + 16 + caplen > len(b):
            break
        pkts.append((sec * 1000000 + usec, origlen, b[off + 16:off + 16 + caplen]))
        off += 16 + caplen
    return linktype, snaplen, pkts


def ng_block(e, btype, body):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def ng_opt(e, code, value):
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def swap_nflog(linktype, data):
    """NFLOG TLV headers are in the capturing host's order: big endian in a big-endian file."""
    if linktype != 239:
        return data
    b, off = bytearray(data), 4
    while off + 4 <= len(b):
        n, t = struct.unpack_from("<HH", b, off)
        struct.pack_into(">HH", b, off, n, t)
        if n < 4:
            break
        off += (n + 3) & ~3
    return bytes(b)


def write_pcap_be(src, dst):
    linktype, snaplen, pkts = src
    out = [struct.pack(">IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, snaplen, linktype)]
    for t, origlen, data in pkts:
        data = swap_nflog(linktype, data)
        out.append(struct.pack(">IIII", t // 1000000, t % 1000000, len(data), origlen) + data)
    with open(dst, "wb") as f:
        f.write(b"".join(out))


def write_pcapng_be(src, dst):
    """Big endian, a new section every 5 packets, ns resolution, if_tsoffset, extra blocks
    (not a custom block: tshark lists those as frames)."""
    e, (linktype, snaplen, pkts), out = ">", src, []
    tsoffset = 1000 if all(t >= 10**9 for t, _, _ in pkts) else 0
    for i, (t, origlen, data) in enumerate(pkts):
        if i % 5 == 0:
            shb = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_opt(e, 0, b"")
            out.append(ng_block(e, 0x0A0D0D0A, shb))
            for lt in (147, linktype):           # the packets go to interface 1
                opts = ng_opt(e, 9, b"\x09") + ng_opt(e, 14, struct.pack(e + "q", tsoffset))
                out.append(ng_block(e, 1, struct.pack(e + "HHI", lt, 0, snaplen) + opts +
                                    ng_opt(e, 0, b"")))
            out.append(ng_block(e, 4, struct.pack(e + "HH", 0, 0)))  # empty name resolution
        ticks = t * 1000 - tsoffset * 10**9
        data = swap_nflog(linktype, data)
        body = struct.pack(e + "IIIII", 1, ticks >> 32, ticks & 0xffffffff, len(data), origlen)
        body += data + b"\0" * (-len(data) % 4) + ng_opt(e, 1, b"comment") + ng_opt(e, 0, b"")
        out.append(ng_block(e, 6, body))
        out.append(ng_block(e, 5, struct.pack(e + "III", 1, 0, 0)))   # statistics block
    if not pkts:
        out.append(ng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    with open(dst, "wb") as f:
        f.write(b"".join(out))


def write_pcapng_pow2(src, dst):
    """Little endian, 2^-20 s resolution, obsolete Packet Blocks."""
    e, (linktype, snaplen, pkts) = "<", src
    out = [ng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
           ng_block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) +
                    ng_opt(e, 9, b"\x94") + ng_opt(e, 0, b""))]
    for t, origlen, data in pkts:
        ticks = -(-t * 2**20 // 1000000)         # ceil: the same microsecond when read back
        out.append(ng_block(e, 2, struct.pack(e + "HHIIII", 0, 0, ticks >> 32, ticks & 0xffffffff,
                                              len(data), origlen) + data))
    with open(dst, "wb") as f:
        f.write(b"".join(out))


def make_variants(path, tmp, idx):
    made = []
    for fmt in ("pcapng", "nsecpcap"):
        dst = os.path.join(tmp, "%d.%s" % (idx, fmt))
        if subprocess.run(["editcap", "-F", fmt, path, dst], capture_output=True).returncode == 0:
            made.append((fmt, dst))
    with open(path, "rb") as f:                  # cut inside the last record
        data = f.read()
    dst = os.path.join(tmp, "%d.cut" % idx)
    with open(dst, "wb") as f:
        f.write(data[:-3])
    made.append(("cut-3-bytes", dst))
    src = read_pcap(path)
    if src:
        for fmt, writer in (("pcap-be", write_pcap_be), ("pcapng-be-sections", write_pcapng_be),
                            ("pcapng-pow2-pb", write_pcapng_pow2)):
            dst = os.path.join(tmp, "%d.%s" % (idx, fmt))
            writer(src, dst)
            made.append((fmt, dst))
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", default=os.path.join(HERE, "test_capture"))
    ap.add_argument("--testdata", default=os.path.join(HERE, "..", "..", "..", "shared", "testdata"))
    ap.add_argument("--chunks", default="4096,1,7", help="chunk sizes; the first is compared")
    ap.add_argument("--variants", action="store_true", help="also compare rewritten formats")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("-j", type=int, default=os.cpu_count() or 2)
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    if not os.path.exists(a.driver):
        subprocess.run(["make", "-C", HERE, "test_capture"], check=True)
    files = a.files or sorted(
        os.path.join(d, f) for d, _, fs in os.walk(a.testdata) for f in fs
        if f.endswith((".pcap", ".pcapng")))
    chunks = [int(c) for c in a.chunks.split(",")]
    counts, nfiles = collections.Counter(), collections.Counter()
    examples = collections.defaultdict(list)
    ncaptures = collections.Counter()

    def job(arg):
        idx, path = arg
        name = os.path.relpath(path, a.testdata)
        res = [("original", name, compare_file(a.driver, path, chunks, name))]
        if a.variants:
            for fmt, dst in make_variants(path, tmp, idx):
                res.append((fmt, name, compare_file(a.driver, dst, chunks[:2], name)))
                os.unlink(dst)
        return res

    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(a.j) as ex:
        for res in ex.map(job, enumerate(files)):
            for fmt, name, diffs in res:
                ncaptures[fmt] += 1
                seen = set()
                for cat, detail in diffs:
                    key = (fmt, cat)
                    counts[key] += 1
                    if key not in seen:
                        nfiles[key] += 1
                        seen.add(key)
                    if len(examples[key]) < a.examples and detail:
                        examples[key].append("%s: %s" % (name, detail))
    print("captures: " + ", ".join("%s %d" % kv for kv in sorted(ncaptures.items())) +
          "; chunk sizes %s" % a.chunks)
    print("%-20s %-42s %8s %6s" % ("format", "category", "count", "files"))
    mismatches = 0
    for key in sorted(counts):
        print("%-20s %-42s %8d %6d" % (key[0], key[1], counts[key], nfiles[key]))
        if not key[1].startswith("info"):
            mismatches += counts[key]
    print("mismatches: %d" % mismatches)
    for key in sorted(k for k in examples if examples[k]):
        print("\n%s / %s" % key)
        for e in examples[key]:
            print("   " + e)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
