/* IP defragmentation (IPv4 and IPv6) in capture time, with bounded memory. See ipfrag.h.
 *
 * Layout
 *   - A datagram being reassembled is a `dgram`, found by a hash table keyed by
 *     (version, src, dst, id[, protocol]) and linked in a list in creation order (oldest
 *     first): timers and evictions only ever look at the head.
 *   - Its payload is a sorted array of non-overlapping `piece`s. Each piece owns its bytes
 *     and remembers the extent [ostart, oend) of the fragment that provided them, which is
 *     what the overlap policies compare a new fragment against.
 *   - A new fragment is merged in three phases: plan the pieces replacing those it overlaps
 *     (found by binary search; no allocation beyond a scratch array), allocate every buffer
 *     that needs (on failure nothing changed), then copy and commit. Piece boundaries are
 *     always fragment starts or ends, so a datagram of n fragments has at most 2n pieces.
 *
 * Memory accounting: the held bytes are the fragment bytes held plus a fixed bookkeeping
 * cost per piece and per datagram (so that max_bytes bounds the real footprint even when an
 * attacker sends tiny fragments); cs_frag_held_bytes reports that sum.
 *
 * Time: an internal monotone clock follows the capture time. A step back of at most
 * timeout_us leaves the clock where it is; a larger step back is taken as a discontinuity
 * (merged captures, a reset clock): the clock stands still across it and runs on from there,
 * so held datagrams keep the age they had. Arithmetic on it is unsigned (no overflow).
 */
#include "ipfrag.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const cs_frag_policy_names[CS_FRAG__COUNT] = {
    "first", "last", "bsd", "linux", "windows", "solaris",
};

int cs_frag_policy_from_name(const char *name)
{
    for (int i = 0; i < CS_FRAG__COUNT; i++)
        if (strcmp(name, cs_frag_policy_names[i]) == 0) return i;
    return -1;
}

#define DEFAULT_TIMEOUT_US 60000000LL
#define DEFAULT_MAX_BYTES ((size_t)32 << 20)
#define DEFAULT_MAX_DATAGRAMS 16384u
#define DEFAULT_MAX_FRAGMENTS 256u

#define V6_MAX_EXT_HEADERS 64     /* extension headers walked looking for the Fragment header */
#define OUT_MAX (40u + 65535u)    /* largest datagram we can produce (IPv6: 40 + payload) */
#define ALLOC_OVERHEAD 16u        /* charged per heap block, roughly what malloc adds */
#define MIN_BUCKETS 64u
#define MAX_BUCKETS ((size_t)1 << 20)

enum { NH_HOPOPT = 0, NH_ROUTING = 43, NH_FRAGMENT = 44, NH_AH = 51, NH_DSTOPTS = 60 };

/* ---- data ----------------------------------------------------------------------------- */

struct key {                   /* 40 bytes, no padding: hashed and compared as bytes */
    uint8_t src[16], dst[16];
    uint32_t id;
    uint8_t v6, proto;         /* proto: IPv4 only (0 for IPv6) */
    uint8_t zero[2];
};

struct piece {
    uint32_t start, end;       /* [start, end) of the fragmentable payload */
    uint32_t ostart, oend;     /* extent of the fragment these bytes came from */
    uint8_t *data;             /* end - start bytes, owned */
};

struct dgram {
    struct dgram *hnext;               /* hash chain */
    struct dgram *older, *newer;       /* age list */
    size_t bucket;
    struct key k;
    uint64_t born;                     /* internal clock at the first fragment */
    uint8_t *hdr;                      /* header of the first offset-0 fragment (v4: IP header
                                        * with options; v6: up to the Fragment header) */
    uint32_t hdr_len;
    uint32_t nh_pos;                   /* v6: offset in hdr of the Next Header naming 44 */
    uint8_t frag_nh;                   /* v6: Next Header carried by that Fragment header */
    uint8_t has_final;
    uint32_t final_end;                /* payload length, once the last fragment was seen */
    uint32_t covered;                  /* payload bytes held */
    uint32_t max_end;                  /* end of the last piece */
    unsigned nfrags;                   /* fragments taken in (duplicates included) */
    struct piece *pieces;
    uint32_t npieces, cap;
    size_t cost;                       /* what this datagram adds to held */
};

