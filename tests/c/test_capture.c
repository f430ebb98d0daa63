/* Test driver for c2scribe/capture (pcapfile.c, linktype.c).
 *
 *   test_capture [-c CHUNK] [-s] FILE...   print every packet of each capture, fed CHUNK bytes
 *                                          at a time (default 65536; 1 works), then the status
 *   test_capture -t                        self-test: synthetic captures in every format,
 *                                          all chunkings, every truncation, hostile records,
 *                                          fuzzing, and every supported encapsulation
 *
 * Packet line: offset ts_sec.ts_usec linktype caplen origlen l3status ipversion ip_offset
 * (with -s also: innermost source address in hex, encap bits). Other lines start with '#'.
 * Each chunk is passed in a heap block of exactly its size so that the sanitizer (the Makefile
 * builds with -fsanitize=address,undefined) catches any read beyond it.
 */
#include "capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* ---- file mode ---------------------------------------------------------------------------- */

typedef struct {
    int show_src;
} print_ctx;

static int print_packet(void *ctx, const cs_packet *p)
{
    const print_ctx *pc = ctx;
    cs_l3 l3;
    int rc = cs_link_to_ip(p->linktype, p->data, p->caplen, &l3);
    int ok = rc == CS_L3_OK;
    printf("%llu %lld.%06lu %d %lu %lu %d %d %lld", (ull)p->offset, (long long)p->ts_sec,
           (unsigned long)p->ts_usec, p->linktype, (unsigned long)p->caplen,
           (unsigned long)p->origlen, rc, ok ? l3.version : 0,
           ok ? (long long)(l3.ip - p->data) : -1LL);
    if (pc->show_src) {
        putchar(' ');
        if (!ok)
            putchar('-');
        for (int i = 0; ok && i < (l3.version == 4 ? 4 : 16); i++)
            printf("%02x", l3.ip[l3.version == 4 ? 12 + i : 8 + i]);
        printf(" %d", ok ? l3.encap : 0);
    }
    putchar('\n');
    return 0;
}

static int print_file(const char *path, size_t chunk, print_ctx *pc)
{
    FILE *f = fopen(path, "rb");
    cs_reader r;
    int rc = CS_OK;
    printf("# file %s\n", path);
    if (!f) {
        printf("# status cannot-open\n");
        return 1;
    }
    uint8_t *in = malloc(chunk);
    cs_reader_init(&r);
    for (;;) {
        size_t n = fread(in, 1, chunk, f);
        if (n == 0)
            break;
        uint8_t *exact = malloc(n);
        memcpy(exact, in, n);
        rc = cs_reader_feed(&r, exact, n, print_packet, pc);
        free(exact);
        if (rc != CS_OK)
            break;
    }
    if (rc == CS_OK)
        rc = cs_reader_finish(&r);
    if (rc == CS_OK)
        printf("# status ok packets %llu\n", (ull)r.packets);
    else
        printf("# status error packets %llu offset %llu: %s\n", (ull)r.packets,
               (ull)r.error_offset, r.error);
    cs_reader_free(&r);
    free(in);
    fclose(f);
    return rc != CS_OK;
}

/* ---- self-test helpers -------------------------------------------------------------------- */

static int failures, checks;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        checks++;                                                                            \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                      \
            printf(__VA_ARGS__);                                                             \
            putchar('\n');                                                                   \
        }                                                                                    \
    } while (0)

typedef struct {
    uint8_t *p;
    size_t n, cap;
    size_t bounds[512];       /* record boundaries (file builders only) */
    int nb;
} Buf;

