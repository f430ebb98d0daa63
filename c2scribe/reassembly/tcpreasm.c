/* TCP stream reassembly of the native engine (see tcpreasm.h for the contract and model).
 *
 * Each direction keeps the bytes not yet handed over as a list of pieces sorted by stream
 * offset, never overlapping each other. A piece remembers the extent of the segment its
 * bytes came from, because overlap policies compare a new segment with that segment, not
 * with what is left of it. In-order traffic costs one allocation and one copy per segment;
 * segments that arrive already acknowledged (or with no receiver in the capture) are handed
 * over straight from the packet.
 */
#include "tcpreasm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char *const cs_tcp_policy_names[CS_TCP__COUNT] = {
    "first", "last", "bsd", "linux", "old-linux", "solaris", "hpux11", "hpux10", "irix",
    "macos", "windows", "windows2k3", "vista", "bsd-right", "old-solaris",
};

int cs_tcp_policy_from_name(const char *name)
{
    for (int i = 0; i < CS_TCP__COUNT; i++)
        if (strcmp(name, cs_tcp_policy_names[i]) == 0) return i;
    return -1;
}

#define NO_TIME INT64_MIN
#define PIECE_OVERHEAD 64          /* accounted per piece besides its bytes */
#define MAX_PIECES 8192            /* per direction: beyond, everything held is handed over */

typedef struct piece {
    struct piece *next;
    uint64_t off;                  /* stream offset of buf[head] */
    uint32_t len;                  /* bytes left from buf[head] */
    uint32_t head;
    uint64_t src_off, src_end;     /* the segment these bytes came from */
    int64_t ts_us;
    cs_tcp_pos pos;
    uint8_t buf[];
} piece;

struct cs_tcp_half {
    int have_base;                 /* stream offsets are defined (SYN or first bytes seen) */
    int syn;
    uint32_t anchor;               /* sequence number of stream offset 0 */
    uint64_t next;                 /* next offset to hand over */
    uint64_t seen_end;             /* end of the furthest bytes seen */
    int ack_seen;                  /* the receiver acknowledges this direction */
    uint64_t acked;                /* ... up to this offset */
    int pend_ack_set;              /* an ACK came before the stream offsets were known */
    uint32_t pend_ack;
    int fin_set, fin_done;
    uint64_t fin_off;
    piece *head, *tail;
    size_t held;
    unsigned npieces;
    int64_t hole_since;            /* a hole at next first had bytes behind it */
    int64_t hole_acked;            /* the receiver first acknowledged past next */
    uint64_t hole_acked_seg;       /* ... in the connection's segment number this */
    int64_t unacked_since;         /* in-order bytes first waited for their ACK */
    int64_t implied;               /* bytes sent up to then count as received: the other
                                    * direction lost bytes sent after them */
    uint64_t delivered, gaps, gap_bytes, conflicts;
    int policy;                    /* of the host receiving this direction */
};

struct cs_tcp_conn {
    cs_tcp_half h[2];
    void *ctx;
    cs_tcp_conn *older, *newer;    /* in cfg's list of connections holding bytes */
    int listed;
    int64_t now;                   /* time and place of the segment being processed */
    cs_tcp_pos now_pos;
    uint64_t segs;                 /* segments seen */
};

void cs_tcp_cfg_default(cs_tcp_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->policy = CS_TCP_BSD;
    cfg->max_conn_bytes = 8u << 20;
    cfg->max_total_bytes = (size_t)512 << 20;
    cfg->hole_timeout_us = 5000000;
    cfg->ack_grace_us = 20000;
    cfg->unacked_timeout_us = 10000000;
    cfg->max_window = 64u << 20;
}

static void half_init(cs_tcp_half *h)
{
    memset(h, 0, sizeof *h);
    h->hole_since = h->hole_acked = h->unacked_since = h->implied = NO_TIME;
}

cs_tcp_conn *cs_tcp_conn_new(cs_tcp_cfg *cfg, void *ctx)
{
    cs_tcp_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    half_init(&c->h[0]);
    half_init(&c->h[1]);
    c->h[0].policy = c->h[1].policy = cfg->policy;
    c->ctx = ctx;
    c->now = NO_TIME;
    return c;
}


