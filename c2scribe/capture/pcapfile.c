/* Streaming pcap / pcapng parser (see capture.h for the contract).
 *
 * The file is a sequence of "records": the pcap file header, pcap packet records, or pcapng
 * blocks (the Section Header Block playing the part of the file header). feed() walks the
 * records found entirely inside the caller's chunk in place; only a record cut by the end of
 * a chunk is copied into r->buf and completed by the following calls. Every length is checked
 * before it is used, so corrupt or hostile files end in CS_ERROR, never in an overread.
 */
#include "capture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCAP_MAX_CAPLEN 262144u       /* libpcap's own ceiling for a record */
#define PCAPNG_MAX_BLOCK (16u << 20)  /* no sane block is bigger */

enum { BT_IDB = 1, BT_PB = 2, BT_SPB = 3, BT_EPB = 6, BT_SHB = 0x0A0D0D0A };

typedef unsigned long long ull;       /* for printf */

static uint32_t get16(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t get32(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint64_t get64(const uint8_t *p, int be)
{
    return be ? (uint64_t)get32(p, 1) << 32 | get32(p + 4, 1)
              : (uint64_t)get32(p + 4, 0) << 32 | get32(p, 0);
}

static int host_is_be(void)
{
    const uint16_t one = 1;
    uint8_t b[2];
    memcpy(b, &one, 2);
    return b[0] == 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(cs_reader *r, uint64_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    if (!r->error[0])                  /* the error state is "error[0] != 0": keep it sticky */
        snprintf(r->error, sizeof r->error, "error");
    r->error_offset = off;
    return CS_ERROR;
}

void cs_reader_init(cs_reader *r)
{
    memset(r, 0, sizeof *r);
}

void cs_reader_free(cs_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->buf_len = r->buf_cap = 0;
}

/* Size of the record starting at p, of which avail bytes are present. Returns 1 with *size =
 * the record size; 0 with *size = the header bytes needed to tell; or CS_ERROR. */
static int rec_size(cs_reader *r, const uint8_t *p, size_t avail, uint64_t off, size_t *size)
{
    if (r->format == CS_FMT_PCAP) {
        if (avail < 16) {
            *size = 16;
            return 0;
        }
        uint32_t caplen = get32(p + 8, r->big_endian);
        if (caplen > PCAP_MAX_CAPLEN)
            return fail(r, off, "pcap record at offset %llu: caplen %lu exceeds %u", (ull)off,
                        (unsigned long)caplen, PCAP_MAX_CAPLEN);
        *size = 16 + (size_t)caplen;
        return 1;
    }
    if (avail < 4) {
        *size = 4;
        return 0;
    }
    if (r->format == CS_FMT_UNKNOWN) {
        uint32_t m = get32(p, 1);
        if (m == 0xa1b2c3d4 || m == 0xd4c3b2a1 || m == 0xa1b23c4d || m == 0x4d3cb2a1) {
            *size = 24;
            return 1;
        }
        if (m != BT_SHB)
            return fail(r, off, "not a pcap or pcapng file (magic %08lx)", (unsigned long)m);
    }
    /* pcapng block: type, total length, body, total length again */
    int be = r->big_endian;
    uint32_t type = get32(p, be);
    if (type == BT_SHB) {              /* palindromic type; its own byte-order magic rules */
        if (avail < 12) {
            *size = 12;
            return 0;
        }
        uint32_t bom = get32(p + 8, 1);
        if (bom != 0x1a2b3c4d && bom != 0x4d3c2b1a)
            return fail(r, off, "pcapng section header at offset %llu: bad byte-order magic %08lx",
                        (ull)off, (unsigned long)bom);
        be = bom == 0x1a2b3c4d;
    } else if (avail < 8) {
        *size = 8;
        return 0;
    }
    uint32_t len = get32(p + 4, be);
    uint32_t min = type == BT_SHB ? 28 : type == BT_IDB ? 20 : type == BT_SPB ? 16
                 : type == BT_EPB || type == BT_PB ? 32 : 12;
    if (len % 4)
        return fail(r, off, "pcapng block at offset %llu: length %lu is not a multiple of 4",
                    (ull)off, (unsigned long)len);
    if (len < min)
        return fail(r, off, "pcapng block at offset %llu: length %lu is below the minimum %lu "
                    "for block type 0x%lx", (ull)off, (unsigned long)len, (unsigned long)min,
                    (unsigned long)type);
    if (len > PCAPNG_MAX_BLOCK)
        return fail(r, off, "pcapng block at offset %llu: length %lu exceeds %u", (ull)off,
                    (unsigned long)len, PCAPNG_MAX_BLOCK);
    *size = len;
    return 1;
}

static int deliver(cs_reader *r, cs_packet *pkt, cs_packet_cb cb, void *ctx)
{
    r->packets++;
    return cb && cb(ctx, pkt) ? CS_STOPPED : CS_OK;
}

static int pcap_header(cs_reader *r, const uint8_t *p)
{
    uint32_t m = get32(p, 1);
    r->format = CS_FMT_PCAP;
    r->big_endian = m == 0xa1b2c3d4 || m == 0xa1b23c4d;
    r->swapped = r->big_endian != host_is_be();
    r->nsec = m == 0xa1b23c4d || m == 0x4d3cb2a1;
    r->snaplen = get32(p + 16, r->big_endian);
    r->linktype = (int)(get32(p + 20, r->big_endian) & 0xffff); /* upper bits: FCS info */
    return CS_OK;
}

static int pcap_record(cs_reader *r, const uint8_t *p, uint64_t off, cs_packet_cb cb, void *ctx)
{
    cs_packet pkt;
    uint32_t frac = get32(p + 4, r->big_endian);
    if (r->nsec)
        frac /= 1000;
    /* carry an out-of-range fraction so that ts_usec < 1e6 always holds */
    pkt.ts_sec = (int64_t)get32(p, r->big_endian) + frac / 1000000;
    pkt.ts_usec = frac % 1000000;
    pkt.caplen = get32(p + 8, r->big_endian);
    pkt.origlen = get32(p + 12, r->big_endian);
    pkt.linktype = r->linktype;
    pkt.data = p + 16;
    pkt.offset = off;
    return deliver(r, &pkt, cb, ctx);
}

/* floor(frac * 1e6 / div) for frac < div, div = 10^k (k <= 19) or 2^k (k <= 63), no overflow */
static uint32_t frac_to_usec(uint64_t frac, uint64_t div)
{
    if (div <= 1000000)
        return (uint32_t)(frac * 1000000 / div);
    if (div % 1000000 == 0)
        return (uint32_t)(frac / (div / 1000000));
    /* div = 2^k, k >= 20: shift the 96-bit product frac * 1e6 right by k */
    int k = 0;
    while (k < 63 && ((uint64_t)1 << k) < div)
        k++;
    uint64_t lo = (frac & 0xffffffffu) * 1000000;
    uint64_t hi = (frac >> 32) * 1000000 + (lo >> 32);   /* product = hi * 2^32 + (lo & ~0u) */
    if (k >= 32)
        return (uint32_t)(hi >> (k - 32));
    return (uint32_t)((hi << (32 - k)) | ((lo & 0xffffffffu) >> k));
}

static int pcapng_idb(cs_reader *r, const uint8_t *p, size_t size, uint64_t off)
{
    int be = r->big_endian, i = r->n_ifaces;
    uint64_t div = 1000000;
    int64_t tsoff = 0;
    if (i >= CS_MAX_INTERFACES)
        return fail(r, off, "pcapng interface block at offset %llu: more than %d interfaces",
                    (ull)off, CS_MAX_INTERFACES);
    /* options: code, length, value padded to 4 bytes; stop at opt_endofopt or the trailer */
    size_t o = 16, end = size - 4;
    while (end - o >= 4) {
        uint32_t code = get16(p + o, be), olen = get16(p + o + 2, be);
        if (code == 0)
            break;
        if (olen > end - o - 4)
            return fail(r, off, "pcapng interface block at offset %llu: option %lu overruns the "
                        "block", (ull)off, (unsigned long)code);
        const uint8_t *v = p + o + 4;
        if (code == 9 && olen >= 1) {          /* if_tsresol: 10^-n, or 2^-n if the top bit */
            unsigned n = v[0] & 0x7f;
            if (v[0] & 0x80 ? n > 63 : n > 19)
                return fail(r, off, "pcapng interface block at offset %llu: unsupported "
                            "if_tsresol 0x%02x", (ull)off, v[0]);
            div = 1;
            while (n--)
                div *= v[0] & 0x80 ? 2 : 10;
        } else if (code == 14 && olen >= 8) {  /* if_tsoffset: seconds added to timestamps */
            tsoff = (int64_t)get64(v, be);
        }
        o += 4 + (((size_t)olen + 3) & ~(size_t)3);
        if (o > end)
            break;
    }
    r->iface_linktype[i] = (int)get16(p + 8, be);
    r->iface_snaplen[i] = get32(p + 12, be);
    r->iface_tsdiv[i] = div;
    r->iface_tsoffset[i] = tsoff;
    if (i == 0) {                               /* expose interface 0 like a pcap header */
        r->linktype = r->iface_linktype[0];
        r->snaplen = r->iface_snaplen[0];
    }
    r->n_ifaces = i + 1;
    return CS_OK;
}

static int pcapng_block(cs_reader *r, const uint8_t *p, size_t size, uint64_t off,
                        cs_packet_cb cb, void *ctx)
{
    uint32_t type = get32(p, r->big_endian);
    if (type == BT_SHB) {                       /* new section: byte order and interfaces */
        int be = get32(p + 8, 1) == 0x1a2b3c4d;
        uint32_t major = get16(p + 12, be);
        if (major != 1)
            return fail(r, off, "pcapng section header at offset %llu: unsupported version "
                        "%lu.%lu", (ull)off, (unsigned long)major,
                        (unsigned long)get16(p + 14, be));
        r->format = CS_FMT_PCAPNG;
        r->big_endian = be;
        r->swapped = be != host_is_be();
        r->nsec = 0;
        r->n_ifaces = 0;
    }
    int be = r->big_endian;
    if (get32(p + size - 4, be) != size)
        return fail(r, off, "pcapng block at offset %llu: trailing length %lu differs from %lu",
                    (ull)off, (unsigned long)get32(p + size - 4, be), (unsigned long)size);

    cs_packet pkt;
    uint32_t ifid;
    uint64_t ticks = 0;
    const char *name = type == BT_EPB ? "enhanced packet block" : type == BT_PB ? "packet block"
                                                                : "simple packet block";
    switch (type) {
    case BT_IDB:
        return pcapng_idb(r, p, size, off);
    case BT_EPB:
    case BT_PB:           /* same layout; the obsolete PB has a 16-bit id and a drop count */
        ifid = type == BT_EPB ? get32(p + 8, be) : get16(p + 8, be);
        ticks = (uint64_t)get32(p + 12, be) << 32 | get32(p + 16, be);
        pkt.caplen = get32(p + 20, be);
        pkt.origlen = get32(p + 24, be);
        pkt.data = p + 28;
        if (pkt.caplen > size - 32)
            return fail(r, off, "pcapng %s at offset %llu: caplen %lu exceeds the block space "
                        "%lu", name, (ull)off, (unsigned long)pkt.caplen,
                        (unsigned long)(size - 32));
        break;
    case BT_SPB:          /* no interface id (always 0), no timestamp, no caplen */
        ifid = 0;
        pkt.origlen = get32(p + 8, be);
        pkt.caplen = (uint32_t)(size - 16);
        if (pkt.origlen < pkt.caplen)
            pkt.caplen = pkt.origlen;
        if (r->n_ifaces > 0 && r->iface_snaplen[0] && r->iface_snaplen[0] < pkt.caplen)
            pkt.caplen = r->iface_snaplen[0];
        pkt.data = p + 12;
        break;
    default:
        return CS_OK;     /* statistics, name resolution, secrets, custom ...: not packets */
    }
    if (ifid >= (uint32_t)r->n_ifaces)
        return fail(r, off, "pcapng %s at offset %llu: interface %lu was never declared (%d "
                    "interface%s in this section)", name, (ull)off, (unsigned long)ifid,
                    r->n_ifaces, r->n_ifaces == 1 ? "" : "s");
    uint64_t div = r->iface_tsdiv[ifid];
    pkt.ts_sec = (int64_t)(ticks / div + (uint64_t)r->iface_tsoffset[ifid]); /* wraps, no UB */
    pkt.ts_usec = frac_to_usec(ticks % div, div);
    pkt.linktype = r->iface_linktype[ifid];
    pkt.offset = off;
    return deliver(r, &pkt, cb, ctx);
}

static int process(cs_reader *r, const uint8_t *p, size_t size, uint64_t off, cs_packet_cb cb,
                   void *ctx)
{
    if (r->format == CS_FMT_PCAP)
        return pcap_record(r, p, off, cb, ctx);
    if (r->format == CS_FMT_UNKNOWN && get32(p, 1) != BT_SHB)
        return pcap_header(r, p);
    return pcapng_block(r, p, size, off, cb, ctx);
}

static int reserve(cs_reader *r, size_t need)
{
    if (need <= r->buf_cap)
        return 0;
    size_t cap = r->buf_cap ? r->buf_cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *b = realloc(r->buf, cap);
    if (!b)
        return -1;
    r->buf = b;
    r->buf_cap = cap;
    return 0;
}

int cs_reader_feed(cs_reader *r, const uint8_t *data, size_t len, cs_packet_cb cb, void *ctx)
{
    size_t pos = 0, size;
    int rc;
    if (r->error[0])
        return CS_ERROR;
    /* complete a record cut by the previous chunk, copying only the bytes it still lacks */
    while (r->buf_len > 0) {
        rc = rec_size(r, r->buf, r->buf_len, r->consumed, &size);
        if (rc < 0)
            return rc;
        if (reserve(r, size) < 0)
            return fail(r, r->consumed, "out of memory (%zu bytes)", size);
        size_t take = size - r->buf_len;
        if (take > len - pos)
            take = len - pos;
        if (take)
            memcpy(r->buf + r->buf_len, data + pos, take);
        r->buf_len += take;
        pos += take;
        if (r->buf_len < size)
            return CS_OK;                       /* chunk exhausted */
        if (rc == 0)
            continue;                           /* header complete: now the size is known */
        r->buf_len = 0;
        rc = process(r, r->buf, size, r->consumed, cb, ctx);
        r->consumed += size;
        if (rc != CS_OK)
            return rc;
    }
    /* common path: records entirely inside the chunk are used in place */
    while (pos < len) {
        rc = rec_size(r, data + pos, len - pos, r->consumed, &size);
        if (rc < 0)
            return rc;
        if (rc == 0 || size > len - pos) {      /* cut record: keep its start for later */
            if (reserve(r, len - pos) < 0)
                return fail(r, r->consumed, "out of memory (%zu bytes)", len - pos);
            memcpy(r->buf, data + pos, len - pos);
            r->buf_len = len - pos;
            return CS_OK;
        }
        rc = process(r, data + pos, size, r->consumed, cb, ctx);
        pos += size;
        r->consumed += size;
        if (rc != CS_OK)
            return rc;
    }
    return CS_OK;
}

int cs_reader_finish(cs_reader *r)
{
    size_t size;
    if (r->error[0])
        return CS_ERROR;
    if (r->format == CS_FMT_UNKNOWN && r->buf_len < 4) {
        char hex[9] = "";
        if (r->buf_len == 0)
            return fail(r, 0, "empty file");
        for (size_t i = 0; i < r->buf_len; i++)
            snprintf(hex + 2 * i, 3, "%02x", r->buf[i]);
        return fail(r, 0, "not a pcap or pcapng file (magic %s)", hex);
    }
    if (r->buf_len == 0)
        return CS_OK;
    if (rec_size(r, r->buf, r->buf_len, r->consumed, &size) < 0)
        return CS_ERROR;
    return fail(r, r->consumed, "truncated: file ends inside a record at offset %llu (%zu of %zu "
                "bytes)", (ull)r->consumed, r->buf_len, size);
}