static void put(Buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put8(Buf *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put16(Buf *b, int be, unsigned v)
{
    put8(b, be ? v >> 8 : v);
    put8(b, be ? v : v >> 8);
}

static void put32(Buf *b, int be, uint32_t v)
{
    put16(b, be, be ? v >> 16 : v & 0xffff);
    put16(b, be, be ? v & 0xffff : v >> 16);
}

static void zeros(Buf *b, size_t n)
{
    while (n--)
        put8(b, 0);
}

/* append bytes written as lower-case hex digits; anything else is ignored */
static void hex(Buf *b, const char *s)
{
    int hi = -1;
    for (; *s; s++) {
        int v = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
        if (v < 0)
            continue;
        if (hi < 0) {
            hi = v;
        } else {
            put8(b, (unsigned)(hi << 4 | v));
            hi = -1;
        }
    }
}

static void mark(Buf *b)
{
    if (b->nb < 512)
        b->bounds[b->nb++] = b->n;
}
static void reset(Buf *b) { b->n = 0; b->nb = 0; }

/* pcap */
static void pcap_hdr(Buf *b, int be, int nsec, uint32_t linktype, uint32_t snaplen)
{
    put32(b, be, nsec ? 0xa1b23c4d : 0xa1b2c3d4);
    put16(b, be, 2);
    put16(b, be, 4);
    put32(b, be, 0);
    put32(b, be, 0);
    put32(b, be, snaplen);
    put32(b, be, linktype);
    mark(b);
}

static void pcap_rec(Buf *b, int be, uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t origlen)
{
    put32(b, be, sec);
    put32(b, be, frac);
    put32(b, be, caplen);
    put32(b, be, origlen);
    for (uint32_t i = 0; i < caplen; i++)
        put8(b, i * 7 + sec);
    mark(b);
}

/* pcapng: blocks are built with their body, then the two lengths are patched */
static size_t ng_begin(Buf *b, int be, uint32_t type)
{
    size_t start = b->n;
    put32(b, be, type);
    put32(b, be, 0);
    return start;
}

static void ng_end(Buf *b, int be, size_t start)
{
    while ((b->n - start) % 4)
        put8(b, 0);
    uint32_t len = (uint32_t)(b->n - start + 4);
    Buf t = { 0 };
    put32(&t, be, len);
    memcpy(b->p + start + 4, t.p, 4);
    free(t.p);
    put32(b, be, len);
    mark(b);
}

static void ng_shb(Buf *b, int be)
{
    size_t s = ng_begin(b, be, 0x0A0D0D0A);
    put32(b, be, 0x1A2B3C4D);
    put16(b, be, 1);
    put16(b, be, 0);
    put32(b, be, 0xffffffff);
    put32(b, be, 0xffffffff);
    ng_end(b, be, s);
}

/* tsresol < 0: none; tsoffset: written when non-zero */
static void ng_idb(Buf *b, int be, unsigned linktype, uint32_t snaplen, int tsresol, int64_t tsoffset)
{
    size_t s = ng_begin(b, be, 1);
    put16(b, be, linktype);
    put16(b, be, 0);
    put32(b, be, snaplen);
    put16(b, be, 2);                  /* if_name "eth0" first, to exercise option walking */
    put16(b, be, 4);
    put(b, "eth0", 4);
    if (tsresol >= 0) {
        put16(b, be, 9);
        put16(b, be, 1);
        put8(b, (unsigned)tsresol);
        zeros(b, 3);
    }
    if (tsoffset) {
        put16(b, be, 14);
        put16(b, be, 8);
        uint64_t v = (uint64_t)tsoffset;
        if (be) {
            put32(b, be, (uint32_t)(v >> 32));
            put32(b, be, (uint32_t)v);
        } else {
            put32(b, be, (uint32_t)v);
            put32(b, be, (uint32_t)(v >> 32));
        }
    }
    put32(b, be, 0);                  /* opt_endofopt */
    ng_end(b, be, s);
}

static void ng_pkt(Buf *b, int be, uint32_t type, uint32_t ifid, uint64_t ticks, uint32_t caplen,
                   uint32_t origlen)
{
    size_t s = ng_begin(b, be, type);
    if (type == 3) {
        put32(b, be, origlen);
    } else {
        if (type == 2) {
            put16(b, be, ifid);
            put16(b, be, 0);
        } else {
            put32(b, be, ifid);
        }
        put32(b, be, (uint32_t)(ticks >> 32));
        put32(b, be, (uint32_t)ticks);
        put32(b, be, caplen);
        put32(b, be, origlen);
    }
    for (uint32_t i = 0; i < caplen; i++)
        put8(b, i * 3 + 1);
    if (type == 6 && caplen % 2) {    /* an option after the data: opt_comment */
        while ((b->n - s) % 4)
            put8(b, 0);
        put16(b, be, 1);
        put16(b, be, 3);
        put(b, "hi!\0", 4);
        put32(b, be, 0);
    }
    ng_end(b, be, s);
}

static void ng_other(Buf *b, int be, uint32_t type, size_t body)
{
    size_t s = ng_begin(b, be, type);
    zeros(b, body);
    ng_end(b, be, s);
}

/* ---- collecting packets ------------------------------------------------------------------- */

typedef struct {
    uint64_t off;
    int64_t sec;
    uint32_t usec, caplen, origlen, hash;
    int lt;
} Rec;

typedef struct {
    Rec rec[64];
    int n;
    const uint8_t *lo, *hi;  /* current chunk: in-place delivery check */
    int copies;              /* packets delivered from the reader's buffer */
    int stop_after;          /* ask to stop after this many packets (0 = never) */
} Col;

static int collect(void *ctx, const cs_packet *p)
{
    Col *c = ctx;
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < p->caplen; i++)    /* touches every byte: ASan checks the bounds */
        h = (h ^ p->data[i]) * 16777619u;
    if (!(p->data >= c->lo && p->data + p->caplen <= c->hi))
        c->copies++;
    if (c->n < 64) {
        Rec r = { p->offset, p->ts_sec, p->ts_usec, p->caplen, p->origlen, h, p->linktype };
        c->rec[c->n] = r;
    }
    c->n++;
    /* run the link decoder on everything delivered, under every link type we know */
    static const int lts[] = { 0, 1, 9, 12, 50, 101, 104, 105, 108, 113, 127, 228, 229, 239, 276 };
    for (size_t i = 0; i < sizeof lts / sizeof lts[0]; i++) {
        cs_l3 l3;
        if (cs_link_to_ip(lts[i], p->data, p->caplen, &l3) == CS_L3_OK)
            CHECK(l3.ip >= p->data && l3.ip + l3.len == p->data + p->caplen &&
                  (l3.version == 4 || l3.version == 6), "bad cs_l3 from link type %d", lts[i]);
    }
    return c->stop_after && c->n >= c->stop_after;
}

typedef struct {
    int rc;
    char error[256];
    uint64_t error_offset;
    uint64_t consumed;
} Result;

/* Feed data[0..len) in chunks of `chunk` bytes (split: one cut at `split` instead when >0). */
static Result run(const uint8_t *data, size_t len, size_t chunk, size_t split, Col *c)
{
    cs_reader r;
    Result res = { CS_OK, "", 0, 0 };
    cs_reader_init(&r);
    size_t pos = 0;
    while (pos < len && res.rc == CS_OK) {
        size_t n = split ? (pos < split ? split : len - pos) : chunk;
        if (n > len - pos)
            n = len - pos;
        uint8_t *exact = malloc(n);
        memcpy(exact, data + pos, n);
        c->lo = exact;
        c->hi = exact + n;
        res.rc = cs_reader_feed(&r, exact, n, collect, c);
        free(exact);
        pos += n;
    }
    if (res.rc == CS_OK)
        res.rc = cs_reader_finish(&r);
    if (res.rc == CS_ERROR)
        CHECK(cs_reader_feed(&r, data, len, collect, c) == CS_ERROR && r.error[0],
              "error is not sticky");
    memcpy(res.error, r.error, sizeof res.error);
    res.error_offset = r.error_offset;
    res.consumed = r.consumed;
    cs_reader_free(&r);
    return res;
}

static int same(const Col *a, const Col *b)
{
    return a->n == b->n && memcmp(a->rec, b->rec, sizeof(Rec) * (size_t)(a->n < 64 ? a->n : 64)) == 0;
}

/* A valid capture: same packets for every chunking; every truncation behaves. */
static void check_valid(const char *name, const Buf *b, int npackets)
{
    Col ref = { 0 };
    Result r = run(b->p, b->n, b->n, 0, &ref);
    CHECK(r.rc == CS_OK, "%s: status %d (%s)", name, r.rc, r.error);
    CHECK(ref.n == npackets, "%s: %d packets, expected %d", name, ref.n, npackets);
    CHECK(ref.copies == 0, "%s: %d packets copied although the whole file was one chunk", name,
          ref.copies);
    size_t chunks[] = { 1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 31, 64, 100, 4096 };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        Col c = { 0 };
        Result rr = run(b->p, b->n, chunks[i], 0, &c);
        CHECK(rr.rc == CS_OK && same(&ref, &c), "%s: chunk %zu differs", name, chunks[i]);
    }
    for (size_t split = 1; split < b->n; split++) {
        Col c = { 0 };
        Result rr = run(b->p, b->n, 0, split, &c);
        CHECK(rr.rc == CS_OK && same(&ref, &c), "%s: split at %zu differs", name, split);
    }
    /* cut at every offset: OK exactly at record boundaries, else "truncated" at the record */
    for (size_t cut = 0; cut <= b->n; cut++) {
        Col c = { 0 };
        Result rr = run(b->p, cut, cut % 2 ? 7 : 1, 0, &c);
        size_t last = 0;
        int boundary = 0;
        for (int k = 0; k < b->nb; k++) {
            if (b->bounds[k] <= cut)
                last = b->bounds[k];
            boundary |= b->bounds[k] == cut;
        }
        int expect = 0;                  /* packets whose record ends by the cut */
        for (int k = 0; k < ref.n; k++)
            for (int j = 0; j < b->nb; j++)
                if (b->bounds[j] > ref.rec[k].off) {
                    expect += b->bounds[j] <= cut;
                    break;
                }
        CHECK(c.n == expect && (c.n == 0 || memcmp(c.rec, ref.rec, sizeof(Rec) * (size_t)c.n) == 0),
              "%s: cut %zu: %d packets, expected %d", name, cut, c.n, expect);
        if (cut == 0)
            CHECK(rr.rc == CS_ERROR && !strcmp(rr.error, "empty file"), "%s: empty: %s", name,
                  rr.error);
        else if (cut < 4)
            CHECK(rr.rc == CS_ERROR && strstr(rr.error, "not a pcap or pcapng file (magic "),
                  "%s: cut %zu: %s", name, cut, rr.error);
        else if (boundary)
            CHECK(rr.rc == CS_OK, "%s: cut %zu at a boundary: %s", name, cut, rr.error);
        else
            CHECK(rr.rc == CS_ERROR && !strncmp(rr.error, "truncated: file ends inside a record at"
                  " offset ", 40) && rr.error_offset == last, "%s: cut %zu: %s (offset %llu, "
                  "expected %zu)", name, cut, rr.error, (ull)rr.error_offset, last);
    }
}

