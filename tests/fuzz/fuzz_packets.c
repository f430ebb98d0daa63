/* Coverage-guided fuzzing of the C modules that take hostile packet bytes:
 *   c2scribe/capture   (cs_reader_*: pcap/pcapng parsing; cs_link_to_ip: link layer -> IP)
 *   c2scribe/reassembly/ipfrag.c    (IPv4/IPv6 defragmentation)
 *   c2scribe/reassembly/tcpreasm.c  (TCP reassembly)
 *
 * The input is a capture file (pcap or pcapng) and stays one, so a crashing input can be
 * opened with tshark or c2scribe as it is. The knobs of a run (how the file is cut into
 * feed() chunks, overlap policies, caps, timers) come from header bytes the reader ignores:
 *   pcap:   bytes 8..15  (thiszone, sigfigs)
 *   pcapng: bytes 16..23 (the first Section Header Block's section length)
 * anything else runs with all knobs 0; the table "knobs" below says what each byte does.
 *
 * Per input: the file is fed in chunks (each in a heap block of exactly its size, so ASan
 * sees any read past it; resumed where the reader says after a callback stopped it); every
 * packet is copied into a block of exactly its caplen, decoded with cs_link_to_ip, passed
 * through a defragmentation table (a reassembled datagram is read again as raw IP, as the
 * native engine does), and TCP segments go to a small table of cs_tcp_conn (both directions
 * of a 4-tuple; 64 connections or fewer, the least recently used freed). At the end every
 * connection is flushed and freed, then the defragmenter and the reader, for LeakSanitizer.
 *
 * Checked all along (a violation prints which and aborts):
 *   reader: packets in file order, never twice, each one's bytes the file's bytes where its
 *     record keeps them and within what was fed; ts_usec < 1e6; errors sticky, with a message
 *   cs_link_to_ip: the IP header inside the frame, len up to its end, version as the nibble
 *   ipfrag: a reassembled IPv4 datagram has its total length set, MF/offset cleared and a
 *     valid header checksum; IPv6 its payload length; held bytes and datagrams within the
 *     limits, no bytes held without a datagram; nothing left twice the timeout after the end
 *   tcpreasm: per connection and direction the offsets handed over (data + gaps) grow by
 *     exactly what the sink was told and match cs_tcp_info; every data byte is the byte its
 *     segment (the one named by ts/pos) has at that stream offset, for one fixed mapping of
 *     sequence numbers (so nothing is handed over twice or shifted); nothing after a
 *     direction is complete; conflicts: n = min(len, CS_TCP_CONFLICT_KEEP), at offsets not
 *     handed over yet, kept copy as the first/last policies say; held bytes add up to
 *     cfg->total_bytes and stay within max_conn_bytes / max_total_bytes after every call;
 *     nothing held after cs_tcp_flush; cs_tcp_done only with nothing held
 *
 * Built with -DFUZZ_STANDALONE there is a main() (for gcc + ASan where libFuzzer is missing):
 *   fuzz_packets_standalone [-v] FILE|DIR...   runs each file (each file of each DIR) once;
 *                                              -v: one line per file of what it reached.
 */
#include "capture.h"
#include "ipfrag.h"
#include "tcpreasm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- checks ---------- */

static void violated(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz_packets: invariant violated at %s:%d: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

#define CHECK(cond) do { if (!(cond)) violated(#cond, __FILE__, __LINE__); } while (0)

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

static uint32_t rd32(const uint8_t *p) { return rd16(p) << 16 | rd16(p + 2); }

static uint32_t rd32e(const uint8_t *p, int be)
{
    return be ? rd32(p)
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Read every byte (so that ASan checks the whole range) and fold it into a sink. */
static volatile uint8_t g_sink;

static void touch(const uint8_t *p, size_t n)
{
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= p[i];
    g_sink ^= x;
}

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);         /* 1: never NULL for a legal empty copy */
    if (!q) abort();
    if (n) memcpy(q, p, n);
    return q;
}

/* ---------- knobs (from the input's header bytes) ---------- */

/* k[0], k[1]  seed of the chunk sizes; both 0: the whole file in one feed()
 * k[2]        bits 0-2: largest chunk (see chunk_max); bit 3: an empty feed() before each
 *             chunk; bits 4-7: the packet callback asks to stop every N-th packet (0: never)
 * k[3], k[4]  overlap policy of the hosts receiving direction 0 / 1 (plus, per connection,
 *             the urgent pointer of its first segment; a segment with URG set re-picks it)
 * k[5]        bits 0-1: TCP caps; bits 2-3: TCP timers; bit 4: small max_window;
 *             bits 5-7: defragmentation policy
 * k[6]        bits 0-1: defragmentation limits; bit 2: free a connection on RST;
 *             bit 3: at the end, cs_tcp_conn_drop instead of cs_tcp_conn_free;
 *             bit 4: cs_tcp_swap when the second side sends a plain SYN first;
 *             bit 5: at the end, cs_tcp_flush before freeing; bits 6-7: 0 = set the
 *             policies of each new connection as said for k[3], k[4]; else new connections
 *             keep cfg->policy = solaris, linux, last
 * k[7]        bits 0-1: connection table size (64, 8, 2, 1); bit 2: cs_frag_expire at every
 *             packet as well; bit 3: at the end, cs_frag_free with what is still held
 *             (else everything is expired first, and checked gone)
 */
