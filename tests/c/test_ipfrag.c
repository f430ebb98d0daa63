/* Self-test and capture driver for c2scribe/reassembly/ipfrag.c.
 *
 *   test_ipfrag -t                        self-test (packets built here); prints
 *                                         "# selftest: N checks, F failures", exit 0 if F == 0
 *   test_ipfrag [OPTIONS] --pcap FILE     feed every IP packet of a classic pcap file (linktype
 *                                         1 Ethernet, 113 Linux SLL, 12/14/101 raw IP, 228 IPv4,
 *                                         229 IPv6) to the defragmenter; print one line per
 *                                         packet passed through ("P <hex>") or datagram
 *                                         completed ("D <hex>"), then "# stats ..." lines
 *     OPTIONS: --policy first|last|bsd|linux|windows|solaris  --timeout-us N  --max-bytes N
 *              --max-datagrams N  --max-fragments N
 *
 * Every packet is handed over in a heap block of exactly its size so that the sanitizers (the
 * Makefile builds with -fsanitize=address,undefined) catch any read beyond it.
 */
#include "ipfrag.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* ---- checks ----------------------------------------------------------------------------- */

static long checks, failures;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        checks++;                                                                            \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            if (failures <= 60) {                                                            \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                                  \
                printf(__VA_ARGS__);                                                         \
                putchar('\n');                                                               \
            }                                                                                \
        }                                                                                    \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, v >> 16);
    wr16(p + 2, v & 0xffff);
}

static uint16_t csum(const uint8_t *h, uint32_t n)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i + 1 < n; i += 2)
        s += rd16(h + i);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static int v4_csum_ok(const uint8_t *h) { return csum(h, (uint32_t)(h[0] & 15) * 4) == 0; }

static void v4_set_csum(uint8_t *h)
{
    h[10] = h[11] = 0;
    wr16(h + 10, csum(h, (uint32_t)(h[0] & 15) * 4));
}

/* The packet in a heap block of exactly its size. */
static int feed(cs_frag_table *t, int64_t now, const uint8_t *p, uint32_t n, const uint8_t **out,
                uint32_t *out_len)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, p, n);
    int r = cs_frag_input(t, now, copy, n, out, out_len);
    free(copy);
    return r;
}

static cs_frag_table *table(int policy, int64_t timeout, size_t max_bytes, size_t max_dg,
                            unsigned max_frag)
{
    cs_frag_opts o;
    memset(&o, 0, sizeof o);
    o.policy = policy;
    o.timeout_us = timeout;
    o.max_bytes = max_bytes;
    o.max_datagrams = max_dg;
    o.max_fragments = max_frag;
    cs_frag_table *t = cs_frag_new(&o);
    if (!t) {
        printf("FAIL cs_frag_new returned NULL\n");
        exit(1);
    }
    return t;
}

/* ---- datagrams and fragments ------------------------------------------------------------ */

typedef struct {
    int v6;
    uint8_t hdr[256];     /* v4: IP header with options; v6: fixed + unfragmentable headers */
    uint32_t hl;
    uint32_t nh_pos;      /* v6: offset of the Next Header byte naming the upper layer */
    uint8_t upper;        /* v6: upper-layer protocol */
    uint32_t id;
    uint8_t *pay;
    uint32_t plen;
    uint8_t *expect;      /* the datagram as reassembly must return it */
    uint32_t elen;
} dgm;

typedef struct {
    uint8_t *p;
    uint32_t n;
    uint32_t off, len;
    int more;
    int dg;               /* which datagram (random tests) */
} frag;

static void dgm_finish(dgm *d)
{
    d->elen = d->hl + d->plen;
    d->expect = malloc(d->elen);
    memcpy(d->expect, d->hdr, d->hl);
    memcpy(d->expect + d->hl, d->pay, d->plen);
    if (d->v6) {
        wr16(d->expect + 4, d->hl - 40 + d->plen);
    } else {
        wr16(d->expect + 2, d->elen);
        v4_set_csum(d->expect);
    }
}

static void fill_random(uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* The payload (random unless pay is given), then the expected datagram. */
static void dgm_payload(dgm *d, uint32_t id, uint32_t plen, const uint8_t *pay)
{
    d->id = id;
    d->plen = plen;
    d->pay = malloc(plen ? plen : 1);
    if (pay)
        memcpy(d->pay, pay, plen);
    else
        fill_random(d->pay, plen);
    dgm_finish(d);
}

/* IPv4 datagram: optlen a multiple of 4 (<= 40); payload random unless pay is given. */
static void dgm_v4(dgm *d, uint32_t src, uint32_t dst, uint16_t id, uint8_t proto,
                   uint32_t optlen, uint32_t plen, const uint8_t *pay)
{
    memset(d, 0, sizeof *d);
    d->hl = 20 + optlen;
    uint8_t *h = d->hdr;
    h[0] = (uint8_t)(0x40 | d->hl / 4);
    h[1] = 0x10;
    wr16(h + 4, id);
    h[8] = 64;
    h[9] = proto;
    wr32(h + 12, src);
    wr32(h + 16, dst);
    if (optlen >= 4) {         /* Record Route, then End of Options */
        h[20] = 7;
        h[21] = (uint8_t)(optlen - 1);
        h[22] = 4;
    }
    dgm_payload(d, id, plen, pay);
}

/* IPv6 datagram; exts: 'H' Hop-by-Hop (8 bytes), 'D' Destination Options (16), 'R' Routing
 * (8), 'A' Authentication Header (24), in that order before the Fragment header. */
static void dgm_v6(dgm *d, uint8_t srcb, uint8_t dstb, uint32_t id, uint8_t upper,
                   const char *exts, uint32_t plen, const uint8_t *pay)
{
    memset(d, 0, sizeof *d);
    d->v6 = 1;
    uint8_t *h = d->hdr;
    h[0] = 0x60;
    h[1] = 0x0a;
    h[2] = 0xbc;
    h[3] = 0xde;
    h[7] = 64;
    h[8] = 0x20;
    h[9] = 0x01;
    h[23] = srcb;
    h[24] = 0x20;
    h[25] = 0x01;
    h[39] = dstb;
    uint32_t pos = 6, off = 40;
    for (const char *e = exts; *e; e++) {
        uint32_t size;
        uint8_t type;
        switch (*e) {
        case 'H': type = 0; size = 8; h[off + 1] = 0; h[off + 2] = 1; h[off + 3] = 4; break;
        case 'D': type = 60; size = 16; h[off + 1] = 1; h[off + 2] = 1; h[off + 3] = 12; break;
        case 'R': type = 43; size = 8; h[off + 1] = 0; h[off + 2] = 253; h[off + 3] = 0; break;
        default: type = 51; size = 24; h[off + 1] = 4; wr32(h + off + 4, 0x1234); wr32(h + off + 8, 7); break;
        }
        h[pos] = type;
        pos = off;
        off += size;
    }
    h[pos] = upper;
    d->nh_pos = pos;
    d->upper = upper;
    d->hl = off;
    dgm_payload(d, id, plen, pay);
}

static void dgm_free(dgm *d)
{
    free(d->pay);
    free(d->expect);
    d->pay = d->expect = NULL;
}

/* Fragment [off, off + len) of d (off a multiple of 8), bytes from data or d's payload.
 * IPv4: the first fragment carries d's options, and so do the others (use a twin datagram
 * without options to leave them out). */
static frag mk_frag(const dgm *d, uint32_t off, uint32_t len, int more, const uint8_t *data)
{
    frag f;
    f.off = off;
    f.len = len;
    f.more = more;
    f.dg = 0;
    if (!data)
        data = d->pay + off;
    if (d->v6) {
        f.n = d->hl + 8 + len;
        f.p = malloc(f.n);
        memcpy(f.p, d->hdr, d->hl);
        f.p[d->nh_pos] = 44;
        wr16(f.p + 4, f.n - 40);
        uint8_t *fh = f.p + d->hl;
        fh[0] = d->upper;
        fh[1] = 0;
        wr16(fh + 2, off | (more ? 1u : 0u));
        wr32(fh + 4, d->id);
        memcpy(fh + 8, data, len);
    } else {
        f.n = d->hl + len;
        f.p = malloc(f.n);
        memcpy(f.p, d->hdr, d->hl);
        wr16(f.p + 2, f.n);
        wr16(f.p + 6, (uint32_t)(d->hdr[6] & 0xc0) << 8 | (more ? 0x2000u : 0u) | off / 8);
        v4_set_csum(f.p);
        memcpy(f.p + d->hl, data, len);
    }
    return f;
}

static void frags_free(frag *f, int n)
{
    for (int i = 0; i < n; i++)
        free(f[i].p);
}

/* Fragments of chunk bytes (a multiple of 8). */
static int split(const dgm *d, uint32_t chunk, frag *out)
{
    int n = 0;
    for (uint32_t o = 0; o < d->plen; o += chunk) {
        uint32_t l = d->plen - o < chunk ? d->plen - o : chunk;
        out[n++] = mk_frag(d, o, l, o + l < d->plen, NULL);
    }
    return n;
}

static void shuffle(frag *f, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)below((uint32_t)i + 1);
        frag x = f[i];
        f[i] = f[j];
        f[j] = x;
    }
}

static int same(const uint8_t *a, uint32_t an, const uint8_t *b, uint32_t bn)
{
    return an == bn && !memcmp(a, b, an);
}

/* Feeds f[0..n) (fragments of d, in that order): HELD until the fragments fed cover the
 * payload and the last one was seen, then DONE with d's bytes. Returns the index of DONE. */
static int run_seq(cs_frag_table *t, int64_t now, const dgm *d, const frag *f, int n,
                   const char *what)
{
    uint8_t *have = calloc(d->plen + 1, 1);
    uint32_t missing = d->plen;
    int final = 0, done = -1;
    for (int i = 0; i < n; i++) {
        for (uint32_t b = f[i].off; b < f[i].off + f[i].len; b++)
            if (!have[b]) {
                have[b] = 1;
                missing--;
            }
        final |= !f[i].more;
        const uint8_t *out;
        uint32_t olen;
        int r = feed(t, now, f[i].p, f[i].n, &out, &olen);
        if (final && missing == 0) {
            CHECK(r == CS_FRAG_DONE, "%s: fragment %d: %d, not DONE", what, i, r);
            if (r == CS_FRAG_DONE) {
                CHECK(same(out, olen, d->expect, d->elen), "%s: output differs (len %u vs %u)",
                      what, olen, d->elen);
                if (!d->v6)
                    CHECK(v4_csum_ok(out), "%s: bad IPv4 checksum", what);
            }
            done = i;
            break;
        }
        CHECK(r == CS_FRAG_HELD, "%s: fragment %d: %d, not HELD", what, i, r);
    }
    free(have);
    return done;
}

