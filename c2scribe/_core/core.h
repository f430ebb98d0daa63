/* The C side of the c2scribe engine: one engine per process (libnids is a global state).
 *
 * Packets flow capture reader -> link normalisation -> reassembly engine (libnids, or the
 * native one: see cs_reasm_ops) -> flow accounting + stream sink -> HTTP parser (libhtp). Records leave the C side as Python
 * dicts keyed by the attribute names of c2scribe/schema.py, once per connection, HTTP
 * transaction or warning; never per packet.
 *
 * Directions are named client_to_server (CS_C2S) and server_to_client (CS_S2C), never by
 * libnids half-stream names.
 */
#ifndef C2SCRIBE_CORE_H
#define C2SCRIBE_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <openssl/evp.h>

#include "../capture/capture.h"

enum { CS_C2S = 0, CS_S2C = 1 };

enum cs_end {
    CS_END_NONE = 0,
    CS_END_FIN,           /* both sides closed with FIN */
    CS_END_RST,           /* a RST ended it */
    CS_END_TIMEOUT,       /* idle longer than the timeout (capture time) */
    CS_END_EVICTED,       /* thrown out because a table was full */
    CS_END_OPEN,          /* still open at end of capture */
    CS_END_REUSED,        /* a new connection (SYN) took over the same 4-tuple */
    CS_END_WINDOW_CUT,    /* windowed run: still open when the look-ahead ran out */
    CS_END_WINDOW_IDLE,   /* windowed run: silent across the window's end for longer than the
                           * look-ahead; what follows is the next window's connection */
};

/* Counters reported in the engine stats; also the warnings' codes. */
enum cs_counter {
    CSC_PACKETS, CSC_BYTES, CSC_NON_IP, CSC_LINK_UNSUPPORTED, CSC_LINK_TRUNCATED,
    CSC_IPV4, CSC_IPV6, CSC_IPV6_NOT_REASSEMBLED, CSC_IP_FRAGMENTS_V6, CSC_NOT_TCP,
    CSC_TCP_PACKETS, CSC_TCP_BAD_HEADER, CSC_CONNECTIONS, CSC_CONNECTIONS_REASSEMBLED,
    CSC_HTTP_TRANSACTIONS, CSC_NIDS_IP_HDR, CSC_NIDS_IP_SRR, CSC_NIDS_IP_OVERSIZED,
    CSC_NIDS_IP_INVLIST, CSC_NIDS_IP_OVERLAP, CSC_NIDS_TCP_HDR, CSC_NIDS_TCP_TOOMUCH,
    CSC_NIDS_TCP_BIGQUEUE, CSC_NIDS_TCP_BADFLAGS, CSC_NIDS_OTHER, CSC_FLOWS_EVICTED,
    CSC_STREAM_BYTES_DROPPED, CSC_HTTP_PENDING_DROPPED, CSC_HTTP_PARSER_ERRORS,
    CSC_TIME_BACKWARDS, CSC_WINDOW_SKIPPED,
    /* the native engine */
    CSC_IP_FRAGMENTS, CSC_IP_FRAG_REASSEMBLED, CSC_IP_FRAG_TIMEOUTS, CSC_IP_FRAG_OVERLAPS,
    CSC_IP_FRAG_CONFLICTS, CSC_IP_FRAG_EVICTED, CSC_IP_FRAG_MALFORMED, CSC_IP_FRAG_TOO_MANY,
    CSC_TCP_GAPS, CSC_TCP_GAP_BYTES, CSC_TCP_OVERLAPS, CSC_TCP_CONFLICTS, CSC_TCP_OUT_OF_WINDOW,
    CSC_TCP_CONN_CAP, CSC_TCP_TOTAL_CAP, CSC_TCP_UNACKED_FLUSH, CSC_TCP_MIDSTREAM,
    CSC_HTTP_GAPS_FILLED, CSC_HTTP_GAP_RESYNC, CSC_HTTP_GAP_SKIPPED, CSC_HTTP_FILL_BUDGET,
    CSC__COUNT
};
extern const char *const cs_counter_names[CSC__COUNT];