static const uint32_t chunk_max[8] = { 1, 2, 7, 16, 61, 256, 1500, 4096 };

static const struct { size_t conn, total; } tcp_caps[4] = {
    { 256u << 10, 1u << 20 },     /* 256 KiB / 1 MiB: what an input of max_len can hardly fill */
    { 4u << 10, 1u << 10 },       /* the total cap first: one connection can reach it */
    { 2u << 10, 6u << 10 },
    { 300, 700 },                 /* a few pieces */
};

static const struct { int64_t hole, grace, unacked; } tcp_timers[4] = {
    { 5000000, 20000, 10000000 }, /* the defaults */
    { 100000, 1000, 200000 },
    { 0, 0, 0 },
    { 1, 1000000, 1 },
};

static const struct { size_t bytes, dgrams; unsigned frags; int64_t timeout; } frag_limits[4] = {
    { 1u << 20, 64, 64, 60000000 },
    { 4u << 10, 8, 16, 1000000 },     /* memory: the oldest datagrams are evicted */
    { 700, 4, 8, 1000 },              /* a datagram alone can be over it */
    { 1u << 20, 1024, 256, 30000000 },
};

static const int conn_table_size[4] = { 64, 8, 2, 1 };

static const int cfg_policy[4] = { CS_TCP_BSD, CS_TCP_SOLARIS, CS_TCP_LINUX, CS_TCP_LAST };

/* ---------- state of one input ---------- */

#define MAX_CONNS 64
#define POS_FILE 7                 /* cs_tcp_pos.file given with every segment */
#define MAX_ANCHORS 8

typedef struct conn {
    int used;
    uint32_t serial;               /* tells a connection from an earlier one in the slot */
    unsigned swaps;                /* cs_tcp_swap calls */
    cs_tcp_conn *c;
    int ver;
    uint8_t addr[2][16];           /* [d]: sender of direction d */
    uint16_t port[2];
    uint64_t off[2];               /* bytes handed over each way (data + gaps) */
    uint64_t data[2], gaps[2], gap_bytes[2];
    int fin[2];                    /* cs_tcp_info said the direction is complete */
    int policy[2];                 /* of the host receiving direction d */
    /* Where stream offsets sit in sequence space (tcpreasm's anchor: the sequence number
     * of offset 0), fixed once anything of the direction was handed over. The first data
     * handed over leaves the anchors that put those bytes where the segment has them;
     * each later data event keeps those that agree. None left: bytes handed over are not
     * the ones at their offset. -1: too many candidates, only a substring check. */
    int nanchor[2];
    uint32_t anchor[2][MAX_ANCHORS];
    uint64_t last_used;
} conn;

/* The segment a frame gave the reassembler (a frame gives at most one). */
typedef struct segrec {
    uint32_t serial;               /* its connection (0: the frame gave no segment) */
    unsigned swaps;                /* the connection's swaps then */
    int dir;
    int64_t ts;
    uint32_t seq;                  /* of its first payload byte (after a SYN's) */
    size_t at, len;                /* its payload in the arena */
} segrec;

static struct fuzz {
    const uint8_t *input;
    size_t size;
    uint8_t k[8];
    uint32_t rng;
    cs_reader r;
    uint64_t fed;                  /* file bytes handed to the reader so far */
    uint64_t frames;               /* packets delivered */
    uint64_t last_offset;
    unsigned stop_every;
    cs_frag_table *frags;
    cs_frag_opts fo;
    int64_t last_now;              /* last time given to the defragmenter */
    int have_now;
    cs_tcp_cfg tcp;
    conn conns[MAX_CONNS];
    int nconns, max_conns;
    uint64_t tick;
    int64_t tmin, tmax;            /* times of the segments given so far */
    int have_t;
    uint32_t serials;
    segrec *segs;                  /* by frame number */
    size_t segs_cap;
    uint8_t *arena;                /* copies of the payloads given */
    size_t arena_len, arena_cap;
    struct {                       /* what the input reached (printed by the standalone -v) */
        uint64_t l3, datagrams, segments, conns, data, gaps, conflicts, evictions;
    } st;
} F;

/* ---------- TCP sink: offsets handed over only grow, by exactly what was reported ---------- */

static conn *sink_conn(void *ctx, int dir)
{
    conn *k = ctx;
    CHECK(k >= F.conns && k < F.conns + MAX_CONNS);
    CHECK(k->used && k->c);
    CHECK(dir == 0 || dir == 1);
    return k;
}

