/* Flow accounting: every TCP connection seen, whether or not a reassembly engine follows it.
 *
 * libnids only follows connections whose handshake it saw, over IPv4; the native engine
 * follows every one. This table sees every TCP packet first, so it can report the others
 * too (mid-stream, IPv6, scans, refused connections), count packets and bytes per direction,
 * keep Zeek-style history letters, detect a reused 4-tuple, and expire idle connections in
 * capture time.
 */
#include "core.h"

#include <string.h>
#include <openssl/sha.h>
#include <openssl/evp.h>

const char *const cs_counter_names[CSC__COUNT] = {
    "packets", "bytes", "non_ip_frames", "unsupported_link_type", "truncated_link_header",
    "ipv4_packets", "ipv6_packets", "ipv6_tcp_not_reassembled", "ipv6_fragments_skipped",
    "not_tcp_packets", "tcp_packets", "tcp_bad_header", "connections",
    "connections_reassembled", "http_transactions", "nids_ip_bad_header",
    "nids_ip_source_route", "nids_ip_oversized", "nids_ip_invalid_fragment_list",
    "nids_ip_fragment_overlap", "nids_tcp_bad_header", "nids_tcp_too_many_streams",
    "nids_tcp_out_of_order_queue_overflow", "nids_tcp_bad_flags", "nids_other",
    "flows_evicted", "stream_bytes_not_kept", "http_unparsed_bytes_dropped",
    "http_parser_errors", "time_went_backwards", "window_packets_skipped",
    "ip_fragments", "ip_fragments_reassembled", "ip_fragment_timeouts", "ip_fragment_overlaps",
    "ip_fragment_conflicts", "ip_fragments_evicted", "ip_fragments_malformed",
    "ip_fragments_too_many", "tcp_gaps", "tcp_gap_bytes", "tcp_overlaps",
    "tcp_overlap_conflicts", "tcp_out_of_window", "tcp_connection_memcap",
    "tcp_total_memcap", "tcp_unacked_flushes", "tcp_midstream", "http_gaps_filled",
    "http_gap_resyncs", "http_bytes_skipped_after_gap", "http_gap_fill_budget",
};

#define REUSE_IDLE_US (30LL * 1000000)

void cs_count(cs_engine *e, int c)
{
    if (e->counters[c]++ == 0) {
        e->counter_first[c].file = e->cur_file;
        e->counter_first[c].frame = e->cur_frame;
    }
}

int cs_flows_init(cs_engine *e)
{
    e->hsize = 1;
    while (e->hsize < e->opt.max_flows / 2 + 1024) e->hsize <<= 1;
    e->htab = calloc(e->hsize, sizeof(cs_flow *));
    return e->htab ? 0 : -1;
}

/* ---------- hashing and lookup ---------- */

static uint32_t mix(uint32_t h, uint32_t v)
{
    h ^= v;
    h *= 0x9e3779b1u;
    return h ^ (h >> 15);
}

/* Same value for both directions: combine the two endpoints symmetrically. */
static uint32_t flow_hash(int ipver, const uint8_t *a, uint16_t pa, const uint8_t *b, uint16_t pb)
{
    uint32_t ha = 0x811c9dc5u, hb = 0x811c9dc5u;
    int n = ipver == 4 ? 4 : 16;
    for (int i = 0; i < n; i += 4) {
        uint32_t va, vb;
        memcpy(&va, a + i, 4);
        memcpy(&vb, b + i, 4);
        ha = mix(ha, va);
        hb = mix(hb, vb);
    }
    ha = mix(ha, pa);
    hb = mix(hb, pb);
    return (ha + hb) ^ (ha * hb) ^ (uint32_t)ipver;
}

static int ep_eq(const cs_flow *f, int side, int n, const uint8_t *ip, uint16_t port)
{
    return f->port[side] == port && memcmp(f->ip[side], ip, n) == 0;
}

/* Find the flow of (src, dst); *dir says which direction the packet goes. */
static cs_flow *lookup(cs_engine *e, int ipver, const uint8_t *src, uint16_t sport,
                       const uint8_t *dst, uint16_t dport, uint32_t h, int *dir)
{
    int n = ipver == 4 ? 4 : 16;
    for (cs_flow *f = e->htab[h & (e->hsize - 1)]; f; f = f->hnext) {
        if (f->hash != h || f->ipver != ipver) continue;
        if (ep_eq(f, 0, n, src, sport) && ep_eq(f, 1, n, dst, dport)) { *dir = CS_C2S; return f; }
        if (ep_eq(f, 0, n, dst, dport) && ep_eq(f, 1, n, src, sport)) { *dir = CS_S2C; return f; }
    }
    return NULL;
}

cs_flow *cs_flow_lookup4(cs_engine *e, uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport)
{
    uint8_t s[16] = {0}, d[16] = {0};
    int dir;
    memcpy(s, &saddr, 4);
    memcpy(d, &daddr, 4);
    cs_flow *f = lookup(e, 4, s, sport, d, dport, flow_hash(4, s, sport, d, dport), &dir);
    return f;
}