/* ---- defaults, non-fragments ------------------------------------------------------------ */

static void test_defaults(void)
{
    cs_frag_opts o;
    memset(&o, 0xff, sizeof o);
    cs_frag_opts_default(&o);
    CHECK(o.timeout_us == 60000000, "default timeout %lld", (long long)o.timeout_us);
    CHECK(o.max_bytes == (size_t)32 << 20, "default max_bytes %zu", o.max_bytes);
    CHECK(o.max_datagrams == 16384, "default max_datagrams %zu", o.max_datagrams);
    CHECK(o.max_fragments == 256, "default max_fragments %u", o.max_fragments);
    CHECK(o.policy == CS_FRAG_FIRST, "default policy %d", o.policy);

    cs_frag_table *t = cs_frag_new(NULL);
    CHECK(t != NULL, "cs_frag_new(NULL)");
    const cs_frag_counters *c = cs_frag_stats(t);
    CHECK(c && c->fragments == 0 && c->reassembled == 0, "fresh counters");
    CHECK(cs_frag_held_bytes(t) == 0 && cs_frag_held_datagrams(t) == 0, "fresh table holds");

    /* non-fragments pass, untouched and unheld */
    dgm d4, d6, d6h;
    dgm_v4(&d4, 0x0a000001, 0x0a000002, 1, 6, 0, 100, NULL);
    dgm_v6(&d6, 1, 2, 1, 17, "", 100, NULL);
    dgm_v6(&d6h, 1, 2, 1, 17, "HD", 100, NULL);
    const uint8_t *out = (const uint8_t *)"x";
    uint32_t olen = 7;
    CHECK(feed(t, 0, d4.expect, d4.elen, &out, &olen) == CS_FRAG_PASS, "v4 not a fragment");
    CHECK(out == NULL && olen == 0, "PASS clears *out");
    CHECK(feed(t, 0, d6.expect, d6.elen, &out, &olen) == CS_FRAG_PASS, "v6 not a fragment");
    CHECK(feed(t, 0, d6h.expect, d6h.elen, &out, &olen) == CS_FRAG_PASS, "v6+ext not a fragment");
    /* DF set, MF clear, offset 0: not a fragment */
    d4.expect[6] = 0x40;
    CHECK(feed(t, 0, d4.expect, d4.elen, &out, &olen) == CS_FRAG_PASS, "v4 DF");
    uint8_t junk[3] = { 0x45, 0, 0 };
    CHECK(feed(t, 0, junk, 0, &out, &olen) == CS_FRAG_PASS, "empty");
    CHECK(feed(t, 0, junk, 3, &out, &olen) == CS_FRAG_PASS, "short v4");
    CHECK(cs_frag_input(t, 0, NULL, 0, &out, &olen) == CS_FRAG_PASS, "NULL packet");
    uint8_t v5[40] = { 0x55 };
    CHECK(feed(t, 0, v5, 40, &out, &olen) == CS_FRAG_PASS, "version 5");
    /* IPv6 with an unknown next header, or a truncated chain: cannot be a fragment we see */
    d6h.expect[40 + 1] = 200;  /* Hop-by-Hop length way past the end */
    CHECK(feed(t, 0, d6h.expect, d6h.elen, &out, &olen) == CS_FRAG_PASS, "v6 truncated chain");
    CHECK(cs_frag_input(t, 0, d6.expect, 39, &out, &olen) == CS_FRAG_PASS, "v6 < 40 bytes");
    c = cs_frag_stats(t);
    CHECK(c->fragments == 0 && c->malformed == 0, "non-fragments counted: %llu %llu",
          (ull)c->fragments, (ull)c->malformed);
    CHECK(cs_frag_held_bytes(t) == 0, "non-fragments held");
    cs_frag_free(t);
    cs_frag_free(NULL);
    cs_frag_expire(NULL, 0);
    CHECK(cs_frag_held_bytes(NULL) == 0 && cs_frag_stats(NULL) == NULL, "NULL table");

    /* zero fields mean defaults; out-of-range policy means FIRST */
    t = table(99, 0, 0, 0, 0);
    dgm_free(&d4);
    dgm_v4(&d4, 1, 2, 3, 17, 0, 64, NULL);
    frag f[2] = { mk_frag(&d4, 0, 32, 1, NULL), mk_frag(&d4, 32, 32, 0, NULL) };
    run_seq(t, 0, &d4, f, 2, "default opts");
    frags_free(f, 2);
    cs_frag_free(t);
    dgm_free(&d4);
    dgm_free(&d6);
    dgm_free(&d6h);
}

/* ---- in order, reversed, shuffled, duplicated ------------------------------------------- */

static void orders(const dgm *d, uint32_t chunk, const char *name)
{
    static frag f[2 * 8192 + 8];
    char what[160];
    for (int order = 0; order < 5; order++) {
        cs_frag_table *t = table(order % CS_FRAG__COUNT, 0, 0, 0, 8192);
        int n = split(d, chunk, f);
        int dups = 0;
        if (order == 1)
            for (int i = 0; i < n / 2; i++) {
                frag x = f[i];
                f[i] = f[n - 1 - i];
                f[n - 1 - i] = x;
            }
        else if (order == 2)
            shuffle(f, n);
        else if (order >= 3) {
            /* every fragment twice (3: next to each other; 4: shuffled) */
            for (int i = n - 1; i >= 0; i--) {
                f[2 * i] = f[i];
                f[2 * i + 1] = mk_frag(d, f[i].off, f[i].len, f[i].more, NULL);
            }
            n *= 2;
            if (order == 4)
                shuffle(f, n);
        }
        snprintf(what, sizeof what, "%s chunk %u order %d", name, chunk, order);
        int done = run_seq(t, 1000, d, f, n, what);
        CHECK(done >= 0, "%s: never completed", what);
        for (int i = 0; i <= done; i++) {
            /* a fragment fed before DONE that overlapped earlier ones is a duplicate */
            for (int j = 0; j < i; j++)
                if (f[j].off == f[i].off) {
                    dups++;
                    break;
                }
        }
        const cs_frag_counters *c = cs_frag_stats(t);
        CHECK(c->reassembled == 1, "%s: reassembled %llu", what, (ull)c->reassembled);
        CHECK(c->overlaps == (ull)dups, "%s: overlaps %llu, expected %d", what, (ull)c->overlaps,
              dups);
        CHECK(c->overlap_conflicts == 0, "%s: conflicts %llu", what, (ull)c->overlap_conflicts);
        CHECK(c->fragments == (ull)done + 1, "%s: fragments %llu", what, (ull)c->fragments);
        CHECK(c->fragments_v6 == (d->v6 ? (ull)done + 1 : 0), "%s: fragments_v6", what);
        CHECK(cs_frag_held_bytes(t) == 0 && cs_frag_held_datagrams(t) == 0, "%s: still held",
              what);
        frags_free(f, n);
        cs_frag_free(t);
    }
}