static void check_when(int64_t ts, const cs_tcp_pos *pos)
{
    CHECK(pos != NULL);
    CHECK(pos->file == POS_FILE);
    CHECK(pos->frame >= 1 && pos->frame <= F.frames);
    CHECK(F.have_t);
    CHECK(ts == INT64_MIN || (ts >= F.tmin && ts <= F.tmax));
}

static void handed_over(conn *k, int dir, uint64_t n, int gap)
{
    CHECK(n > 0);
    CHECK(!k->fin[dir]);                     /* nothing after the end of a direction */
    CHECK(k->off[dir] + n > k->off[dir]);    /* no wrap */
    k->off[dir] += n;
    if (gap) {
        k->gaps[dir]++;
        k->gap_bytes[dir] += n;
    } else {
        k->data[dir] += n;
    }
    cs_tcp_dirinfo di;
    cs_tcp_info(k->c, dir, &di);
    CHECK(di.delivered == k->data[dir]);
    CHECK(di.gaps == k->gaps[dir]);
    CHECK(di.gap_bytes == k->gap_bytes[dir]);
    CHECK(di.delivered + di.gap_bytes == k->off[dir]);
}

#define SEARCH_BUDGET ((size_t)1 << 22)       /* byte comparisons: inputs stay fast */

/* needle in haystack? Skipped (1) past the budget. */
static int found_in(const uint8_t *hay, size_t hn, const uint8_t *needle, size_t n)
{
    if (n > hn) return 0;
    if ((hn - n + 1) > SEARCH_BUDGET / n) return 1;
    for (size_t i = 0; i + n <= hn; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, n)) return 1;
    return 0;
}

/* Bytes p[0..n) handed over at stream offset off of direction dir came from segment r:
 * are they the bytes r has at that offset (for some anchor still possible)? */
static void check_at_offset(conn *k, int dir, uint64_t off, const segrec *r, const uint8_t *p,
                            size_t n)
{
    const uint8_t *seg = F.arena + r->at;
    CHECK(n <= r->len);
    if (k->nanchor[dir] == 0) {              /* the first data of the direction */
        if ((r->len - n + 1) > SEARCH_BUDGET / n) {
            k->nanchor[dir] = -1;
            return;
        }
        int found = 0;
        for (size_t i = 0; i + n <= r->len; i++) {
            if (seg[i] != p[0] || memcmp(seg + i, p, n)) continue;
            found = 1;
            if (k->nanchor[dir] == MAX_ANCHORS) {
                k->nanchor[dir] = -1;
                break;
            }
            k->anchor[dir][k->nanchor[dir]++] = (uint32_t)(r->seq + i - (uint32_t)off);
        }
        CHECK(found);
        return;
    }
    if (k->nanchor[dir] < 0) {
        CHECK(found_in(seg, r->len, p, n));
        return;
    }
    int kept = 0;
    for (int a = 0; a < k->nanchor[dir]; a++) {
        uint32_t at = (uint32_t)off + k->anchor[dir][a] - r->seq;   /* offset in the segment */
        if (at <= r->len - n && !memcmp(seg + at, p, n))
            k->anchor[dir][kept++] = k->anchor[dir][a];
    }
    CHECK(kept > 0);
    k->nanchor[dir] = kept;
}

static void on_data(void *ctx, int dir, const uint8_t *p, size_t n, int64_t ts_us,
                    const cs_tcp_pos *pos)
{
    conn *k = sink_conn(ctx, dir);
    CHECK(p != NULL);
    touch(p, n);
    check_when(ts_us, pos);
    /* the bytes, their time and their frame all come from one segment of this connection
     * and direction: bytes handed over are bytes that segment carried */
    CHECK(pos->frame < F.segs_cap);
    const segrec *r = &F.segs[pos->frame];
    CHECK(r->serial == k->serial);
    CHECK((r->dir ^ (int)((k->swaps - r->swaps) & 1)) == dir);
    CHECK(ts_us == r->ts);
    check_at_offset(k, dir, k->off[dir], r, p, n);
    handed_over(k, dir, n, 0);
    F.st.data += n;
}

static void on_gap(void *ctx, int dir, uint64_t n, int64_t ts_us, const cs_tcp_pos *pos)
{
    conn *k = sink_conn(ctx, dir);
    check_when(ts_us, pos);
    handed_over(k, dir, n, 1);
    F.st.gaps++;
}