void cs_tcp_set_policy(cs_tcp_conn *c, int dir, int policy) { c->h[dir].policy = policy; }

/* ---------- the list of connections holding bytes (oldest first) ---------- */

static void unlist(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (!c->listed) return;
    if (c->older) c->older->newer = c->newer; else cfg->oldest = c->newer;
    if (c->newer) c->newer->older = c->older; else cfg->newest = c->older;
    c->older = c->newer = NULL;
    c->listed = 0;
}

static void list_newest(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (c->listed && cfg->newest == c) return;
    unlist(cfg, c);
    c->older = cfg->newest;
    if (cfg->newest) cfg->newest->newer = c; else cfg->oldest = c;
    cfg->newest = c;
    c->listed = 1;
}

static void relist(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (!c->h[0].held && !c->h[1].held) unlist(cfg, c);
}

/* ---------- pieces ---------- */

static piece *piece_new(cs_tcp_cfg *cfg, cs_tcp_half *h, uint64_t off, const uint8_t *p,
                        uint32_t n, uint64_t src_off, uint64_t src_end, int64_t ts,
                        const cs_tcp_pos *pos)
{
    piece *q = malloc(sizeof *q + n);
    if (!q) return NULL;
    q->next = NULL;
    q->off = off;
    q->len = n;
    q->head = 0;
    q->src_off = src_off;
    q->src_end = src_end;
    q->ts_us = ts;
    q->pos = *pos;
    memcpy(q->buf, p, n);
    h->held += n + PIECE_OVERHEAD;
    cfg->total_bytes += n + PIECE_OVERHEAD;
    h->npieces++;
    return q;
}

static void piece_free(cs_tcp_cfg *cfg, cs_tcp_half *h, piece *q)
{
    h->held -= q->len + PIECE_OVERHEAD;
    cfg->total_bytes -= q->len + PIECE_OVERHEAD;
    h->npieces--;
    free(q);
}

/* Make x a piece boundary (a piece straddling it is cut in two). 0 = ok. */
static int split_at(cs_tcp_cfg *cfg, cs_tcp_half *h, uint64_t x)
{
    for (piece *p = h->head; p; p = p->next) {
        if (p->off >= x) return 0;
        if (p->off + p->len > x) {
            uint32_t keep = (uint32_t)(x - p->off);
            piece *q = piece_new(cfg, h, x, p->buf + p->head + keep, p->len - keep, p->src_off,
                                 p->src_end, p->ts_us, &p->pos);
            if (!q) return -1;
            /* q took the bytes from keep on: count them once */
            h->held -= p->len - keep;
            cfg->total_bytes -= p->len - keep;
            p->len = keep;
            q->next = p->next;
            p->next = q;
            if (h->tail == p) h->tail = q;
            return 0;
        }
    }
    return 0;
}

/* ---------- overlap policies ---------- */

/* Does the receiver keep the fresh copy of bytes held from segment [hs, he), the fresh
 * segment being [ns, ne)? */
static int fresh_wins(int policy, uint64_t ns, uint64_t ne, uint64_t hs, uint64_t he)
{
    int bsd_like = 0, linux_like = 0, old_linux = 0, solaris_like = 0;
    switch (policy) {
    case CS_TCP_LAST: return 1;
    case CS_TCP_BSD: case CS_TCP_HPUX10: case CS_TCP_IRIX: case CS_TCP_MACOS:
    case CS_TCP_WINDOWS: case CS_TCP_WINDOWS2K3: bsd_like = 1; break;
    case CS_TCP_LINUX: bsd_like = linux_like = 1; break;
    case CS_TCP_OLD_LINUX: bsd_like = linux_like = old_linux = 1; break;
    case CS_TCP_SOLARIS: case CS_TCP_HPUX11: solaris_like = 1; break;
    default: return 0;          /* first, vista, bsd-right, old-solaris */
    }
    if (ns < hs) return bsd_like || (solaris_like && ne >= he);
    if (ns == hs) {
        if (ne < he) return 0;
        if (ne > he) return linux_like || solaris_like;
        return old_linux || solaris_like;
    }
    return solaris_like && ne > he;
}