/* ---------- lists ---------- */

static void list_remove(cs_engine *e, cs_flow *f)
{
    if (f->prev) f->prev->next = f->next; else e->head[f->list] = f->next;
    if (f->next) f->next->prev = f->prev; else e->tail[f->list] = f->prev;
    f->prev = f->next = NULL;
}

static void list_append(cs_engine *e, cs_flow *f, int list)
{
    f->list = list;
    f->next = NULL;
    f->prev = e->tail[list];
    if (e->tail[list]) e->tail[list]->next = f; else e->head[list] = f;
    e->tail[list] = f;
}

void cs_flows_touch(cs_engine *e, cs_flow *f)
{
    int list = f->closed ? CS_LIST_CLOSED
             : f->engine_ref && f->reassembled ? CS_LIST_TRACKED : CS_LIST_UNTRACKED;
    if (f->list == list && e->tail[list] == f) return;
    if (f->closed && f->list == CS_LIST_CLOSED) return;   /* closed list stays in close order */
    list_remove(e, f);
    list_append(e, f, list);
}

/* ---------- identity ---------- */

static void community_id(cs_flow *f)
{
    /* Community ID v1 (seed 0): endpoints ordered so both directions hash alike. */
    int n = f->ipver == 4 ? 4 : 16;
    int c = memcmp(f->ip[0], f->ip[1], n);
    int a = (c < 0 || (c == 0 && f->port[0] <= f->port[1])) ? 0 : 1, b = 1 - a;
    uint8_t buf[2 + 32 + 4 + 4], *p = buf, md[SHA_DIGEST_LENGTH];
    *p++ = 0; *p++ = 0;
    memcpy(p, f->ip[a], n); p += n;
    memcpy(p, f->ip[b], n); p += n;
    *p++ = 6; *p++ = 0;
    *p++ = f->port[a] >> 8; *p++ = f->port[a] & 0xff;
    *p++ = f->port[b] >> 8; *p++ = f->port[b] & 0xff;
    EVP_Digest(buf, p - buf, md, NULL, cs_sha1, NULL);
    memcpy(f->community_id, "1:", 2);
    EVP_EncodeBlock((unsigned char *)f->community_id + 2, md, SHA_DIGEST_LENGTH);
}

static void flow_id(cs_engine *e, cs_flow *f)
{
    /* Deterministic: the same capture gives the same ids on every run and every machine. */
    static const char hexd[] = "0123456789abcdef";
    uint8_t buf[512], md[EVP_MAX_MD_SIZE], *p = buf;
    Py_ssize_t nlen = 0;
    const char *name = "";
    PyObject *o = e->files && e->cur_file >= 0 && e->cur_file < PyList_GET_SIZE(e->files)
                      ? PyList_GET_ITEM(e->files, e->cur_file) : NULL;
    if (o) name = PyUnicode_AsUTF8AndSize(o, &nlen);
    if (!name) { PyErr_Clear(); name = ""; nlen = 0; }
    /* the file's base name: ids do not depend on where the archive is mounted */
    for (Py_ssize_t i = nlen; i > 0; i--)
        if (name[i - 1] == '/') { name += i; nlen -= i; break; }
    if (nlen > 300) nlen = 300;
    memcpy(p, name, nlen); p += nlen;
    memcpy(p, &f->first.frame, 8); p += 8;
    memcpy(p, &f->first_us, 8); p += 8;
    memcpy(p, f->community_id, 30); p += 30;
    memcpy(p, f->port, 4); p += 4;
    EVP_Digest(buf, p - buf, md, NULL, cs_sha1, NULL);
    f->id[0] = 'C';
    for (int i = 0; i < 9; i++) {
        f->id[1 + 2 * i] = hexd[md[i] >> 4];
        f->id[2 + 2 * i] = hexd[md[i] & 15];
    }
    f->id[19] = 0;
}

/* ---------- creation and release ---------- */

static void flow_finalize(cs_engine *e, cs_flow *f);

void cs_flow_release(cs_engine *e, cs_flow *f, enum cs_end why)
{
    if (f->engine_ref) e->reasm->release(e, f, why);
    if (!f->closed) cs_flow_end(e, f, why);
}

void cs_flows_release_tracked(cs_engine *e)
{
    /* in capture order (libnids' own table order is randomised per process): output must be
     * the same on every run */
    enum cs_end why = e->win_done ? CS_END_WINDOW_CUT : CS_END_OPEN;
    cs_flow *f;
    while ((f = e->head[CS_LIST_TRACKED])) cs_flow_release(e, f, why);
}

