/* The libnids reassembly engine (libnids 1.26): IPv4 defragmentation and TCP reassembly.
 *
 * Configured for forensics, not IDS: no checksum verification (captures carry offloaded
 * checksums), no port-scan detection, no TCP "workarounds" timers, no flow timeout on SYN
 * (libnids would free such streams without telling its listeners), warnings counted instead
 * of sent to syslog. Packets are fed by hand, already reduced to their IP header, through a
 * dead pcap handle of link type DLT_RAW.
 *
 * libnids is one global state per process; its callbacks carry no context pointer, so they
 * reach the engine through cs_the_engine.
 *
 * Known limits (see docs): IPv4 only; a stream exists only after SYN, SYN-ACK, ACK; a lost
 * segment stalls that direction; more than 64 KiB queued out of order is dropped; overlaps:
 * first wins.
 */
#include "../_core/core.h"

#include <string.h>
#include <pcap.h>
#include <nids.h>

static pcap_t *dead_handle;
static cs_flow *packet_flow;     /* flow of the packet libnids is processing */
static struct nids_chksum_ctl no_checksums = {0, 0, NIDS_DONT_CHKSUM, 0};
static uint8_t scratch[65536 + 64];

static void on_syslog(int type, int errnum, struct ip *iph, void *data)
{
    (void)iph; (void)data;
    cs_engine *e = cs_the_engine;
    if (!e) return;
    int c = CSC_NIDS_OTHER;
    if (type == NIDS_WARN_IP) {
        c = errnum == NIDS_WARN_IP_HDR ? CSC_NIDS_IP_HDR : errnum == NIDS_WARN_IP_SRR ? CSC_NIDS_IP_SRR
          : errnum == NIDS_WARN_IP_OVERSIZED ? CSC_NIDS_IP_OVERSIZED
          : errnum == NIDS_WARN_IP_INVLIST ? CSC_NIDS_IP_INVLIST
          : errnum == NIDS_WARN_IP_OVERLAP ? CSC_NIDS_IP_OVERLAP : CSC_NIDS_OTHER;
    } else if (type == NIDS_WARN_TCP) {
        c = errnum == NIDS_WARN_TCP_HDR ? CSC_NIDS_TCP_HDR : errnum == NIDS_WARN_TCP_TOOMUCH ? CSC_NIDS_TCP_TOOMUCH
          : errnum == NIDS_WARN_TCP_BIGQUEUE ? CSC_NIDS_TCP_BIGQUEUE
          : errnum == NIDS_WARN_TCP_BADFLAGS ? CSC_NIDS_TCP_BADFLAGS : CSC_NIDS_OTHER;
    }
    cs_count(e, c);
}

static void on_no_mem(char *where)
{
    fprintf(stderr, "c2scribe: libnids out of memory in %s\n", where);
    abort();
}

static void on_ip(struct ip *iph, int skblen)
{
    (void)skblen;
    const uint8_t *p = (const uint8_t *)iph;
    packet_flow = cs_flow_packet(cs_the_engine, 4, p, (uint32_t)p[2] << 8 | p[3], NULL);
}

