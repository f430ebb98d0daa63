/* The native reassembly engine: c2scribe's own IP defragmentation (ipfrag.c) and TCP
 * reassembly (tcpreasm.c), behind the same interface as libnids (cs_reasm_ops).
 *
 * What it does that libnids cannot: IPv6, and fragments of both IP versions in capture time;
 * connections picked up mid-stream (the client told by the handshake, else by what the first
 * bytes say, else by the ports); holes in the capture skipped as gaps instead of stalling the
 * direction; overlapping segments judged by a host-OS policy, and conflicting copies
 * reported; a reused 4-tuple; memory bounded per connection and overall.
 *
 * Every TCP connection is followed: its native state hangs on the flow (engine_ref). Bytes
 * are handed to the flow with the capture time and frame of the segment that carried them,
 * even when the reassembler hands them over later (once acknowledged).
 */
#include "../_core/core.h"
#include "ipfrag.h"
#include "tcpreasm.h"

#include <string.h>

typedef struct native {
    cs_frag_table *frags;
    cs_tcp_cfg tcp;
    uint64_t seen[CSC__COUNT];     /* counter values already noted (for "first seen at") */
} native;

#define NS(e) ((native *)(e)->reasm_state)

/* ---------- what the reassembler hands over ---------- */

/* The flow's bytes, timed and placed as the segment that carried them. */
#define AS_SEGMENT(e, ts, pos, body)                                                     \
    do {                                                                                   \
        int64_t now_ = (e)->now_us;                                                        \
        int file_ = (e)->cur_file;                                                         \
        uint64_t frame_ = (e)->cur_frame;                                                  \
        if ((ts) != INT64_MIN) (e)->now_us = (ts);                                         \
        (e)->cur_file = (pos)->file;                                                       \
        (e)->cur_frame = (pos)->frame;                                                     \
        body;                                                                              \
        (e)->now_us = now_;                                                                \
        (e)->cur_file = file_;                                                             \
        (e)->cur_frame = frame_;                                                           \
    } while (0)

static void sink_data(void *ctx, int dir, const uint8_t *p, size_t n, int64_t ts,
                      const cs_tcp_pos *pos)
{
    cs_engine *e = cs_the_engine;
    AS_SEGMENT(e, ts, pos, cs_flow_stream_data(e, ctx, dir, p, n));
}

static void sink_gap(void *ctx, int dir, uint64_t n, int64_t ts, const cs_tcp_pos *pos)
{
    cs_engine *e = cs_the_engine;
    AS_SEGMENT(e, ts, pos, cs_flow_gap(e, ctx, dir, n));
}

static void sink_conflict(void *ctx, int dir, uint64_t off, uint64_t len, const uint8_t *held,
                          const uint8_t *fresh, size_t n, int fresh_kept)
{
    cs_flow_conflict(cs_the_engine, ctx, dir, off, len, held, fresh, n, fresh_kept);
}

/* ---------- counters ---------- */

static void note(cs_engine *e, int counter, uint64_t value)
{
    native *ns = NS(e);
    if (value == ns->seen[counter]) return;
    if (ns->seen[counter] == 0 && e->counters[counter] == 0) {
        e->counter_first[counter].file = e->cur_file;
        e->counter_first[counter].frame = e->cur_frame;
    }
    e->counters[counter] += value - ns->seen[counter];
    ns->seen[counter] = value;
}

static void sync_counters(cs_engine *e)
{
    native *ns = NS(e);
    const cs_frag_counters *fc = cs_frag_stats(ns->frags);
    const cs_tcp_counters *tc = &ns->tcp.c;
    note(e, CSC_IP_FRAGMENTS, fc->fragments);
    note(e, CSC_IP_FRAG_REASSEMBLED, fc->reassembled);
    note(e, CSC_IP_FRAG_TIMEOUTS, fc->timeouts);
    note(e, CSC_IP_FRAG_OVERLAPS, fc->overlaps);
    note(e, CSC_IP_FRAG_CONFLICTS, fc->overlap_conflicts);
    note(e, CSC_IP_FRAG_EVICTED, fc->evicted);
    note(e, CSC_IP_FRAG_MALFORMED, fc->malformed);
    note(e, CSC_IP_FRAG_TOO_MANY, fc->too_many_fragments);
    note(e, CSC_TCP_GAPS, tc->gaps);
    note(e, CSC_TCP_GAP_BYTES, tc->gap_bytes);
    note(e, CSC_TCP_OVERLAPS, tc->overlaps);
    note(e, CSC_TCP_CONFLICTS, tc->conflicts);
    note(e, CSC_TCP_OUT_OF_WINDOW, tc->out_of_window);
    note(e, CSC_TCP_CONN_CAP, tc->conn_cap_hits);
    note(e, CSC_TCP_TOTAL_CAP, tc->total_cap_hits);
    note(e, CSC_TCP_UNACKED_FLUSH, tc->unacked_flushes);
}