struct plan {                  /* one piece of the array being built */
    uint32_t start, end, ostart, oend;
    int32_t src;               /* -1: bytes of the new fragment; else index of an old piece */
    uint8_t fresh;             /* data is a new buffer to fill */
    uint8_t *data;
};

struct cs_frag_table {
    cs_frag_opts o;
    cs_frag_counters c;
    struct dgram **buckets;
    size_t mask;
    struct dgram *oldest, *newest;
    size_t ndgrams, held;
    uint64_t clock, skew;
    int has_clock;
    uint64_t k0, k1;           /* hash key */
    uint8_t *out;              /* OUT_MAX bytes once something completed */
    struct plan *plan;
    size_t plan_cap;
};

/* A parsed fragment. */
struct frag {
    struct key k;
    uint32_t off, len;         /* payload bytes [off, off + len) */
    int more;
    const uint8_t *payload;
    const uint8_t *hdr;        /* see dgram.hdr */
    uint32_t hdr_len;
    uint32_t nh_pos;
    uint8_t nh;
};

/* ---- helpers ---------------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                                              \
    do {                                                                                      \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                             \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                                \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                                \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                             \
    } while (0)

/* SipHash-2-4 of the 40-byte key (a keyed hash: fragment ids chosen by an attacker cannot
 * be aimed at one bucket without knowing the table's key). */