typedef struct cs_engine cs_engine;
typedef struct cs_flow cs_flow;
typedef struct cs_http cs_http;
typedef struct cs_table cs_table;

typedef struct cs_pos {           /* where in the capture chain a packet was */
    int file;                     /* index into engine->files */
    uint64_t frame;               /* 1-based frame number within that file */
} cs_pos;

typedef struct cs_dir {           /* one direction of a connection */
    uint64_t packets;             /* packets seen on the wire */
    uint64_t ip_bytes;            /* IP bytes seen on the wire */
    uint64_t payload_bytes;       /* TCP payload bytes on the wire (retransmissions included) */
    uint64_t stream_bytes;        /* reassembled bytes delivered in order */
    EVP_MD_CTX *sha;              /* sha256 of the reassembled bytes, while open */
    char sha_hex[65];             /* its digest, once the connection ended */
    uint8_t *keep;                /* first bytes kept for decoders (bounded) */
    size_t keep_len, keep_cap;
    int truncated;                /* more bytes came than were kept */
    char history[8];              /* Zeek-style history letters seen from this side */
    uint64_t gaps, missing;       /* holes skipped by the engine, and their bytes */
    uint64_t pending_gap;         /* missing bytes not yet told to stream decoders */
    uint64_t keep_hole;           /* ... not yet written (as zeros) to keep */
    uint64_t conflicts;           /* overlapping bytes that differed */
} cs_dir;

#define CS_CONFLICT_SAMPLES 4      /* overlap conflicts described per connection */

struct cs_flow {
    /* identity: [0] is the client (originator) */
    int ipver;
    uint8_t ip[2][16];
    uint16_t port[2];
    int orientation_guessed;      /* no SYN/SYN-ACK told who the client is */
    const char *orientation;      /* what told it: "handshake", "ports" or "content" */
    int midstream;                /* its first packet was neither SYN nor SYN-ACK */
    char id[24];                  /* deterministic connection id */
    char community_id[40];
    char ip_text[2][48];          /* addresses as text, formatted once */
    int64_t first_us, last_us;
    cs_pos first, last;
    cs_dir dir[2];
    char history[32];             /* merged history, in order of first appearance */
    int history_len;
    uint32_t client_isn, server_isn;
    int syn_seen, synack_seen, fin_seen[2], rst_seen[2];
    char *conflict_samples[CS_CONFLICT_SAMPLES];  /* both copies of differing overlaps */
    int n_conflict_samples;
    int handshake;                /* the engine saw the 3-way handshake and follows the stream */
    int reassembled;              /* the engine delivered the stream (nids follows it) */
    enum cs_end end;
    int closed;                   /* ended; lingers to absorb trailing packets */
    int64_t closed_us;
    void *engine_ref;             /* reassembly engine's handle (libnids tcp_stream, or the
                                   * native engine's cs_tcp_conn) */
    cs_http *http;                /* HTTP session, once the stream looks like HTTP */
    int http_decided;             /* 1 = HTTP, -1 = not HTTP, 0 = undecided */
    uint64_t http_tx;             /* HTTP transactions reported */
    uint64_t chunks;              /* stream chunks handed out (stream_chunks mode) */
    int chunk_sel;                /* stream_select: 0 undecided, 1 followed, -1 declined */
    PyObject *held;               /* ... undecided: the chunk dicts made so far */
    uint8_t *sel_first;           /* ... and the first direction's first bytes (4 KiB) */
    size_t sel_first_len;
    uint64_t sel_total;           /* ... all of that direction's bytes held */
    int sel_dir, sel_file;        /* ... its direction, and where its first chunk was */
    uint64_t sel_frame;
    int foreign;                  /* windowed run: began outside the window, not reported */
    /* hash chain and lists */
    cs_flow *hnext;
    cs_flow *prev, *next;         /* in its LRU list */
    int list;                     /* which list it is on */
    uint32_t hash;
};