/* ---------- start and stop ---------- */

static int native_start(cs_engine *e, char *err, size_t errlen)
{
    native *ns = calloc(1, sizeof *ns);
    if (!ns) { snprintf(err, errlen, "out of memory"); return -1; }
    cs_frag_opts fo;
    cs_frag_opts_default(&fo);
    fo.timeout_us = e->opt.frag_timeout_us;
    fo.max_bytes = e->opt.frag_max;
    fo.policy = e->opt.frag_policy;
    ns->frags = cs_frag_new(&fo);
    if (!ns->frags) { free(ns); snprintf(err, errlen, "out of memory"); return -1; }
    cs_tcp_cfg_default(&ns->tcp);
    ns->tcp.policy = e->opt.tcp_policy;
    ns->tcp.max_conn_bytes = e->opt.tcp_conn_max;
    ns->tcp.max_total_bytes = e->opt.tcp_total_max;
    ns->tcp.hole_timeout_us = e->opt.hole_timeout_us;
    ns->tcp.sink.data = sink_data;
    ns->tcp.sink.gap = sink_gap;
    ns->tcp.sink.conflict = sink_conflict;
    e->reasm_state = ns;
    return 0;
}

static void native_stop(cs_engine *e)
{
    native *ns = NS(e);
    if (!ns) return;
    /* what a dropped engine still followed: freed without handing anything over */
    for (int l = 0; l < CS_NLISTS; l++)
        for (cs_flow *f = e->head[l]; f; f = f->next)
            if (f->engine_ref) {
                cs_tcp_conn_drop(&ns->tcp, f->engine_ref);
                f->engine_ref = NULL;
            }
    cs_frag_free(ns->frags);
    free(ns);
    e->reasm_state = NULL;
}

/* ---------- connections ---------- */

static void native_release(cs_engine *e, cs_flow *f, enum cs_end why)
{
    cs_tcp_conn *c = f->engine_ref;
    if (!c) return;
    cs_tcp_conn_free(&NS(e)->tcp, c);        /* hands over what it held, holes as gaps */
    f->engine_ref = NULL;
    sync_counters(e);
    cs_flow_end(e, f, why);
}

static void native_swap(cs_flow *f)
{
    if (f->engine_ref) cs_tcp_swap(f->engine_ref);
}

static void native_finish(cs_engine *e)
{
    cs_flows_release_tracked(e);    /* then flush_all ends the others */
    sync_counters(e);
}

static int is_token(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '_';
}

/* Who sent these first bytes of a connection picked up without its handshake: 1 = a client
 * (an HTTP request line), -1 = a server (an HTTP status line), 0 = cannot tell. */
static int first_bytes_role(const uint8_t *p, uint32_t n)
{
    if (n >= 8 && memcmp(p, "HTTP/1.", 7) == 0) return -1;
    uint32_t i = 0;
    while (i < n && i < 20 && is_token(p[i])) i++;
    if (i >= 3 && i < n && p[i] == ' ' && i + 1 < n && (p[i + 1] == '/' || is_token(p[i + 1]))) {
        const uint8_t *nl = memchr(p, '\n', n);
        uint32_t end = nl ? (uint32_t)(nl - p) : n;
        for (uint32_t k = i; k + 6 <= end; k++)
            if (memcmp(p + k, " HTTP/", 6) == 0) return 1;
    }
    return 0;
}

/* The overlap policy of a host: the first (most specific) block holding it, else the default. */
static int host_policy(const cs_engine *e, int ipver, const uint8_t *ip)
{
    for (int i = 0; i < e->opt.n_host_policy; i++) {
        const cs_host_policy *hp = &e->opt.host_policy[i];
        if (hp->ipver != ipver) continue;
        int full = hp->prefix / 8, rest = hp->prefix % 8;
        if (memcmp(hp->addr, ip, (size_t)full) != 0) continue;
        if (rest && ((hp->addr[full] ^ ip[full]) & (0xff << (8 - rest)) & 0xff)) continue;
        return hp->policy;
    }
    return e->opt.tcp_policy;
}