static cs_flow *flow_new(cs_engine *e, int ipver, const uint8_t *cli, uint16_t cport,
                         const uint8_t *srv, uint16_t sport, uint32_t h)
{
    if (e->nflows >= e->opt.max_flows) {
        cs_flow *victim = e->head[CS_LIST_CLOSED] ? e->head[CS_LIST_CLOSED]
                        : e->head[CS_LIST_UNTRACKED] ? e->head[CS_LIST_UNTRACKED]
                        : e->head[CS_LIST_TRACKED];
        if (victim) {
            if (!victim->closed) cs_count(e, CSC_FLOWS_EVICTED);
            cs_flow_release(e, victim, CS_END_EVICTED);
            flow_finalize(e, victim);
        }
    }
    cs_flow *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    int n = ipver == 4 ? 4 : 16;
    f->ipver = ipver;
    memcpy(f->ip[0], cli, n);
    memcpy(f->ip[1], srv, n);
    f->port[0] = cport;
    f->port[1] = sport;
    f->first_us = f->last_us = e->now_us;
    f->first.file = f->last.file = e->cur_file;
    f->first.frame = f->last.frame = e->cur_frame;
    f->hash = h;
    if (e->opt.windowed) {
        f->foreign = e->now_us < e->opt.win_start_us || e->now_us >= e->opt.win_end_us;
        if (!f->foreign) e->own_live++;
    }
    community_id(f);
    flow_id(e, f);
    cs_ip_format(ipver, f->ip[0], f->ip_text[0], sizeof f->ip_text[0]);
    cs_ip_format(ipver, f->ip[1], f->ip_text[1], sizeof f->ip_text[1]);
    size_t b = h & (e->hsize - 1);
    f->hnext = e->htab[b];
    e->htab[b] = f;
    list_append(e, f, CS_LIST_UNTRACKED);
    e->nflows++;
    cs_count(e, CSC_CONNECTIONS);
    return f;
}

static void unhash(cs_engine *e, cs_flow *f)
{
    cs_flow **pp = &e->htab[f->hash & (e->hsize - 1)];
    while (*pp && *pp != f) pp = &(*pp)->hnext;
    if (*pp) *pp = f->hnext;
}

/* Digests are taken when the connection ends, so a lingering flow holds no hash state. */
static void dir_close(cs_dir *d)
{
    if (!d->sha) return;
    if (cs_hex_final(d->sha, d->sha_hex, sizeof d->sha_hex)) d->sha_hex[0] = 0;
    EVP_MD_CTX_free(d->sha);
    d->sha = NULL;
}

/* A direction with a hole has no digest: a hash over bytes the capture does not hold would
 * match nothing (its kept bytes hold the hole as zeros, as tcpflow writes it). */
static const char *dir_sha(cs_dir *d)
{
    dir_close(d);
    return d->sha_hex[0] && d->stream_bytes && !d->missing ? d->sha_hex : NULL;
}

static const char *const end_names[] = {
    "", "fin", "rst", "timeout", "evicted", "open_at_end", "reused", "window_cut",
    "window_idle",
};

static void flow_free(cs_flow *f)
{
    for (int i = 0; i < 2; i++) {
        if (f->dir[i].sha) EVP_MD_CTX_free(f->dir[i].sha);
        free(f->dir[i].keep);
    }
    for (int i = 0; i < f->n_conflict_samples; i++) free(f->conflict_samples[i]);
    Py_XDECREF(f->held);
    free(f->sel_first);
    free(f);
}

static void decide_chunks(cs_engine *e, cs_flow *f);