static void on_tcp(struct tcp_stream *a, void **param)
{
    (void)param;
    cs_engine *e = cs_the_engine;
    cs_flow *f = a->user;
    switch (a->nids_state) {
    case NIDS_JUST_EST: {
        f = cs_flow_lookup4(e, a->addr.saddr, a->addr.source, a->addr.daddr, a->addr.dest);
        if (!f || f->closed || f->foreign) return;   /* not ours: libnids forgets the stream */
        /* libnids' client sent the SYN; our table may have guessed otherwise */
        if (f->port[0] != a->addr.source || memcmp(f->ip[0], &a->addr.saddr, 4) != 0)
            cs_flow_orient(f, 1);
        f->orientation_guessed = 0;
        a->client.collect++;
        a->server.collect++;
        a->user = f;
        f->engine_ref = a;
        f->handshake = f->reassembled = 1;
        cs_count(e, CSC_CONNECTIONS_REASSEMBLED);
        cs_flows_touch(e, f);
        return;
    }
    case NIDS_DATA:
        if (!f) return;
        /* libnids names half-streams by receiver: a->server holds what the client sent. */
        if (a->server.count_new)
            cs_flow_stream_data(e, f, CS_C2S, (const uint8_t *)a->server.data +
                                (a->server.count - a->server.offset - a->server.count_new),
                                a->server.count_new);
        if (a->client.count_new)
            cs_flow_stream_data(e, f, CS_S2C, (const uint8_t *)a->client.data +
                                (a->client.count - a->client.offset - a->client.count_new),
                                a->client.count_new);
        return;
    default: {
        if (!f) return;
        enum cs_end why = a->nids_state == NIDS_CLOSE ? CS_END_FIN
                        : a->nids_state == NIDS_RESET ? CS_END_RST
                        : a->nids_state == NIDS_EXITING ? CS_END_OPEN
                        : CS_END_EVICTED;   /* TIMED_OUT: without workarounds only the table-full eviction */
        a->user = NULL;
        f->engine_ref = NULL;
        if (why == CS_END_EVICTED) cs_count(e, CSC_FLOWS_EVICTED);
        cs_flow_end(e, f, why);
        return;
    }
    }
}

static int nids_start(cs_engine *e, char *err, size_t errlen)
{
    (void)e;
    if (!dead_handle) dead_handle = pcap_open_dead(DLT_RAW, 262144);
    if (!dead_handle) {
        snprintf(err, errlen, "pcap_open_dead failed");
        return -1;
    }
    nids_params.pcap_desc = dead_handle;
    nids_params.filename = NULL;
    nids_params.device = NULL;
    nids_params.pcap_filter = NULL;
    nids_params.n_tcp_streams = e->opt.nids_streams;
    nids_params.n_hosts = e->opt.nids_hosts;
    nids_params.scan_num_hosts = 0;
    nids_params.syslog = on_syslog;
    nids_params.no_mem = on_no_mem;
    nids_params.tcp_workarounds = 0;
    nids_params.tcp_flow_timeout = 0;
    nids_params.one_loop_less = 0;
    nids_params.multiproc = 0;
    nids_params.promisc = 0;
    if (!nids_init()) {
        snprintf(err, errlen, "nids_init failed: %s", nids_errbuf);
        return -1;
    }
    nids_register_chksum_ctl(&no_checksums, 1);
    nids_register_ip(on_ip);
    nids_register_tcp(on_tcp);
    return 0;
}

static void nids_packet(cs_engine *e, const cs_l3 *l3, const cs_packet *pkt)
{
    if (l3->version != 4) {
        if (cs_flow_packet(e, 6, l3->ip, l3->len, NULL)) cs_count(e, CSC_IPV6_NOT_REASSEMBLED);
        return;
    }
    /* libnids may write into the packet: give it a copy, never the caller's buffer. */
    uint32_t n = l3->len < sizeof scratch ? l3->len : sizeof scratch;
    memcpy(scratch, l3->ip, n);
    struct pcap_pkthdr h;
    h.ts.tv_sec = pkt->ts_sec;
    h.ts.tv_usec = pkt->ts_usec;
    h.caplen = n;
    h.len = n;
    packet_flow = NULL;
    nids_pcap_handler(NULL, &h, scratch);
}

/* Stop following a flow libnids still holds (timeout, reuse, eviction decided by us). */
static void nids_release(cs_engine *e, cs_flow *f, enum cs_end why)
{
    struct tcp_stream *a = f->engine_ref;
    if (!a) return;
    a->user = NULL;
    f->engine_ref = NULL;
    cs_flow_end(e, f, why);
    nids_free_tcp_stream(a);
}

static void nids_finish(cs_engine *e)
{
    cs_flows_release_tracked(e);    /* ours first, in capture order */
    nids_exit();     /* anything left goes to on_tcp with NIDS_EXITING */
}

const cs_reasm_ops cs_nids_ops = {
    .name = "nids", .start = nids_start, .packet = nids_packet, .finish = nids_finish,
    .release = nids_release, .stop = NULL, .swap = NULL,
};