/* A damaged capture: the error, where, and the packets before it, for several chunkings. */
static void check_bad(const char *name, const Buf *b, const char *msg, uint64_t offset, int npackets)
{
    size_t chunks[] = { 1, 7, 4096 };
    for (size_t i = 0; i < 3; i++) {
        Col c = { 0 };
        Result r = run(b->p, b->n, chunks[i], 0, &c);
        CHECK(r.rc == CS_ERROR && strstr(r.error, msg) && r.error_offset == offset &&
              c.n == npackets, "%s (chunk %zu): rc %d, \"%s\" at %llu, %d packets; expected "
              "\"%s\" at %llu, %d packets", name, chunks[i], r.rc, r.error, (ull)r.error_offset,
              c.n, msg, (ull)offset, npackets);
    }
}

/* ---- reader tests ------------------------------------------------------------------------- */

static void test_pcap(void)
{
    Buf b = { 0 };
    char name[64];
    for (int be = 0; be < 2; be++)
        for (int nsec = 0; nsec < 2; nsec++) {
            reset(&b);
            pcap_hdr(&b, be, nsec, 0x14000001, 65535);    /* FCS bits above the link type */
            pcap_rec(&b, be, 1000, nsec ? 123456789 : 123456, 60, 60);
            pcap_rec(&b, be, 0xffffffffu, nsec ? 999999999 : 999999, 20, 10); /* caplen > len */
            pcap_rec(&b, be, 5, 0, 0, 1514);
            pcap_rec(&b, be, 6, nsec ? 2500000000u : 2500000, 3, 3);  /* fraction >= 1 s */
            snprintf(name, sizeof name, "pcap be=%d nsec=%d", be, nsec);
            check_valid(name, &b, 4);
            Col c = { 0 };
            run(b.p, b.n, 4096, 0, &c);
            CHECK(c.rec[0].sec == 1000 && c.rec[0].usec == 123456 && c.rec[0].lt == 1 &&
                  c.rec[0].caplen == 60 && c.rec[0].off == 24, "%s: first packet", name);
            CHECK(c.rec[1].sec == 4294967295LL && c.rec[1].usec == 999999 &&
                  c.rec[1].caplen == 20 && c.rec[1].origlen == 10, "%s: second packet", name);
            CHECK(c.rec[2].caplen == 0 && c.rec[2].origlen == 1514, "%s: empty packet", name);
            CHECK(c.rec[3].sec == 8 && c.rec[3].usec == 500000, "%s: fraction carry", name);
        }
    /* header only */
    reset(&b);
    pcap_hdr(&b, 0, 0, 1, 65535);
    check_valid("pcap header only", &b, 0);
    /* caplen 0xFFFFFFFF after two good packets */
    pcap_rec(&b, 0, 1, 1, 40, 40);
    pcap_rec(&b, 0, 2, 2, 40, 40);
    size_t bad = b.n;
    pcap_rec(&b, 0, 3, 3, 0, 0);
    b.p[bad + 8] = b.p[bad + 9] = b.p[bad + 10] = b.p[bad + 11] = 0xff;
    char msg[128];
    snprintf(msg, sizeof msg, "pcap record at offset %zu: caplen 4294967295 exceeds 262144", bad);
    check_bad("pcap caplen 0xffffffff", &b, msg, bad, 2);
    /* the largest allowed record passes */
    reset(&b);
    pcap_hdr(&b, 1, 0, 1, 262144);
    pcap_rec(&b, 1, 1, 1, 262144, 262144);
    Col c = { 0 };
    Result r = run(b.p, b.n, 4096, 0, &c);
    CHECK(r.rc == CS_OK && c.n == 1 && c.copies == 1, "262144-byte record: %s", r.error);
    free(b.p);
}

static void build_pcapng(Buf *b)
{
    /* section 1, little endian, four interfaces with different clocks */
    ng_shb(b, 0);
    ng_idb(b, 0, 1, 0, -1, 0);                    /* microseconds */
    ng_idb(b, 0, 101, 64, 9, 100);                /* nanoseconds, +100 s */
    ng_idb(b, 0, 113, 0, 0x80 | 20, 0);           /* 2^-20 s */
    ng_idb(b, 0, 0, 0, 3, -5);                    /* milliseconds, -5 s */
    ng_other(b, 0, 4, 8);                         /* name resolution block: skipped */
    ng_pkt(b, 0, 6, 0, 1234567890123456ull, 60, 60);
    ng_pkt(b, 0, 6, 1, 1500000000123456789ull, 33, 40);
    ng_pkt(b, 0, 6, 2, (5ull << 20) | (1ull << 19), 20, 20);
    ng_pkt(b, 0, 6, 3, 12345, 4, 4);
    ng_other(b, 0, 0x40000BAD, 12);               /* custom block: skipped */
    ng_pkt(b, 0, 3, 0, 0, 30, 30);                /* SPB on interface 0 (no snaplen) */
    ng_other(b, 0, 5, 16);                        /* interface statistics: skipped */
    /* section 2, big endian: interfaces start again */
    ng_shb(b, 1);
    ng_idb(b, 1, 105, 50, 0x80 | 63, 0);          /* snaplen 50, 2^-63 s */
    ng_pkt(b, 1, 3, 0, 0, 50, 80);                /* SPB: caplen = snaplen 50 */
    ng_pkt(b, 1, 3, 0, 0, 30, 30);                /* SPB: caplen = original length 30 */
    ng_pkt(b, 1, 2, 0, 3ull << 62, 10, 10); /* obsolete PB: 1.5 s at 2^-63 */
    ng_pkt(b, 1, 6, 0, 0, 10, 9);                 /* caplen > origlen */
}