/* Emit the connection record and free the flow. */
static void flow_finalize(cs_engine *e, cs_flow *f)
{
    list_remove(e, f);
    unhash(e, f);
    e->nflows--;
    if (f->http) cs_http_close(e, f);
    if (e->opt.windowed && !f->foreign) e->own_live--;
    if (f->held && !e->py_error) decide_chunks(e, f);  /* short: decided on what came */
    cs_rec r;
    /* with a selector, decoders get only the end of a connection stored as a batch row */
    if (!f->foreign && !e->py_error &&
        cs_rec_begin_dict(e, &r, "connection", !e->select) == 0) {
        cs_dir *c = &f->dir[CS_C2S], *s = &f->dir[CS_S2C];
        PyObject *ff = cs_file_name(e, f->first.file), *fl = cs_file_name(e, f->last.file);
        /* an HTTP connection's bytes are in its transactions: kept only when asked for */
        int drop = f->http_decided > 0 && !e->opt.stream_keep_http;
        cs_rec_cstr(&r, "conn_id", f->id);
        cs_rec_cstr(&r, "community_id", f->community_id);
        cs_rec_ts(&r, "start_us", f->first_us);
        cs_rec_ts(&r, "end_us", f->last_us);
        cs_rec_int(&r, "ip_version", f->ipver);
        cs_rec_cstr(&r, "src_ip", f->ip_text[0]);
        cs_rec_int(&r, "src_port", f->port[0]);
        cs_rec_cstr(&r, "dst_ip", f->ip_text[1]);
        cs_rec_int(&r, "dst_port", f->port[1]);
        cs_rec_bool(&r, "orientation_guessed", f->orientation_guessed);
        cs_rec_int(&r, "src_packets", (long long)c->packets);
        cs_rec_int(&r, "dst_packets", (long long)s->packets);
        cs_rec_int(&r, "src_ip_bytes", (long long)c->ip_bytes);
        cs_rec_int(&r, "dst_ip_bytes", (long long)s->ip_bytes);
        cs_rec_int(&r, "src_payload_bytes", (long long)c->payload_bytes);
        cs_rec_int(&r, "dst_payload_bytes", (long long)s->payload_bytes);
        cs_rec_int(&r, "c2s_bytes", (long long)c->stream_bytes);
        cs_rec_int(&r, "s2c_bytes", (long long)s->stream_bytes);
        cs_rec_cstr(&r, "c2s_sha256", dir_sha(c));
        cs_rec_cstr(&r, "s2c_sha256", dir_sha(s));
        cs_rec_bytes(&r, "c2s_data", c->keep, c->keep_len, e->opt.stream_keep > 0 && !drop);
        cs_rec_bytes(&r, "s2c_data", s->keep, s->keep_len, e->opt.stream_keep > 0 && !drop);
        cs_rec_bool(&r, "c2s_truncated", c->truncated && !drop);
        cs_rec_bool(&r, "s2c_truncated", s->truncated && !drop);
        cs_rec_str(&r, "history", f->history, f->history_len);
        cs_rec_bool(&r, "handshake", f->handshake);
        cs_rec_bool(&r, "reassembled", f->reassembled);
        cs_rec_cstr(&r, "orientation", f->orientation);
        cs_rec_bool(&r, "midstream", f->midstream);
        cs_rec_int(&r, "c2s_gaps", (long long)c->gaps);
        cs_rec_int(&r, "s2c_gaps", (long long)s->gaps);
        cs_rec_int(&r, "c2s_missing_bytes", (long long)c->missing);
        cs_rec_int(&r, "s2c_missing_bytes", (long long)s->missing);
        cs_rec_int(&r, "overlap_conflicts", (long long)(c->conflicts + s->conflicts));
        cs_rec_list_begin(&r, "overlap_conflict_samples");
        for (int i = 0; i < f->n_conflict_samples; i++)
            cs_rec_item(&r, f->conflict_samples[i], strlen(f->conflict_samples[i]));
        cs_rec_list_end(&r);
        cs_rec_cstr(&r, "end_reason", end_names[f->end]);
        cs_rec_int(&r, "http_transactions", (long long)f->http_tx);
        cs_rec_cstr(&r, "app_protocol", f->http_decided > 0 ? "http" : NULL);
        cs_rec_cstr(&r, "file_first", ff && ff != Py_None ? PyUnicode_AsUTF8(ff) : NULL);
        cs_rec_int(&r, "frame_first", (long long)f->first.frame);
        cs_rec_cstr(&r, "file_last", fl && fl != Py_None ? PyUnicode_AsUTF8(fl) : NULL);
        cs_rec_int(&r, "frame_last", (long long)f->last.frame);
        Py_XDECREF(ff);
        Py_XDECREF(fl);
        if (r.json || r.t) {   /* derived fields; the dict path gets them in schema.py */
            cs_rec_cstr(&r, "engine", e->reasm->name);
            cs_rec_cstr(&r, "transport", "tcp");
            cs_rec_cstr(&r, "network_type", f->ipver == 4 ? "ipv4" : "ipv6");
            cs_rec_int(&r, "duration_ns", (long long)(f->last_us - f->first_us) * 1000);
        }
        cs_rec_end(&r, "connection", "dataset:connection", f->first_us);
        if (e->select && r.t && !r.d && !e->py_error) {
            PyObject *id = PyUnicode_FromString(f->id);
            if (id) cs_emit(e, "connection_end", id);
            else cs_fail(e);
        }
    }
    flow_free(f);
}

void cs_flow_end(cs_engine *e, cs_flow *f, enum cs_end why)
{
    if (f->closed) return;
    if (f->http) cs_http_close(e, f);
    dir_close(&f->dir[0]);
    dir_close(&f->dir[1]);
    f->end = why;
    f->closed = 1;
    f->closed_us = e->now_us;
    f->engine_ref = NULL;
    list_remove(e, f);
    list_append(e, f, CS_LIST_CLOSED);
}

void cs_flows_expire(cs_engine *e)
{
    cs_flow *f;
    while ((f = e->head[CS_LIST_CLOSED]) && e->now_us - f->closed_us > e->opt.linger_us)
        flow_finalize(e, f);
    while ((f = e->head[CS_LIST_UNTRACKED]) && e->now_us - f->last_us > e->opt.idle_timeout_us) {
        cs_flow_release(e, f, CS_END_TIMEOUT);
        flow_finalize(e, f);
    }
    while ((f = e->head[CS_LIST_TRACKED]) && e->now_us - f->last_us > e->opt.established_timeout_us) {
        cs_flow_release(e, f, CS_END_TIMEOUT);
        flow_finalize(e, f);
    }
}