typedef struct cs_host_policy {  /* an address block and its hosts' TCP overlap policy */
    int ipver, prefix, policy;
    uint8_t addr[16];
} cs_host_policy;

typedef struct cs_options {
    size_t stream_keep;           /* bytes kept per direction for the records (0 = none) */
    int stream_keep_http;         /* ... of HTTP connections too (else only of the others) */
    size_t body_keep;             /* decoded body bytes kept per HTTP message */
    size_t http_pending_max;      /* bytes libhtp may leave unconsumed per direction */
    size_t bomb_limit;            /* libhtp compression bomb limit (bytes) */
    size_t decompress_time_limit; /* libhtp decompression time limit (microseconds) */
    int64_t idle_timeout_us;      /* connections not followed by the engine */
    int64_t established_timeout_us; /* connections the engine follows */
    int64_t linger_us;            /* after FIN/RST, absorb trailing packets this long */
    size_t max_flows;             /* flow table cap (oldest evicted) */
    int nids_streams;             /* libnids stream table size */
    int nids_hosts;               /* libnids IP fragment host table size */
    /* Time window (windowed runs only): report the connections whose first packet falls in
     * [win_start_us, win_end_us). Reading starts preroll_us before the window (connections
     * seen then belong to an earlier window) and goes on after it until the window's own
     * connections have ended, or for at most lookahead_us. */
    int windowed;
    int64_t win_start_us, win_end_us, lookahead_us, preroll_us;
    int64_t last_edge_us;         /* no window starts after this edge (the last one is open) */
    /* the native engine */
    int native;                   /* 1: native engine, 0: libnids */
    int tcp_policy;               /* enum cs_tcp_policy, for hosts not in host_policy */
    cs_host_policy *host_policy;  /* most specific first */
    int n_host_policy;
    int frag_policy;              /* enum cs_frag_policy */
    int64_t frag_timeout_us;
    size_t tcp_conn_max, tcp_total_max, frag_max;   /* bytes held (per connection, all, fragments) */
    int64_t hole_timeout_us;
} cs_options;

#define CS_LIST_UNTRACKED 0
#define CS_LIST_TRACKED 1
#define CS_LIST_CLOSED 2
#define CS_NLISTS 3

/* A reassembly engine: what module.c and flow.c need of it. Everything below it (flow table,
 * HTTP, records) sees only cs_flow_packet, cs_flow_stream_data, cs_flow_gap and cs_flow_end. */
typedef struct cs_reasm_ops {
    const char *name;                                            /* "nids" or "native" */
    int (*start)(cs_engine *e, char *err, size_t errlen);
    void (*packet)(cs_engine *e, const cs_l3 *l3, const cs_packet *pkt);
    void (*finish)(cs_engine *e);       /* end of input: end the flows it follows, in order */
    void (*release)(cs_engine *e, cs_flow *f, enum cs_end why); /* stop following f, end it */
    void (*stop)(cs_engine *e);         /* free the engine's state (after finish) */
    void (*swap)(cs_flow *f);           /* f's client and server traded places */
} cs_reasm_ops;
extern const cs_reasm_ops cs_nids_ops, cs_native_ops;

/* What cs_flow_packet found in a TCP segment (the native engine reassembles from it). */
typedef struct cs_tcp_view {
    int dir;                      /* CS_C2S or CS_S2C, after the flow's orientation */
    uint32_t seq, ack;
    uint8_t flags;
    const uint8_t *payload;
    uint32_t len;
} cs_tcp_view;