static void test_pcapng(void)
{
    Buf b = { 0 };
    build_pcapng(&b);
    check_valid("pcapng", &b, 9);
    Col c = { 0 };
    run(b.p, b.n, 4096, 0, &c);
    CHECK(c.rec[0].sec == 1234567890 && c.rec[0].usec == 123456 && c.rec[0].lt == 1,
          "pcapng usec: %lld.%06lu", (long long)c.rec[0].sec, (unsigned long)c.rec[0].usec);
    CHECK(c.rec[1].sec == 1500000100 && c.rec[1].usec == 123456 && c.rec[1].lt == 101 &&
          c.rec[1].caplen == 33 && c.rec[1].origlen == 40, "pcapng nsec + offset: %lld.%06lu",
          (long long)c.rec[1].sec, (unsigned long)c.rec[1].usec);
    CHECK(c.rec[2].sec == 5 && c.rec[2].usec == 500000 && c.rec[2].lt == 113, "pcapng 2^-20");
    CHECK(c.rec[3].sec == 12 - 5 && c.rec[3].usec == 345000 && c.rec[3].lt == 0, "pcapng msec");
    CHECK(c.rec[4].caplen == 30 && c.rec[4].origlen == 30 && c.rec[4].sec == 0, "pcapng SPB");
    CHECK(c.rec[5].caplen == 50 && c.rec[5].origlen == 80 && c.rec[5].lt == 105, "SPB snaplen");
    CHECK(c.rec[6].caplen == 30 && c.rec[6].origlen == 30, "SPB original length");
    CHECK(c.rec[7].sec == 1 && c.rec[7].usec == 500000 && c.rec[7].caplen == 10, "PB 2^-63");
    CHECK(c.rec[8].caplen == 10 && c.rec[8].origlen == 9, "caplen > origlen");

    /* header only */
    reset(&b);
    ng_shb(&b, 1);
    check_valid("pcapng section header only", &b, 0);
    free(b.p);
}

static void test_pcapng_bad(void)
{
    Buf b = { 0 };
    char msg[160];
    size_t at;
#define GOOD_START() (reset(&b), ng_shb(&b, 0), ng_idb(&b, 0, 1, 0, -1, 0), \
                      ng_pkt(&b, 0, 6, 0, 1, 40, 40), at = b.n)

    GOOD_START();
    ng_other(&b, 0, 77, 20);
    b.p[at + 4] = 30;
    snprintf(msg, sizeof msg, "pcapng block at offset %zu: length 30 is not a multiple of 4", at);
    check_bad("block length % 4", &b, msg, at, 1);

    GOOD_START();
    ng_other(&b, 0, 77, 20);
    b.p[at + 4] = 0xfc, b.p[at + 5] = 0xff, b.p[at + 6] = 0xff, b.p[at + 7] = 0x7f;
    snprintf(msg, sizeof msg, "pcapng block at offset %zu: length 2147483644 exceeds 16777216", at);
    check_bad("block length huge", &b, msg, at, 1);

    GOOD_START();
    ng_pkt(&b, 0, 6, 0, 1, 0, 0);
    b.p[at + 4] = 28;
    snprintf(msg, sizeof msg, "pcapng block at offset %zu: length 28 is below the minimum 32 for "
             "block type 0x6", at);
    check_bad("EPB too short", &b, msg, at, 1);

    GOOD_START();
    ng_pkt(&b, 0, 6, 0, 1, 16, 16);
    b.p[at + 20] = 17;                              /* caplen 17 > 48 - 32 */
    snprintf(msg, sizeof msg, "pcapng enhanced packet block at offset %zu: caplen 17 exceeds the "
             "block space 16", at);
    check_bad("EPB caplen > block", &b, msg, at, 1);

    GOOD_START();
    ng_pkt(&b, 0, 6, 5, 1, 16, 16);
    snprintf(msg, sizeof msg, "pcapng enhanced packet block at offset %zu: interface 5 was never "
             "declared (1 interface in this section)", at);
    check_bad("EPB undeclared interface", &b, msg, at, 1);

    GOOD_START();
    ng_shb(&b, 1);
    at = b.n;
    ng_pkt(&b, 1, 3, 0, 0, 16, 16);
    snprintf(msg, sizeof msg, "pcapng simple packet block at offset %zu: interface 0 was never "
             "declared (0 interfaces in this section)", at);
    check_bad("SPB without interface in the new section", &b, msg, at, 1);

    GOOD_START();
    ng_pkt(&b, 0, 2, 1, 1, 16, 16);
    snprintf(msg, sizeof msg, "pcapng packet block at offset %zu: interface 1 was never declared", at);
    check_bad("PB undeclared interface", &b, msg, at, 1);

    GOOD_START();
    ng_pkt(&b, 0, 6, 0, 1, 16, 16);
    b.p[b.n - 4] = 52;
    snprintf(msg, sizeof msg, "pcapng block at offset %zu: trailing length 52 differs from 48", at);
    check_bad("trailer mismatch", &b, msg, at, 1);

    GOOD_START();
    ng_shb(&b, 0);
    b.p[at + 8] = 0x11;
    snprintf(msg, sizeof msg, "pcapng section header at offset %zu: bad byte-order magic", at);
    check_bad("bad byte-order magic", &b, msg, at, 1);

    GOOD_START();
    ng_shb(&b, 0);
    b.p[at + 12] = 2;
    snprintf(msg, sizeof msg, "pcapng section header at offset %zu: unsupported version 2.0", at);
    check_bad("pcapng version 2", &b, msg, at, 1);

    GOOD_START();
    ng_idb(&b, 0, 1, 0, 0x40, 0);
    snprintf(msg, sizeof msg, "pcapng interface block at offset %zu: unsupported if_tsresol 0x40", at);
    check_bad("tsresol 10^-64", &b, msg, at, 1);

    GOOD_START();
    ng_idb(&b, 0, 1, 0, -1, 0);
    b.p[at + 18] = 200;                             /* if_name length past the block */
    snprintf(msg, sizeof msg, "pcapng interface block at offset %zu: option 2 overruns the block", at);
    check_bad("option overrun", &b, msg, at, 1);

    GOOD_START();
    for (int i = 1; i < CS_MAX_INTERFACES; i++)
        ng_idb(&b, 0, 1, 0, -1, 0);
    at = b.n;
    ng_idb(&b, 0, 1, 0, -1, 0);
    snprintf(msg, sizeof msg, "pcapng interface block at offset %zu: more than %d interfaces", at,
             CS_MAX_INTERFACES);
    check_bad("too many interfaces", &b, msg, at, 1);

    reset(&b);
    hex(&b, "47494638 39610100 01000000 00000000 00000000 00000000 00000000");
    check_bad("GIF", &b, "not a pcap or pcapng file (magic 47494638)", 0, 0);
    reset(&b);
    hex(&b, "616263");
    check_bad("3 bytes", &b, "not a pcap or pcapng file (magic 616263)", 0, 0);
    reset(&b);
    check_bad("empty", &b, "empty file", 0, 0);
    reset(&b);
    pcap_hdr(&b, 0, 0, 1, 65535);
    pcap_rec(&b, 0, 1, 1, 100, 100);
    b.n -= 10;
    check_bad("truncated pcap", &b, "truncated: file ends inside a record at offset 24 (106 of 116 "
              "bytes)", 24, 0);
    b.n = 30;
    check_bad("truncated pcap header", &b, "truncated: file ends inside a record at offset 24 "
              "(6 of 16 bytes)", 24, 0);
    b.n = 10;
    check_bad("truncated file header", &b, "truncated: file ends inside a record at offset 0 "
              "(10 of 24 bytes)", 0, 0);
    free(b.p);