/* ---------- handing over ---------- */

static void emit_gap(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, uint64_t n, int64_t ts,
                     const cs_tcp_pos *pos)
{
    cs_tcp_half *h = &c->h[dir];
    h->next += n;
    h->gaps++;
    h->gap_bytes += n;
    cfg->c.gaps++;
    cfg->c.gap_bytes += n;
    h->hole_since = h->hole_acked = NO_TIME;
    if (cfg->sink.gap) cfg->sink.gap(c->ctx, dir, n, ts, pos);
}

static void emit_data(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, const uint8_t *p, size_t n,
                      int64_t ts, const cs_tcp_pos *pos)
{
    cs_tcp_half *h = &c->h[dir];
    h->next += n;
    h->delivered += n;
    h->hole_since = h->hole_acked = NO_TIME;
    if (cfg->sink.data) cfg->sink.data(c->ctx, dir, p, n, ts, pos);
}

static uint64_t data_end(const cs_tcp_half *h, uint64_t off)
{
    return h->fin_set && off > h->fin_off ? h->fin_off : off;
}

enum { NOTHING = 0, DATA = 1, GAP = 2 };

/* now - since without overflow (capture times are hostile): 0 when time went backwards */
static uint64_t elapsed(int64_t now, int64_t since)
{
    return now > since ? (uint64_t)now - (uint64_t)since : 0;
}

static int64_t just_before(int64_t t)
{
    return t > INT64_MIN + 1 ? t - 1 : t;
}

/* What direction dir can hand over next: one piece (or the part acknowledged), or one gap.
 * dry: say what and when (*when: the time it was sent, for ordering the two directions)
 * without doing it. */
static int step(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, int force, int dry, int64_t *when)
{
    cs_tcp_half *h = &c->h[dir];
    int64_t now = c->now;
    piece *p = h->head;
    int acked_past = h->ack_seen && h->acked > h->next;
    if (acked_past && h->hole_acked == NO_TIME) {
        h->hole_acked = now;
        h->hole_acked_seg = c->segs;
    }
    /* the bytes acknowledged did not come with the next segment, or within the grace:
     * they are not in the capture (the grace is for captures whose directions were merged
     * slightly out of order) */
    int grace_over = acked_past && now != NO_TIME &&
                     (c->segs > h->hole_acked_seg ||
                      elapsed(now, h->hole_acked) >= (uint64_t)cfg->ack_grace_us);
    /* a lost segment was sent before what follows it, and before the ACK that told of it */
    int64_t sent = h->hole_acked != NO_TIME ? just_before(h->hole_acked) : now;
    if (!p) {
        /* acknowledged, never seen, nothing behind: the receiver got bytes we did not */
        uint64_t end = data_end(h, h->acked);
        if (!(h->have_base && acked_past && end > h->next && (force || grace_over)))
            return NOTHING;
        if (dry) { *when = sent; return GAP; }
        emit_gap(cfg, c, dir, end - h->next, now, &c->now_pos);
        return GAP;
    }
    if (p->off > h->next) {                     /* a hole */
        if (h->hole_since == NO_TIME) h->hole_since = now;
        int aged = now != NO_TIME &&
                   elapsed(now, h->hole_since) >= (uint64_t)cfg->hole_timeout_us;
        uint64_t to = p->off;
        if (!force && !aged) {
            /* only as far as the receiver confirmed: the rest may still be on its way */
            uint64_t a = data_end(h, h->acked);
            if (!grace_over || a <= h->next) return NOTHING;
            if (a < to) to = a;
        }
        if (dry) {
            *when = just_before(p->ts_us) < sent ? just_before(p->ts_us) : sent;
            return GAP;
        }
        emit_gap(cfg, c, dir, to - h->next, p->ts_us, &p->pos);
        return GAP;
    }
    uint64_t limit = UINT64_MAX;
    if (!force && h->ack_seen && !(h->implied != NO_TIME && p->ts_us <= h->implied)) {
        limit = h->acked;
        if (limit <= h->next) {
            if (h->unacked_since == NO_TIME) h->unacked_since = now;
            if (now == NO_TIME ||
                elapsed(now, h->unacked_since) < (uint64_t)cfg->unacked_timeout_us)
                return NOTHING;
            if (!dry) cfg->c.unacked_flushes++;
            limit = UINT64_MAX;
        }
    }
    if (dry) { *when = p->ts_us; return DATA; }
    h->unacked_since = NO_TIME;
    uint32_t n = p->len;
    if (limit - h->next < n) n = (uint32_t)(limit - h->next);
    const uint8_t *bytes = p->buf + p->head;
    int64_t ts = p->ts_us;
    cs_tcp_pos pos = p->pos;
    p->head += n;
    p->off += n;
    p->len -= n;
    h->held -= n;
    cfg->total_bytes -= n;
    if (p->len == 0) {
        h->head = p->next;
        if (!h->head) h->tail = NULL;
        emit_data(cfg, c, dir, bytes, n, ts, &pos);
        piece_free(cfg, h, p);
    } else {
        emit_data(cfg, c, dir, bytes, n, ts, &pos);
    }
    return DATA;
}