/* End of input: everything still open is reported as such (in a window that stopped
 * reading early, as cut by the window). */
void cs_flows_flush_all(cs_engine *e)
{
    cs_flow *f;
    enum cs_end why = e->win_done ? CS_END_WINDOW_CUT : CS_END_OPEN;
    for (int l = 0; l < CS_NLISTS; l++)
        while ((f = e->head[l])) {
            if (!f->closed) cs_flow_release(e, f, why);
            flow_finalize(e, f);
        }
}

/* The first packet at or after a window edge (the window's end, then the ends of the windows
 * after it, as far as the look-ahead reads): the window's connections silent since before
 * (edge - pre-roll) end here. The window starting at that edge reads from (edge - pre-roll)
 * and sees their next packet as a new connection of its own; without this both would
 * report it. */
void cs_flows_window_edge(cs_engine *e, int64_t edge_us)
{
    int64_t quiet = edge_us - e->opt.preroll_us;
    for (int l = CS_LIST_UNTRACKED; l <= CS_LIST_TRACKED; l++) {
        cs_flow *f = e->head[l], *next;
        for (; f; f = next) {
            next = f->next;
            if (f->foreign || f->last_us >= quiet) continue;
            cs_flow_release(e, f, CS_END_WINDOW_IDLE);
            flow_finalize(e, f);
        }
    }
}

void cs_flows_free(cs_engine *e)
{
    cs_flow *f;
    for (int l = 0; l < CS_NLISTS; l++)
        while ((f = e->head[l])) {
            list_remove(e, f);
            flow_free(f);
        }
    free(e->htab);
    e->htab = NULL;
    e->nflows = 0;
}

/* ---------- orientation ---------- */

/* Make side `client` (0 or 1, as stored now) the client: a SYN showed who it is. */
void cs_flow_orient(cs_flow *f, int client)
{
    f->orientation_guessed = 0;
    f->orientation = "handshake";
    if (client == 0) return;
    uint8_t ip[16];
    char text[48];
    uint16_t port = f->port[0];
    cs_dir d = f->dir[0];
    memcpy(ip, f->ip[0], 16); memcpy(f->ip[0], f->ip[1], 16); memcpy(f->ip[1], ip, 16);
    memcpy(text, f->ip_text[0], 48); memcpy(f->ip_text[0], f->ip_text[1], 48);
    memcpy(f->ip_text[1], text, 48);
    f->port[0] = f->port[1]; f->port[1] = port;
    f->dir[0] = f->dir[1]; f->dir[1] = d;
    int t = f->fin_seen[0]; f->fin_seen[0] = f->fin_seen[1]; f->fin_seen[1] = t;
    t = f->rst_seen[0]; f->rst_seen[0] = f->rst_seen[1]; f->rst_seen[1] = t;
    for (int i = 0; i < f->history_len; i++) {          /* originator letters are upper case */
        char c = f->history[i];
        f->history[i] = c >= 'a' ? (char)(c - 32) : (char)(c + 32);
    }
}

/* ---------- per packet ---------- */

static void add_history(cs_flow *f, int dir, char letter)
{
    char c = dir == CS_C2S ? letter : (char)(letter + ('a' - 'A'));
    if (memchr(f->history, c, f->history_len)) return;
    if (f->history_len < (int)sizeof f->history) f->history[f->history_len++] = c;
}

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