static void on_conflict(void *ctx, int dir, uint64_t off, uint64_t len, const uint8_t *held,
                        const uint8_t *fresh, size_t n, int fresh_kept)
{
    conn *k = sink_conn(ctx, dir);
    CHECK(len > 0);
    CHECK(n <= CS_TCP_CONFLICT_KEEP);
    CHECK(n == (len < CS_TCP_CONFLICT_KEEP ? len : CS_TCP_CONFLICT_KEEP));
    CHECK(held != NULL && fresh != NULL);
    CHECK(fresh_kept == 0 || fresh_kept == 1);
    CHECK(off >= k->off[dir]);               /* held bytes are not handed over yet */
    switch (k->policy[dir]) {                /* the policies that do not look at extents */
    case CS_TCP_FIRST: case CS_TCP_VISTA: case CS_TCP_BSD_RIGHT: case CS_TCP_OLD_SOLARIS:
        CHECK(!fresh_kept);
        break;
    case CS_TCP_LAST:
        CHECK(fresh_kept);
        break;
    }
    CHECK(off + len > off);
    CHECK(!k->fin[dir]);
    touch(held, n);
    touch(fresh, n);
    F.st.conflicts++;
}

/* ---------- the connection table ---------- */

/* What cs_tcp_info says agrees with what the sink saw; caps hold. */
static void check_conn(conn *k)
{
    for (int d = 0; d < 2; d++) {
        cs_tcp_dirinfo di;
        cs_tcp_info(k->c, d, &di);
        CHECK(di.delivered == k->data[d]);
        CHECK(di.gaps == k->gaps[d] && di.gap_bytes == k->gap_bytes[d]);
        CHECK(!k->fin[d] || di.fin);         /* a complete direction stays complete */
        k->fin[d] = di.fin != 0;
    }
}

/* The held bytes add up, and stay under the caps once a call returned. tcpreasm.h: a hole
 * is skipped when the connection holds more than max_conn_bytes or all of them more than
 * max_total_bytes, so no connection and no total is over its cap after a segment (held
 * bytes include the reassembler's per-piece bookkeeping, as the caps do). */
static void check_totals(void)
{
    size_t sum = 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (!F.conns[i].used) continue;
        size_t held = cs_tcp_held(F.conns[i].c);
        CHECK(held <= F.tcp.max_conn_bytes);
        sum += held;
    }
    CHECK(sum == F.tcp.total_bytes);
    CHECK(F.tcp.total_bytes <= F.tcp.max_total_bytes);
    CHECK((F.tcp.oldest == NULL) == (F.tcp.newest == NULL));
    CHECK(F.tcp.total_bytes == 0 || F.tcp.oldest != NULL);   /* who holds bytes is listed */
}

static void conn_release(conn *k, int drop)
{
    if (drop) {
        cs_tcp_conn_drop(&F.tcp, k->c);
    } else {
        cs_tcp_conn_free(&F.tcp, k->c);
    }
    memset(k, 0, sizeof *k);
    F.nconns--;
    check_totals();
}

static void conn_flush(conn *k)
{
    cs_tcp_flush(&F.tcp, k->c);
    CHECK(cs_tcp_held(k->c) == 0);           /* everything held was handed over */
    check_conn(k);
    check_totals();
}

static conn *conn_find(int ver, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                       uint16_t dport, int *dir)
{
    size_t alen = ver == 4 ? 4 : 16;
    for (int i = 0; i < MAX_CONNS; i++) {
        conn *k = &F.conns[i];
        if (!k->used || k->ver != ver) continue;
        if (k->port[0] == sport && k->port[1] == dport && !memcmp(k->addr[0], src, alen) &&
            !memcmp(k->addr[1], dst, alen)) {
            *dir = 0;
            return k;
        }
        if (k->port[0] == dport && k->port[1] == sport && !memcmp(k->addr[0], dst, alen) &&
            !memcmp(k->addr[1], src, alen)) {
            *dir = 1;
            return k;
        }
    }
    return NULL;
}

static conn *conn_open(int ver, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                       uint16_t dport, uint16_t urp)
{
    if (F.nconns >= F.max_conns) {           /* evict the least recently used */
        conn *old = NULL;
        for (int i = 0; i < MAX_CONNS; i++)
            if (F.conns[i].used && (!old || F.conns[i].last_used < old->last_used))
                old = &F.conns[i];
        CHECK(old != NULL);
        conn_release(old, 0);
        F.st.evictions++;
    }
    conn *k = NULL;
    for (int i = 0; i < MAX_CONNS && !k; i++)
        if (!F.conns[i].used) k = &F.conns[i];
    CHECK(k != NULL);
    cs_tcp_conn *c = cs_tcp_conn_new(&F.tcp, k);
    if (!c) return NULL;
    size_t alen = ver == 4 ? 4 : 16;
    memset(k, 0, sizeof *k);
    k->used = 1;
    k->c = c;
    k->ver = ver;
    memcpy(k->addr[0], src, alen);
    memcpy(k->addr[1], dst, alen);
    k->port[0] = sport;
    k->port[1] = dport;
    k->serial = ++F.serials;
    F.nconns++;
    F.st.conns++;
    k->policy[0] = k->policy[1] = F.tcp.policy;
    if (!(F.k[6] >> 6)) {
        k->policy[0] = (F.k[3] + (urp & 0xff)) % CS_TCP__COUNT;
        k->policy[1] = (F.k[4] + (urp >> 8)) % CS_TCP__COUNT;
        cs_tcp_set_policy(c, 0, k->policy[0]);
        cs_tcp_set_policy(c, 1, k->policy[1]);
    }
    return k;
}