static void test_orders(void)
{
    static const uint32_t sizes[] = { 9, 100, 1480, 4000, 65515 };
    static const uint32_t chunks[] = { 8, 64, 1480 };
    for (unsigned s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (unsigned c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            dgm d;
            if (sizes[s] / chunks[c] > 8000 || sizes[s] <= chunks[c])
                continue;   /* one fragment is not fragmented (v4) or atomic (v6) */
            dgm_v4(&d, 0xc0a80001, 0xc0a80002, (uint16_t)(s * 7 + c), 6, 0, sizes[s], NULL);
            orders(&d, chunks[c], "v4");
            dgm_free(&d);
            dgm_v6(&d, 1, 2, 0x80000000u + s * 7 + c, 17, "", sizes[s] > 65000 ? 65000 : sizes[s], NULL);
            orders(&d, chunks[c], "v6");
            dgm_free(&d);
            dgm_v6(&d, 1, 2, 77 + s, 6, "HD", sizes[s] > 65000 ? 65000 : sizes[s], NULL);
            orders(&d, chunks[c], "v6 HBH+DST");
            dgm_free(&d);
        }
}

/* ---- IPv4 options; IPv6 extension headers ----------------------------------------------- */

static void test_v4_options(void)
{
    for (uint32_t optlen = 4; optlen <= 40; optlen += 12) {
        dgm d, bare;
        dgm_v4(&d, 0x01020304, 0x05060708, 4242, 17, optlen, 1000, NULL);
        dgm_v4(&bare, 0x01020304, 0x05060708, 4242, 17, 0, 1000, d.pay);
        /* options in the first fragment only (later ones without), every order */
        frag f[8];
        for (int order = 0; order < 3; order++) {
            cs_frag_table *t = table(CS_FRAG_FIRST, 0, 0, 0, 0);
            int n = 0;
            f[n++] = mk_frag(&d, 0, 400, 1, NULL);
            f[n++] = mk_frag(&bare, 400, 400, 1, NULL);
            f[n++] = mk_frag(&bare, 800, 200, 0, NULL);
            if (order == 1) {
                frag x = f[0];
                f[0] = f[2];
                f[2] = x;
            } else if (order == 2) {
                frag x = f[0];
                f[0] = f[1];
                f[1] = x;
            }
            CHECK(run_seq(t, 0, &d, f, n, "v4 options in first") == 2, "v4 options: no DONE");
            frags_free(f, n);
            /* options in every fragment */
            n = split(&d, 296, f);
            CHECK(run_seq(t, 0, &d, f, n, "v4 options in all") == n - 1, "v4 options all");
            frags_free(f, n);
            cs_frag_free(t);
        }
        dgm_free(&d);
        dgm_free(&bare);
    }
    /* DF and the reserved bit of the first fragment are kept */
    dgm d;
    dgm_v4(&d, 1, 2, 3, 6, 8, 100, NULL);
    d.hdr[6] = 0xc0;
    free(d.expect);
    dgm_finish(&d);
    cs_frag_table *t = table(0, 0, 0, 0, 0);
    frag f[2] = { mk_frag(&d, 0, 48, 1, NULL), mk_frag(&d, 48, 52, 0, NULL) };
    run_seq(t, 0, &d, f, 2, "v4 DF kept");
    CHECK(d.expect[6] == 0xc0 && d.expect[7] == 0, "expected flags");
    frags_free(f, 2);
    cs_frag_free(t);
    dgm_free(&d);
}

static void test_v6_ext(void)
{
    static const char *const chains[] = { "", "H", "HD", "HDR", "HDRA", "A", "DDD" };
    for (unsigned i = 0; i < sizeof chains / sizeof *chains; i++) {
        dgm d;
        dgm_v6(&d, 9, 10, 0xdeadbeef, 6, chains[i], 3000, NULL);
        frag f[64];
        cs_frag_table *t = table(CS_FRAG_LINUX, 0, 0, 0, 0);
        int n = split(&d, 1232, f);
        shuffle(f, n);
        char what[64];
        snprintf(what, sizeof what, "v6 chain '%s'", chains[i]);
        CHECK(run_seq(t, 0, &d, f, n, what) == n - 1, "%s: no DONE", what);
        frags_free(f, n);
        cs_frag_free(t);
        dgm_free(&d);
    }
    /* non-first fragments with another unfragmentable part: the first one's is used */
    dgm d, other;
    dgm_v6(&d, 9, 10, 55, 17, "HD", 2000, NULL);
    dgm_v6(&other, 9, 10, 55, 17, "R", 2000, d.pay);
    cs_frag_table *t = table(0, 0, 0, 0, 0);
    frag f[3] = { mk_frag(&other, 1000, 1000, 0, NULL), mk_frag(&d, 0, 504, 1, NULL),
                  mk_frag(&other, 504, 496, 1, NULL) };
    run_seq(t, 0, &d, f, 3, "v6 unfragmentable part of the first fragment");
    frags_free(f, 3);
    cs_frag_free(t);
    dgm_free(&d);
    dgm_free(&other);
    /* same id, different addresses or version: different datagrams */
    dgm a, b, c4;
    dgm_v6(&a, 1, 2, 7, 17, "", 100, NULL);
    dgm_v6(&b, 1, 3, 7, 17, "", 100, NULL);
    dgm_v4(&c4, 1, 2, 7, 17, 0, 100, NULL);
    t = table(0, 0, 0, 0, 0);
    frag g[6] = { mk_frag(&a, 0, 48, 1, NULL), mk_frag(&b, 0, 48, 1, NULL),
                  mk_frag(&c4, 0, 48, 1, NULL), mk_frag(&a, 48, 52, 0, NULL),
                  mk_frag(&b, 48, 52, 0, NULL), mk_frag(&c4, 48, 52, 0, NULL) };
    const uint8_t *out;
    uint32_t olen;
    for (int i = 0; i < 3; i++)
        CHECK(feed(t, 0, g[i].p, g[i].n, &out, &olen) == CS_FRAG_HELD, "keys: held %d", i);
    CHECK(cs_frag_held_datagrams(t) == 3, "three keys");
    const dgm *which[3] = { &a, &b, &c4 };
    for (int i = 3; i < 6; i++) {
        CHECK(feed(t, 0, g[i].p, g[i].n, &out, &olen) == CS_FRAG_DONE, "keys: done %d", i);
        CHECK(same(out, olen, which[i - 3]->expect, which[i - 3]->elen), "keys: bytes %d", i);
    }
    /* v4: protocol is part of the key */
    dgm p17, p6;
    dgm_v4(&p17, 1, 2, 9, 17, 0, 16, NULL);
    dgm_v4(&p6, 1, 2, 9, 6, 0, 16, NULL);
    frag h[2] = { mk_frag(&p17, 0, 8, 1, NULL), mk_frag(&p6, 8, 8, 0, NULL) };
    CHECK(feed(t, 0, h[0].p, h[0].n, &out, &olen) == CS_FRAG_HELD, "proto key 1");
    CHECK(feed(t, 0, h[1].p, h[1].n, &out, &olen) == CS_FRAG_HELD, "proto key 2");
    frags_free(h, 2);
    frags_free(g, 6);
    cs_frag_free(t);
    dgm_free(&a);
    dgm_free(&b);
    dgm_free(&c4);
    dgm_free(&p17);
    dgm_free(&p6);
}

static void test_v6_atomic(void)
{
    static const char *const chains[] = { "", "HD", "A" };
    cs_frag_table *t = table(0, 0, 0, 0, 0);
    for (unsigned i = 0; i < 3; i++) {
        dgm d;
        dgm_v6(&d, 3, 4, 99, 58, chains[i], 77, NULL);
        frag f = mk_frag(&d, 0, 77, 0, NULL);
        /* link padding after the payload is not part of it */
        uint8_t *padded = malloc(f.n + 5);
        memcpy(padded, f.p, f.n);
        memset(padded + f.n, 0xee, 5);
        const uint8_t *out;
        uint32_t olen;
        int r = feed(t, 0, padded, f.n + 5, &out, &olen);
        CHECK(r == CS_FRAG_DONE, "atomic '%s': %d", chains[i], r);
        CHECK(r == CS_FRAG_DONE && same(out, olen, d.expect, d.elen), "atomic '%s' bytes",
              chains[i]);
        CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0, "atomic held");
        free(padded);
        free(f.p);
        dgm_free(&d);
    }
    const cs_frag_counters *c = cs_frag_stats(t);
    CHECK(c->atomic == 3 && c->reassembled == 0 && c->fragments_v6 == 3, "atomic counters");
    /* an atomic fragment does not disturb a datagram being reassembled with the same id */
    dgm d;
    dgm_v6(&d, 3, 4, 100, 17, "", 64, NULL);
    frag f[3] = { mk_frag(&d, 0, 32, 1, NULL), mk_frag(&d, 0, 64, 0, NULL),
                  mk_frag(&d, 32, 32, 0, NULL) };
    const uint8_t *out;
    uint32_t olen;
    CHECK(feed(t, 0, f[0].p, f[0].n, &out, &olen) == CS_FRAG_HELD, "before atomic");
    CHECK(feed(t, 0, f[1].p, f[1].n, &out, &olen) == CS_FRAG_DONE, "atomic");
    CHECK(feed(t, 0, f[2].p, f[2].n, &out, &olen) == CS_FRAG_DONE, "after atomic");
    CHECK(same(out, olen, d.expect, d.elen), "after atomic: bytes");
    frags_free(f, 3);
    dgm_free(&d);
    cs_frag_free(t);
}

/* ---- overlap policies ------------------------------------------------------------------- */

/* Datagrams of 8 blocks of 8 bytes. A case lists fragments "Lse" (letter, start block, end
 * block exclusive) fed in that order; the gaps of blocks 0..6 are then filled ('.') and the
 * last fragment (block 7, 'z') completes it. Byte p of a block lettered L is L + (p & 7). The
 * expected blocks are given for FIRST, LAST, BSD, LINUX, WINDOWS, SOLARIS. */
struct ovcase {
    const char *frags;
    const char *expect[CS_FRAG__COUNT];
    int overlaps, conflicts;
};

static const struct ovcase ovcases[] = {
    /* new starts before held (H = [2,5)), ends inside / at its end / after it */
    { "H25 N03", { "NNHHH..z", "NNNHH..z", "NNNHH..z", "NNNHH..z", "NNHHH..z", "NNHHH..z" }, 1, 1 },
    { "H25 N05", { "NNHHH..z", "NNNNN..z", "NNNNN..z", "NNNNN..z", "NNHHH..z", "NNNNN..z" }, 1, 1 },
    { "H25 N06", { "NNHHHN.z", "NNNNNN.z", "NNNNNN.z", "NNNNNN.z", "NNNNNN.z", "NNNNNN.z" }, 1, 1 },
    /* new starts at held */
    { "H25 N24", { "..HHH..z", "..NNH..z", "..HHH..z", "..NNH..z", "..HHH..z", "..HHH..z" }, 1, 1 },
    { "H25 N25", { "..HHH..z", "..NNN..z", "..HHH..z", "..NNN..z", "..HHH..z", "..HHH..z" }, 1, 1 },
    { "H25 N26", { "..HHHN.z", "..NNNN.z", "..HHHN.z", "..NNNN.z", "..HHHN.z", "..HHHN.z" }, 1, 1 },
    /* new starts after held */
    { "H25 N34", { "..HHH..z", "..HNH..z", "..HHH..z", "..HHH..z", "..HHH..z", "..HHH..z" }, 1, 1 },
    { "H25 N35", { "..HHH..z", "..HNN..z", "..HHH..z", "..HHH..z", "..HHH..z", "..HHH..z" }, 1, 1 },
    { "H25 N36", { "..HHHN.z", "..HNNN.z", "..HHHN.z", "..HHHN.z", "..HHHN.z", "..HHHN.z" }, 1, 1 },
    /* adjacent: no overlap */
    { "H25 N57", { "..HHHNNz", "..HHHNNz", "..HHHNNz", "..HHHNNz", "..HHHNNz", "..HHHNNz" }, 0, 0 },
    { "H25 N02", { "NNHHH..z", "NNHHH..z", "NNHHH..z", "NNHHH..z", "NNHHH..z", "NNHHH..z" }, 0, 0 },
    /* one new fragment over several held ones */
    { "A12 B34 N05", { "NANBN..z", "NNNNN..z", "NNNNN..z", "NNNNN..z", "NNNNN..z", "NNNNN..z" }, 1, 1 },
    { "A02 B24 N13", { "AABB...z", "ANNB...z", "AANB...z", "AANB...z", "AABB...z", "AABB...z" }, 1, 1 },
    { "A13 B46 N25", { ".AANBB.z", ".ANNNB.z", ".AANNB.z", ".AANNB.z", ".AANBB.z", ".AANBB.z" }, 1, 1 },
    /* the rule compares with the fragment that provided the held bytes (after earlier wins) */
    { "A24 B06 C13", { "BBAABB.z", "BCCBBB.z", "BBBBBB.z", "BBBBBB.z", "BBBBBB.z", "BBBBBB.z" }, 2, 2 },
    { "A26 B04 C16", { "BBAAAA.z", "BCCCCC.z", "BBBBCC.z", "BBBBCC.z", "BBAAAA.z", "BBCCCC.z" }, 2, 2 },
    /* same bytes: overlaps, not conflicts */
    { "H25 H25", { "..HHH..z", "..HHH..z", "..HHH..z", "..HHH..z", "..HHH..z", "..HHH..z" }, 1, 0 },
    { "H25 H03", { "HHHHH..z", "HHHHH..z", "HHHHH..z", "HHHHH..z", "HHHHH..z", "HHHHH..z" }, 1, 0 },
    { "H25 H16 H25", { ".HHHHH.z", ".HHHHH.z", ".HHHHH.z", ".HHHHH.z", ".HHHHH.z", ".HHHHH.z" }, 2, 0 },
};