#undef GOOD_START
}

/* the callback asks to stop; resuming from `consumed` delivers the rest */
static void test_stop(void)
{
    Buf b = { 0 };
    build_pcapng(&b);
    for (size_t chunk = 1; chunk <= 4096; chunk = chunk * 3 + 1) {
        Col c = { 0 };
        c.stop_after = 2;
        cs_reader r;
        cs_reader_init(&r);
        int rc = CS_OK;
        size_t pos = 0;
        while (pos < b.n && rc == CS_OK) {
            size_t n = chunk < b.n - pos ? chunk : b.n - pos;
            rc = cs_reader_feed(&r, b.p + pos, n, collect, &c);
            pos += n;
        }
        CHECK(rc == CS_STOPPED && c.n == 2, "stop: rc %d after %d packets", rc, c.n);
        c.stop_after = 0;
        pos = (size_t)(r.consumed + r.buf_len);
        rc = cs_reader_feed(&r, b.p + pos, b.n - pos, collect, &c);
        if (rc == CS_OK)
            rc = cs_reader_finish(&r);
        CHECK(rc == CS_OK && c.n == 9, "resume after stop (chunk %zu): rc %d, %d packets", chunk,
              rc, c.n);
        cs_reader_free(&r);
    }
    free(b.p);
}

static uint64_t rnd(uint64_t *s)  /* xorshift64*: deterministic, state owned by the caller */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* random damage to valid captures, and plain garbage: must end cleanly, never overread */
static void test_fuzz(void)
{
    Buf good[3] = { { 0 }, { 0 }, { 0 } }, b = { 0 };
    uint64_t s = 0x9e3779b97f4a7c15ull;
    pcap_hdr(&good[0], 0, 0, 1, 65535);
    for (int i = 0; i < 6; i++)
        pcap_rec(&good[0], 0, i, i, 40 + i, 60);
    pcap_hdr(&good[1], 1, 1, 1, 65535);
    pcap_rec(&good[1], 1, 1, 1, 40, 40);
    build_pcapng(&good[2]);
    for (int iter = 0; iter < 30000; iter++) {
        reset(&b);
        const Buf *g = &good[iter % 3];
        if (iter % 10 == 9) {                         /* garbage, maybe behind a valid magic */
            size_t n = rnd(&s) % 300;
            if (iter % 20 == 9)
                put(&b, g->p, 12);
            for (size_t i = 0; i < n; i++)
                put8(&b, (unsigned)rnd(&s));
        } else {
            put(&b, g->p, g->n);
            int flips = 1 + (int)(rnd(&s) % 8);
            for (int i = 0; i < flips; i++)
                b.p[rnd(&s) % b.n] = (uint8_t)(rnd(&s) % 3 ? rnd(&s) : 0xff);
            if (rnd(&s) % 4 == 0)
                b.n = rnd(&s) % (b.n + 1);
        }
        Col c = { 0 };
        Result r = run(b.p, b.n, 1 + rnd(&s) % 64, 0, &c);
        CHECK(r.rc == CS_OK || (r.rc == CS_ERROR && r.error[0]), "fuzz %d: rc %d", iter, r.rc);
    }
    for (int i = 0; i < 3; i++)
        free(good[i].p);
    free(b.p);
}

/* ---- link-layer tests --------------------------------------------------------------------- */

static void ip4(Buf *b, unsigned proto, unsigned frag)
{
    char h[80];
    snprintf(h, sizeof h, "4500 0054 1234 %04x 40%02x 0000 0a000001 0a000002", frag, proto);
    hex(b, h);
}

static void ip6(Buf *b, unsigned nh)
{
    char h[120];
    snprintf(h, sizeof h, "6000 0000 0020 %02x40 20010db8000000000000000000000001 "
             "20010db8000000000000000000000002", nh);
    hex(b, h);
}

static void udp_tcp_tail(Buf *b) { hex(b, "0050 1f90 00000000 00000000 5010 2000 0000 0000"); }

static const char *MAC = "020000000001 020000000002 ";

static void eth(Buf *b, const char *type)
{
    hex(b, MAC);
    hex(b, type);
}

/* full frame must give (rc, version, offset, encap); every shorter cut must stay in bounds */
static void l3(const char *name, int linktype, const Buf *b, int rc, int version, long off, int encap)
{
    cs_l3 out;
    uint8_t *exact = malloc(b->n ? b->n : 1);
    memcpy(exact, b->p, b->n);
    memset(&out, 0, sizeof out);
    int got = cs_link_to_ip(linktype, exact, (uint32_t)b->n, &out);
    if (rc == CS_L3_OK)
        CHECK(got == rc && out.version == version && out.ip - exact == off && out.encap == encap &&
              out.len == b->n - (size_t)off, "%s: rc %d version %d offset %ld encap %#x; expected"
              " %d %d %ld %#x", name, got, out.version, got ? -1L : (long)(out.ip - exact),
              out.encap, rc, version, off, encap);
    else
        CHECK(got == rc, "%s: rc %d, expected %d", name, got, rc);
    free(exact);
    for (size_t cut = 0; cut < b->n; cut++) {
        exact = malloc(cut ? cut : 1);
        memcpy(exact, b->p, cut);
        got = cs_link_to_ip(linktype, exact, (uint32_t)cut, &out);
        CHECK(got >= CS_L3_OK && got <= CS_L3_TRUNCATED, "%s cut %zu: rc %d", name, cut, got);
        if (got == CS_L3_OK)
            CHECK(out.ip >= exact && out.ip + out.len == exact + cut, "%s cut %zu", name, cut);
        free(exact);
    }
}