static void conn_swap(conn *k)
{
    cs_tcp_swap(k->c);
    k->swaps++;
    uint8_t a[16];
    memcpy(a, k->addr[0], 16);
    memcpy(k->addr[0], k->addr[1], 16);
    memcpy(k->addr[1], a, 16);
#define SWAP(T, x) do { T t_ = x[0]; x[0] = x[1]; x[1] = t_; } while (0)
    SWAP(uint16_t, k->port);
    SWAP(uint64_t, k->off);
    SWAP(uint64_t, k->data);
    SWAP(uint64_t, k->gaps);
    SWAP(uint64_t, k->gap_bytes);
    SWAP(int, k->fin);
    SWAP(int, k->nanchor);
    SWAP(int, k->policy);
    for (int i = 0; i < MAX_ANCHORS; i++) {
        uint32_t t = k->anchor[0][i];
        k->anchor[0][i] = k->anchor[1][i];
        k->anchor[1][i] = t;
    }
#undef SWAP
    check_conn(k);
}

/* ---------- TCP segments ---------- */

/* The reassembler gets the capture times as they are: any int64_t, hostile ones included
 * (a pcapng file can put two times more than 2^63 us apart with if_tsoffset). */
static int64_t tcp_time(int64_t ts)
{
    return ts;
}

static void tcp_packet(const uint8_t *ip, uint32_t len, int64_t ip_ts)
{
    int64_t ts = tcp_time(ip_ts);
    const uint8_t *src, *dst, *th;
    uint32_t avail;
    int ver = ip[0] >> 4;
    if (ver == 4) {
        if (len < 20) return;
        uint32_t ihl = (ip[0] & 15) * 4u, tot = rd16(ip + 2);
        uint32_t end = tot < len ? tot : len;
        if (ihl < 20 || ihl > end || (rd16(ip + 6) & 0x3fff) || ip[9] != 6) return;
        src = ip + 12;
        dst = ip + 16;
        th = ip + ihl;
        avail = end - ihl;
    } else if (ver == 6) {
        if (len < 40) return;
        uint32_t end = 40 + rd16(ip + 4), off = 40;
        if (end > len) end = len;
        uint8_t nh = ip[6];
        for (int i = 0; i < 8 && nh != 6; i++) {
            if (off + 2 > end) return;
            uint32_t hl;
            if (nh == 0 || nh == 43 || nh == 60) hl = (ip[off + 1] + 1u) * 8;
            else if (nh == 51) hl = (ip[off + 1] + 2u) * 4;
            else return;
            nh = ip[off];
            off += hl;
        }
        if (nh != 6 || off > end) return;
        src = ip + 8;
        dst = ip + 24;
        th = ip + off;
        avail = end - off;
    } else {
        return;
    }
    if (avail < 20) return;
    uint32_t doff = (th[12] >> 4) * 4u;
    if (doff < 20 || doff > avail) return;
    uint16_t sport = (uint16_t)rd16(th), dport = (uint16_t)rd16(th + 2);
    uint8_t flags = th[13];
    uint16_t urp = (uint16_t)rd16(th + 18);
    uint32_t plen = avail - doff;

    int dir = 0;
    conn *k = conn_find(ver, src, dst, sport, dport, &dir);
    if (!k) {
        k = conn_open(ver, src, dst, sport, dport, urp);
        if (!k) return;
        dir = 0;
    }
    k->last_used = ++F.tick;
    /* the side taken for the second sends a plain SYN before anything was handed over:
     * it is the client (what an engine learning the orientation late does) */
    if ((F.k[6] & 0x10) && dir == 1 && (flags & (CS_TH_SYN | CS_TH_ACK)) == CS_TH_SYN &&
        k->off[0] == 0 && k->off[1] == 0) {
        conn_swap(k);
        dir = 0;
    }
    if (flags & 0x20) {                      /* URG: the policy of this direction again */
        k->policy[dir] = (urp & 0xff) % CS_TCP__COUNT;
        cs_tcp_set_policy(k->c, dir, k->policy[dir]);
    }

    /* what the frame gave, for on_data to check against */
    if (F.frames >= F.segs_cap) {
        size_t cap = F.segs_cap ? F.segs_cap * 2 : 64;
        while (cap <= F.frames) cap *= 2;
        segrec *g = realloc(F.segs, cap * sizeof *g);
        if (!g) abort();
        memset(g + F.segs_cap, 0, (cap - F.segs_cap) * sizeof *g);
        F.segs = g;
        F.segs_cap = cap;
    }
    if (F.arena_len + plen > F.arena_cap) {
        size_t cap = F.arena_cap ? F.arena_cap * 2 : 4096;
        while (cap < F.arena_len + plen) cap *= 2;
        uint8_t *a = realloc(F.arena, cap);
        if (!a) abort();
        F.arena = a;
        F.arena_cap = cap;
    }
    segrec *rec = &F.segs[F.frames];
    CHECK(rec->serial == 0);                 /* one segment per frame */
    rec->serial = k->serial;
    rec->swaps = k->swaps;
    rec->dir = dir;
    rec->ts = ts;
    rec->seq = rd32(th + 4) + (flags & CS_TH_SYN ? 1u : 0u);
    rec->at = F.arena_len;
    rec->len = plen;
    if (plen) memcpy(F.arena + F.arena_len, th + doff, plen);
    F.arena_len += plen;

    uint8_t *payload = plen ? dup_exact(th + doff, plen) : NULL;
    cs_tcp_seg s;
    memset(&s, 0, sizeof s);
    s.seq = rd32(th + 4);
    s.ack = rd32(th + 8);
    s.flags = flags;
    s.payload = payload;
    s.len = plen;
    s.ts_us = ts;
    s.pos.file = POS_FILE;
    s.pos.frame = F.frames;
    if (!F.have_t || ts < F.tmin) F.tmin = ts;
    if (!F.have_t || ts > F.tmax) F.tmax = ts;
    F.have_t = 1;

    F.st.segments++;
    cs_tcp_segment(&F.tcp, k->c, dir, &s);
    free(payload);                           /* the reassembler must have copied what it keeps */

    check_conn(k);
    check_totals();

    if (flags & CS_TH_RST) {
        conn_flush(k);
        if (F.k[6] & 0x04) conn_release(k, 0);
    } else if (cs_tcp_done(k->c)) {
        CHECK(cs_tcp_held(k->c) == 0);
        CHECK(k->fin[0] && k->fin[1]);
        conn_release(k, 0);
    }
}