static void block_bytes(uint8_t *dst, uint32_t start_block, uint32_t end_block, char letter)
{
    for (uint32_t p = start_block * 8; p < end_block * 8; p++)
        dst[p - start_block * 8] = (uint8_t)(letter + (p & 7));
}

static void test_policies(void)
{
    for (unsigned ci = 0; ci < sizeof ovcases / sizeof *ovcases; ci++) {
        const struct ovcase *oc = &ovcases[ci];
        for (int pol = 0; pol < CS_FRAG__COUNT; pol++)
            for (int v6 = 0; v6 < 2; v6++) {
                uint8_t pay[64];
                for (int b = 0; b < 8; b++)
                    block_bytes(pay + 8 * b, (uint32_t)b, (uint32_t)b + 1, oc->expect[pol][b]);
                dgm d;
                if (v6)
                    dgm_v6(&d, 5, 6, 1000 + ci, 17, "H", 64, pay);
                else
                    dgm_v4(&d, 5, 6, (uint16_t)(1000 + ci), 17, 0, 64, pay);
                cs_frag_table *t = table(pol, 0, 0, 0, 0);
                int covered[8] = { 0 }, r = 0;
                char what[96];
                snprintf(what, sizeof what, "case '%s' %s %s", oc->frags, cs_frag_policy_names[pol],
                         v6 ? "v6" : "v4");
                const uint8_t *out = NULL;
                uint32_t olen = 0;
                for (const char *s = oc->frags; *s; s += s[3] ? 4 : 3) {
                    uint32_t a = (uint32_t)(s[1] - '0'), e = (uint32_t)(s[2] - '0');
                    uint8_t data[64];
                    block_bytes(data, a, e, s[0]);
                    frag f = mk_frag(&d, a * 8, (e - a) * 8, 1, data);
                    r = feed(t, 0, f.p, f.n, &out, &olen);
                    CHECK(r == CS_FRAG_HELD, "%s: fragment %c: %d", what, s[0], r);
                    free(f.p);
                    for (uint32_t b = a; b < e; b++)
                        covered[b] = 1;
                    if (!s[3])
                        break;
                }
                for (uint32_t b = 0; b < 7; b++) {
                    if (covered[b])
                        continue;
                    uint32_t e = b;
                    while (e < 7 && !covered[e])
                        e++;
                    uint8_t data[64];
                    block_bytes(data, b, e, '.');
                    frag f = mk_frag(&d, b * 8, (e - b) * 8, 1, data);
                    r = feed(t, 0, f.p, f.n, &out, &olen);
                    CHECK(r == CS_FRAG_HELD, "%s: filler: %d", what, r);
                    free(f.p);
                    b = e;
                }
                uint8_t data[8];
                block_bytes(data, 7, 8, 'z');
                frag f = mk_frag(&d, 56, 8, 0, data);
                r = feed(t, 0, f.p, f.n, &out, &olen);
                free(f.p);
                CHECK(r == CS_FRAG_DONE, "%s: last: %d", what, r);
                if (r == CS_FRAG_DONE) {
                    int ok = same(out, olen, d.expect, d.elen);
                    char got[9] = "????????";
                    for (int b = 0; b < 8 && olen == d.elen; b++)
                        got[b] = (char)out[d.hl + 8 * (uint32_t)b];
                    CHECK(ok, "%s: got %s, expected %s", what, got, oc->expect[pol]);
                }
                const cs_frag_counters *c = cs_frag_stats(t);
                CHECK(c->overlaps == (ull)oc->overlaps && c->overlap_conflicts == (ull)oc->conflicts,
                      "%s: overlaps %llu conflicts %llu, expected %d %d", what, (ull)c->overlaps,
                      (ull)c->overlap_conflicts, oc->overlaps, oc->conflicts);
                CHECK(cs_frag_held_bytes(t) == 0, "%s: held bytes", what);
                cs_frag_free(t);
                dgm_free(&d);
            }
    }
    /* the last fragment overlapping held bytes, and a final fragment sent twice */
    for (int pol = 0; pol < CS_FRAG__COUNT; pol++) {
        uint8_t pay[20], data[20];
        block_bytes(pay, 0, 1, 'A');
        memset(pay + 8, 'B', 12);         /* A [0,8) B [8,20) held; C [8, 20) final */
        memset(data, 'C', 12);
        int c_wins = pol == CS_FRAG_LAST || pol == CS_FRAG_LINUX;
        if (c_wins)
            memset(pay + 8, 'C', 12);
        dgm d;
        dgm_v4(&d, 7, 8, 77, 17, 0, 20, pay);
        cs_frag_table *t = table(pol, 0, 0, 0, 0);
        uint8_t bdata[12];
        memset(bdata, 'B', 12);
        frag f[3] = { mk_frag(&d, 8, 12, 0, bdata), mk_frag(&d, 8, 12, 0, data),
                      mk_frag(&d, 0, 8, 1, NULL) };
        run_seq(t, 0, &d, f, 3, c_wins ? "final twice (new wins)" : "final twice (held wins)");
        const cs_frag_counters *c = cs_frag_stats(t);
        CHECK(c->overlaps == 1 && c->overlap_conflicts == 1 && c->malformed == 0,
              "final twice: counters");
        frags_free(f, 3);
        cs_frag_free(t);
        dgm_free(&d);
    }
}

/* ---- timers ----------------------------------------------------------------------------- */

static void test_timeouts(void)
{
    const int64_t T = 1000000;
    dgm a, b;
    dgm_v4(&a, 1, 2, 1, 17, 0, 64, NULL);
    dgm_v6(&b, 1, 2, 2, 17, "", 64, NULL);
    frag a1 = mk_frag(&a, 0, 32, 1, NULL), a2 = mk_frag(&a, 32, 32, 0, NULL);
    frag b1 = mk_frag(&b, 0, 32, 1, NULL), b2 = mk_frag(&b, 32, 32, 0, NULL);
    frag a3 = mk_frag(&a, 8, 8, 1, NULL);
    const uint8_t *out;
    uint32_t olen;

    cs_frag_table *t = table(0, T, 0, 0, 0);
    const cs_frag_counters *c = cs_frag_stats(t);
    CHECK(feed(t, 5 * T, a1.p, a1.n, &out, &olen) == CS_FRAG_HELD, "a1");
    CHECK(feed(t, 5 * T + T / 2, a3.p, a3.n, &out, &olen) == CS_FRAG_HELD, "a3");
    cs_frag_expire(t, 6 * T - 1);
    CHECK(cs_frag_held_datagrams(t) == 1 && c->timeouts == 0, "expired early");
    /* slightly back in time: b is stamped with the clock, not earlier */
    CHECK(feed(t, 5 * T + T / 2, b1.p, b1.n, &out, &olen) == CS_FRAG_HELD, "b1");
    cs_frag_expire(t, 6 * T);   /* a: timeout after its FIRST fragment, not its last */
    CHECK(cs_frag_held_datagrams(t) == 1 && c->timeouts == 1, "a not expired: %llu",
          (ull)c->timeouts);
    CHECK(feed(t, 6 * T, a2.p, a2.n, &out, &olen) == CS_FRAG_HELD, "a2 after a expired");
    cs_frag_expire(t, 7 * T - 2);
    CHECK(cs_frag_held_datagrams(t) == 2, "b expired early");
    /* expiry happens at the start of cs_frag_input, for any packet */
    CHECK(feed(t, 7 * T - 1, a.expect, a.elen, &out, &olen) == CS_FRAG_PASS, "plain packet");
    CHECK(cs_frag_held_datagrams(t) == 1 && c->timeouts == 2, "b not expired by input");
    CHECK(feed(t, 7 * T - 1, b2.p, b2.n, &out, &olen) == CS_FRAG_HELD, "b2 after b expired");
    CHECK(c->reassembled == 0, "reassembled after expiry");
    cs_frag_expire(t, 100 * T);
    CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0 && c->timeouts == 4,
          "all expired");
    /* completes just before the timer */
    CHECK(feed(t, 200 * T, a1.p, a1.n, &out, &olen) == CS_FRAG_HELD, "a1 again");
    CHECK(feed(t, 201 * T - 1, a2.p, a2.n, &out, &olen) == CS_FRAG_DONE, "a in time");
    CHECK(same(out, olen, a.expect, a.elen), "a bytes");
    /* a large step back (more than a timeout) is a discontinuity: the clock stands still */
    CHECK(feed(t, 300 * T, a1.p, a1.n, &out, &olen) == CS_FRAG_HELD, "a1 before jump");
    CHECK(feed(t, 10 * T, b1.p, b1.n, &out, &olen) == CS_FRAG_HELD, "b1 after jump");
    cs_frag_expire(t, 11 * T - 1);
    CHECK(cs_frag_held_datagrams(t) == 2, "jump: expired early");
    cs_frag_expire(t, 11 * T);
    CHECK(cs_frag_held_datagrams(t) == 0 && c->timeouts == 6, "jump: not expired");
    /* extreme times: no crash, no overflow, timers still sane afterwards */
    int64_t extremes[] = { INT64_MAX, INT64_MIN, 0, -1, INT64_MAX - 1, INT64_MIN + 1, 42 };
    for (unsigned i = 0; i < sizeof extremes / sizeof *extremes; i++) {
        int r = feed(t, extremes[i], (i & 1) ? b1.p : a1.p, (i & 1) ? b1.n : a1.n, &out, &olen);
        CHECK(r == CS_FRAG_HELD || r == CS_FRAG_DONE, "extreme time %lld: %d",
              (long long)extremes[i], r);
        cs_frag_expire(t, extremes[i]);
    }
    cs_frag_expire(t, 42 + 2 * T);
    cs_frag_expire(t, 42 + 4 * T);
    CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0, "extremes: held %zu",
          cs_frag_held_datagrams(t));
    cs_frag_free(t);
    /* default timeout is 60 s */
    t = table(0, 0, 0, 0, 0);
    c = cs_frag_stats(t);
    feed(t, 0, a1.p, a1.n, &out, &olen);
    cs_frag_expire(t, 60 * T - 1);
    CHECK(cs_frag_held_datagrams(t) == 1, "default timeout: early");
    cs_frag_expire(t, 60 * T);
    CHECK(cs_frag_held_datagrams(t) == 0 && c->timeouts == 1, "default timeout: late");
    /* free with datagrams held: LeakSanitizer checks */
    feed(t, 61 * T, a1.p, a1.n, &out, &olen);
    feed(t, 61 * T, b1.p, b1.n, &out, &olen);
    cs_frag_free(t);
    free(a1.p);
    free(a2.p);
    free(a3.p);
    free(b1.p);
    free(b2.p);
    dgm_free(&a);
    dgm_free(&b);
}