struct cs_engine {
    cs_options opt;
    const cs_reasm_ops *reasm;
    void *reasm_state;
    /* capture chain */
    PyObject *files;              /* list of file names */
    int cur_file;
    uint64_t cur_frame;
    cs_reader reader;
    int reader_open;
    int reader_failed;
    int64_t now_us;               /* capture time of the current packet */
    /* flow table */
    cs_flow **htab;
    size_t hsize, nflows;
    cs_flow *head[CS_NLISTS], *tail[CS_NLISTS];
    uint64_t counters[CSC__COUNT];
    cs_pos counter_first[CSC__COUNT];
    /* output */
    PyObject *out;                /* list of (kind, dict) produced by the current call */
    int py_error;                 /* a Python exception is pending */
    int finished;
    int stream_chunks;            /* hand every in-order stream chunk to Python (decoders) */
    int json;                     /* build finished JSON documents instead of dicts */
    int json_bodies;              /* ... with kept body and stream bytes (base64); also the
                                   * columnar batches' */
    cs_table **tables;            /* columnar batches, by kind (the others: dicts) */
    int ntables;
    int dual;                     /* ... and dicts of those kinds too (decoders need them) */
    PyObject *stream_select;      /* stream_chunks: a connection's chunks only when
                                   * stream_select(its first bytes...) is true */
    PyObject *select;             /* dual: a transaction's dict only when select(head...) is
                                   * true; a connection's as ("connection_end", conn_id) */
    size_t batch_rows, batch_bytes;   /* a batch is emitted at this many rows or bytes */
    long schema_version;
    void *http_cfg;               /* htp_cfg_t */
    uint64_t http_filled;         /* zeros fed to libhtp for lost bytes, in all */
    PyObject *http_log;           /* dict: libhtp message -> count */
    /* windowed runs */
    size_t own_live;              /* the window's own connections not yet reported */
    int64_t next_edge_us;         /* the next window edge (win_end_us + k * window length) */
    int win_done;                 /* nothing more to read for this window */
    int win_started, win_ended;   /* counters were copied at the window's start / end: the
                                   * window's own counts are the difference */
    uint64_t counters_start[CSC__COUNT], counters_end[CSC__COUNT];
};

extern cs_engine *cs_the_engine;

/* flow.c */
int cs_flows_init(cs_engine *e);
void cs_flows_free(cs_engine *e);
void cs_count(cs_engine *e, int counter);
/* Account one IP packet (header at ip, len bytes from it); returns the TCP flow or NULL.
 * tv (may be NULL) receives the segment's direction, numbers, flags and payload. */
cs_flow *cs_flow_packet(cs_engine *e, int ipver, const uint8_t *ip, uint32_t len, cs_tcp_view *tv);
void cs_flow_stream_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len);
/* n bytes of dir that the capture does not hold: skipped, counted, told to HTTP and decoders */
void cs_flow_gap(cs_engine *e, cs_flow *f, int dir, uint64_t n);
/* overlapping bytes that differed: both copies, which one was kept (bounded samples) */
void cs_flow_conflict(cs_engine *e, cs_flow *f, int dir, uint64_t off, uint64_t len,
                      const uint8_t *held, const uint8_t *fresh, size_t n, int fresh_kept);
/* stop following f (engine's handle) and end it, whatever the engine */
void cs_flow_release(cs_engine *e, cs_flow *f, enum cs_end why);
void cs_flow_end(cs_engine *e, cs_flow *f, enum cs_end why);
void cs_flows_expire(cs_engine *e);
void cs_flows_flush_all(cs_engine *e);
void cs_flows_release_tracked(cs_engine *e);   /* end input: every followed flow, in order */
void cs_flows_window_edge(cs_engine *e, int64_t edge_us);
void cs_flows_touch(cs_engine *e, cs_flow *f);
void cs_flow_orient(cs_flow *f, int client);
/* nothing of f was handed over yet (no byte, no hole): its sides may still trade places */
static inline int cs_flow_untouched(const cs_flow *f)
{
    return !f->dir[0].stream_bytes && !f->dir[1].stream_bytes &&
           !f->dir[0].missing && !f->dir[1].missing;
}
cs_flow *cs_flow_lookup4(cs_engine *e, uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport);