cs_flow *cs_flow_packet(cs_engine *e, int ipver, const uint8_t *ip, uint32_t len, cs_tcp_view *tv)
{
    const uint8_t *src, *dst, *th;
    uint32_t iplen, hl;
    uint8_t proto;

    if (ipver == 4) {
        if (len < 20) goto bad;
        hl = (ip[0] & 15) * 4u;
        iplen = (uint32_t)ip[2] << 8 | ip[3];
        if (hl < 20 || iplen < hl) goto bad;
        if (((ip[6] & 0x3f) | ip[7]) != 0) return NULL;      /* fragment: engine reassembles */
        proto = ip[9];
        src = ip + 12;
        dst = ip + 16;
    } else {
        if (len < 40) goto bad;
        iplen = 40u + ((uint32_t)ip[4] << 8 | ip[5]);
        proto = ip[6];
        hl = 40;
        src = ip + 8;
        dst = ip + 24;
        for (int i = 0; i < 8; i++) {                        /* extension headers */
            if (proto == 0 || proto == 43 || proto == 60 || proto == 51) {
                if (len < hl + 8) goto bad;
                uint32_t el = proto == 51 ? (ip[hl + 1] + 2u) * 4 : (ip[hl + 1] + 1u) * 8;
                proto = ip[hl];
                hl += el;
            } else if (proto == 44) {
                cs_count(e, CSC_IP_FRAGMENTS_V6);
                return NULL;
            } else break;
        }
    }
    if (proto != 6) { cs_count(e, CSC_NOT_TCP); return NULL; }
    if (len < hl + 20) goto bad;
    th = ip + hl;
    uint32_t doff = (th[12] >> 4) * 4u;
    if (doff < 20 || iplen < hl + doff) goto bad;
    uint32_t paylen = iplen - hl - doff;
    uint16_t sport = (uint16_t)(th[0] << 8 | th[1]), dport = (uint16_t)(th[2] << 8 | th[3]);
    uint32_t seq = (uint32_t)th[4] << 24 | (uint32_t)th[5] << 16 | (uint32_t)th[6] << 8 | th[7];
    uint32_t ack = (uint32_t)th[8] << 24 | (uint32_t)th[9] << 16 | (uint32_t)th[10] << 8 | th[11];
    uint8_t fl = th[13];
    int pure_syn = (fl & (TH_SYN | TH_ACK | TH_RST)) == TH_SYN;
    cs_count(e, CSC_TCP_PACKETS);

    uint32_t h = flow_hash(ipver, src, sport, dst, dport);
    int dir = CS_C2S;
    cs_flow *f = lookup(e, ipver, src, sport, dst, dport, h, &dir);
    /* A SYN after the connection closed starts a new one, even with the same ISN (a replayed
     * or merged capture); before that, only a new ISN after FIN/RST or a long silence. */
    if (f && pure_syn && dir == CS_C2S && f->syn_seen &&
        (f->closed || (seq != f->client_isn &&
                       (f->fin_seen[0] || f->fin_seen[1] || f->rst_seen[0] || f->rst_seen[1] ||
                        e->now_us - f->last_us > REUSE_IDLE_US)))) {
        /* A new connection on the same 4-tuple: the old one is over. */
        cs_flow_release(e, f, CS_END_REUSED);
        flow_finalize(e, f);
        f = NULL;
    } else if (f && pure_syn && dir == CS_S2C && f->closed) {
        flow_finalize(e, f);                    /* roles swapped on a reused tuple */
        f = NULL;
    }
    if (!f) {
        if (pure_syn || (fl & (TH_SYN | TH_ACK)) != (TH_SYN | TH_ACK)) {
            int sender_is_server = 0;
            if (!pure_syn) {
                /* No SYN seen: guess the server by its port, as Zeek and Arkime do. */
                sender_is_server = sport < dport;
            }
            f = sender_is_server ? flow_new(e, ipver, dst, dport, src, sport, h)
                                 : flow_new(e, ipver, src, sport, dst, dport, h);
            if (!f) return NULL;
            f->orientation_guessed = !pure_syn;
            f->orientation = pure_syn ? "handshake" : "ports";
            f->midstream = !pure_syn;
            dir = sender_is_server ? CS_S2C : CS_C2S;
        } else {
            f = flow_new(e, ipver, dst, dport, src, sport, h);   /* SYN-ACK: sender is server */
            if (!f) return NULL;
            f->orientation = "handshake";
            dir = CS_S2C;
        }
    }
    /* the SYN tells who the client is, unless bytes already went up as the guess had it */
    if (pure_syn && f->orientation_guessed && !f->syn_seen &&
        (dir == CS_C2S || cs_flow_untouched(f))) {
        int flip = dir != CS_C2S;
        cs_flow_orient(f, dir);
        if (flip && f->engine_ref && e->reasm->swap) e->reasm->swap(f);
        dir = CS_C2S;
    }
    cs_dir *d = &f->dir[dir];
    d->packets++;
    d->ip_bytes += iplen;
    d->payload_bytes += paylen;
    if (e->now_us > f->last_us) f->last_us = e->now_us;
    f->last.file = e->cur_file;
    f->last.frame = e->cur_frame;
    if (pure_syn) {
        add_history(f, dir, 'S');
        if (dir == CS_C2S && !f->syn_seen) { f->syn_seen = 1; f->client_isn = seq; }
    } else if ((fl & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)) {
        add_history(f, dir, 'H');
        f->synack_seen = 1;
        if (dir == CS_S2C) f->server_isn = seq;
    }
    if (paylen) add_history(f, dir, 'D');
    else if ((fl & (TH_SYN | TH_FIN | TH_RST | TH_ACK)) == TH_ACK) add_history(f, dir, 'A');
    if (fl & TH_FIN) { add_history(f, dir, 'F'); f->fin_seen[dir] = 1; }
    if (fl & TH_RST) { add_history(f, dir, 'R'); f->rst_seen[dir] = 1; }
    if (!f->engine_ref && !f->closed) {
        /* Not followed by the engine: FIN/RST seen here end it. */
        if (fl & TH_RST) cs_flow_end(e, f, CS_END_RST);
        else if (f->fin_seen[0] && f->fin_seen[1])
            cs_flow_end(e, f, CS_END_FIN);
    }
    cs_flows_touch(e, f);
    if (tv) {
        tv->dir = dir;
        tv->seq = seq;
        tv->ack = ack;
        tv->flags = fl;
        tv->payload = th + doff;
        tv->len = paylen <= len - hl - doff ? paylen : len - hl - doff;   /* snapped */
    }
    return f;
bad:
    cs_count(e, CSC_TCP_BAD_HEADER);
    return NULL;
}