static uint64_t key_hash(const cs_frag_table *t, const struct key *k)
{
    const uint8_t *b = (const uint8_t *)k;
    uint64_t v0 = t->k0 ^ 0x736f6d6570736575ULL, v1 = t->k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = t->k0 ^ 0x6c7967656e657261ULL, v3 = t->k1 ^ 0x7465646279746573ULL;
    for (size_t i = 0; i < sizeof *k; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--)
            m = m << 8 | b[i + (size_t)j];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t m = (uint64_t)(sizeof *k & 0xff) << 56;
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* ---- options, table --------------------------------------------------------------------- */

void cs_frag_opts_default(cs_frag_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->timeout_us = DEFAULT_TIMEOUT_US;
    o->max_bytes = DEFAULT_MAX_BYTES;
    o->max_datagrams = DEFAULT_MAX_DATAGRAMS;
    o->max_fragments = DEFAULT_MAX_FRAGMENTS;
    o->policy = CS_FRAG_FIRST;
}

cs_frag_table *cs_frag_new(const cs_frag_opts *o)
{
    cs_frag_opts d;
    cs_frag_opts_default(&d);
    cs_frag_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->o = d;
    if (o) {
        if (o->timeout_us > 0)
            t->o.timeout_us = o->timeout_us;
        if (o->max_bytes)
            t->o.max_bytes = o->max_bytes;
        if (o->max_datagrams)
            t->o.max_datagrams = o->max_datagrams;
        if (o->max_fragments)
            t->o.max_fragments = o->max_fragments;
        if (o->policy > CS_FRAG_FIRST && o->policy < CS_FRAG__COUNT)
            t->o.policy = o->policy;
    }
    size_t nb = MIN_BUCKETS;
    while (nb < t->o.max_datagrams && nb < MAX_BUCKETS)
        nb <<= 1;
    t->buckets = calloc(nb, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    t->mask = nb - 1;
    /* The hash key only has to be unknown to whoever crafted the traffic. */
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    t->k0 = mix64(seed ^ (uint64_t)(uintptr_t)t);
    t->k1 = mix64(t->k0 ^ (uint64_t)(uintptr_t)t->buckets ^ 0x9e3779b97f4a7c15ULL);
    return t;
}

static void dgram_destroy(struct dgram *d)
{
    for (uint32_t i = 0; i < d->npieces; i++)
        free(d->pieces[i].data);
    free(d->pieces);
    free(d->hdr);
    free(d);
}

void cs_frag_free(cs_frag_table *t)
{
    if (!t)
        return;
    struct dgram *d = t->oldest;
    while (d) {
        struct dgram *n = d->newer;
        dgram_destroy(d);
        d = n;
    }
    free(t->buckets);
    free(t->out);
    free(t->plan);
    free(t);
}

size_t cs_frag_held_bytes(const cs_frag_table *t) { return t ? t->held : 0; }
size_t cs_frag_held_datagrams(const cs_frag_table *t) { return t ? t->ndgrams : 0; }
const cs_frag_counters *cs_frag_stats(const cs_frag_table *t) { return t ? &t->c : NULL; }

/* ---- datagrams -------------------------------------------------------------------------- */

static size_t dgram_cost(const struct dgram *d)
{
    size_t c = sizeof *d + ALLOC_OVERHEAD;
    if (d->hdr)
        c += d->hdr_len + ALLOC_OVERHEAD;
    if (d->pieces)
        c += (size_t)d->cap * sizeof(struct piece) + ALLOC_OVERHEAD;
    c += d->covered + (size_t)d->npieces * ALLOC_OVERHEAD;
    return c;
}

static void recost(cs_frag_table *t, struct dgram *d)
{
    t->held -= d->cost;
    d->cost = dgram_cost(d);
    t->held += d->cost;
}

static struct dgram *dgram_find(const cs_frag_table *t, size_t bucket, const struct key *k)
{
    for (struct dgram *d = t->buckets[bucket]; d; d = d->hnext)
        if (!memcmp(&d->k, k, sizeof *k))
            return d;
    return NULL;
}

static void dgram_kill(cs_frag_table *t, struct dgram *d)
{
    struct dgram **pp = &t->buckets[d->bucket];
    while (*pp != d)
        pp = &(*pp)->hnext;
    *pp = d->hnext;
    if (d->older)
        d->older->newer = d->newer;
    else
        t->oldest = d->newer;
    if (d->newer)
        d->newer->older = d->older;
    else
        t->newest = d->older;
    t->ndgrams--;
    t->held -= d->cost;
    dgram_destroy(d);
}

static struct dgram *dgram_create(cs_frag_table *t, size_t bucket, const struct key *k)
{
    struct dgram *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->k = *k;
    d->bucket = bucket;
    d->born = t->clock;
    d->hnext = t->buckets[bucket];
    t->buckets[bucket] = d;
    d->older = t->newest;
    if (t->newest)
        t->newest->newer = d;
    else
        t->oldest = d;
    t->newest = d;
    t->ndgrams++;
    d->cost = dgram_cost(d);
    t->held += d->cost;
    return d;
}

/* ---- time ------------------------------------------------------------------------------- */

static void advance_clock(cs_frag_table *t, int64_t now_us)
{
    uint64_t now = (uint64_t)now_us + t->skew;  /* modulo 2^64 */
    if (!t->has_clock) {
        t->clock = now;
        t->has_clock = 1;
        return;
    }
    uint64_t fwd = now - t->clock;
    if (fwd < ((uint64_t)1 << 63)) {
        t->clock = now;
        return;
    }
    uint64_t back = t->clock - now;
    if (back > (uint64_t)t->o.timeout_us)
        t->skew += back;     /* discontinuity: the clock stands still across it */
}

static void expire_run(cs_frag_table *t)
{
    while (t->oldest && t->clock - t->oldest->born >= (uint64_t)t->o.timeout_us) {
        t->c.timeouts++;
        dgram_kill(t, t->oldest);
    }
}

void cs_frag_expire(cs_frag_table *t, int64_t now_us)
{
    if (!t)
        return;
    advance_clock(t, now_us);
    expire_run(t);
}

/* ---- parsing ---------------------------------------------------------------------------- */

enum { P_PASS, P_BAD, P_FRAG, P_ATOMIC };

static int parse_v4(cs_frag_table *t, const uint8_t *ip, uint32_t len, struct frag *f)
{
    if (len < 20)
        return P_PASS;
    uint16_t fo = rd16(ip + 6);
    if (!(fo & 0x3fff))
        return P_PASS;       /* MF clear, offset 0: not a fragment */
    t->c.fragments++;
    uint32_t ihl = (uint32_t)(ip[0] & 15) * 4, tot = rd16(ip + 2);
    uint32_t plen = tot < len ? tot : len;
    if (ihl < 20 || ihl > plen)
        return P_BAD;
    memset(&f->k, 0, sizeof f->k);
    memcpy(f->k.src, ip + 12, 4);
    memcpy(f->k.dst, ip + 16, 4);
    f->k.id = rd16(ip + 4);
    f->k.proto = ip[9];
    f->off = (uint32_t)(fo & 0x1fff) * 8;
    f->len = plen - ihl;
    f->more = (fo & 0x2000) != 0;
    f->payload = ip + ihl;
    f->hdr = ip;
    f->hdr_len = ihl;
    f->nh_pos = 0;
    f->nh = 0;
    if (f->len == 0 || (f->more && f->len % 8) || f->off + f->len > 65535 - ihl)
        return P_BAD;
    return P_FRAG;
}

static int parse_v6(cs_frag_table *t, const uint8_t *ip, uint32_t len, struct frag *f)
{
    if (len < 40)
        return P_PASS;
    uint32_t end = 40u + rd16(ip + 4);
    if (end > len)
        end = len;
    uint32_t off = 40, pos = 6;
    uint8_t nh = ip[6];
    for (int n = 0; nh != NH_FRAGMENT; n++) {
        if ((nh != NH_HOPOPT && nh != NH_ROUTING && nh != NH_DSTOPTS && nh != NH_AH) ||
            n >= V6_MAX_EXT_HEADERS || off + 2 > end)
            return P_PASS;   /* no Fragment header (or a chain we cannot walk) */
        uint32_t hl = nh == NH_AH ? ((uint32_t)ip[off + 1] + 2) * 4 : ((uint32_t)ip[off + 1] + 1) * 8;
        if (off + hl > end)
            return P_PASS;
        nh = ip[off];
        pos = off;
        off += hl;
    }
    t->c.fragments++;
    t->c.fragments_v6++;
    if (off + 8 > end)
        return P_BAD;
    uint16_t fo = rd16(ip + off + 2);
    memset(&f->k, 0, sizeof f->k);
    memcpy(f->k.src, ip + 8, 16);
    memcpy(f->k.dst, ip + 24, 16);
    f->k.id = rd32(ip + off + 4);
    f->k.v6 = 1;
    f->off = fo & 0xfff8u;
    f->more = fo & 1;
    f->payload = ip + off + 8;
    f->len = end - off - 8;
    f->hdr = ip;
    f->hdr_len = off;
    f->nh_pos = pos;
    f->nh = ip[off];
    if (f->len == 0 || (f->more && f->len % 8) || (off - 40) + f->off + f->len > 65535)
        return P_BAD;
    return f->off == 0 && !f->more ? P_ATOMIC : P_FRAG;
}

/* ---- merging ---------------------------------------------------------------------------- */

static int new_wins(int policy, uint32_t ns, uint32_t ne, uint32_t hs, uint32_t he)
{
    switch (policy) {
    case CS_FRAG_LAST:
        return 1;
    case CS_FRAG_BSD:
        return ns < hs;
    case CS_FRAG_LINUX:
        return ns <= hs;
    case CS_FRAG_WINDOWS:
        return ns < hs && ne > he;
    case CS_FRAG_SOLARIS:
        return ns < hs && ne >= he;
    default:
        return 0;
    }
}

static void plan_push(struct plan *pl, uint32_t *np, int32_t src, uint32_t s, uint32_t e,
                      uint32_t os, uint32_t oe)
{
    if (s >= e)
        return;
    if (*np && pl[*np - 1].src == src && pl[*np - 1].end == s) {
        pl[*np - 1].end = e;      /* same source, contiguous: one piece */
        return;
    }
    struct plan *p = &pl[(*np)++];
    p->start = s;
    p->end = e;
    p->ostart = os;
    p->oend = oe;
    p->src = src;
    p->fresh = 0;
    p->data = NULL;
}

/* First piece whose end is past x / whose start is at or past x (pieces are sorted). */
static uint32_t first_ending_after(const struct dgram *d, uint32_t x)
{
    uint32_t lo = 0, hi = d->npieces;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (d->pieces[mid].end > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static uint32_t first_starting_at(const struct dgram *d, uint32_t x)
{
    uint32_t lo = 0, hi = d->npieces;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (d->pieces[mid].start >= x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Merge fragment f into d by the policy. Only the pieces [lo, hi) that the fragment overlaps
 * are re-planned; the others move as they are. 0 on success; -1 when out of memory (d is
 * then unchanged). */
static int merge(cs_frag_table *t, struct dgram *d, const struct frag *f)
{
    uint32_t ns = f->off, ne = f->off + f->len, n = d->npieces;
    uint32_t lo = first_ending_after(d, ns), hi = first_starting_at(d, ne);
    size_t need = (size_t)(hi - lo) * 2 + 3;
    if (t->plan_cap < need) {
        size_t cap = need < 64 ? 64 : need * 2;
        struct plan *p = realloc(t->plan, cap * sizeof *p);
        if (!p)
            return -1;
        t->plan = p;
        t->plan_cap = cap;
    }
    struct plan *pl = t->plan;
    uint32_t np = 0, cur = ns, old_bytes = 0;
    int overlap = hi > lo, conflict = 0;

    /* 1. plan: every piece in [lo, hi) overlaps [ns, ne) */
    for (uint32_t i = lo; i < hi; i++) {
        const struct piece *p = &d->pieces[i];
        int32_t si = (int32_t)i;
        old_bytes += p->end - p->start;
        if (p->start > cur)
            plan_push(pl, &np, -1, cur, p->start, ns, ne);              /* gap */
        plan_push(pl, &np, si, p->start, ns, p->ostart, p->oend);       /* part before ns */
        uint32_t os = p->start > ns ? p->start : ns, oe = p->end < ne ? p->end : ne;
        if (!conflict && memcmp(f->payload + (os - ns), p->data + (os - p->start), oe - os))
            conflict = 1;
        if (new_wins(t->o.policy, ns, ne, p->ostart, p->oend))
            plan_push(pl, &np, -1, os, oe, ns, ne);
        else
            plan_push(pl, &np, si, os, oe, p->ostart, p->oend);
        plan_push(pl, &np, si, ne, p->end, p->ostart, p->oend);         /* part after ne */
        cur = oe;
    }
    if (cur < ne)
        plan_push(pl, &np, -1, cur, ne, ns, ne);

    /* 2. allocate (nothing is changed until everything is allocated) */
    uint32_t total = n - (hi - lo) + np, cap = d->cap;
    struct piece *arr = d->pieces;
    if (total > cap) {
        cap = total < 4 ? 4 : total;
        if (cap < d->cap * 2)
            cap = d->cap * 2;
        arr = malloc((size_t)cap * sizeof *arr);
    }
    int oom = arr == NULL;
    for (uint32_t k = 0; k < np && !oom; k++) {
        struct plan *p = &pl[k];
        if (p->src >= 0 && d->pieces[p->src].start == p->start &&
            d->pieces[p->src].end == p->end) {
            p->data = d->pieces[p->src].data;          /* unchanged piece: keep its buffer */
        } else {
            p->data = malloc(p->end - p->start);
            p->fresh = 1;
            oom = p->data == NULL;
        }
    }
    if (oom) {
        for (uint32_t k = 0; k < np; k++)
            if (pl[k].fresh)
                free(pl[k].data);
        if (arr != d->pieces)
            free(arr);
        return -1;
    }

    /* 3. copy and commit */
    uint32_t new_bytes = 0;
    for (uint32_t k = 0; k < np; k++) {
        struct plan *p = &pl[k];
        new_bytes += p->end - p->start;
        if (!p->fresh)
            continue;
        if (p->src < 0)
            memcpy(p->data, f->payload + (p->start - ns), p->end - p->start);
        else
            memcpy(p->data, d->pieces[p->src].data + (p->start - d->pieces[p->src].start),
                   p->end - p->start);
    }
    for (uint32_t k = 0; k < np; k++)
        if (!pl[k].fresh && pl[k].src >= 0)
            d->pieces[pl[k].src].data = NULL;          /* moved into the new layout */
    for (uint32_t i = lo; i < hi; i++)
        free(d->pieces[i].data);
    if (arr != d->pieces) {
        if (lo)
            memcpy(arr, d->pieces, (size_t)lo * sizeof *arr);
        if (n > hi)
            memcpy(arr + lo + np, d->pieces + hi, (size_t)(n - hi) * sizeof *arr);
        free(d->pieces);
        d->pieces = arr;
        d->cap = cap;
    } else if (n > hi && lo + np != hi) {
        memmove(arr + lo + np, arr + hi, (size_t)(n - hi) * sizeof *arr);
    }
    for (uint32_t k = 0; k < np; k++) {
        struct piece *q = &arr[lo + k];
        q->start = pl[k].start;
        q->end = pl[k].end;
        q->ostart = pl[k].ostart;
        q->oend = pl[k].oend;
        q->data = pl[k].data;
    }
    d->npieces = total;
    d->covered = d->covered - old_bytes + new_bytes;
    d->max_end = total ? arr[total - 1].end : 0;
    if (overlap)
        t->c.overlaps++;
    if (conflict)
        t->c.overlap_conflicts++;
    recost(t, d);
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

static int ensure_out(cs_frag_table *t)
{
    if (!t->out)
        t->out = malloc(OUT_MAX);
    return t->out != NULL;
}

static void v4_checksum(uint8_t *h, uint32_t hl)
{
    uint32_t sum = 0;
    h[10] = h[11] = 0;
    for (uint32_t i = 0; i + 1 < hl; i += 2)
        sum += rd16(h + i);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    wr16(h + 10, ~sum & 0xffff);
}

/* Writes the completed datagram into t->out; returns its length, 0 when too long. */
static uint32_t build(cs_frag_table *t, const struct dgram *d)
{
    uint32_t hl = d->hdr_len, end = d->final_end;
    uint8_t *o = t->out;
    if (d->k.v6 ? hl - 40 + end > 65535 : hl + end > 65535)
        return 0;
    memcpy(o, d->hdr, hl);
    for (uint32_t i = 0; i < d->npieces; i++)
        memcpy(o + hl + d->pieces[i].start, d->pieces[i].data,
               d->pieces[i].end - d->pieces[i].start);
    if (d->k.v6) {
        o[d->nh_pos] = d->frag_nh;
        wr16(o + 4, hl - 40 + end);
    } else {
        wr16(o + 2, hl + end);
        o[6] &= 0xc0;        /* keep the reserved bit and DF; clear MF and the offset */
        o[7] = 0;
        v4_checksum(o, hl);
    }
    return hl + end;
}

/* ---- input ------------------------------------------------------------------------------ */

static int drop_malformed(cs_frag_table *t, struct dgram *d)
{
    t->c.malformed++;
    if (d)
        dgram_kill(t, d);
    return CS_FRAG_DROPPED;
}

static int add_fragment(cs_frag_table *t, const struct frag *f, const uint8_t **out,
                        uint32_t *out_len)
{
    size_t bucket = (size_t)key_hash(t, &f->k) & t->mask;
    struct dgram *d = dgram_find(t, bucket, &f->k);
    uint32_t fend = f->off + f->len;
    if (d) {
        if (d->has_final && (fend > d->final_end || (!f->more && fend != d->final_end)))
            return drop_malformed(t, d);  /* past the end, or a second, different end */
        if (!f->more && !d->has_final && d->max_end > fend)
            return drop_malformed(t, d);  /* held bytes lie past this last fragment */
        if (d->nfrags >= t->o.max_fragments) {
            t->c.too_many_fragments++;
            dgram_kill(t, d);
            return CS_FRAG_DROPPED;
        }
    } else {
        while (t->ndgrams >= t->o.max_datagrams && t->oldest) {
            t->c.evicted++;
            dgram_kill(t, t->oldest);
        }
        d = dgram_create(t, bucket, &f->k);
        if (!d) {
            t->c.evicted++;
            return CS_FRAG_DROPPED;
        }
    }
    if (f->off == 0 && !d->hdr) {
        d->hdr = malloc(f->hdr_len);
        if (d->hdr) {
            memcpy(d->hdr, f->hdr, f->hdr_len);
            d->hdr_len = f->hdr_len;
            d->nh_pos = f->nh_pos;
            d->frag_nh = f->nh;
            recost(t, d);
        }
    }
    if ((f->off == 0 && !d->hdr) || merge(t, d, f) != 0) {
        t->c.evicted++;      /* out of memory */
        dgram_kill(t, d);
        return CS_FRAG_DROPPED;
    }
    d->nfrags++;
    if (!f->more) {
        d->has_final = 1;
        d->final_end = fend;
    }
    if (d->has_final && d->covered == d->final_end && d->hdr) {
        uint32_t n;
        if (!ensure_out(t)) {
            t->c.evicted++;
            dgram_kill(t, d);
            return CS_FRAG_DROPPED;
        }
        n = build(t, d);
        if (n == 0)
            return drop_malformed(t, d);  /* first header + payload over 65535 */
        dgram_kill(t, d);
        t->c.reassembled++;
        if (out)
            *out = t->out;
        if (out_len)
            *out_len = n;
        return CS_FRAG_DONE;
    }
    /* Memory limit: the oldest other datagrams go first; this one only if it alone is over. */
    if (d->cost > t->o.max_bytes) {
        t->c.evicted++;
        dgram_kill(t, d);
        return CS_FRAG_DROPPED;
    }
    while (t->held > t->o.max_bytes) {
        struct dgram *v = t->oldest == d ? d->newer : t->oldest;
        if (!v)
            break;
        t->c.evicted++;
        dgram_kill(t, v);
    }
    return CS_FRAG_HELD;
}

int cs_frag_input(cs_frag_table *t, int64_t now_us, const uint8_t *ip, uint32_t len,
                  const uint8_t **out, uint32_t *out_len)
{
    struct frag f;
    int r;
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t)
        return CS_FRAG_PASS;
    advance_clock(t, now_us);
    expire_run(t);
    if (!ip || len == 0)
        return CS_FRAG_PASS;
    switch (ip[0] >> 4) {
    case 4:
        r = parse_v4(t, ip, len, &f);
        break;
    case 6:
        r = parse_v6(t, ip, len, &f);
        break;
    default:
        return CS_FRAG_PASS;
    }
    if (r == P_PASS)
        return CS_FRAG_PASS;
    if (r == P_BAD)
        return drop_malformed(t, NULL);
    if (r == P_ATOMIC) {
        /* offset 0, M = 0: the whole datagram, with the Fragment header taken out */
        if (!ensure_out(t)) {
            t->c.evicted++;
            return CS_FRAG_DROPPED;
        }
        uint32_t hl = f.hdr_len;
        memcpy(t->out, ip, hl);
        memcpy(t->out + hl, f.payload, f.len);
        t->out[f.nh_pos] = f.nh;
        wr16(t->out + 4, hl - 40 + f.len);
        t->c.atomic++;
        if (out)
            *out = t->out;
        if (out_len)
            *out_len = hl + f.len;
        return CS_FRAG_DONE;
    }
    return add_fragment(t, &f, out, out_len);
}