/* record output helpers (module.c) */
void cs_emit(cs_engine *e, const char *kind, PyObject *dict);
int cs_set(PyObject *d, const char *key, PyObject *v);   /* steals v; NULL v = error; key: a literal */
PyObject *cs_record_dict(void);
PyObject *cs_str(const void *s, size_t len);             /* UTF-8, backslashreplace */
PyObject *cs_hex_digest(EVP_MD_CTX *ctx);
int cs_hex_final(EVP_MD_CTX *ctx, char *out, size_t outlen);   /* 0 = ok */
PyObject *cs_ip_str(int ipver, const uint8_t *ip);
void cs_ip_format(int ipver, const uint8_t *ip, char *buf, size_t len);
extern const EVP_MD *cs_sha256, *cs_sha1;   /* fetched once: implicit fetches cost per call */
PyObject *cs_file_name(cs_engine *e, int file);
void cs_fail(cs_engine *e);                               /* a Python error is set */

/* record.c: one record, built as a dict, as a JSON document, or as a row of its kind's
 * columnar batch (see record.c and columns.c) */
typedef struct cs_rec {
    cs_engine *e;
    int json, err, n, items;
    PyObject *d, *list;
    const char *list_key;
    char *buf;
    size_t len, cap;
    cs_table *t;                  /* columnar: the kind's table */
    void *list_col;               /* ... the list column being filled */
} cs_rec;
int cs_rec_begin(cs_engine *e, cs_rec *r, const char *kind);   /* kind: as cs_rec_end's */
/* dict 0: a columnar kind's row only, even in dual mode (a transaction select() declined) */
int cs_rec_begin_dict(cs_engine *e, cs_rec *r, const char *kind, int dict);
void cs_rec_null(cs_rec *r, const char *k);
void cs_rec_str(cs_rec *r, const char *k, const void *s, size_t n);   /* s NULL: null */
void cs_rec_cstr(cs_rec *r, const char *k, const char *s);
void cs_rec_int(cs_rec *r, const char *k, long long v);
void cs_rec_bool(cs_rec *r, const char *k, int v);
void cs_rec_ts(cs_rec *r, const char *k, int64_t us);
void cs_rec_bytes(cs_rec *r, const char *k, const void *p, size_t n, int present);
void cs_rec_list_begin(cs_rec *r, const char *k);
void cs_rec_item(cs_rec *r, const void *s, size_t n);
void cs_rec_pair(cs_rec *r, const void *a, size_t an, const void *b, size_t bn);
void cs_rec_list_end(cs_rec *r);
void cs_rec_end(cs_rec *r, const char *kind, const char *dataset_key, int64_t timestamp_us);
void cs_iso(int64_t us, char out[32]);
size_t cs_utf8_seq(const uint8_t *s, size_t n, uint32_t *cpp);

/* columns.c: the columnar backend (kinds given at Engine(columns=...)) */
int cs_tables_init(cs_engine *e, PyObject *spec);   /* -1: Python error set */
void cs_tables_free(cs_engine *e);
void cs_tables_flush(cs_engine *e);                 /* emit every batch not yet emitted */
cs_table *cs_table_of(cs_engine *e, const char *kind);
void cs_col_null(cs_rec *r, const char *k);
void cs_col_str(cs_rec *r, const char *k, const void *s, size_t n);
void cs_col_int(cs_rec *r, const char *k, long long v);
void cs_col_bool(cs_rec *r, const char *k, int v);
void cs_col_list_begin(cs_rec *r, const char *k);
void cs_col_item(cs_rec *r, const void *s, size_t n);
void cs_col_pair(cs_rec *r, const void *a, size_t an, const void *b, size_t bn);
void cs_col_list_end(cs_rec *r);
void cs_col_end(cs_rec *r);
const char *cs_key_utf8(const char *key);   /* external name of a record key */


/* http/htp.c: HTTP over a flow's reassembled stream */
int cs_http_init(cs_engine *e);
void cs_http_free_cfg(cs_engine *e);
void cs_http_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len);
void cs_http_close(cs_engine *e, cs_flow *f);
void cs_http_gap(cs_engine *e, cs_flow *f, int dir, uint64_t n);

#endif