/* ---- limits ----------------------------------------------------------------------------- */

static void test_limits(void)
{
    const uint8_t *out;
    uint32_t olen;
    dgm d[6];
    frag first[6], last[6];
    for (int i = 0; i < 6; i++) {
        dgm_v4(&d[i], 1, 2, (uint16_t)(10 + i), 17, 0, 2000, NULL);
        first[i] = mk_frag(&d[i], 0, 1000, 1, NULL);
        last[i] = mk_frag(&d[i], 1000, 1000, 0, NULL);
    }
    /* max_datagrams */
    cs_frag_table *t = table(0, 0, 0, 4, 0);
    const cs_frag_counters *c = cs_frag_stats(t);
    for (int i = 0; i < 5; i++)
        CHECK(feed(t, i, first[i].p, first[i].n, &out, &olen) == CS_FRAG_HELD, "dg %d", i);
    CHECK(cs_frag_held_datagrams(t) == 4 && c->evicted == 1, "max_datagrams: %zu %llu",
          cs_frag_held_datagrams(t), (ull)c->evicted);
    CHECK(feed(t, 9, last[0].p, last[0].n, &out, &olen) == CS_FRAG_HELD, "oldest was evicted");
    CHECK(c->evicted == 2 && cs_frag_held_datagrams(t) == 4, "second eviction");
    CHECK(feed(t, 9, last[1].p, last[1].n, &out, &olen) == CS_FRAG_HELD, "second oldest gone");
    CHECK(feed(t, 9, last[4].p, last[4].n, &out, &olen) == CS_FRAG_DONE, "newest kept");
    CHECK(same(out, olen, d[4].expect, d[4].elen), "newest bytes");
    cs_frag_free(t);

    /* max_bytes: measure what one held 1000-byte fragment costs */
    t = table(0, 0, 0, 0, 0);
    feed(t, 0, first[0].p, first[0].n, &out, &olen);
    size_t one = cs_frag_held_bytes(t);
    CHECK(one >= 1000 && one < 1000 + 1024, "cost of one fragment: %zu", one);
    cs_frag_free(t);
    size_t maxb = 3 * one + one / 2;
    t = table(0, 0, maxb, 0, 0);
    c = cs_frag_stats(t);
    for (int i = 0; i < 5; i++) {
        CHECK(feed(t, i, first[i].p, first[i].n, &out, &olen) == CS_FRAG_HELD, "bytes dg %d", i);
        CHECK(cs_frag_held_bytes(t) <= maxb, "held %zu > max %zu", cs_frag_held_bytes(t), maxb);
    }
    CHECK(cs_frag_held_datagrams(t) == 3 && c->evicted == 2, "max_bytes: %zu %llu",
          cs_frag_held_datagrams(t), (ull)c->evicted);
    /* growing the newest evicts the oldest other one, not itself */
    frag mid = mk_frag(&d[4], 1000, 800, 1, NULL);
    CHECK(feed(t, 6, mid.p, mid.n, &out, &olen) == CS_FRAG_HELD, "grow newest");
    CHECK(cs_frag_held_datagrams(t) == 2 && c->evicted == 3, "grow: %zu %llu",
          cs_frag_held_datagrams(t), (ull)c->evicted);
    CHECK(cs_frag_held_bytes(t) <= maxb, "grow: held %zu", cs_frag_held_bytes(t));
    CHECK(feed(t, 7, last[2].p, last[2].n, &out, &olen) == CS_FRAG_HELD, "2 was evicted");
    CHECK(feed(t, 7, last[4].p, last[4].n, &out, &olen) == CS_FRAG_DONE, "4 completes");
    CHECK(same(out, olen, d[4].expect, d[4].elen), "4 bytes");
    free(mid.p);
    /* growing the OLDEST one evicts the next oldest, not itself (held now: 2', 4 gone) */
    CHECK(feed(t, 8, first[3].p, first[3].n, &out, &olen) == CS_FRAG_HELD, "3 again");
    CHECK(feed(t, 8, first[5].p, first[5].n, &out, &olen) == CS_FRAG_HELD, "5");
    CHECK(cs_frag_held_datagrams(t) == 3, "2' 3' 5 held: %zu", cs_frag_held_datagrams(t));
    uint64_t ev = c->evicted;
    mid = mk_frag(&d[2], 0, 800, 1, NULL);
    CHECK(feed(t, 9, mid.p, mid.n, &out, &olen) == CS_FRAG_HELD, "grow oldest");
    CHECK(c->evicted == ev + 1 && cs_frag_held_datagrams(t) == 2, "grow oldest: evicted %llu",
          (ull)(c->evicted - ev));
    CHECK(feed(t, 9, first[2].p, first[2].n, &out, &olen) == CS_FRAG_DONE, "oldest completes");
    CHECK(same(out, olen, d[2].expect, d[2].elen), "oldest bytes");
    CHECK(feed(t, 9, last[3].p, last[3].n, &out, &olen) == CS_FRAG_HELD, "3' was evicted");
    free(mid.p);
    cs_frag_free(t);
    /* a datagram that alone exceeds max_bytes is dropped; the others stay */
    t = table(0, 0, 2000, 0, 0);
    c = cs_frag_stats(t);
    dgm small;
    dgm_v4(&small, 3, 4, 5, 17, 0, 200, NULL);
    frag s1 = mk_frag(&small, 0, 96, 1, NULL), s2 = mk_frag(&small, 96, 104, 0, NULL);
    CHECK(feed(t, 0, s1.p, s1.n, &out, &olen) == CS_FRAG_HELD, "small held");
    CHECK(feed(t, 0, first[0].p, first[0].n, &out, &olen) == CS_FRAG_HELD, "1000 fits");
    CHECK(feed(t, 0, last[0].p, last[0].n, &out, &olen) == CS_FRAG_DONE, "2000 completes");
    dgm big;
    dgm_v4(&big, 3, 4, 6, 17, 0, 4000, NULL);
    frag b1 = mk_frag(&big, 0, 2000, 1, NULL);
    CHECK(feed(t, 0, b1.p, b1.n, &out, &olen) == CS_FRAG_DROPPED, "over max_bytes alone");
    CHECK(c->evicted == 1 && cs_frag_held_datagrams(t) == 1, "alone: %llu %zu",
          (ull)c->evicted, cs_frag_held_datagrams(t));
    CHECK(feed(t, 0, s2.p, s2.n, &out, &olen) == CS_FRAG_DONE, "small survived");
    CHECK(same(out, olen, small.expect, small.elen), "small bytes");
    CHECK(cs_frag_held_bytes(t) == 0, "limits: held");
    free(s1.p);
    free(s2.p);
    free(b1.p);
    dgm_free(&small);
    dgm_free(&big);
    cs_frag_free(t);

    /* max_fragments */
    t = table(0, 0, 0, 0, 4);
    c = cs_frag_stats(t);
    dgm m;
    dgm_v6(&m, 1, 2, 3, 17, "", 80, NULL);
    for (uint32_t i = 0; i < 5; i++) {
        frag f = mk_frag(&m, i * 16, 8, 1, NULL);
        int r = feed(t, 0, f.p, f.n, &out, &olen);
        CHECK(r == (i < 4 ? CS_FRAG_HELD : CS_FRAG_DROPPED), "fragment %u: %d", i, r);
        free(f.p);
    }
    CHECK(c->too_many_fragments == 1 && cs_frag_held_datagrams(t) == 0 &&
          cs_frag_held_bytes(t) == 0, "too many: %llu", (ull)c->too_many_fragments);
    frag f4[4];
    for (uint32_t i = 0; i < 4; i++)
        f4[i] = mk_frag(&m, i * 24, i == 3 ? 8 : 24, i < 3, NULL);
    CHECK(run_seq(t, 0, &m, f4, 4, "exactly max_fragments") == 3, "max_fragments exactly");
    frags_free(f4, 4);
    dgm_free(&m);
    cs_frag_free(t);

    /* a flood of distinct ids: memory stays bounded */
    size_t fb = 256 * 1024, fd = 1000;
    t = table(0, 0, fb, fd, 0);
    c = cs_frag_stats(t);
    uint8_t pkt[20 + 1480];
    memset(pkt, 0xab, sizeof pkt);
    int bounded = 1;
    const uint32_t flood = 200000;
    for (uint32_t i = 0; i < flood; i++) {
        uint32_t len = 8 * (1 + below(185));
        pkt[0] = 0x45;
        wr16(pkt + 2, 20 + len);
        wr16(pkt + 4, i & 0xffff);
        wr16(pkt + 6, 0x2000 | (1 + below(100)));
        pkt[9] = 17;
        wr32(pkt + 12, 0x0a000000 | (i >> 16));
        wr32(pkt + 16, 0x0a0000ff);
        int r = cs_frag_input(t, (int64_t)i, pkt, 20 + len, &out, &olen);
        if (r != CS_FRAG_HELD || cs_frag_held_bytes(t) > fb || cs_frag_held_datagrams(t) > fd)
            bounded = 0;
    }
    CHECK(bounded, "flood: limits not kept");
    CHECK(c->evicted + cs_frag_held_datagrams(t) == flood, "flood: evicted %llu held %zu",
          (ull)c->evicted, cs_frag_held_datagrams(t));
    cs_frag_free(t);
    for (int i = 0; i < 6; i++) {
        free(first[i].p);
        free(last[i].p);
        dgm_free(&d[i]);
    }
}