static void tcp_segment(cs_engine *e, int ipver, const uint8_t *ip, uint32_t len)
{
    native *ns = NS(e);
    cs_tcp_view tv;
    cs_flow *f = cs_flow_packet(e, ipver, ip, len, &tv);
    if (!f || f->closed || f->foreign) return;
    cs_tcp_conn *c = f->engine_ref;
    if (!c) {
        if (!(c = cs_tcp_conn_new(&ns->tcp, f))) return;
        f->engine_ref = c;
        /* the bytes each way are judged as the host receiving them would */
        cs_tcp_set_policy(c, CS_C2S, host_policy(e, f->ipver, f->ip[1]));
        cs_tcp_set_policy(c, CS_S2C, host_policy(e, f->ipver, f->ip[0]));
        if (f->midstream) cs_count(e, CSC_TCP_MIDSTREAM);
    }
    int dir = tv.dir;
    /* picked up mid-stream: the first bytes may say who the client is better than ports */
    if (f->orientation_guessed && tv.len && cs_flow_untouched(f) && !cs_tcp_held(c)) {
        int role = first_bytes_role(tv.payload, tv.len);
        if (role) {
            if ((role > 0) != (dir == CS_C2S)) {
                cs_flow_orient(f, 1);
                cs_tcp_swap(c);
                dir = !dir;
            }
            f->orientation_guessed = 1;      /* still not from a handshake */
            f->orientation = "content";
        }
    }
    if ((tv.flags & (CS_TH_SYN | CS_TH_ACK | CS_TH_RST)) == CS_TH_ACK && dir == CS_C2S &&
        f->syn_seen && f->synack_seen && tv.ack == f->server_isn + 1)
        f->handshake = 1;
    if (!f->reassembled && (f->handshake || tv.len)) {
        f->reassembled = 1;
        cs_count(e, CSC_CONNECTIONS_REASSEMBLED);
    }
    cs_tcp_seg s = {
        .seq = tv.seq, .ack = tv.ack, .flags = tv.flags, .payload = tv.payload, .len = tv.len,
        .ts_us = e->now_us, .pos = {.file = e->cur_file, .frame = e->cur_frame},
    };
    cs_tcp_segment(&ns->tcp, c, dir, &s);
    if (tv.flags & CS_TH_RST) cs_flow_release(e, f, CS_END_RST);
    else if (cs_tcp_done(c)) cs_flow_release(e, f, CS_END_FIN);
    else cs_flows_touch(e, f);
}

static void native_ip(cs_engine *e, const uint8_t *ip, uint32_t len, int version, int depth)
{
    native *ns = NS(e);
    const uint8_t *out;
    uint32_t out_len;
    int r = cs_frag_input(ns->frags, e->now_us, ip, len, &out, &out_len);
    if (r == CS_FRAG_PASS) {
        tcp_segment(e, version, ip, len);
        return;
    }
    if (r != CS_FRAG_DONE) return;
    /* a whole datagram, read again as raw IP, which also opens a tunnel it may carry. `out`
     * stays valid until the table's next input: only a tunnel's inner packet (a fragment in
     * turn, maybe) goes back to it, so that one is copied first. */
    cs_l3 l3;
    if (cs_link_to_ip(101, out, out_len, &l3) != CS_L3_OK) return;
    if (l3.ip != out && depth < 2) {
        uint8_t *own = malloc(l3.len);
        if (!own) return;
        memcpy(own, l3.ip, l3.len);
        native_ip(e, own, l3.len, l3.version, depth + 1);
        free(own);
        return;
    }
    tcp_segment(e, l3.version, l3.ip, l3.len);
}

static void native_packet(cs_engine *e, const cs_l3 *l3, const cs_packet *pkt)
{
    (void)pkt;
    native_ip(e, l3->ip, l3->len, l3->version, 0);
    sync_counters(e);
}

const cs_reasm_ops cs_native_ops = {
    .name = "native", .start = native_start, .packet = native_packet, .finish = native_finish,
    .release = native_release, .stop = native_stop, .swap = native_swap,
};