static void test_link(void)
{
    Buf b = { 0 };
    enum { V = CS_ENCAP_VLAN, Q = CS_ENCAP_QINQ, M = CS_ENCAP_MPLS, P = CS_ENCAP_PPPOE,
           G = CS_ENCAP_GRE, X = CS_ENCAP_VXLAN, I = CS_ENCAP_IPIP };
#define T(name, lt, build, rc, ver, off, encap) \
    do { reset(&b); build; l3(name, lt, &b, rc, ver, off, encap); } while (0)

    /* Ethernet family */
    T("eth ipv4", 1, (eth(&b, "0800"), ip4(&b, 6, 0), udp_tcp_tail(&b)), 0, 4, 14, 0);
    T("eth ipv6", 1, (eth(&b, "86dd"), ip6(&b, 6), udp_tcp_tail(&b)), 0, 6, 14, 0);
    T("eth vlan", 1, (eth(&b, "8100 0064 0800"), ip4(&b, 6, 0)), 0, 4, 18, V);
    T("eth qinq", 1, (eth(&b, "88a8 0001 8100 0002 86dd"), ip6(&b, 17)), 0, 6, 22, V | Q);
    T("eth 3 tags", 1, (eth(&b, "9100 0001 88a8 0001 8100 0002 0800"), ip4(&b, 17, 0)), 0, 4, 26,
      V | Q);
    T("eth 9 tags", 1, (eth(&b, "8100 0001 8100 0001 8100 0001 8100 0001 8100 0001 8100 0001 "
                            "8100 0001 8100 0001 8100 0001 0800"), ip4(&b, 17, 0)),
      CS_L3_UNSUPPORTED, 0, 0, 0);
    T("eth mpls", 1, (eth(&b, "8847 00010040 00020140"), ip4(&b, 6, 0)), 0, 4, 22, M);
    T("eth mpls v6", 1, (eth(&b, "8848 00010140"), ip6(&b, 6)), 0, 6, 18, M);
    T("eth mpls pw", 1, (eth(&b, "8847 00010140 00000000"), eth(&b, "0800"), ip4(&b, 6, 0)),
      0, 4, 36, M);
    T("eth mpls no bos", 1, (eth(&b, "8847 00010040 00010040"), ip4(&b, 6, 0)),
      CS_L3_TRUNCATED, 0, 0, 0);
    T("eth pppoe", 1, (eth(&b, "8864 1100 0001 0040 0021"), ip4(&b, 6, 0)), 0, 4, 22, P);
    T("eth pppoe v6", 1, (eth(&b, "8864 1100 0001 0040 0057"), ip6(&b, 6)), 0, 6, 22, P);
    T("eth pppoe pfc", 1, (eth(&b, "8864 1100 0001 0040 21"), ip4(&b, 6, 0)), 0, 4, 21, P);
    T("eth nsh", 1, (eth(&b, "894f 0fc6 0101 00451c00 00000000000000000000000000000000"), ip4(&b, 1, 0)),
      0, 4, 38, 0);
    T("eth nsh eth", 1, (eth(&b, "894f 0fc2 0203 00451c00"), eth(&b, "86dd"), ip6(&b, 6)), 0, 6, 36, 0);
    T("eth cisco metadata", 1, (eth(&b, "8909 0000 0000 0000 0800"), ip4(&b, 1, 0)), 0, 4, 22, 0);
    T("eth pppoe lcp", 1, (eth(&b, "8864 1100 0001 0040 c021 0101 0004")), CS_L3_NOT_IP, 0, 0, 0);
    T("eth pppoe discovery", 1, (eth(&b, "8863 1109 0000 0000")), CS_L3_NOT_IP, 0, 0, 0);
    T("eth snap", 1, (eth(&b, "0040 aaaa03 000000 0800"), ip4(&b, 6, 0)), 0, 4, 22, 0);
    T("eth vlan snap", 1, (eth(&b, "8100 0005 0040 aaaa03 000000 86dd"), ip6(&b, 6)), 0, 6, 26, V);
    T("eth stp", 1, (eth(&b, "0026 424203 0000 0000"), hex(&b, "00000000000000000000")),
      CS_L3_NOT_IP, 0, 0, 0);
    T("eth cdp", 1, (eth(&b, "0040 aaaa03 00000c 2000 0102")), CS_L3_NOT_IP, 0, 0, 0);
    T("eth arp", 1, (eth(&b, "0806 0001 0800 0604 0001")), CS_L3_NOT_IP, 0, 0, 0);
    T("eth short", 1, (hex(&b, "0200000000010200")), CS_L3_TRUNCATED, 0, 0, 0);
    T("eth short ip", 1, (eth(&b, "0800 4500 0054 0000")), CS_L3_TRUNCATED, 0, 0, 0);
    T("eth bad version", 1, (eth(&b, "0800"), ip6(&b, 6)), CS_L3_NOT_IP, 0, 0, 0);

    /* Linux cooked, BSD loopback, raw IP */
    T("sll", 113, (hex(&b, "0000 0001 0006 000000000000 0000 0800"), ip4(&b, 6, 0)), 0, 4, 16, 0);
    T("sll vlan", 113, (hex(&b, "0000 0001 0006 000000000000 0000 8100 0007 0800"), ip4(&b, 6, 0)),
      0, 4, 20, V);
    T("sll llc", 113, (hex(&b, "0000 0001 0006 000000000000 0000 0004 aaaa03 000000 0800"),
                       ip4(&b, 6, 0)), 0, 4, 24, 0);
    T("sll netlink", 113, (hex(&b, "0000 0338 0000 000000000000 0000 0800"), ip4(&b, 6, 0)),
      CS_L3_NOT_IP, 0, 0, 0);
    T("sll2", 276, (hex(&b, "86dd 0000 00000002 0001 00 06 000000000000 0000"), ip6(&b, 6)),
      0, 6, 20, 0);
    T("null le", 0, (hex(&b, "02000000"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("null be", 0, (hex(&b, "00000002"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("null v6 linux", 0, (hex(&b, "0a000000"), ip6(&b, 6)), 0, 6, 4, 0);
    T("null v6 bsd", 0, (hex(&b, "18000000"), ip6(&b, 6)), 0, 6, 4, 0);
    T("null v6 freebsd", 0, (hex(&b, "0000001c"), ip6(&b, 6)), 0, 6, 4, 0);
    T("null v6 darwin", 0, (hex(&b, "1e000000"), ip6(&b, 6)), 0, 6, 4, 0);
    T("null other", 0, (hex(&b, "07000000"), ip4(&b, 6, 0)), CS_L3_NOT_IP, 0, 0, 0);
    T("loop", 108, (hex(&b, "00000002"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("loop wrong order", 108, (hex(&b, "02000000"), ip4(&b, 6, 0)), CS_L3_NOT_IP, 0, 0, 0);
    T("raw 101 v4", 101, (ip4(&b, 6, 0)), 0, 4, 0, 0);
    T("raw 101 v6", 101, (ip6(&b, 6)), 0, 6, 0, 0);
    T("raw 12", 12, (ip4(&b, 6, 0)), 0, 4, 0, 0);
    T("raw 14", 14, (ip6(&b, 6)), 0, 6, 0, 0);
    T("ipv4 228", 228, (ip4(&b, 6, 0)), 0, 4, 0, 0);
    T("ipv6 229", 229, (ip6(&b, 6)), 0, 6, 0, 0);
    T("ipv6 229 with v4", 229, (ip4(&b, 6, 0)), CS_L3_NOT_IP, 0, 0, 0);
    T("raw garbage", 101, (hex(&b, "1234")), CS_L3_NOT_IP, 0, 0, 0);
    T("unknown link type", 147, (ip4(&b, 6, 0)), CS_L3_UNSUPPORTED, 0, 0, 0);

    /* PPP and HDLC */
    T("ppp", 9, (hex(&b, "ff03 0021"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("ppp pfc", 9, (hex(&b, "21"), ip4(&b, 6, 0)), 0, 4, 1, 0);
    T("ppp no addr", 9, (hex(&b, "0057"), ip6(&b, 6)), 0, 6, 2, 0);
    T("ppp lcp", 9, (hex(&b, "ff03 c021 0101 0004")), CS_L3_NOT_IP, 0, 0, 0);
    T("ppp_hdlc", 50, (hex(&b, "ff03 0021"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("ppp_hdlc cisco", 50, (hex(&b, "0f00 0800"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("c_hdlc", 104, (hex(&b, "0f00 0800"), ip4(&b, 6, 0)), 0, 4, 4, 0);
    T("c_hdlc v6", 104, (hex(&b, "8f00 86dd"), ip6(&b, 6)), 0, 6, 4, 0);
    T("c_hdlc slarp", 104, (hex(&b, "8f00 8035 00000000")), CS_L3_NOT_IP, 0, 0, 0);

    /* NFLOG: header, a prefix TLV (padded), a hardware-header TLV, then the payload */
    T("nflog", 239, (hex(&b, "02 00 0000  0800 0100 08000300  0700 0a00 616263 00  "),
                     hex(&b, "3000 0900"), ip4(&b, 6, 0), udp_tcp_tail(&b)), 0, 4, 24, 0);
    T("nflog v6", 239, (hex(&b, "0a 00 0000  2c00 0900"), ip6(&b, 6)), 0, 6, 8, 0);
    T("nflog big endian", 239, (hex(&b, "02 00 0000  0008 0001 08000300  0007 000a 616263 00  "),
                                hex(&b, "0030 0009"), ip4(&b, 6, 0)), 0, 4, 24, 0);
    T("nflog no payload", 239, (hex(&b, "02 00 0000  0800 0100 08000300")), CS_L3_NOT_IP, 0, 0, 0);
    T("nflog bad tlv", 239, (hex(&b, "02 00 0000  0000 0100 08000300")), CS_L3_NOT_IP, 0, 0, 0);

    /* 802.11 */
    const char *a3 = "0000 112233445566 223344556677 334455667788 0000 ";
    const char *snap4 = "aaaa03 000000 0800";
    T("wlan data", 105, (hex(&b, "0802"), hex(&b, a3), hex(&b, snap4), ip4(&b, 6, 0)), 0, 4, 32, 0);
    T("wlan qos wds ht", 105, (hex(&b, "8883"), hex(&b, a3), hex(&b, "445566778899 0000 00000000"),
                               hex(&b, snap4), ip4(&b, 6, 0)), 0, 4, 44, 0);
    T("wlan qos", 105, (hex(&b, "8801"), hex(&b, a3), hex(&b, "0000 aaaa03 000000 86dd"), ip6(&b, 6)),
      0, 6, 34, 0);
    T("wlan protected", 105, (hex(&b, "0842"), hex(&b, a3), hex(&b, snap4), ip4(&b, 6, 0)),
      CS_L3_UNSUPPORTED, 0, 0, 0);
    T("wlan a-msdu", 105, (hex(&b, "8801"), hex(&b, a3), hex(&b, "8000"), hex(&b, snap4),
                           ip4(&b, 6, 0)), CS_L3_UNSUPPORTED, 0, 0, 0);
    T("wlan beacon", 105, (hex(&b, "8000"), hex(&b, a3), hex(&b, "00000000")), CS_L3_NOT_IP, 0, 0, 0);
    T("wlan null", 105, (hex(&b, "4801"), hex(&b, a3)), CS_L3_NOT_IP, 0, 0, 0);
    T("radiotap", 127, (hex(&b, "00 00 0c00 04000000 10 00 0000"), hex(&b, "0801"), hex(&b, a3),
                        hex(&b, snap4), ip4(&b, 6, 0)), 0, 4, 44, 0);
    T("radiotap bad length", 127, (hex(&b, "00 00 0400 04000000")), CS_L3_NOT_IP, 0, 0, 0);

    /* tunnels */
    T("gre", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "0000 0800"), ip4(&b, 6, 0)), 0, 4, 38, G);
    T("gre ck+key+seq", 1, (eth(&b, "0800"), ip4(&b, 47, 0),
                            hex(&b, "b000 86dd 00000000 00000007 00000001"), ip6(&b, 6)), 0, 6, 50, G);
    T("gre eth", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "0000 6558"), eth(&b, "8100 0001 0800"),
                     ip4(&b, 6, 0)), 0, 4, 56, G | V);
    T("gre routing", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "4000 0800 00000000"),
                         ip4(&b, 6, 0)), 0, 4, 14, 0);
    T("erspan I", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "0000 88be"), eth(&b, "0800"),
                      ip4(&b, 6, 0)), 0, 4, 52, G);
    T("erspan II", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "1000 88be 00000001"),
                       hex(&b, "10010001 00000000"), eth(&b, "0800"), ip4(&b, 6, 0)), 0, 4, 64, G);
    T("erspan III", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "1000 22eb 00000001"),
                        hex(&b, "20010001 00000000 0000 0000"), eth(&b, "0800"), ip4(&b, 6, 0)),
      0, 4, 68, G);
    T("erspan III subheader", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "1000 22eb 00000001"),
                                  hex(&b, "20010001 00000000 0000 0001 0000000000000000"),
                                  eth(&b, "0800"), ip4(&b, 6, 0)), 0, 4, 76, G);
    T("pptp gre", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "3001 880b 0030 0001 00000005"),
                      hex(&b, "ff03 0021"), ip4(&b, 6, 0)), 0, 4, 50, G);
    T("pptp gre ack pfc", 1, (eth(&b, "0800"), ip4(&b, 47, 0),
                              hex(&b, "3081 880b 0030 0001 00000005 00000004 21"), ip4(&b, 6, 0)),
      0, 4, 51, G);
    T("pptp gre lcp", 1, (eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "3001 880b 0030 0001 00000005"),
                          hex(&b, "ff03 c021 0101 0004")), 0, 4, 14, 0);
    T("vxlan", 1, (eth(&b, "0800"), ip4(&b, 17, 0), hex(&b, "c000 12b5 0040 0000 08000000 00006400"),
                   eth(&b, "0800"), ip4(&b, 6, 0)), 0, 4, 64, X);
    T("geneve", 1, (eth(&b, "0800"), ip4(&b, 17, 0), hex(&b, "c000 17c1 0040 0000 0200 6558 00006400"),
                    hex(&b, "0101 0001 00000000"), eth(&b, "0800"), ip4(&b, 6, 0)), 0, 4, 72,
      CS_ENCAP_GENEVE);
    T("geneve ipv6", 1, (eth(&b, "86dd"), ip6(&b, 17), hex(&b, "c000 17c1 0040 0000 0000 86dd 00006400"),
                         ip6(&b, 6)), 0, 6, 70, CS_ENCAP_GENEVE);
    T("udp other port", 1, (eth(&b, "0800"), ip4(&b, 17, 0), hex(&b, "c000 12b6 0040 0000 08000000"
                            " 00006400"), eth(&b, "0800"), ip4(&b, 6, 0)), 0, 4, 14, 0);
    T("ipip", 1, (eth(&b, "0800"), ip4(&b, 4, 0), ip4(&b, 6, 0)), 0, 4, 34, I);
    T("6in4", 1, (eth(&b, "0800"), ip4(&b, 41, 0), ip6(&b, 6)), 0, 6, 34, I);
    T("4in6 ext", 1, (eth(&b, "86dd"), ip6(&b, 0), hex(&b, "3c00 0000 0000 0000"),
                      hex(&b, "0401 0000 0000 0000 0000 0000 0000 0000"), ip4(&b, 6, 0)), 0, 4, 78, I);
    T("gre in ipv6", 1, (eth(&b, "86dd"), ip6(&b, 47), hex(&b, "0000 86dd"), ip6(&b, 6)), 0, 6, 58, G);
    T("ipip MF", 1, (eth(&b, "0800"), ip4(&b, 4, 0x2000), ip4(&b, 6, 0)), 0, 4, 14, 0);
    T("ipip offset", 1, (eth(&b, "0800"), ip4(&b, 4, 0x0010), ip4(&b, 6, 0)), 0, 4, 14, 0);
    T("ipip DF", 1, (eth(&b, "0800"), ip4(&b, 4, 0x4000), ip4(&b, 6, 0)), 0, 4, 34, I);
    T("ipv6 fragment", 1, (eth(&b, "86dd"), ip6(&b, 44), hex(&b, "2900 0001 00000001"), ip6(&b, 6)),
      0, 6, 14, 0);
    T("ipip truncated inner", 1, (eth(&b, "0800"), ip4(&b, 4, 0), hex(&b, "4500 0054")), 0, 4, 14, 0);
    T("ipip deep", 1, (eth(&b, "0800"), ip4(&b, 4, 0), ip4(&b, 4, 0), ip4(&b, 4, 0), ip4(&b, 4, 0),
                       ip4(&b, 4, 0), ip4(&b, 4, 0)), 0, 4, 94, I);
    T("vxlan gre mpls", 1, (eth(&b, "0800"), ip4(&b, 17, 0), hex(&b, "c000 12b5 0040 0000 08000000 "
                            "00006400"), eth(&b, "0800"), ip4(&b, 47, 0), hex(&b, "0000 8847 00010140"),
                            ip6(&b, 6)), 0, 6, 92, X | G | M);
    T("mpls pw loop", 1, (eth(&b, "8847 00010140 00000000"), eth(&b, "8847 00010140 00000000"),
                          eth(&b, "8847 00010140 00000000"), eth(&b, "0800"), ip4(&b, 6, 0)),
      0, 4, 80, M);
#undef T
    /* hostile: a long chain of MPLS pseudowires must stop at the layer bound */
    reset(&b);
    for (int i = 0; i < 100; i++)
        eth(&b, "8847 00010140 00000000");
    eth(&b, "0800");
    ip4(&b, 6, 0);
    cs_l3 out;
    CHECK(cs_link_to_ip(1, b.p, (uint32_t)b.n, &out) == CS_L3_UNSUPPORTED, "pw chain not bounded");
    CHECK(cs_link_to_ip(1, NULL, 0, &out) == CS_L3_TRUNCATED, "NULL frame");
    free(b.p);
}

static int selftest(void)
{
    test_pcap();
    test_pcapng();
    test_pcapng_bad();
    test_stop();
    test_link();
    test_fuzz();
    printf("# selftest: %d checks, %d failures\n", checks, failures);
    return failures != 0;
}

int main(int argc, char **argv)
{
    size_t chunk = 65536;
    print_ctx pc = { 0 };
    int i, bad = 0;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-t"))
            return selftest();
        else if (!strcmp(argv[i], "-s"))
            pc.show_src = 1;
        else if (!strcmp(argv[i], "-c") && i + 1 < argc && atol(argv[i + 1]) > 0)
            chunk = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-c CHUNK] [-s] FILE... | -t\n", argv[0]);
            return 2;
        }
    }
    for (; i < argc; i++)
        bad |= print_file(argv[i], chunk, &pc);
    return bad;
}