/* ---- malformed -------------------------------------------------------------------------- */

static void expect_malformed(cs_frag_table *t, const uint8_t *p, uint32_t n, const char *what)
{
    const cs_frag_counters *c = cs_frag_stats(t);
    uint64_t before = c->malformed;
    const uint8_t *out;
    uint32_t olen;
    int r = feed(t, 0, p, n, &out, &olen);
    CHECK(r == CS_FRAG_DROPPED, "%s: %d, not DROPPED", what, r);
    CHECK(c->malformed == before + 1, "%s: malformed not counted", what);
}

static void test_malformed(void)
{
    const uint8_t *out;
    uint32_t olen;
    cs_frag_table *t = table(0, 0, 0, 0, 0);
    const cs_frag_counters *c = cs_frag_stats(t);
    dgm d4, d6;
    uint8_t big[65536];
    memset(big, 0x5a, sizeof big);
    dgm_v4(&d4, 1, 2, 3, 17, 0, 64, NULL);
    dgm_v6(&d6, 1, 2, 3, 17, "D", 64, NULL);

    /* offsets: v4 offset*8 + length over 65535 - header; the limit itself is fine */
    frag f = mk_frag(&d4, 65528, 16, 0, big);
    expect_malformed(t, f.p, f.n, "v4 offset overflow");
    free(f.p);
    f = mk_frag(&d4, 65488, 27, 0, big);
    CHECK(feed(t, 0, f.p, f.n, &out, &olen) == CS_FRAG_HELD, "v4 at the limit");
    free(f.p);
    f = mk_frag(&d6, 65520, 16, 0, big);
    expect_malformed(t, f.p, f.n, "v6 offset overflow");
    free(f.p);
    f = mk_frag(&d6, 65512, 8, 0, big);   /* 16 bytes of unfragmentable headers + 65520 */
    expect_malformed(t, f.p, f.n, "v6 offset overflow with extension headers");
    free(f.p);
    f = mk_frag(&d6, 65504, 15, 0, big);  /* 16 + 65519 = 65535: fine */
    CHECK(feed(t, 0, f.p, f.n, &out, &olen) == CS_FRAG_HELD, "v6 at the limit");
    free(f.p);
    cs_frag_free(t);

    t = table(0, 0, 0, 0, 0);
    c = cs_frag_stats(t);
    /* a middle fragment of a length not a multiple of 8; zero-length fragments */
    for (int v6 = 0; v6 < 2; v6++) {
        const dgm *d = v6 ? &d6 : &d4;
        f = mk_frag(d, 8, 13, 1, NULL);
        expect_malformed(t, f.p, f.n, "odd middle fragment");
        free(f.p);
        f = mk_frag(d, 8, 0, 1, NULL);
        expect_malformed(t, f.p, f.n, "zero-length middle fragment");
        free(f.p);
        f = mk_frag(d, 8, 0, 0, NULL);
        expect_malformed(t, f.p, f.n, "zero-length last fragment");
        free(f.p);
        f = mk_frag(d, 0, 0, 0, NULL);
        if (v6)
            expect_malformed(t, f.p, f.n, "zero-length atomic fragment");
        else
            CHECK(feed(t, 0, f.p, f.n, &out, &olen) == CS_FRAG_PASS, "v4 offset 0 MF 0");
        free(f.p);
    }
    CHECK(cs_frag_held_datagrams(t) == 0, "malformed fragments held");
    /* past the end, or a second different end: the whole datagram goes */
    for (int v6 = 0; v6 < 2; v6++) {
        const dgm *d = v6 ? &d6 : &d4;
        frag a = mk_frag(d, 0, 16, 1, NULL), l = mk_frag(d, 16, 8, 0, NULL);
        frag past = mk_frag(d, 24, 8, 1, NULL), past2 = mk_frag(d, 16, 16, 1, NULL);
        frag end2 = mk_frag(d, 16, 16, 0, NULL), end3 = mk_frag(d, 8, 8, 0, NULL);
        frag same_end = mk_frag(d, 8, 16, 0, NULL);
        frag *bad[] = { &past, &past2, &end2, &end3 };
        const char *names[] = { "after the end", "across the end", "second end later",
                                "second end earlier" };
        for (int i = 0; i < 4; i++) {
            CHECK(feed(t, 0, l.p, l.n, &out, &olen) == CS_FRAG_HELD, "last first");
            expect_malformed(t, bad[i]->p, bad[i]->n, names[i]);
            CHECK(cs_frag_held_datagrams(t) == 0, "%s: datagram kept", names[i]);
            CHECK(feed(t, 0, a.p, a.n, &out, &olen) == CS_FRAG_HELD, "%s: fresh datagram",
                  names[i]);
            cs_frag_expire(t, 1000000000);
        }
        /* held bytes past a last fragment that arrives later */
        CHECK(feed(t, 0, past.p, past.n, &out, &olen) == CS_FRAG_HELD, "beyond first");
        expect_malformed(t, l.p, l.n, "last fragment before held bytes");
        CHECK(cs_frag_held_datagrams(t) == 0, "held-past-end datagram kept");
        /* the same end twice is fine */
        CHECK(feed(t, 0, l.p, l.n, &out, &olen) == CS_FRAG_HELD, "same end 1");
        CHECK(feed(t, 0, same_end.p, same_end.n, &out, &olen) == CS_FRAG_HELD, "same end 2");
        CHECK(feed(t, 0, a.p, a.n, &out, &olen) == CS_FRAG_DONE, "same end: done");
        cs_frag_expire(t, 2000000000);
        free(a.p);
        free(l.p);
        free(past.p);
        free(past2.p);
        free(end2.p);
        free(end3.p);
        free(same_end.p);
    }
    /* truncated and inconsistent headers */
    f = mk_frag(&d4, 8, 16, 1, NULL);
    uint8_t p[80];
    memcpy(p, f.p, f.n);
    p[0] = 0x4f;                                   /* 60-byte header in a 36-byte packet */
    expect_malformed(t, p, f.n, "v4 header longer than the packet");
    p[0] = 0x44;                                   /* header length 16 */
    expect_malformed(t, p, f.n, "v4 header length < 20");
    p[0] = 0x45;
    wr16(p + 2, 19);                               /* total length < header */
    expect_malformed(t, p, f.n, "v4 total length < header");
    wr16(p + 2, 20);                               /* no payload */
    expect_malformed(t, p, f.n, "v4 total length = header");
    wr16(p + 2, 36);
    expect_malformed(t, p, 31, "v4 captured short of the total length (odd middle)");
    CHECK(feed(t, 0, p, 19, &out, &olen) == CS_FRAG_PASS, "v4 shorter than 20: PASS");
    /* link padding after the total length is not payload */
    memcpy(p, f.p, f.n);
    memset(p + f.n, 0xee, 20);
    CHECK(feed(t, 0, p, f.n + 20, &out, &olen) == CS_FRAG_HELD, "padded fragment");
    frag g = mk_frag(&d4, 0, 8, 1, NULL), h = mk_frag(&d4, 24, 40, 0, NULL);
    feed(t, 0, g.p, g.n, &out, &olen);
    CHECK(feed(t, 0, h.p, h.n, &out, &olen) == CS_FRAG_DONE, "padded: done");
    CHECK(same(out, olen, d4.expect, d4.elen), "padded: bytes");
    free(f.p);
    free(g.p);
    free(h.p);
    /* v6: Fragment header cut short */
    f = mk_frag(&d6, 8, 16, 1, NULL);
    memcpy(p, f.p, f.n);
    wr16(p + 4, 16 + 4);                           /* ext header + half a Fragment header */
    expect_malformed(t, p, f.n, "v6 Fragment header cut by the payload length");
    wr16(p + 4, f.n - 40);
    expect_malformed(t, p, 40 + 16 + 5, "v6 Fragment header cut by the capture");
    free(f.p);
    /* first fragment's header makes the datagram too long */
    dgm opt, bare;
    dgm_v4(&opt, 1, 2, 99, 17, 40, 8, NULL);
    dgm_v4(&bare, 1, 2, 99, 17, 0, 8, NULL);
    frag o1 = mk_frag(&opt, 0, 8, 1, NULL), o2 = mk_frag(&bare, 65488, 27, 0, big);
    frag o3 = mk_frag(&bare, 8, 65480, 1, big);
    CHECK(feed(t, 0, o2.p, o2.n, &out, &olen) == CS_FRAG_HELD, "too long: last");
    CHECK(feed(t, 0, o3.p, o3.n, &out, &olen) == CS_FRAG_HELD, "too long: middle");
    expect_malformed(t, o1.p, o1.n, "v4 first header + payload over 65535");
    CHECK(cs_frag_held_datagrams(t) == 0, "too long: kept");
    free(o1.p);
    free(o2.p);
    free(o3.p);
    dgm_free(&opt);
    dgm_free(&bare);
    dgm_v6(&opt, 1, 2, 99, 17, "HDA", 8, NULL);
    dgm_v6(&bare, 1, 2, 99, 17, "", 8, NULL);
    o1 = mk_frag(&opt, 0, 8, 1, NULL);
    o2 = mk_frag(&bare, 65528, 7, 0, big);
    o3 = mk_frag(&bare, 8, 65520, 1, big);
    feed(t, 0, o2.p, o2.n, &out, &olen);
    feed(t, 0, o3.p, o3.n, &out, &olen);
    expect_malformed(t, o1.p, o1.n, "v6 unfragmentable part + payload over 65535");
    free(o1.p);
    free(o2.p);
    free(o3.p);
    dgm_free(&opt);
    dgm_free(&bare);
    CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0, "malformed: held");
    CHECK(c->reassembled == 3, "malformed: reassembled %llu", (ull)c->reassembled);
    cs_frag_free(t);
    dgm_free(&d4);
    dgm_free(&d6);
}

/* ---- random: consistent fragments, any order, duplicates -------------------------------- */