static void finish_check(cs_tcp_half *h)
{
    if (h->fin_set && !h->head && h->next >= h->fin_off) h->fin_done = 1;
}

/* Hand over what both directions can, in the order it was sent: a request before its
 * response, a gap where the bytes it stands for were. Bytes the capture lost in one
 * direction were sent, and what the other side had sent before them was most likely
 * received, though the acknowledgement may have been lost with them: such bytes go first,
 * acknowledged or not (else a lost answer would hold its request back, and responses would
 * meet the wrong requests). */
static void deliver_both(cs_tcp_cfg *cfg, cs_tcp_conn *c, int force)
{
    for (;;) {
        int64_t t[2] = {0, 0};
        int k[2];
        for (int pass = 0; pass < 2; pass++) {
            for (int d = 0; d < 2; d++) k[d] = step(cfg, c, d, force, 1, &t[d]);
            int changed = 0;
            for (int d = 0; d < 2; d++)
                if (k[d] == GAP && (c->h[!d].implied == NO_TIME || c->h[!d].implied < t[d])) {
                    c->h[!d].implied = t[d];
                    changed = 1;
                }
            if (!changed) break;
        }
        if (!k[0] && !k[1]) break;
        int d = !k[0] ? 1 : !k[1] ? 0
              : t[1] < t[0] || (t[1] == t[0] && k[1] == GAP && k[0] != GAP) ? 1 : 0;
        if (!step(cfg, c, d, force, 0, NULL)) break;
    }
    finish_check(&c->h[0]);
    finish_check(&c->h[1]);
    relist(cfg, c);
}

static void deliver(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, int force)
{
    while (step(cfg, c, dir, force, 0, NULL)) {}
    finish_check(&c->h[dir]);
    relist(cfg, c);
}

/* Everything held in both directions, in the order it was sent, holes as gaps. */
void cs_tcp_flush(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    deliver_both(cfg, c, 1);
}

/* ---------- bounds ---------- */

static void enforce_caps(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (c->h[0].held + c->h[1].held > cfg->max_conn_bytes ||
        c->h[0].npieces > MAX_PIECES || c->h[1].npieces > MAX_PIECES) {
        cfg->c.conn_cap_hits++;
        int big = c->h[1].held > c->h[0].held;
        deliver(cfg, c, big, 1);
        if (c->h[0].held + c->h[1].held > cfg->max_conn_bytes) deliver(cfg, c, !big, 1);
    }
    while (cfg->total_bytes > cfg->max_total_bytes && cfg->oldest) {
        cs_tcp_conn *o = cfg->oldest;
        cfg->c.total_cap_hits++;
        int64_t saved = o->now;
        if (o != c) o->now = c->now;
        cs_tcp_flush(cfg, o);
        o->now = saved;
        unlist(cfg, o);                 /* flushed: holds nothing any more */
    }
}

/* ---------- segments ---------- */