/* ---------- IP: defragmentation, then TCP ---------- */

static void check_frag_table(void)
{
    size_t held = cs_frag_held_bytes(F.frags), n = cs_frag_held_datagrams(F.frags);
    CHECK(held <= F.fo.max_bytes);
    CHECK(n <= F.fo.max_datagrams);
    CHECK(n > 0 || held == 0);               /* nothing held: nothing accounted */
}

static void check_l3(const uint8_t *base, uint32_t n, const cs_l3 *l3)
{
    CHECK(l3->ip >= base && l3->ip < base + n);
    CHECK(l3->len == (uint32_t)(base + n - l3->ip));
    CHECK(l3->version == 4 || l3->version == 6);
    CHECK(l3->ip[0] >> 4 == l3->version);
    CHECK(l3->len >= (l3->version == 4 ? 20u : 40u));
}

static void check_datagram(const uint8_t *in, const uint8_t *out, uint32_t n)
{
    CHECK(out != NULL);
    CHECK(out[0] >> 4 == in[0] >> 4);
    if (out[0] >> 4 == 4) {
        uint32_t hl = (out[0] & 15) * 4u, sum = 0;
        CHECK(hl >= 20 && hl <= n && n <= 65535);
        CHECK(rd16(out + 2) == n);           /* total length set */
        CHECK((rd16(out + 6) & 0x3fff) == 0); /* MF and offset cleared */
        for (uint32_t i = 0; i + 1 < hl; i += 2) sum += rd16(out + i);
        while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
        CHECK(sum == 0xffff);                /* header checksum recomputed */
    } else {
        CHECK(n >= 40 && n <= 40 + 65535);
        CHECK(rd16(out + 4) + 40 == n);      /* payload length set */
    }
    touch(out, n);
}

static void ip_packet(const uint8_t *ip, uint32_t len, int64_t ts, int depth)
{
    const uint8_t *out = (const uint8_t *)&F;
    uint32_t out_len = 12345;
    int r = cs_frag_input(F.frags, ts, ip, len, &out, &out_len);
    F.last_now = ts;
    F.have_now = 1;
    check_frag_table();
    CHECK(r >= CS_FRAG_PASS && r <= CS_FRAG_DROPPED);
    if (r != CS_FRAG_DONE) {
        CHECK(out == NULL && out_len == 0);
        if (r == CS_FRAG_PASS) tcp_packet(ip, len, ts);
        return;
    }
    check_datagram(ip, out, out_len);
    F.st.datagrams++;
    /* the datagram lives in the table until its next call: work on a copy, read again as
     * raw IP (it may carry a tunnel whose inner packet is a fragment in turn) */
    uint8_t *copy = dup_exact(out, out_len);
    cs_l3 l3;
    int rc = cs_link_to_ip(101, copy, out_len, &l3);
    CHECK(rc >= CS_L3_OK && rc <= CS_L3_TRUNCATED);
    if (rc == CS_L3_OK) {
        check_l3(copy, out_len, &l3);
        if (l3.ip != copy && depth < 2) ip_packet(l3.ip, l3.len, ts, depth + 1);
        else tcp_packet(l3.ip, l3.len, ts);
    }
    free(copy);
}