static void random_dgm(dgm *d, int v6, uint32_t id, uint32_t plen, dgm *twin)
{
    static const char *const chains[] = { "", "", "H", "HD", "D", "HDR", "A", "HDRA" };
    if (v6) {
        const char *ch = chains[below(8)];
        uint8_t srcb = (uint8_t)below(3);
        if (plen > 65535 - 64)
            plen = 65535 - 64;
        dgm_v6(d, srcb, 2, id, (uint8_t)(below(2) ? 6 : 17), ch, plen, NULL);
        /* later fragments: the same unfragmentable part, or another one */
        dgm_v6(twin, srcb, 2, id, d->upper, below(2) ? ch : chains[below(8)], plen, d->pay);
    } else {
        uint32_t optlen = below(3) ? 0 : 4 * below(11);
        uint32_t src = 0x0a000001 + below(2);
        if (plen > 65535 - 20 - optlen)
            plen = 65535 - 20 - optlen;
        dgm_v4(d, src, 0x0a000009, (uint16_t)id, 17, optlen, plen, NULL);
        /* later fragments: with the same options, or without */
        dgm_v4(twin, src, 0x0a000009, (uint16_t)id, 17, below(2) ? optlen : 0, plen, d->pay);
    }
}

static void test_random(void)
{
    enum { ITER = 3000, MAXD = 4, MAXF = 1200 };
    static frag f[MAXF];
    cs_frag_table *tables[CS_FRAG__COUNT];
    for (int p = 0; p < CS_FRAG__COUNT; p++)
        tables[p] = table(p, 0, 0, 0, 0);
    int64_t now = 0;
    for (int it = 0; it < ITER; it++) {
        int nd = 1 + (int)below(MAXD), n = 0;
        cs_frag_table *t = tables[below(CS_FRAG__COUNT)];
        const cs_frag_counters *c = cs_frag_stats(t);
        dgm d[MAXD], twin[MAXD];
        uint8_t *have[MAXD];
        uint32_t missing[MAXD];
        int final[MAXD], done[MAXD];
        uint64_t reassembled0 = c->reassembled, conflicts0 = c->overlap_conflicts;
        for (int k = 0; k < nd; k++) {
            uint32_t plen = (it % 97 == 0) ? 30000 + below(35000) : 9 + below(3000);
            random_dgm(&d[k], (int)below(2), (uint32_t)(it * MAXD + k), plen, &twin[k]);
            plen = d[k].plen;
            uint32_t minchunk = (plen / 150 + 7) / 8 * 8;
            uint32_t maxfr = 180;
            int base = 0, base0 = n;
            for (uint32_t o = 0; o < plen;) {
                uint32_t chunk = 8 * (1 + below(250));
                if (chunk < minchunk)
                    chunk = minchunk;
                if (o == 0 && chunk >= plen)
                    chunk = (plen - 1) / 8 * 8;   /* at least two fragments */
                uint32_t l = plen - o < chunk ? plen - o : chunk;
                f[n] = mk_frag(o == 0 ? &d[k] : &twin[k], o, l, o + l < plen, NULL);
                f[n++].dg = k;
                base++;
                o += l;
            }
            /* duplicates and consistent overlapping fragments */
            uint32_t extra = below(8);
            for (uint32_t e = 0; e < extra && (uint32_t)base + e < maxfr; e++) {
                uint32_t s = 8 * below((plen + 7) / 8), en;
                if (below(3) == 0) {
                    frag *src = &f[base0 + (int)below((uint32_t)base)];
                    s = src->off;
                    en = src->off + src->len;
                } else {
                    en = s + 8 * (1 + below(200));
                    if (en >= plen)
                        en = plen;
                }
                if (s == 0 && en == plen)
                    continue;     /* that would be an unfragmented (or atomic) datagram */
                f[n] = mk_frag(s == 0 ? &d[k] : &twin[k], s, en - s, en < plen, NULL);
                f[n++].dg = k;
            }
            have[k] = calloc(plen + 1, 1);
            missing[k] = plen;
            final[k] = 0;
            done[k] = 0;
        }
        shuffle(f, n);
        for (int i = 0; i < n; i++) {
            int k = f[i].dg;
            if (done[k])
                continue;
            for (uint32_t b = f[i].off; b < f[i].off + f[i].len; b++)
                if (!have[k][b]) {
                    have[k][b] = 1;
                    missing[k]--;
                }
            final[k] |= !f[i].more;
            const uint8_t *out;
            uint32_t olen;
            now += below(1000);
            int r = feed(t, now, f[i].p, f[i].n, &out, &olen);
            if (final[k] && missing[k] == 0) {
                done[k] = 1;
                CHECK(r == CS_FRAG_DONE, "random %d: datagram %d: %d, not DONE", it, k, r);
                if (r == CS_FRAG_DONE) {
                    CHECK(same(out, olen, d[k].expect, d[k].elen),
                          "random %d: datagram %d (v%d, %u bytes): output differs", it, k,
                          d[k].v6 ? 6 : 4, d[k].plen);
                    if (!d[k].v6)
                        CHECK(v4_csum_ok(out), "random %d: checksum", it);
                }
            } else {
                CHECK(r == CS_FRAG_HELD, "random %d: datagram %d: %d, not HELD", it, k, r);
            }
        }
        for (int k = 0; k < nd; k++) {
            CHECK(done[k], "random %d: datagram %d never completed", it, k);
            free(have[k]);
            dgm_free(&d[k]);
            dgm_free(&twin[k]);
        }
        CHECK(c->reassembled - reassembled0 == (uint64_t)nd, "random %d: reassembled", it);
        CHECK(c->overlap_conflicts == conflicts0, "random %d: conflicts", it);
        CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0,
              "random %d: held %zu bytes", it, cs_frag_held_bytes(t));
        frags_free(f, n);
    }
    for (int p = 0; p < CS_FRAG__COUNT; p++) {
        const cs_frag_counters *c = cs_frag_stats(tables[p]);
        CHECK(c->timeouts == 0 && c->evicted == 0 && c->malformed == 0 && c->reassembled > 0,
              "random %s: counters", cs_frag_policy_names[p]);
        cs_frag_free(tables[p]);
    }
}

/* ---- random: conflicting overlaps against a byte-by-byte model of each policy ----------- */

static int model_wins(int policy, uint32_t ns, uint32_t ne, uint32_t hs, uint32_t he)
{
    switch (policy) {
    case CS_FRAG_FIRST: return 0;
    case CS_FRAG_LAST: return 1;
    case CS_FRAG_BSD: return ns < hs;
    case CS_FRAG_LINUX: return ns <= hs;
    case CS_FRAG_WINDOWS: return ns < hs && ne > he;
    default: return ns < hs && ne >= he;
    }
}

static void test_policy_model(void)
{
    enum { ITER = 600, EMAX = 1200 };
    static uint8_t val[EMAX], have[EMAX];
    static uint32_t os[EMAX], oe[EMAX];
    for (int pol = 0; pol < CS_FRAG__COUNT; pol++) {
        cs_frag_table *t = table(pol, 0, 0, 0, 0);
        const cs_frag_counters *c = cs_frag_stats(t);
        for (int it = 0; it < ITER; it++) {
            uint32_t E = 9 + below(EMAX - 9);   /* more than one block: [0, E) is no fragment */
            int v6 = (int)below(2);
            dgm d;
            if (v6)
                dgm_v6(&d, 1, 2, (uint32_t)it, 17, below(2) ? "H" : "", E, NULL);
            else
                dgm_v4(&d, 1, 2, (uint16_t)it, 17, 4 * below(3), E, NULL);
            memset(have, 0, E);
            uint32_t missing = E, nfr = 0, k = 1 + below(20);
            int final = 0, complete = 0;
            uint32_t cover = 0;       /* next offset of the covering pass */
            uint8_t data[EMAX];
            while (!complete) {
                uint32_t s, e;
                int more;
                if (nfr < k) {
                    s = 8 * below((E + 7) / 8);
                    uint32_t blocks = (E - s) / 8;
                    if (blocks == 0 || below(4) == 0) {
                        e = E;
                        more = 0;
                    } else {
                        e = s + 8 * (1 + below(blocks < 12 ? blocks : 12));
                        more = 1;
                    }
                } else {  /* then a covering pass, still conflicting */
                    s = cover;
                    e = s + 8 * (1 + below(6));
                    if (e >= E) {
                        e = E;
                        more = 0;
                    } else {
                        more = 1;
                    }
                }
                if (s == 0 && e == E) {
                    e = 8;
                    more = 1;
                }
                if (nfr >= k)
                    cover = e;
                fill_random(data, e - s);
                /* model */
                int ov = 0, cf = 0;
                for (uint32_t b = s; b < e; b++) {
                    if (!have[b]) {
                        have[b] = 1;
                        missing--;
                        val[b] = data[b - s];
                        os[b] = s;
                        oe[b] = e;
                        continue;
                    }
                    ov = 1;
                    cf |= val[b] != data[b - s];
                    if (model_wins(pol, s, e, os[b], oe[b])) {
                        val[b] = data[b - s];
                        os[b] = s;
                        oe[b] = e;
                    }
                }
                final |= !more;
                complete = final && missing == 0;
                frag f = mk_frag(&d, s, e - s, more, data);
                uint64_t ov0 = c->overlaps, cf0 = c->overlap_conflicts;
                const uint8_t *out;
                uint32_t olen;
                int r = feed(t, 0, f.p, f.n, &out, &olen);
                free(f.p);
                nfr++;
                CHECK(c->overlaps - ov0 == (uint64_t)ov && c->overlap_conflicts - cf0 == (uint64_t)cf,
                      "model %s %d: fragment %u [%u,%u): overlap %d/%llu conflict %d/%llu",
                      cs_frag_policy_names[pol], it, nfr, s, e, ov, (ull)(c->overlaps - ov0), cf,
                      (ull)(c->overlap_conflicts - cf0));
                if (!complete) {
                    CHECK(r == CS_FRAG_HELD, "model %s %d: fragment %u: %d", cs_frag_policy_names[pol],
                          it, nfr, r);
                    continue;
                }
                CHECK(r == CS_FRAG_DONE, "model %s %d: %d, not DONE", cs_frag_policy_names[pol], it, r);
                if (r == CS_FRAG_DONE) {
                    CHECK(olen == d.hl + E && !memcmp(out + d.hl, val, E),
                          "model %s %d: payload differs", cs_frag_policy_names[pol], it);
                    memcpy(d.pay, val, E);
                    free(d.expect);
                    dgm_finish(&d);
                    CHECK(same(out, olen, d.expect, d.elen), "model %s %d: header",
                          cs_frag_policy_names[pol], it);
                }
            }
            dgm_free(&d);
            CHECK(cs_frag_held_bytes(t) == 0, "model %s %d: held", cs_frag_policy_names[pol], it);
        }
        cs_frag_free(t);
    }
}