/* Stream offset of a sequence number, relative to the next byte expected (wraps). */
static int64_t rel(const cs_tcp_half *h, uint32_t seq)
{
    uint32_t cur = h->anchor + (uint32_t)h->next;
    return (int64_t)h->next + (int32_t)(seq - cur);
}

static void set_base(cs_tcp_cfg *cfg, cs_tcp_half *h, uint32_t seq, int syn)
{
    h->have_base = 1;
    h->syn = syn;
    h->anchor = seq;
    h->next = h->seen_end = h->acked = 0;
    if (h->pend_ack_set) {
        int64_t a = rel(h, h->pend_ack);
        if (a >= 0 && a <= (int64_t)cfg->max_window) h->acked = (uint64_t)a;
        h->pend_ack_set = 0;
    }
}

static void take_ack(cs_tcp_cfg *cfg, cs_tcp_half *h, uint32_t ack)
{
    if (!h->have_base) {
        h->pend_ack_set = 1;
        h->pend_ack = ack;
        h->ack_seen = 1;
        return;
    }
    int64_t a = rel(h, ack);
    uint64_t top = (h->seen_end > h->next ? h->seen_end : h->next) + cfg->max_window;
    h->ack_seen = 1;
    if (a < 0) return;                          /* an old ACK */
    if ((uint64_t)a > top) { cfg->c.out_of_window++; return; }
    if ((uint64_t)a > h->acked) h->acked = (uint64_t)a;
}

static void insert(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, int64_t off, const uint8_t *p,
                   uint32_t n, const cs_tcp_seg *s)
{
    cs_tcp_half *h = &c->h[dir];
    if (off + (int64_t)n <= (int64_t)h->next) { cfg->c.retransmitted_bytes += n; return; }
    uint64_t ns = off < 0 ? 0 : (uint64_t)off, ne = (uint64_t)(off + n);   /* the segment */
    uint64_t o = ns, end = ne;
    if (o < h->next) {
        cfg->c.retransmitted_bytes += h->next - o;
        o = h->next;
    }
    uint64_t top = (h->acked > h->next ? h->acked : h->next) + cfg->max_window;
    if (o > top) { cfg->c.out_of_window++; return; }
    if (h->fin_set && end > h->fin_off) end = h->fin_off;       /* nothing after the FIN */
    if (end <= o) return;
    const uint8_t *data = p + (o - (uint64_t)off);
    if (end > h->seen_end) h->seen_end = end;

    /* in order with nothing held: hand over at once what the receiver already has */
    if (!h->head && o == h->next) {
        uint64_t limit = h->ack_seen ? h->acked : UINT64_MAX;
        if (limit > o) {
            uint64_t k = end - o < limit - o ? end - o : limit - o;
            emit_data(cfg, c, dir, data, (size_t)k, s->ts_us, &s->pos);
            o += k;
            data += k;
            if (o == end) return;
        }
    }
    if (!h->tail || o >= h->tail->off + h->tail->len) {         /* after everything held */
        piece *q = piece_new(cfg, h, o, data, (uint32_t)(end - o), ns, ne, s->ts_us, &s->pos);
        if (!q) return;
        if (h->tail) h->tail->next = q; else h->head = q;
        h->tail = q;
        list_newest(cfg, c);
        return;
    }
    /* overlaps or fills a hole: cut pieces at the segment's edges, then go through them */
    if (split_at(cfg, h, o) || split_at(cfg, h, end)) return;
    piece *prev = NULL, *q = h->head;
    while (q && q->off + q->len <= o) { prev = q; q = q->next; }
    uint64_t cur = o;
    int overlapped = 0, conflicted = 0;
    while (cur < end) {
        if (!q || q->off >= end || q->off > cur) {
            /* bytes nobody held: a new piece up to the next held one */
            uint64_t stop = q && q->off < end ? q->off : end;
            piece *fresh = piece_new(cfg, h, cur, data + (cur - o), (uint32_t)(stop - cur), ns,
                                     ne, s->ts_us, &s->pos);
            if (!fresh) return;
            fresh->next = q;
            if (prev) prev->next = fresh; else h->head = fresh;
            if (!q) h->tail = fresh;
            prev = fresh;
            cur = stop;
            continue;
        }
        /* q lies inside [o, end) and starts at cur */
        const uint8_t *fresh_bytes = data + (q->off - o);
        uint8_t *held = q->buf + q->head;
        overlapped = 1;
        cfg->c.overlap_bytes += q->len;
        int wins = fresh_wins(h->policy, ns, ne, q->src_off, q->src_end);
        if (memcmp(held, fresh_bytes, q->len) != 0) {
            conflicted = 1;
            cfg->c.conflict_bytes += q->len;
            if (cfg->sink.conflict) {
                size_t k = q->len < CS_TCP_CONFLICT_KEEP ? q->len : CS_TCP_CONFLICT_KEEP;
                cfg->sink.conflict(c->ctx, dir, q->off, q->len, held, fresh_bytes, k, wins);
            }
        }
        if (wins) {
            memcpy(held, fresh_bytes, q->len);
            q->src_off = ns;
            q->src_end = ne;
            q->ts_us = s->ts_us;
            q->pos = s->pos;
        }
        cur = q->off + q->len;
        prev = q;
        q = q->next;
    }
    if (overlapped) cfg->c.overlaps++;
    if (conflicted) { cfg->c.conflicts++; h->conflicts++; }
    list_newest(cfg, c);
}