/* ---------- packets out of the reader ---------- */

static int on_packet(void *ctx, const cs_packet *pkt)
{
    CHECK(ctx == &F);
    F.frames++;
    CHECK(F.r.packets == F.frames);
    CHECK(pkt->ts_usec < 1000000);
    CHECK(F.frames == 1 || pkt->offset > F.last_offset);   /* nothing delivered twice */
    F.last_offset = pkt->offset;
    /* the packet bytes are the file's bytes where its record keeps them */
    uint64_t hdr;
    if (F.r.format == CS_FMT_PCAP) {
        hdr = 16;
        CHECK(pkt->linktype == F.r.linktype);
    } else {
        CHECK(F.r.format == CS_FMT_PCAPNG);
        CHECK(pkt->offset + 12 <= F.size);
        hdr = rd32e(F.input + pkt->offset, F.r.big_endian) == 3 ? 12 : 28;
    }
    CHECK(pkt->offset + hdr + pkt->caplen <= F.fed);
    CHECK(pkt->caplen == 0 || pkt->data != NULL);
    CHECK(pkt->caplen == 0 || !memcmp(pkt->data, F.input + pkt->offset + hdr, pkt->caplen));

    uint8_t *frame = dup_exact(pkt->data, pkt->caplen);
    int64_t ts = (int64_t)((uint64_t)pkt->ts_sec * 1000000u + pkt->ts_usec);  /* wraps */
    if (F.k[7] & 0x04) {
        cs_frag_expire(F.frags, ts);
        check_frag_table();
    }
    cs_l3 l3;
    int rc = cs_link_to_ip(pkt->linktype, frame, pkt->caplen, &l3);
    CHECK(rc >= CS_L3_OK && rc <= CS_L3_TRUNCATED);
    if (rc == CS_L3_OK) {
        check_l3(frame, pkt->caplen, &l3);
        F.st.l3++;
        ip_packet(l3.ip, l3.len, ts, 0);
    }
    free(frame);
    return F.stop_every && F.frames % F.stop_every == 0;
}

/* ---------- one input ---------- */

static uint32_t next_rand(void)
{
    uint32_t x = F.rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return F.rng = x;
}

static void read_knobs(const uint8_t *data, size_t size)
{
    memset(F.k, 0, sizeof F.k);
    if (size < 24) return;
    uint32_t m = rd32(data);
    if (m == 0xa1b2c3d4 || m == 0xd4c3b2a1 || m == 0xa1b23c4d || m == 0x4d3cb2a1)
        memcpy(F.k, data + 8, 8);
    else if (m == 0x0a0d0d0a)
        memcpy(F.k, data + 16, 8);
}

static void setup(const uint8_t *data, size_t size)
{
    memset(&F, 0, sizeof F);
    F.input = data;
    F.size = size;
    read_knobs(data, size);
    F.rng = ((uint32_t)F.k[0] << 8 | F.k[1]) * 2654435761u | 1;
    F.stop_every = F.k[2] >> 4;
    F.max_conns = conn_table_size[F.k[7] & 3];

    cs_frag_opts_default(&F.fo);
    F.fo.max_bytes = frag_limits[F.k[6] & 3].bytes;
    F.fo.max_datagrams = frag_limits[F.k[6] & 3].dgrams;
    F.fo.max_fragments = frag_limits[F.k[6] & 3].frags;
    F.fo.timeout_us = frag_limits[F.k[6] & 3].timeout;
    F.fo.policy = (F.k[5] >> 5) % CS_FRAG__COUNT;
    F.frags = cs_frag_new(&F.fo);
    if (!F.frags) abort();

    cs_tcp_cfg_default(&F.tcp);
    F.tcp.policy = cfg_policy[F.k[6] >> 6];
    F.tcp.max_conn_bytes = tcp_caps[F.k[5] & 3].conn;
    F.tcp.max_total_bytes = tcp_caps[F.k[5] & 3].total;
    F.tcp.hole_timeout_us = tcp_timers[(F.k[5] >> 2) & 3].hole;
    F.tcp.ack_grace_us = tcp_timers[(F.k[5] >> 2) & 3].grace;
    F.tcp.unacked_timeout_us = tcp_timers[(F.k[5] >> 2) & 3].unacked;
    if (F.k[5] & 0x10) F.tcp.max_window = 4096;
    F.tcp.sink.data = on_data;
    F.tcp.sink.gap = on_gap;
    F.tcp.sink.conflict = on_conflict;

    cs_reader_init(&F.r);
}