/* ---- garbage ---------------------------------------------------------------------------- */

static void check_out(int r, const uint8_t *out, uint32_t olen, const char *what)
{
    if (r != CS_FRAG_DONE)
        return;
    int ok = out != NULL && olen >= 20 && olen <= 40 + 65535;
    if (ok && (out[0] >> 4) == 4)
        ok = rd16(out + 2) == olen && v4_csum_ok(out) && !(out[6] & 0x3f) && !out[7];
    else if (ok)
        ok = olen >= 40 && rd16(out + 4) == olen - 40;
    CHECK(ok, "%s: bad output (len %u)", what, olen);
}

static void test_garbage(void)
{
    const size_t maxb = 64 * 1024, maxd = 64;
    cs_frag_table *t = table(0, 1000000, maxb, maxd, 16);
    const uint8_t *out;
    uint32_t olen;
    uint64_t now = 0;    /* unsigned: wraps instead of overflowing */
    int ok = 1;
    uint8_t buf[200];
    /* random bytes */
    for (int i = 0; i < 30000; i++) {
        uint32_t n = below(sizeof buf);
        fill_random(buf, n);
        if (n && below(2))
            buf[0] = (uint8_t)((below(2) ? 0x40 : 0x60) | (buf[0] & 15));
        if (n > 7 && below(2))
            buf[6] = below(2) ? 44 : 0;
        now += (uint64_t)below(100000) - 20000;
        int r = feed(t, (int64_t)now, buf, n, &out, &olen);
        check_out(r, out, olen, "garbage");
        if (r < CS_FRAG_PASS || r > CS_FRAG_DROPPED || cs_frag_held_bytes(t) > maxb ||
            cs_frag_held_datagrams(t) > maxd)
            ok = 0;
    }
    /* damaged fragments of real datagrams */
    for (int i = 0; i < 20000; i++) {
        dgm d, twin;
        random_dgm(&d, (int)below(2), below(8), 1 + below(600), &twin);
        uint32_t s = 8 * below((d.plen + 7) / 8), e = s + 8 * (1 + below(20));
        if (e > d.plen)
            e = d.plen;
        frag f = mk_frag(below(2) ? &d : &twin, s, e - s, e < d.plen || below(4) == 0, NULL);
        uint32_t n = f.n;
        for (uint32_t m = below(4); m > 0; m--)
            f.p[below(n < 80 ? n : 80)] = (uint8_t)rnd();
        if (below(3) == 0)
            n = below(n + 1);
        now += (uint64_t)below(50000) - 10000;
        if (below(500) == 0)
            now = (uint64_t)rnd() << 32 | rnd();
        int r = feed(t, (int64_t)now, f.p, n, &out, &olen);
        check_out(r, out, olen, "damaged");
        if (cs_frag_held_bytes(t) > maxb || cs_frag_held_datagrams(t) > maxd)
            ok = 0;
        free(f.p);
        dgm_free(&d);
        dgm_free(&twin);
    }
    CHECK(ok, "garbage: bad result or limits not kept");
    const cs_frag_counters *c = cs_frag_stats(t);
    CHECK(c->malformed > 0 && c->fragments > 0, "garbage: nothing happened");
    cs_frag_expire(t, (int64_t)(now + 10000000));
    cs_frag_expire(t, (int64_t)(now + 20000000));
    CHECK(cs_frag_held_datagrams(t) == 0 && cs_frag_held_bytes(t) == 0,
          "garbage: after expiry %zu bytes held", cs_frag_held_bytes(t));
    cs_frag_free(t);
}

static int selftest(void)
{
    test_defaults();
    test_orders();
    test_v4_options();
    test_v6_ext();
    test_v6_atomic();
    test_policies();
    test_timeouts();
    test_limits();
    test_malformed();
    test_random();
    test_policy_model();
    test_garbage();
    printf("# selftest: %ld checks, %ld failures\n", checks, failures);
    return failures != 0;
}

/* ---- pcap driver ------------------------------------------------------------------------ */

static uint32_t rd32x(const uint8_t *p, int swap)
{
    if (swap)
        return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Offset of the IP header in a frame, or -1. */
static long ip_offset(uint32_t linktype, const uint8_t *p, uint32_t n)
{
    uint32_t off;
    uint16_t type;
    switch (linktype) {
    case 1:
        if (n < 14)
            return -1;
        off = 14;
        type = rd16(p + 12);
        while ((type == 0x8100 || type == 0x88a8 || type == 0x9100) && off + 4 <= n) {
            type = rd16(p + off + 2);
            off += 4;
        }
        return type == 0x0800 || type == 0x86dd ? (long)off : -1;
    case 113:
        if (n < 16)
            return -1;
        type = rd16(p + 14);
        return type == 0x0800 || type == 0x86dd ? 16 : -1;
    case 12:
    case 14:
    case 101:
    case 228:
    case 229:
        return 0;
    default:
        return -1;
    }
}

static void print_hex(char kind, const uint8_t *p, uint32_t n)
{
    static const char hex[] = "0123456789abcdef";
    putchar(kind);
    putchar(' ');
    for (uint32_t i = 0; i < n; i++) {
        putchar(hex[p[i] >> 4]);
        putchar(hex[p[i] & 15]);
    }
    putchar('\n');
}

static int run_pcap(const char *path, const cs_frag_opts *o)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    uint8_t gh[24];
    if (fread(gh, 1, 24, fp) != 24) {
        fprintf(stderr, "%s: no pcap header\n", path);
        fclose(fp);
        return 2;
    }
    uint32_t magic = rd32x(gh, 0);
    int swap, nano;
    if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d)
        swap = 0;
    else if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1)
        swap = 1;
    else {
        fprintf(stderr, "%s: not a classic pcap file\n", path);
        fclose(fp);
        return 2;
    }
    nano = magic == 0xa1b23c4d || magic == 0x4d3cb2a1;
    uint32_t linktype = rd32x(gh + 20, swap) & 0x0fffffff;
    cs_frag_table *t = cs_frag_new(o);
    if (!t) {
        fclose(fp);
        return 2;
    }
    ull packets = 0, skipped = 0, held = 0, dropped = 0;
    int rc = 0;
    uint8_t rh[16];
    while (fread(rh, 1, 16, fp) == 16) {
        uint32_t sec = rd32x(rh, swap), frac = rd32x(rh + 4, swap), n = rd32x(rh + 8, swap);
        if (n > (1u << 26)) {
            fprintf(stderr, "%s: record too large\n", path);
            rc = 2;
            break;
        }
        uint8_t *p = malloc(n ? n : 1);
        if (fread(p, 1, n, fp) != n) {
            free(p);
            fprintf(stderr, "%s: truncated record\n", path);
            rc = 2;
            break;
        }
        packets++;
        int64_t ts = (int64_t)sec * 1000000 + (nano ? frac / 1000 : frac);
        long off = ip_offset(linktype, p, n);
        if (off < 0) {
            skipped++;
            free(p);
            continue;
        }
        /* the IP packet in a block of its own exact size */
        uint32_t ilen = n - (uint32_t)off;
        uint8_t *ip = malloc(ilen ? ilen : 1);
        memcpy(ip, p + off, ilen);
        free(p);
        const uint8_t *out;
        uint32_t olen;
        int r = cs_frag_input(t, ts, ip, ilen, &out, &olen);
        if (r == CS_FRAG_PASS)
            print_hex('P', ip, ilen);
        else if (r == CS_FRAG_DONE)
            print_hex('D', out, olen);
        else if (r == CS_FRAG_HELD)
            held++;
        else
            dropped++;
        free(ip);
    }
    const cs_frag_counters *c = cs_frag_stats(t);
    printf("# packets %llu skipped %llu held %llu dropped %llu\n", packets, skipped, held,
           dropped);
    printf("# stats fragments=%llu fragments_v6=%llu reassembled=%llu atomic=%llu overlaps=%llu "
           "overlap_conflicts=%llu timeouts=%llu evicted=%llu malformed=%llu "
           "too_many_fragments=%llu held_datagrams=%zu held_bytes=%zu\n",
           (ull)c->fragments, (ull)c->fragments_v6, (ull)c->reassembled, (ull)c->atomic,
           (ull)c->overlaps, (ull)c->overlap_conflicts, (ull)c->timeouts, (ull)c->evicted,
           (ull)c->malformed, (ull)c->too_many_fragments, cs_frag_held_datagrams(t),
           cs_frag_held_bytes(t));
    cs_frag_free(t);
    fclose(fp);
    return rc;
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -t | [--policy first|last|bsd|linux|windows|solaris] [--timeout-us N]\n"
            "       [--max-bytes N] [--max-datagrams N] [--max-fragments N] --pcap FILE\n",
            argv0);
    return 2;
}

int main(int argc, char **argv)
{
    cs_frag_opts o;
    const char *pcap = NULL;
    cs_frag_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-t"))
            return selftest();
        if (!v)
            return usage(argv[0]);
        i++;
        if (!strcmp(a, "--pcap")) {
            pcap = v;
        } else if (!strcmp(a, "--policy")) {
            int p = cs_frag_policy_from_name(v);
            if (p < 0)
                return usage(argv[0]);
            o.policy = p;
        } else if (!strcmp(a, "--timeout-us")) {
            o.timeout_us = strtoll(v, NULL, 10);
        } else if (!strcmp(a, "--max-bytes")) {
            o.max_bytes = (size_t)strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--max-datagrams")) {
            o.max_datagrams = (size_t)strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--max-fragments")) {
            o.max_fragments = (unsigned)strtoul(v, NULL, 10);
        } else {
            return usage(argv[0]);
        }
    }
    if (!pcap)
        return usage(argv[0]);
    return run_pcap(pcap, &o);
}