void cs_tcp_segment(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, const cs_tcp_seg *s)
{
    cs_tcp_half *snd = &c->h[dir], *rcv = &c->h[!dir];
    c->now = s->ts_us;
    c->now_pos = s->pos;
    c->segs++;
    uint32_t seq = s->seq;
    if (s->flags & CS_TH_SYN) {
        /* the sender's first sequence number; a SYN repeated before any byte was seen or
         * held may carry another (a new attempt) */
        if (!snd->have_base || (!snd->delivered && !snd->head && !snd->gaps &&
                                !snd->gap_bytes && snd->anchor != seq + 1))
            set_base(cfg, snd, seq + 1, 1);
        seq += 1;                               /* data in a SYN (TCP Fast Open) follows it */
    }
    if (s->flags & CS_TH_ACK) take_ack(cfg, rcv, s->ack);
    if (s->len || (s->flags & CS_TH_FIN)) {
        if (!snd->have_base) set_base(cfg, snd, seq, 0);
        int64_t off = rel(snd, seq);
        if (s->len) insert(cfg, c, dir, off, s->payload, s->len, s);
        if (s->flags & CS_TH_FIN) {
            int64_t fo = off + s->len;
            if (fo >= 0 && !snd->fin_set && (uint64_t)fo >= snd->next) {
                snd->fin_set = 1;
                snd->fin_off = (uint64_t)fo;
            }
        }
    }
    deliver_both(cfg, c, 0);
    enforce_caps(cfg, c);
}

int cs_tcp_done(const cs_tcp_conn *c)
{
    return c->h[0].fin_done && c->h[1].fin_done;
}

void cs_tcp_swap(cs_tcp_conn *c)
{
    cs_tcp_half t = c->h[0];
    c->h[0] = c->h[1];
    c->h[1] = t;
}

void cs_tcp_info(const cs_tcp_conn *c, int dir, cs_tcp_dirinfo *out)
{
    const cs_tcp_half *h = &c->h[dir];
    out->delivered = h->delivered;
    out->gaps = h->gaps;
    out->gap_bytes = h->gap_bytes;
    out->conflicts = h->conflicts;
    out->syn = h->syn;
    out->fin = h->fin_done;
}

size_t cs_tcp_held(const cs_tcp_conn *c)
{
    return c->h[0].held + c->h[1].held;
}

void cs_tcp_conn_free(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (!c) return;
    cs_tcp_flush(cfg, c);
    cs_tcp_conn_drop(cfg, c);
}

void cs_tcp_conn_drop(cs_tcp_cfg *cfg, cs_tcp_conn *c)
{
    if (!c) return;
    for (int d = 0; d < 2; d++) {
        piece *p = c->h[d].head;
        while (p) {
            piece *n = p->next;
            piece_free(cfg, &c->h[d], p);
            p = n;
        }
    }
    unlist(cfg, c);
    free(c);
}