/* ---------- reassembled bytes ---------- */

/* With a stream_select, a connection's chunks are held until the decoders decide on its
 * first bytes: the first CS_WANT_BYTES of the first direction, or everything it sent before
 * the other side spoke, or everything when it ends sooner (the rule DecoderRunner applies
 * when it holds chunks itself). Declined: its chunks are dropped and no more are made. */
#define CS_WANT_BYTES 64          /* runner.WANT_BYTES */
#define CS_FIRST_KEEP 4096        /* runner.FIRST_BYTES */

static void decide_chunks(cs_engine *e, cs_flow *f)
{
    PyObject *file = cs_file_name(e, f->sel_file);
    PyObject *res = file ? PyObject_CallFunction(
        e->stream_select, "ssisiy#sOK", f->id, f->ip_text[0], (int)f->port[0], f->ip_text[1],
        (int)f->port[1], (const char *)(f->sel_first ? f->sel_first : (uint8_t *)""),
        (Py_ssize_t)f->sel_first_len, f->sel_dir == CS_C2S ? "client_to_server" : "server_to_client",
        file, (unsigned long long)f->sel_frame) : NULL;
    Py_XDECREF(file);
    int want = res ? PyObject_IsTrue(res) : -1;
    Py_XDECREF(res);
    if (want < 0) { cs_fail(e); return; }
    f->chunk_sel = want ? 1 : -1;
    for (Py_ssize_t i = 0; want && i < PyList_GET_SIZE(f->held); i++)
        cs_emit(e, "stream", Py_NewRef(PyList_GET_ITEM(f->held, i)));
    Py_CLEAR(f->held);
    free(f->sel_first);
    f->sel_first = NULL;
}

static void hold_chunk(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len,
                       PyObject *d)
{
    if (!f->held) {
        if (!(f->held = PyList_New(0))) { Py_DECREF(d); cs_fail(e); return; }
        f->sel_dir = dir;
        f->sel_file = e->cur_file;
        f->sel_frame = e->cur_frame;
    }
    int r = PyList_Append(f->held, d);
    Py_DECREF(d);
    if (r) { cs_fail(e); return; }
    if (dir == f->sel_dir) {
        f->sel_total += len;
        size_t take = len < CS_FIRST_KEEP - f->sel_first_len ? len : CS_FIRST_KEEP - f->sel_first_len;
        if (take) {
            if (!f->sel_first && !(f->sel_first = malloc(CS_FIRST_KEEP))) {
                PyErr_NoMemory();
                cs_fail(e);
                return;
            }
            memcpy(f->sel_first + f->sel_first_len, data, take);
            f->sel_first_len += take;
        }
    }
    if (dir != f->sel_dir || f->sel_total >= CS_WANT_BYTES) decide_chunks(e, f);
}

/* Stream decoders need the bytes in order, with their time and place: one record per chunk
 * the reassembly delivers (only when asked for; never on the jsonl path). */
static void emit_chunk(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len)
{
    if (e->py_error || f->chunk_sel < 0) return;
    PyObject *id = PyUnicode_FromString(f->id);
    PyObject *d = cs_record_dict();
    PyObject *file = cs_file_name(e, e->cur_file);
    int ok = d && file && id;
    if (ok) ok = !cs_set(d, "conn_id", id);     /* takes id */
    else Py_XDECREF(id);
    ok = ok &&
        !cs_set(d, "chunk_index", PyLong_FromUnsignedLongLong(f->chunks++)) &&
        !cs_set(d, "direction", PyUnicode_FromString(dir == CS_C2S ? "client_to_server" : "server_to_client")) &&
        !cs_set(d, "stream_offset", PyLong_FromUnsignedLongLong(f->dir[dir].stream_bytes + f->dir[dir].missing - len)) &&
        !cs_set(d, "gap_before", PyLong_FromUnsignedLongLong(f->dir[dir].pending_gap)) &&
        !cs_set(d, "ts_us", PyLong_FromLongLong(e->now_us)) &&
        !cs_set(d, "src_ip", PyUnicode_FromString(f->ip_text[0])) &&
        !cs_set(d, "src_port", PyLong_FromLong(f->port[0])) &&
        !cs_set(d, "dst_ip", PyUnicode_FromString(f->ip_text[1])) &&
        !cs_set(d, "dst_port", PyLong_FromLong(f->port[1])) &&
        !cs_set(d, "file", Py_NewRef(file)) &&
        !cs_set(d, "frame", PyLong_FromUnsignedLongLong(e->cur_frame)) &&
        !cs_set(d, "data", PyBytes_FromStringAndSize((const char *)data, len));
    Py_XDECREF(file);
    if (!ok) { Py_XDECREF(d); cs_fail(e); }
    else if (e->stream_select && !f->chunk_sel) hold_chunk(e, f, dir, data, len, d);
    else cs_emit(e, "stream", d);
}