static void feed_all(void)
{
    static const uint8_t empty = 0;
    size_t pos = 0;
    int whole = F.k[0] == 0 && F.k[1] == 0;
    while (pos < F.size) {
        size_t n = F.size - pos;
        if (!whole) {
            size_t c = 1 + next_rand() % chunk_max[F.k[2] & 7];
            if (c < n) n = c;
        }
        if (F.k[2] & 0x08) {
            int rc = cs_reader_feed(&F.r, &empty, 0, on_packet, &F);
            CHECK(rc == CS_OK);
        }
        uint8_t *chunk = dup_exact(F.input + pos, n);
        if (pos + n > F.fed) F.fed = pos + n;
        int rc = cs_reader_feed(&F.r, chunk, n, on_packet, &F);
        free(chunk);
        if (rc == CS_OK) {
            pos += n;
        } else if (rc == CS_STOPPED) {
            /* resume from where the reader stopped: after the last record it delivered */
            uint64_t next = F.r.consumed + F.r.buf_len;
            CHECK(next > pos && next <= pos + n);
            pos = (size_t)next;
        } else {
            CHECK(rc == CS_ERROR);
            CHECK(F.r.error[0] != 0);
            CHECK(memchr(F.r.error, 0, sizeof F.r.error) != NULL);
            uint8_t one = 0;
            CHECK(cs_reader_feed(&F.r, &one, 1, on_packet, &F) == CS_ERROR);  /* sticky */
            return;
        }
    }
    int rc = cs_reader_finish(&F.r);
    CHECK(rc == CS_OK || rc == CS_ERROR);
    CHECK(rc == CS_OK || (F.r.error[0] && memchr(F.r.error, 0, sizeof F.r.error)));
    CHECK(F.r.packets == F.frames);
}

static void teardown(void)
{
    /* connections: oldest first, flushed (or dropped) and freed */
    for (;;) {
        conn *k = NULL;
        for (int i = 0; i < MAX_CONNS; i++)
            if (F.conns[i].used && (!k || F.conns[i].last_used < k->last_used)) k = &F.conns[i];
        if (!k) break;
        if (F.k[6] & 0x20) conn_flush(k);
        conn_release(k, (F.k[6] & 0x08) != 0);
    }
    CHECK(F.nconns == 0);
    CHECK(F.tcp.total_bytes == 0);
    CHECK(F.tcp.oldest == NULL && F.tcp.newest == NULL);

    /* twice the timeout after the last packet, nothing incomplete is left */
    if (F.have_now && !(F.k[7] & 0x08)) {
        uint64_t later = (uint64_t)F.last_now + 2 * (uint64_t)F.fo.timeout_us;
        cs_frag_expire(F.frags, (int64_t)later);
        CHECK(cs_frag_held_datagrams(F.frags) == 0);
        CHECK(cs_frag_held_bytes(F.frags) == 0);
    }
    cs_frag_free(F.frags);
    F.frags = NULL;
    free(F.segs);
    free(F.arena);
    F.segs = NULL;
    F.arena = NULL;
    cs_reader_free(&F.r);
    CHECK(F.r.buf == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup(data, size);
    feed_all();
    teardown();
    return 0;
}

#ifdef FUZZ_STANDALONE
#include <dirent.h>
#include <sys/stat.h>

static unsigned long ran;
static int verbose;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) abort();
    for (;;) {
        if (n == cap) {
            cap *= 2;
            uint8_t *b = realloc(buf, cap);
            if (!b) abort();
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    /* an exact-size copy, as libFuzzer gives it */
    uint8_t *in = dup_exact(buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    if (verbose)
        printf("%s: %llu packets, %llu IP, %llu datagrams, %llu segments, %llu connections "
               "(%llu evicted), %llu bytes, %llu gaps, %llu conflicts; reader: %s\n", path,
               (unsigned long long)F.frames, (unsigned long long)F.st.l3,
               (unsigned long long)F.st.datagrams, (unsigned long long)F.st.segments,
               (unsigned long long)F.st.conns, (unsigned long long)F.st.evictions,
               (unsigned long long)F.st.data, (unsigned long long)F.st.gaps,
               (unsigned long long)F.st.conflicts, F.r.error[0] ? F.r.error : "ok");
    ran++;
    return 0;
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return run_file(path);
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (!p) abort();
        snprintf(p, len, "%s/%s", path, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && run_file(p) != 0) rc = -1;
        free(p);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0, first = 1;
    if (argc > 1 && !strcmp(argv[1], "-v")) {
        verbose = 1;
        first = 2;
    }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [-v] FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = first; i < argc; i++)
        if (run_path(argv[i]) != 0) rc = 1;
    printf("fuzz_packets: %lu inputs ran\n", ran);
    return rc;
}
#endif