/* The first opt.stream_keep bytes of a direction (data NULL: zeros). */
static int keep_raw(cs_engine *e, cs_dir *d, const uint8_t *data, uint64_t len)
{
    size_t room = e->opt.stream_keep - d->keep_len;
    size_t take = len < room ? (size_t)len : room;
    if (take) {
        if (d->keep_len + take > d->keep_cap) {
            size_t cap = d->keep_cap ? d->keep_cap * 2 : 4096;
            while (cap < d->keep_len + take) cap *= 2;
            if (cap > e->opt.stream_keep) cap = e->opt.stream_keep;
            uint8_t *nk = realloc(d->keep, cap);
            if (!nk) { PyErr_NoMemory(); cs_fail(e); return -1; }
            d->keep = nk;
            d->keep_cap = cap;
        }
        if (data) memcpy(d->keep + d->keep_len, data, take);
        else memset(d->keep + d->keep_len, 0, take);
        d->keep_len += take;
    }
    if (take < len) {
        d->truncated = 1;
        e->counters[CSC_STREAM_BYTES_DROPPED] += len - take;
    }
    return 0;
}

/* Kept bytes hold a hole as zeros once bytes follow it, as tcpflow writes a file: a hole
 * at the end (acknowledged, never seen) adds nothing. */
static int keep_bytes(cs_engine *e, cs_dir *d, const uint8_t *data, uint64_t len)
{
    if (!e->opt.stream_keep) return 0;
    if (!data) {
        d->keep_hole += len;
        return 0;
    }
    if (d->keep_hole) {
        uint64_t z = d->keep_hole;
        d->keep_hole = 0;
        if (keep_raw(e, d, NULL, z)) return -1;
    }
    return keep_raw(e, d, data, len);
}

void cs_flow_stream_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len)
{
    cs_dir *d = &f->dir[dir];
    if (!len || f->foreign) return;    /* foreign: another window reports it, no work here */
    if (!d->sha) {
        d->sha = EVP_MD_CTX_new();
        if (!d->sha || !EVP_DigestInit_ex(d->sha, cs_sha256, NULL)) {
            PyErr_NoMemory();
            cs_fail(e);
            return;
        }
    }
    EVP_DigestUpdate(d->sha, data, len);
    d->stream_bytes += len;
    if (keep_bytes(e, d, data, len)) return;
    if (e->stream_chunks) emit_chunk(e, f, dir, data, len);
    d->pending_gap = 0;
    cs_http_data(e, f, dir, data, len);
}

void cs_flow_gap(cs_engine *e, cs_flow *f, int dir, uint64_t n)
{
    cs_dir *d = &f->dir[dir];
    if (!n || f->foreign) return;
    d->gaps++;
    d->missing += n;
    d->pending_gap += n;
    if (keep_bytes(e, d, NULL, n)) return;
    cs_http_gap(e, f, dir, n);
}

void cs_flow_conflict(cs_engine *e, cs_flow *f, int dir, uint64_t off, uint64_t len,
                      const uint8_t *held, const uint8_t *fresh, size_t n, int fresh_kept)
{
    (void)e;
    f->dir[dir].conflicts++;
    if (f->n_conflict_samples >= CS_CONFLICT_SAMPLES) return;
    /* "<direction> offset=O length=L kept=held|fresh held=HEX fresh=HEX" (64 bytes at most) */
    static const char hexd[] = "0123456789abcdef";
    size_t k = n < 64 ? n : 64;
    char *out = malloc(120 + 4 * k + 8);
    if (!out) return;
    int w = snprintf(out, 120, "%s offset=%llu length=%llu kept=%s held=",
                     dir == CS_C2S ? "client_to_server" : "server_to_client",
                     (unsigned long long)off, (unsigned long long)len,
                     fresh_kept ? "fresh" : "held");
    char *p = out + w;
    for (size_t i = 0; i < k; i++) { *p++ = hexd[held[i] >> 4]; *p++ = hexd[held[i] & 15]; }
    memcpy(p, " fresh=", 7);
    p += 7;
    for (size_t i = 0; i < k; i++) { *p++ = hexd[fresh[i] >> 4]; *p++ = hexd[fresh[i] & 15]; }
    *p = 0;
    f->conflict_samples[f->n_conflict_samples++] = out;
}
