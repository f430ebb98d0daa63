/* HTTP/1.x over a flow's reassembled bytes, through libhtp 0.5 (Suricata's parser).
 *
 * One htp_connp per flow, created when the first bytes look like HTTP. Bodies reach us
 * dechunked and decompressed through the body-data hooks: we hash and count them, and keep
 * the first opt.body_keep bytes. A transaction crosses into Python once, when it completes
 * or when its connection ends (then flagged incomplete). Data libhtp did not consume
 * (HTP_STREAM_DATA_OTHER) is kept, bounded, and fed again once the other direction moved.
 *
 * Capture gaps (the native engine skips holes): libhtp 0.5 has no notion of missing bytes, so
 * it is kept in step by hand. A hole inside a body whose remaining length is known (a
 * Content-Length, an identity body read until close, a chunk whose size we track beside
 * libhtp) is fed as zeros. A hole anywhere else ends the message in hand with the fewest
 * bytes that close it, then what follows is dropped until a message starts. A hole that
 * swallowed the start of a message gets a stand-in message at once, so that requests and
 * responses stay paired; its transaction says which side was lost.
 */
#include "../_core/core.h"

#include <string.h>
#include <htp/htp.h>
#include <brotli/decode.h>

struct cs_http {
    htp_connp_t *connp;
    uint8_t *pending[2];          /* bytes libhtp left unconsumed, per direction */
    size_t pending_len[2];
    uint8_t pre[2][640];          /* first bytes, while undecided whether this is HTTP */
    size_t pre_len[2];
    size_t skip[2];               /* bytes of a SOCKS handshake before the tunnelled stream */
    int socks;                    /* 1: a SOCKS 4/4a/5 handshake was passed */
    int stopped[2];               /* parser error, tunnel or close in that direction */
    int tunnel;
    int unexpected[2];            /* libhtp said "Unexpected ... body": bytes past a message */
    /* capture gaps */
    int skipping[2];              /* bytes are dropped until a message starts */
    uint8_t carry[2][24];         /* a possible message start cut by the end of a chunk */
    size_t carry_len[2];
    int standin[2];               /* a stand-in message is being fed */
    int lost_start[2];            /* a response's start may have been lost: decided when the
                                   * next one starts, by the requests then unanswered */
    uint64_t fed[2];              /* bytes libhtp consumed */
    uint8_t last[2];              /* the last byte libhtp consumed */
    struct chunks {               /* a chunked body, parsed beside libhtp */
        htp_tx_t *tx;
        int state;                /* CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE */
        int digits, broken;
        uint64_t size, left, seen;
    } ch[2];
};

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

typedef struct cs_tx {
    int64_t start_us, end_us;
    cs_pos first, last;
    EVP_MD_CTX *sha[2];
    uint64_t body_len[2];
    uint8_t *keep[2];
    size_t keep_len[2], keep_cap[2];
    int keep_trunc[2];
    int response_only;
    int tunnel;                   /* a CONNECT that opened a tunnel */
    uint64_t extra[2];            /* bytes libhtp passed as body beyond the message's end */
    int decode_failed[2];         /* a content decoder failed: the body is what it produced */
    int decoder_checked[2];
    BrotliDecoderState *br[2];    /* Content-Encoding: br, which libhtp 0.5 does not decode */
    uint64_t br_out[2];
    uint64_t missing[2];          /* bytes of the message the capture does not hold */
    int lost[2];                  /* that side of the exchange was lost to a gap (stand-in) */
} cs_tx;

static const struct { uint64_t bit; const char *name; } tx_flag_names[] = {
    {HTP_FIELD_UNPARSEABLE, "field_unparseable"}, {HTP_FIELD_INVALID, "field_invalid"},
    {HTP_FIELD_FOLDED, "field_folded"}, {HTP_FIELD_REPEATED, "field_repeated"},
    {HTP_FIELD_LONG, "field_long"}, {HTP_FIELD_RAW_NUL, "field_raw_nul"},
    {HTP_REQUEST_SMUGGLING, "request_smuggling"}, {HTP_INVALID_FOLDING, "invalid_folding"},
    {HTP_REQUEST_INVALID_T_E, "request_invalid_transfer_encoding"},
    {HTP_MULTI_PACKET_HEAD, "multi_packet_head"}, {HTP_HOST_MISSING, "host_missing"},
    {HTP_HOST_AMBIGUOUS, "host_ambiguous"}, {HTP_PATH_ENCODED_NUL, "path_encoded_nul"},
    {HTP_PATH_RAW_NUL, "path_raw_nul"}, {HTP_PATH_INVALID_ENCODING, "path_invalid_encoding"},
    {HTP_PATH_INVALID, "path_invalid"}, {HTP_PATH_OVERLONG_U, "path_overlong_u"},
    {HTP_PATH_ENCODED_SEPARATOR, "path_encoded_separator"},
    {HTP_STATUS_LINE_INVALID, "status_line_invalid"}, {HTP_HOSTU_INVALID, "uri_host_invalid"},
    {HTP_HOSTH_INVALID, "header_host_invalid"}, {HTP_REQUEST_INVALID, "request_invalid"},
    {HTP_REQUEST_INVALID_C_L, "request_invalid_content_length"},
    {HTP_AUTH_INVALID, "auth_invalid"}, {HTP_HEADERS_TOO_MANY, "headers_too_many"},
};

static const char *const known_methods[] = {
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
    "CHECKOUT", "MERGE", "MKACTIVITY", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE",
    "BPROPFIND", "BPROPPATCH", "BDELETE", "BMOVE", "BCOPY", "POLL", "LINK", "UNLINK",
    "VERSION-CONTROL", "MKWORKSPACE", "UPDATE", "LABEL", "BASELINE-CONTROL", "ACL", NULL,
};

static cs_engine *engine_of(htp_connp_t *connp) { (void)connp; return cs_the_engine; }

static struct timeval now_tv(cs_engine *e)
{
    struct timeval tv;
    tv.tv_sec = e->now_us / 1000000;
    tv.tv_usec = e->now_us % 1000000;
    return tv;
}

/* ---------- libhtp hooks ---------- */

static cs_tx *tx_info(htp_tx_t *tx)
{
    cs_tx *t = htp_tx_get_user_data(tx);
    if (!t) {
        cs_engine *e = engine_of(tx->connp);
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        t->start_us = t->end_us = e->now_us;
        t->first.file = t->last.file = e->cur_file;
        t->first.frame = t->last.frame = e->cur_frame;
        htp_tx_set_user_data(tx, t);
    }
    return t;
}

/* A transaction's end and last frame are those of the last packet that carried it: not the
 * moment its connection was flushed (end of capture, timeout, end of a window). */
static int closing;

static void tx_touch(cs_engine *e, cs_tx *t)
{
    if (closing) return;
    if (e->now_us > t->end_us) t->end_us = e->now_us;
    t->last.file = e->cur_file;
    t->last.frame = e->cur_frame;
}

static int on_request_start(htp_tx_t *tx)
{
    cs_flow *f = htp_connp_get_user_data(tx->connp);
    if (f && f->http) f->http->unexpected[CS_C2S] = 0;
    cs_tx *t = tx_info(tx);
    if (!t) return HTP_ERROR;
    if (f && f->http && f->http->standin[CS_C2S]) t->lost[CS_C2S] = t->response_only = 1;
    return HTP_OK;
}

static int on_response_start(htp_tx_t *tx)
{
    cs_flow *f = htp_connp_get_user_data(tx->connp);
    if (f && f->http) f->http->unexpected[CS_S2C] = 0;
    int fresh = htp_tx_get_user_data(tx) == NULL;
    cs_tx *t = tx_info(tx);
    if (!t) return HTP_ERROR;
    if (fresh) t->response_only = 1;
    if (f && f->http && f->http->standin[CS_S2C]) t->lost[CS_S2C] = 1;
    tx_touch(engine_of(tx->connp), t);
    return HTP_OK;
}

static int body_bytes(cs_engine *e, cs_tx *t, int dir, const uint8_t *p, size_t n)
{
    if (!n) return HTP_OK;
    if (!t->sha[dir]) {
        t->sha[dir] = EVP_MD_CTX_new();
        if (!t->sha[dir] || !EVP_DigestInit_ex(t->sha[dir], cs_sha256, NULL)) return HTP_ERROR;
    }
    EVP_DigestUpdate(t->sha[dir], p, n);
    t->body_len[dir] += n;
    if (e->opt.body_keep) {
        size_t room = e->opt.body_keep - t->keep_len[dir];
        size_t take = n < room ? n : room;
        if (take) {
            /* grown as the body comes: with decoders the limit is 64 MiB, most bodies are
             * small, and allocating the limit for each costs a mapping per body */
            size_t need = t->keep_len[dir] + take;
            if (need > t->keep_cap[dir]) {
                size_t cap = t->keep_cap[dir] ? t->keep_cap[dir] : 4096;
                while (cap < need) cap *= 2;
                if (cap > e->opt.body_keep) cap = e->opt.body_keep;
                uint8_t *nb = realloc(t->keep[dir], cap);
                if (!nb) return HTP_ERROR;
                t->keep[dir] = nb;
                t->keep_cap[dir] = cap;
            }
            memcpy(t->keep[dir] + t->keep_len[dir], p, take);
            t->keep_len[dir] += take;
        }
        if (take < n) t->keep_trunc[dir] = 1;
    }
    return HTP_OK;
}

static int has_token(htp_table_t *headers, const char *name, const char *token)
{
    htp_header_t *h = headers ? htp_table_get_c(headers, name) : NULL;
    return h && h->value && bstr_util_mem_index_of_c_nocase(bstr_ptr(h->value), bstr_len(h->value), token) >= 0;
}

/* Brotli, bounded by the same bomb limit libhtp applies to gzip. */
static int brotli_bytes(cs_engine *e, cs_tx *t, int dir, const uint8_t *p, size_t n)
{
    uint8_t out[16384];
    size_t avail_in = n;
    const uint8_t *next_in = p;
    for (;;) {
        size_t avail_out = sizeof out;
        uint8_t *next_out = out;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(t->br[dir], &avail_in, &next_in,
                                                              &avail_out, &next_out, NULL);
        size_t got = sizeof out - avail_out;
        if (got && body_bytes(e, t, dir, out, got) != HTP_OK) return HTP_ERROR;
        t->br_out[dir] += got;
        if (r == BROTLI_DECODER_RESULT_ERROR || t->br_out[dir] > e->opt.bomb_limit) {
            t->decode_failed[dir] = 1;
            BrotliDecoderDestroyInstance(t->br[dir]);
            t->br[dir] = NULL;
            return HTP_OK;
        }
        if (r != BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) return HTP_OK;
    }
}

/* one direction of a transaction */
static int tx_progress(htp_tx_t *tx, int dir)
{
    return dir == CS_C2S ? (int)tx->request_progress : (int)tx->response_progress;
}

static int tx_coding(htp_tx_t *tx, int dir)
{
    return dir == CS_C2S ? (int)tx->request_transfer_coding : (int)tx->response_transfer_coding;
}

static int64_t tx_message_len(htp_tx_t *tx, int dir)
{
    return dir == CS_C2S ? tx->request_message_len : tx->response_message_len;
}

static int64_t tx_content_len(htp_tx_t *tx, int dir)
{
    return dir == CS_C2S ? tx->request_content_length : tx->response_content_length;
}

static int body_data(htp_tx_data_t *d, int dir)
{
    cs_engine *e = engine_of(d->tx->connp);
    htp_tx_t *tx = d->tx;
    cs_tx *t = tx_info(tx);
    if (!t) return HTP_ERROR;
    tx_touch(e, t);
    if (!d->data || !d->len) return HTP_OK;
    const uint8_t *p = d->data;
    size_t n = d->len;
    /* libhtp (like Suricata) hands bytes that follow a finished message, or that exceed its
     * Content-Length, to that message's body hook. They stay in the body (hiding data past
     * a forged length is an evasion); the transaction is flagged instead. */
    cs_flow *f = htp_connp_get_user_data(tx->connp);
    int64_t cl = tx_content_len(tx, dir);
    if ((f && f->http && f->http->unexpected[dir]) || (dir == CS_C2S && tx->is_protocol_0_9) ||
        (tx_coding(tx, dir) == HTP_CODING_IDENTITY && cl >= 0 && tx_message_len(tx, dir) > cl))
        t->extra[dir] += n;
    int plain = (dir == CS_C2S ? tx->request_content_encoding
                               : tx->response_content_encoding_processing) <= HTP_COMPRESSION_NONE;
    if (!t->decoder_checked[dir]) {
        t->decoder_checked[dir] = 1;
        htp_table_t *hs = dir == CS_C2S ? tx->request_headers : tx->response_headers;
        if (plain && has_token(hs, "content-encoding", "br"))
            t->br[dir] = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    }
    if (t->br[dir]) return brotli_bytes(e, t, dir, p, n);
    if (!plain) {
        /* libhtp calls a body a bomb only past a 2048:1 ratio, and its time limit depends on
         * the machine: cap what its decompressors hand us at the same bound as brotli. */
        if (t->body_len[dir] >= e->opt.bomb_limit) {
            t->decode_failed[dir] = t->keep_trunc[dir] = 1;
            return HTP_OK;
        }
        if (n > e->opt.bomb_limit - t->body_len[dir]) {
            n = e->opt.bomb_limit - t->body_len[dir];
            t->decode_failed[dir] = t->keep_trunc[dir] = 1;
        }
    }
    return body_bytes(e, t, dir, p, n);
}

static int on_request_body(htp_tx_data_t *d) { return body_data(d, CS_C2S); }
static int on_response_body(htp_tx_data_t *d) { return body_data(d, CS_S2C); }

static void report(cs_engine *e, cs_flow *f, htp_tx_t *tx);

/* A CONNECT answered 2xx opens a tunnel: what follows is not HTTP to this connection, even
 * when libhtp did not see it so (a malformed CONNECT request, say). */
static int on_response_headers(htp_tx_t *tx)
{
    cs_flow *f = htp_connp_get_user_data(tx->connp);
    if (f && f->http && tx->request_method_number == HTP_M_CONNECT &&
        tx->response_status_number >= 200 && tx->response_status_number < 300) {
        f->http->tunnel = 1;
        f->http->stopped[CS_C2S] = f->http->stopped[CS_S2C] = 1;
        cs_tx *t = htp_tx_get_user_data(tx);
        if (t) t->tunnel = 1;
    }
    return HTP_OK;
}

static int on_tx_complete(htp_tx_t *tx)
{
    cs_engine *e = engine_of(tx->connp);
    cs_flow *f = htp_connp_get_user_data(tx->connp);
    if (f) report(e, f, tx);
    return HTP_OK;
}

static int on_log(htp_log_t *log)
{
    cs_engine *e = cs_the_engine;
    if (log->msg && log->connp && strncmp(log->msg, "Unexpected ", 11) == 0) {
        /* libhtp goes on to hand these bytes to the body hook of the finished message */
        cs_flow *f = htp_connp_get_user_data(log->connp);
        if (f && f->http) f->http->unexpected[strstr(log->msg, "response") ? CS_S2C : CS_C2S] = 1;
    }
    if (log->msg && log->connp && strstr(log->msg, "decompressor")) {
        /* libhtp then passes on what the decoder made of it: flag the body it belongs to */
        htp_tx_t *in = htp_connp_get_in_tx(log->connp), *out = htp_connp_get_out_tx(log->connp);
        int dir = in && in->request_progress == HTP_REQUEST_BODY ? CS_C2S : CS_S2C;
        htp_tx_t *tx = log->tx ? log->tx : dir == CS_C2S ? in : out;
        cs_tx *t = tx ? htp_tx_get_user_data(tx) : NULL;
        if (t) t->decode_failed[dir] = 1;
    }
    if (!e || !e->http_log || !log->msg || log->level > HTP_LOG_WARNING) return HTP_OK;
    PyObject *k = PyUnicode_DecodeUTF8(log->msg, strnlen(log->msg, 200), "backslashreplace");
    if (!k) { PyErr_Clear(); return HTP_OK; }
    PyObject *n = PyDict_GetItemWithError(e->http_log, k);
    if (n || PyDict_GET_SIZE(e->http_log) < 200) {
        long v = n ? PyLong_AsLong(n) + 1 : 1;
        PyObject *nv = PyLong_FromLong(v);
        if (nv) PyDict_SetItem(e->http_log, k, nv);
        Py_XDECREF(nv);
    }
    PyErr_Clear();
    Py_DECREF(k);
    return HTP_OK;
}

int cs_http_init(cs_engine *e)
{
    htp_cfg_t *cfg = htp_config_create();
    if (!cfg) return -1;
    htp_config_set_server_personality(cfg, HTP_SERVER_IDS);
    htp_config_set_response_decompression(cfg, 1);
    htp_config_set_request_decompression(cfg, 1);
    htp_config_set_response_decompression_layer_limit(cfg, 4);
    htp_config_set_compression_bomb_limit(cfg, e->opt.bomb_limit);
    htp_config_set_compression_time_limit(cfg, e->opt.decompress_time_limit);
    htp_config_set_tx_auto_destroy(cfg, 1);
    htp_config_set_log_level(cfg, HTP_LOG_WARNING);
    htp_config_register_request_start(cfg, on_request_start);
    htp_config_register_response_start(cfg, on_response_start);
    htp_config_register_response_headers(cfg, on_response_headers);
    htp_config_register_request_body_data(cfg, on_request_body);
    htp_config_register_response_body_data(cfg, on_response_body);
    htp_config_register_transaction_complete(cfg, on_tx_complete);
    htp_config_register_log(cfg, on_log);
    e->http_cfg = cfg;
    return 0;
}

void cs_http_free_cfg(cs_engine *e)
{
    if (e->http_cfg) htp_config_destroy(e->http_cfg);
    e->http_cfg = NULL;
}

/* ---------- records ---------- */

static void rec_bstr(cs_rec *r, const char *k, bstr *b)
{
    if (b) cs_rec_str(r, k, bstr_ptr(b), bstr_len(b));
    else cs_rec_null(r, k);
}

static void rec_header(cs_rec *r, const char *k, htp_table_t *t, const char *name)
{
    htp_header_t *h = t ? htp_table_get_c(t, name) : NULL;
    rec_bstr(r, k, h ? h->value : NULL);
}

static void rec_headers(cs_rec *r, const char *k, htp_table_t *t)
{
    size_t n = t ? htp_table_size(t) : 0;
    cs_rec_list_begin(r, k);
    for (size_t i = 0; i < n; i++) {
        htp_header_t *h = htp_table_get_index(t, i, NULL);
        if (h && h->name && h->value)
            cs_rec_pair(r, bstr_ptr(h->name), bstr_len(h->name), bstr_ptr(h->value), bstr_len(h->value));
    }
    cs_rec_list_end(r);
}

static void rec_flags(cs_rec *r, const char *k, uint64_t flags, const cs_tx *t)
{
    static const char *const ours[2][4] = {
        {"request_bytes_after_body", "request_body_decoding_failed", "request_gap",
         "request_lost_in_gap"},
        {"response_bytes_after_body", "response_body_decoding_failed", "response_gap",
         "response_lost_in_gap"},
    };
    cs_rec_list_begin(r, k);
    for (size_t i = 0; i < sizeof tx_flag_names / sizeof *tx_flag_names; i++)
        if (flags & tx_flag_names[i].bit)
            cs_rec_item(r, tx_flag_names[i].name, strlen(tx_flag_names[i].name));
    for (int d = 0; d < 2; d++) {
        if (t->extra[d]) cs_rec_item(r, ours[d][0], strlen(ours[d][0]));
        if (t->decode_failed[d]) cs_rec_item(r, ours[d][1], strlen(ours[d][1]));
        if (t->missing[d]) cs_rec_item(r, ours[d][2], strlen(ours[d][2]));
        if (t->lost[d]) cs_rec_item(r, ours[d][3], strlen(ours[d][3]));
    }
    cs_rec_list_end(r);
}

static const char *sha_hex(EVP_MD_CTX *c, char out[65])
{
    return c && !cs_hex_final(c, out, 65) ? out : NULL;
}

static const char *tx_state(htp_tx_t *tx, cs_tx *t)
{
    int req = tx->request_progress, res = tx->response_progress;
    if (t->tunnel) return "complete";       /* CONNECT answered: the rest is tunnel data */
    /* libhtp completes a message when its connection closes; short of its Content-Length
     * it was cut (capture loss, or the capture ended), not complete */
    if (req >= HTP_REQUEST_COMPLETE && tx->request_content_length > 0 &&
        tx->request_message_len < tx->request_content_length)
        req = HTP_REQUEST_BODY;
    if (res >= HTP_RESPONSE_COMPLETE && tx->response_content_length > 0 &&
        tx->response_message_len < tx->response_content_length &&
        tx->response_transfer_coding == HTP_CODING_IDENTITY)
        res = HTP_RESPONSE_BODY;
    if (t->lost[CS_S2C]) res = HTP_RESPONSE_NOT_STARTED;     /* a stand-in */
    if (t->response_only) return res >= HTP_RESPONSE_COMPLETE ? "response_only" : "partial_response_only";
    if (req < HTP_REQUEST_COMPLETE) return res > HTP_RESPONSE_NOT_STARTED ? "partial_request" : "partial_request_no_response";
    if (res == HTP_RESPONSE_NOT_STARTED) return "no_response";
    if (res < HTP_RESPONSE_COMPLETE) return "partial_response";
    return "complete";
}

static bstr *uri_part(htp_uri_t *u, int which)
{
    if (!u) return NULL;
    return which == 0 ? u->path : which == 1 ? u->query : which == 2 ? u->scheme : u->hostname;
}

/* jsonl only: what c2scribe/schema.py derives for the dict path (_http_version, _url_full). */
static void derived(cs_rec *r, cs_flow *f, htp_tx_t *tx, int no_request, int has_response)
{
    char id[48];
    snprintf(id, sizeof id, "%s-%zu", f->id, tx->index + 1);
    cs_rec_cstr(r, "tx_id", id);
    bstr *proto = no_request ? NULL : tx->request_protocol;
    if (!proto || !bstr_len(proto)) proto = has_response ? tx->response_protocol : NULL;
    if (tx->is_protocol_0_9) cs_rec_cstr(r, "version", "0.9");
    else if (proto && bstr_len(proto) >= 5 && strncasecmp((char *)bstr_ptr(proto), "HTTP/", 5) == 0)
        cs_rec_str(r, "version", bstr_ptr(proto) + 5, bstr_len(proto) - 5);
    else cs_rec_null(r, "version");
    bstr *host = tx->request_hostname, *uri = no_request ? NULL : tx->request_uri;
    bstr *method = no_request ? NULL : tx->request_method;
    int is_connect = method && bstr_len(method) == 7 && memcmp(bstr_ptr(method), "CONNECT", 7) == 0;
    if (!host || !bstr_len(host) || !uri || is_connect) cs_rec_null(r, "url_full");
    else if (bstr_util_mem_index_of_c(bstr_ptr(uri), bstr_len(uri), "://") >= 0)
        cs_rec_str(r, "url_full", bstr_ptr(uri), bstr_len(uri));
    else if (!bstr_len(uri) || bstr_ptr(uri)[0] != '/') cs_rec_null(r, "url_full");
    else {
        size_t hl = bstr_len(host), ul = bstr_len(uri);
        char port[16] = "";
        int pn = tx->request_port_number;
        if (pn > 0 && pn != 80) snprintf(port, sizeof port, ":%d", pn);
        size_t pl = strlen(port), n = 7 + hl + pl + ul;
        char *full = malloc(n);
        if (!full) { r->err = 1; return; }
        memcpy(full, "http://", 7);
        memcpy(full + 7, bstr_ptr(host), hl);
        memcpy(full + 7 + hl, port, pl);
        memcpy(full + 7 + hl + pl, bstr_ptr(uri), ul);
        cs_rec_str(r, "url_full", full, n);
        free(full);
    }
    cs_rec_cstr(r, "network_type", f->ipver == 4 ? "ipv4" : "ipv6");
}

static void tx_free(cs_tx *t)
{
    for (int i = 0; i < 2; i++) {
        if (t->br[i]) BrotliDecoderDestroyInstance(t->br[i]);
        if (t->sha[i]) EVP_MD_CTX_free(t->sha[i]);
        free(t->keep[i]);
    }
    free(t);
}

static PyObject *bstr_or_none(bstr *b)
{
    return b ? cs_str(bstr_ptr(b), bstr_len(b)) : Py_NewRef(Py_None);
}

static PyObject *header_or_none(htp_table_t *t, const char *name)
{
    htp_header_t *h = t ? htp_table_get_c(t, name) : NULL;
    return bstr_or_none(h ? h->value : NULL);
}

/* Dual mode with a selector: e->select(conn_id, index, file, frame, method, uri, host, path,
 * headers, x_forwarded_for, user_agent, src_ip, src_port, dst_ip, dst_port), the fields of
 * a decoder's RequestHead with the values the transaction's record has (host: the
 * record's hostname, else its host_header). 1: build its dict, 0: its columnar row only,
 * -1: a Python error. */
static int selected(cs_engine *e, cs_flow *f, htp_tx_t *tx, cs_tx *t, int no_request,
                    PyObject *file)
{
    htp_table_t *rqh = t->lost[CS_C2S] ? NULL : tx->request_headers;
    htp_uri_t *ru = t->lost[CS_C2S] ? NULL : tx->parsed_uri_raw;
    bstr *host = t->lost[CS_C2S] ? NULL : tx->request_hostname;
    if (!host || !bstr_len(host)) {
        htp_header_t *h = rqh ? htp_table_get_c(rqh, "host") : NULL;
        host = h ? h->value : NULL;
    }
    size_t n = rqh ? htp_table_size(rqh) : 0;
    PyObject *headers = PyList_New(0);
    for (size_t i = 0; headers && i < n; i++) {
        htp_header_t *h = htp_table_get_index(rqh, i, NULL);
        if (!h || !h->name || !h->value) continue;
        PyObject *p = Py_BuildValue("(NN)", cs_str(bstr_ptr(h->name), bstr_len(h->name)),
                                    cs_str(bstr_ptr(h->value), bstr_len(h->value)));
        if (!p || PyList_Append(headers, p)) Py_CLEAR(headers);
        Py_XDECREF(p);
    }
    if (!headers) return -1;
    PyObject *res = PyObject_CallFunction(
        e->select, "snOLNNNNNNNsisi", f->id, (Py_ssize_t)tx->index + 1,
        file ? file : Py_None, (long long)t->first.frame,
        bstr_or_none(no_request ? NULL : tx->request_method),
        bstr_or_none(no_request ? NULL : tx->request_uri), bstr_or_none(host),
        bstr_or_none(uri_part(ru, 0)), headers,
        header_or_none(rqh, "x-forwarded-for"), header_or_none(rqh, "user-agent"),
        f->ip_text[0], (int)f->port[0], f->ip_text[1], (int)f->port[1]);
    int want = res ? PyObject_IsTrue(res) : -1;
    Py_XDECREF(res);
    return want;
}

static void report(cs_engine *e, cs_flow *f, htp_tx_t *tx)
{
    cs_tx *t = htp_tx_get_user_data(tx);
    if (!t) return;
    htp_tx_set_user_data(tx, NULL);
    f->http_tx++;
    cs_count(e, CSC_HTTP_TRANSACTIONS);
    int has_response = tx->response_progress > HTP_RESPONSE_NOT_STARTED && !t->lost[CS_S2C];
    int no_request = t->response_only;
    PyObject *ff = cs_file_name(e, t->first.file), *fl = cs_file_name(e, t->last.file);
    int dict = 1;
    cs_rec r;
    if (!e->py_error && e->select && (dict = selected(e, f, tx, t, no_request, ff)) < 0)
        cs_fail(e);
    if (e->py_error || cs_rec_begin_dict(e, &r, "http", dict)) {
        Py_XDECREF(ff);
        Py_XDECREF(fl);
        tx_free(t);
        return;
    }
    char sha[2][65];
    cs_rec_cstr(&r, "conn_id", f->id);
    cs_rec_cstr(&r, "community_id", f->community_id);
    cs_rec_int(&r, "index", (long long)tx->index + 1);
    cs_rec_ts(&r, "start_us", t->start_us);
    cs_rec_ts(&r, "end_us", t->end_us);
    cs_rec_int(&r, "ip_version", f->ipver);
    cs_rec_cstr(&r, "src_ip", f->ip_text[0]);
    cs_rec_int(&r, "src_port", f->port[0]);
    cs_rec_cstr(&r, "dst_ip", f->ip_text[1]);
    cs_rec_int(&r, "dst_port", f->port[1]);
    rec_bstr(&r, "method", no_request ? NULL : tx->request_method);
    rec_bstr(&r, "uri", no_request ? NULL : tx->request_uri);
    rec_bstr(&r, "request_protocol", no_request ? NULL : tx->request_protocol);
    cs_rec_bool(&r, "http_09", tx->is_protocol_0_9);
    /* a stand-in for a request lost to a gap has nothing of the real one */
    htp_table_t *rqh = t->lost[CS_C2S] ? NULL : tx->request_headers;
    htp_uri_t *ru = t->lost[CS_C2S] ? NULL : tx->parsed_uri_raw;
    rec_bstr(&r, "hostname", t->lost[CS_C2S] ? NULL : tx->request_hostname);
    rec_header(&r, "host_header", rqh, "host");
    rec_bstr(&r, "url_scheme", uri_part(ru, 2));
    rec_bstr(&r, "url_path", uri_part(ru, 0));
    rec_bstr(&r, "url_query", uri_part(ru, 1));
    if (tx->request_port_number > 0 && !t->lost[CS_C2S])
        cs_rec_int(&r, "url_port", tx->request_port_number);
    else cs_rec_null(&r, "url_port");
    rec_header(&r, "user_agent", rqh, "user-agent");
    rec_header(&r, "referrer", rqh, "referer");
    rec_header(&r, "x_forwarded_for", rqh, "x-forwarded-for");
    rec_header(&r, "request_content_type", rqh, "content-type");
    rec_headers(&r, "request_headers", rqh);
    cs_rec_int(&r, "request_body_bytes", (long long)t->body_len[CS_C2S]);
    cs_rec_int(&r, "request_body_wire_bytes", tx->request_message_len > 0 && !t->lost[CS_C2S]
                                              ? tx->request_message_len : 0);
    /* a body with a hole has no meaningful hash: null, and its missing bytes are given */
    cs_rec_cstr(&r, "request_body_sha256", t->missing[CS_C2S] ? NULL : sha_hex(t->sha[CS_C2S], sha[0]));
    cs_rec_int(&r, "request_missing_bytes", (long long)t->missing[CS_C2S]);
    cs_rec_bytes(&r, "request_body", t->keep[CS_C2S], t->keep_len[CS_C2S], e->opt.body_keep > 0);
    cs_rec_bool(&r, "request_body_truncated", t->keep_trunc[CS_C2S]);
    if (has_response && tx->response_status_number > 0)
        cs_rec_int(&r, "status_code", tx->response_status_number);
    else cs_rec_null(&r, "status_code");
    rec_bstr(&r, "status_text", has_response ? tx->response_status : NULL);
    rec_bstr(&r, "status_phrase", has_response ? tx->response_message : NULL);
    rec_bstr(&r, "response_protocol", has_response ? tx->response_protocol : NULL);
    htp_table_t *rsh = has_response ? tx->response_headers : NULL;
    rec_header(&r, "response_content_type", rsh, "content-type");
    rec_headers(&r, "response_headers", rsh);
    cs_rec_int(&r, "response_body_bytes", (long long)t->body_len[CS_S2C]);
    cs_rec_int(&r, "response_body_wire_bytes", tx->response_message_len > 0 && has_response
                                               ? tx->response_message_len : 0);
    cs_rec_cstr(&r, "response_body_sha256", t->missing[CS_S2C] ? NULL : sha_hex(t->sha[CS_S2C], sha[1]));
    cs_rec_int(&r, "response_missing_bytes", (long long)t->missing[CS_S2C]);
    cs_rec_bytes(&r, "response_body", t->keep[CS_S2C], t->keep_len[CS_S2C], e->opt.body_keep > 0);
    cs_rec_bool(&r, "response_body_truncated", t->keep_trunc[CS_S2C]);
    cs_rec_bool(&r, "continue_100", tx->seen_100continue);
    cs_rec_cstr(&r, "state", tx_state(tx, t));
    rec_flags(&r, "flags", t->lost[CS_C2S] ? 0 : tx->flags, t);   /* not the stand-in's */
    cs_rec_bool(&r, "tunnel", t->tunnel || (f->http && f->http->tunnel &&
                                            tx->request_method_number == HTP_M_CONNECT));
    cs_rec_cstr(&r, "file_first", ff && ff != Py_None ? PyUnicode_AsUTF8(ff) : NULL);
    cs_rec_int(&r, "frame_first", (long long)t->first.frame);
    cs_rec_cstr(&r, "file_last", fl && fl != Py_None ? PyUnicode_AsUTF8(fl) : NULL);
    cs_rec_int(&r, "frame_last", (long long)t->last.frame);
    Py_XDECREF(ff);
    Py_XDECREF(fl);
    if (r.json || r.t) derived(&r, f, tx, no_request, has_response);
    int64_t start = t->start_us;
    tx_free(t);
    cs_rec_end(&r, "http", "dataset:http", start);
}

/* ---------- feeding ---------- */

static int is_token_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* 1 = HTTP, -1 = not HTTP, 0 = need more bytes. */
static int classify(int dir, const uint8_t *p, size_t n)
{
    if (dir == CS_S2C) {
        if (n < 5) return memcmp(p, "HTTP/", n) == 0 ? 0 : -1;
        return strncasecmp((const char *)p, "HTTP/", 5) == 0 ? 1 : -1;
    }
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n')) i++;      /* leading blank lines */
    size_t start = i;
    while (i < n && i - start <= 24 && is_token_char(p[i])) i++;
    if (i == n) return i - start <= 24 ? 0 : -1;
    if (p[i] != ' ' || i == start) return -1;
    if (n - start >= 14 && memcmp(p + start, "PRI * HTTP/2.0", 14) == 0)
        return -1;                                  /* HTTP/2 with prior knowledge (h2c) */
    const uint8_t *eol = memchr(p + i, '\n', n - i);
    if (eol) {
        /* a request line ending in another protocol's version (SIP/2.0, RTSP/1.0) is not HTTP */
        size_t ll = eol - p;
        if (ll && p[ll - 1] == '\r') ll--;
        const uint8_t *sp = p + ll;
        while (sp > p + i && sp[-1] != ' ') sp--;
        const uint8_t *slash = memchr(sp, '/', p + ll - sp);
        if (slash && slash > sp && (slash - sp != 4 || strncasecmp((const char *)sp, "HTTP", 4) != 0)) {
            int alpha = 1;
            for (const uint8_t *q = sp; q < slash; q++) alpha &= (*q >= 'A' && *q <= 'Z');
            if (alpha && slash + 1 < p + ll && slash[1] >= '0' && slash[1] <= '9') return -1;
        }
    }
    for (int k = 0; known_methods[k]; k++)
        if (strlen(known_methods[k]) == i - start && memcmp(known_methods[k], p + start, i - start) == 0)
            return 1;
    /* Unknown method: HTTP if the request line ends in HTTP/x.y; otherwise it may still be
     * (an odd method), and the server's answer will tell (see cs_http_data). */
    const uint8_t *nl = memchr(p + i, '\n', n - i);
    if (!nl) return 0;
    size_t ll = nl - p;
    if (ll && p[ll - 1] == '\r') ll--;
    const uint8_t *sp = p + ll;
    while (sp > p + i && sp[-1] != ' ') sp--;      /* last word of the request line */
    return sp > p + i && p + ll - sp > 5 && strncasecmp((const char *)sp, "HTTP/", 5) == 0 ? 1 : 0;
}

/* ---------- chunked bodies, followed beside libhtp (to fill gaps inside them) ---------- */

static htp_tx_t *current_tx(cs_http *h, int dir)
{
    return dir == CS_C2S ? htp_connp_get_in_tx(h->connp) : htp_connp_get_out_tx(h->connp);
}

static int hexval(uint8_t c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The chunk framing of body bytes libhtp consumed: where the next gap falls. */
static void chunk_bytes(struct chunks *c, const uint8_t *p, size_t n)
{
    c->seen += n;
    for (size_t i = 0; i < n && !c->broken; i++) {
        uint8_t b = p[i];
        switch (c->state) {
        case CH_SIZE:
            if (b == '\n') {
                if (!c->digits) { c->broken = 1; break; }
                c->state = c->size ? CH_DATA : CH_TRAILER;
                c->left = c->size;
                c->digits = 0;
            } else if (c->digits < 0) {
                /* past the size: extensions, blanks, CR, ignored to the end of the line */
            } else if (hexval(b) >= 0) {
                if (c->size >> 56) { c->broken = 1; break; }
                c->size = c->size * 16 + (uint64_t)hexval(b);
                c->digits++;
            } else if ((b == ' ' || b == '\t') && !c->digits) {
                /* leading blanks */
            } else if (c->digits > 0) {
                c->digits = -c->digits;
            } else {
                c->broken = 1;
            }
            break;
        case CH_DATA: {
            size_t k = n - i < c->left ? n - i : (size_t)c->left;
            c->left -= k;
            i += k - 1;
            if (!c->left) c->state = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (b == '\n') { c->state = CH_SIZE; c->size = 0; c->digits = 0; }
            break;
        case CH_TRAILER:                /* header lines until an empty one */
            if (b == '\n') {
                if (c->digits == 0) c->state = CH_DONE;
                c->digits = 0;
            } else if (b != '\r') c->digits = 1;
            break;
        default:
            break;
        }
    }
}

static void track(cs_http *h, int dir, const uint8_t *d, size_t consumed)
{
    uint64_t before = h->fed[dir];
    h->fed[dir] += consumed;
    if (consumed) h->last[dir] = d[consumed - 1];
    struct chunks *c = &h->ch[dir];
    htp_tx_t *tx = current_tx(h, dir);
    /* (HTP_REQUEST_BODY and _TRAILER have the values of HTP_RESPONSE_BODY and _TRAILER) */
    if (!tx || tx_coding(tx, dir) != HTP_CODING_CHUNKED ||
        (tx_progress(tx, dir) != HTP_REQUEST_BODY && tx_progress(tx, dir) != HTP_REQUEST_TRAILER)) {
        c->tx = NULL;
        return;
    }
    int64_t ml = tx_message_len(tx, dir);
    if (c->tx != tx) {
        memset(c, 0, sizeof *c);
        c->tx = tx;
        uint64_t start = h->fed[dir] - (uint64_t)(ml > 0 ? ml : 0);
        if (ml < 0 || start < before) { c->broken = 1; return; }
        chunk_bytes(c, d + (start - before), (size_t)(h->fed[dir] - start));
    } else if (!c->broken) {
        chunk_bytes(c, d, consumed);
    }
    /* libhtp counts the body's bytes on the wire too: the two must agree */
    if (tx_progress(tx, dir) == HTP_REQUEST_BODY && c->seen != (uint64_t)ml) c->broken = 1;
}

static int feed_parser(cs_engine *e, cs_http *h, int dir, const uint8_t *d, size_t n, size_t *consumed)
{
    struct timeval tv = now_tv(e);
    int rc = dir == CS_C2S ? htp_connp_req_data(h->connp, &tv, d, n)
                           : htp_connp_res_data(h->connp, &tv, d, n);
    *consumed = n;
    if (rc == HTP_STREAM_DATA_OTHER)
        *consumed = dir == CS_C2S ? htp_connp_req_data_consumed(h->connp)
                                  : htp_connp_res_data_consumed(h->connp);
    else if (rc == HTP_STREAM_TUNNEL)
        h->tunnel = h->stopped[0] = h->stopped[1] = 1;
    else if (rc == HTP_STREAM_ERROR) {
        cs_count(e, CSC_HTTP_PARSER_ERRORS);
        h->stopped[dir] = 1;
    } else if (rc == HTP_STREAM_CLOSED || rc == HTP_STREAM_STOP)
        h->stopped[dir] = 1;
    track(h, dir, d, *consumed);
    return rc;
}

static void stash(cs_engine *e, cs_http *h, int dir, const uint8_t *d, size_t n)
{
    size_t room = e->opt.http_pending_max > h->pending_len[dir] ? e->opt.http_pending_max - h->pending_len[dir] : 0;
    size_t take = n < room ? n : room;
    if (take < n) e->counters[CSC_HTTP_PENDING_DROPPED] += n - take;
    if (!take) return;
    uint8_t *p = realloc(h->pending[dir], h->pending_len[dir] + take);
    if (!p) return;
    memcpy(p + h->pending_len[dir], d, take);
    h->pending[dir] = p;
    h->pending_len[dir] += take;
}

/* Feed what libhtp left over in dir; stop when it makes no progress. */
static void retry_pending(cs_engine *e, cs_http *h, int dir)
{
    while (h->pending_len[dir] && !h->stopped[dir]) {
        uint8_t *buf = h->pending[dir];
        size_t n = h->pending_len[dir], used;
        h->pending[dir] = NULL;
        h->pending_len[dir] = 0;
        feed_parser(e, h, dir, buf, n, &used);
        if (used < n) stash(e, h, dir, buf + used, n - used);
        free(buf);
        if (used == 0) break;
    }
}

static void feed(cs_engine *e, cs_http *h, int dir, const uint8_t *d, size_t n)
{
    if (h->stopped[dir] || !n) return;
    if (h->pending_len[dir]) {
        stash(e, h, dir, d, n);                 /* keep order behind what is waiting */
        retry_pending(e, h, dir);
    } else {
        size_t used;
        feed_parser(e, h, dir, d, n, &used);
        if (used < n) stash(e, h, dir, d + used, n - used);
    }
    if (h->pending_len[!dir]) retry_pending(e, h, !dir);
}

/* ---------- capture gaps ---------- */

#define FILL_MAX ((uint64_t)64 << 20)   /* zeros fed for one gap, at most */
#define FILL_FREE ((uint64_t)256 << 20) /* ... in all, plus FILL_RATIO x the capture bytes */
#define FILL_RATIO 4

/* May n zeros stand in for lost bytes? Each gap is bounded, and so are all of them together,
 * by what the capture holds: a few crafted packets (a huge Content-Length, then a segment
 * far ahead) must not make the engine parse and hash gigabytes of zeros. */
static int fill_budget(cs_engine *e, uint64_t n)
{
    if (e->http_filled + n <= FILL_FREE + FILL_RATIO * e->counters[CSC_BYTES]) return 1;
    cs_count(e, CSC_HTTP_FILL_BUDGET);
    return 0;
}

static int may_fill(cs_engine *e, uint64_t n)
{
    return n <= FILL_MAX && fill_budget(e, n);
}

static void feed_zeros(cs_engine *e, cs_http *h, int dir, uint64_t n)
{
    static const uint8_t zeros[65536];
    e->http_filled += n;
    while (n && !h->stopped[dir]) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        feed(e, h, dir, zeros, k);
        n -= k;
    }
}

/* The start of a message was lost: a stand-in keeps requests and responses paired. */
static void feed_standin(cs_engine *e, cs_http *h, int dir)
{
    static const char req[] = "GAP /c2scribe-gap HTTP/1.1\r\n\r\n";
    static const char res[] = "HTTP/1.1 599 c2scribe-gap\r\nContent-Length: 0\r\n\r\n";
    h->standin[dir] = 1;
    if (dir == CS_C2S) feed(e, h, dir, (const uint8_t *)req, sizeof req - 1);
    else feed(e, h, dir, (const uint8_t *)res, sizeof res - 1);
    h->standin[dir] = 0;
}

/* Requests parsed whose response has not started: how many, and the oldest (first). */
static int unanswered(cs_http *h, htp_tx_t **first)
{
    htp_conn_t *conn = htp_connp_get_connection(h->connp);
    int n = 0;
    size_t k = conn && conn->transactions ? htp_list_size(conn->transactions) : 0;
    if (first) *first = NULL;
    for (size_t i = 0; i < k; i++) {
        htp_tx_t *tx = htp_list_get(conn->transactions, i);
        if (tx && tx->request_progress > HTP_REQUEST_NOT_STARTED &&
            tx->response_progress == HTP_RESPONSE_NOT_STARTED) {
            if (first && !n) *first = tx;
            n++;
        }
    }
    return n;
}

/* A hole took the start of what came next. A lost request gets its stand-in at once (its
 * response may be on the way). Bytes lost after a response can as well be the next response
 * as bytes past this one's end: that is decided when the next response starts. */
static void lost_start(cs_engine *e, cs_http *h, int dir)
{
    if (dir == CS_C2S) feed_standin(e, h, dir);
    else h->lost_start[dir] = 1;
}

static int idle(htp_tx_t *tx, int dir)
{
    return !tx || tx_progress(tx, dir) == HTP_REQUEST_NOT_STARTED ||
           tx_progress(tx, dir) >= HTP_REQUEST_COMPLETE;
}

/* End the message in hand with the fewest bytes that close it: its headers, the rest of a
 * Content-Length body (zeros), the framing of a chunked body. 0 when it ended. */
static int end_message(cs_engine *e, cs_http *h, int dir)
{
    htp_tx_t *tx = current_tx(h, dir);
    size_t index = tx ? tx->index : 0;
    for (int round = 0; round < 8 && !h->stopped[dir]; round++) {
        /* what was fed may have completed tx, and libhtp may have freed it: tx is looked at
         * only while it is still the current one (its address could be a new one's) */
        htp_tx_t *cur = current_tx(h, dir);
        if (!tx || cur != tx || cur->index != index || idle(tx, dir)) return 0;
        int prog = tx_progress(tx, dir);
        if (prog < HTP_REQUEST_BODY) {                       /* line or headers */
            const char *end = h->last[dir] == '\n' ? "\r\n" : "\r\n\r\n";
            feed(e, h, dir, (const uint8_t *)end, strlen(end));
            continue;
        }
        if (prog == HTP_REQUEST_TRAILER) {
            feed(e, h, dir, (const uint8_t *)"\r\n", 2);
            continue;
        }
        if (tx_coding(tx, dir) == HTP_CODING_CHUNKED) {
            struct chunks *c = &h->ch[dir];
            if (c->broken || c->tx != tx) break;
            switch (c->state) {
            case CH_DATA:
                if (!may_fill(e, c->left)) goto give_up;
                feed_zeros(e, h, dir, c->left);
                break;
            case CH_DATA_END: feed(e, h, dir, (const uint8_t *)"\r\n", 2); break;
            case CH_SIZE:
                if (c->digits) feed(e, h, dir, (const uint8_t *)"\r\n", 2);
                else feed(e, h, dir, (const uint8_t *)"0\r\n\r\n", 5);
                break;
            default: feed(e, h, dir, (const uint8_t *)"\r\n", 2); break;
            }
            continue;
        }
        int64_t cl = tx_content_len(tx, dir);
        int64_t ml = tx_message_len(tx, dir);
        if (cl < 0 || !may_fill(e, cl > ml ? (uint64_t)(cl - ml) : 0))
            break;                                   /* until close, or too long */
        feed_zeros(e, h, dir, (uint64_t)(cl > ml ? cl - ml : 0));
    }
give_up:
    h->stopped[dir] = 1;            /* cannot be put back in step: no more HTTP this way */
    cs_count(e, CSC_HTTP_PARSER_ERRORS);
    return -1;
}

static void start_skipping(cs_http *h, int dir)
{
    h->skipping[dir] = 1;
    h->carry_len[dir] = 0;
}

void cs_http_gap(cs_engine *e, cs_flow *f, int dir, uint64_t n)
{
    if (f->http_decided < 0) return;
    if (!f->http && !(f->http = calloc(1, sizeof *f->http))) return;
    cs_http *h = f->http;
    if (f->http_decided == 0) {
        /* not yet known to be HTTP: what was held of this side no longer leads anywhere; a
         * lost request gets its stand-in once the connection is known to be HTTP */
        h->pre_len[dir] = h->skip[dir] < h->pre_len[dir] ? h->skip[dir] : h->pre_len[dir];
        if (dir == CS_C2S) h->lost_start[dir] = 1;
        start_skipping(h, dir);
        return;
    }
    if (h->stopped[dir] || h->skipping[dir]) return;
    if (h->pending_len[dir]) {                 /* bytes still waiting for the other side */
        e->counters[CSC_HTTP_PENDING_DROPPED] += h->pending_len[dir];
        free(h->pending[dir]);
        h->pending[dir] = NULL;
        h->pending_len[dir] = 0;
    }
    htp_tx_t *tx = current_tx(h, dir);
    if (idle(tx, dir)) {
        /* between messages: the next one's start is lost */
        lost_start(e, h, dir);
        start_skipping(h, dir);
        cs_count(e, CSC_HTTP_GAP_RESYNC);
        return;
    }
    cs_tx *t = tx_info(tx);
    if (t) t->missing[dir] += n;
    int prog = tx_progress(tx, dir);
    if (prog == HTP_REQUEST_BODY && tx_coding(tx, dir) == HTP_CODING_IDENTITY) {
        int64_t cl = tx_content_len(tx, dir);
        int64_t ml = tx_message_len(tx, dir);
        if (cl < 0) {                          /* read until close: any length goes */
            if (may_fill(e, n)) { feed_zeros(e, h, dir, n); cs_count(e, CSC_HTTP_GAPS_FILLED); return; }
        } else {
            uint64_t left = cl > ml ? (uint64_t)(cl - ml) : 0;
            if (n <= left && fill_budget(e, n)) {    /* inside the body: any length */
                feed_zeros(e, h, dir, n);
                cs_count(e, CSC_HTTP_GAPS_FILLED);
                return;
            }
            if (n > left && may_fill(e, left)) {
                /* the body's end, then the start of the next message, were lost */
                if (t) t->missing[dir] -= n - left;
                feed_zeros(e, h, dir, left);
                lost_start(e, h, dir);
                start_skipping(h, dir);
                cs_count(e, CSC_HTTP_GAP_RESYNC);
                return;
            }
        }
    } else if (prog == HTP_REQUEST_BODY && tx_coding(tx, dir) == HTP_CODING_CHUNKED) {
        struct chunks *c = &h->ch[dir];
        if (!c->broken && c->tx == tx && c->state == CH_DATA && n <= c->left && may_fill(e, n)) {
            feed_zeros(e, h, dir, n);
            cs_count(e, CSC_HTTP_GAPS_FILLED);
            return;
        }
    }
    /* the framing was lost: close the message, then wait for the next one to start */
    if (end_message(e, h, dir) == 0) start_skipping(h, dir);
    cs_count(e, CSC_HTTP_GAP_RESYNC);
}

static int known_method(const uint8_t *p, size_t n, int *partial)
{
    *partial = 0;
    for (int k = 0; known_methods[k]; k++) {
        size_t ml = strlen(known_methods[k]);
        if (n >= ml + 1) {
            if (memcmp(p, known_methods[k], ml) == 0 && p[ml] == ' ') return 1;
        } else if (memcmp(p, known_methods[k], n) == 0) {
            *partial = 1;
        }
    }
    return 0;
}

/* Does a message start at p? 1 yes; 0 no (*partial: p is too short to tell). */
static int starts_here(int dir, const uint8_t *p, size_t n, int *partial)
{
    *partial = 0;
    if (dir == CS_C2S) return known_method(p, n, partial);
    if (n >= 9)
        return memcmp(p, "HTTP/1.", 7) == 0 && (p[7] == '0' || p[7] == '1') && p[8] == ' ';
    static const char *const status[] = {"HTTP/1.0 ", "HTTP/1.1 "};
    for (int i = 0; i < 2; i++)
        if (memcmp(p, status[i], n) == 0) *partial = 1;
    return 0;
}

/* The first message start in p, at p itself or after a line end (a segment that follows a
 * hole may well begin a message): 1 and *at; or 0, with *cut the offset of a possible start
 * that the end of p cuts short (-1: none). */
static int find_start(int dir, const uint8_t *p, size_t n, size_t *at, long *cut)
{
    *cut = -1;
    size_t i = 0;
    while (i < n) {
        int partial;
        if (starts_here(dir, p + i, n - i, &partial)) { *at = i; return 1; }
        if (partial) { *cut = (long)i; return 0; }
        const uint8_t *nl = memchr(p + i, '\n', n - i);
        if (!nl) break;
        i = (size_t)(nl - p) + 1;
    }
    return 0;
}

/* While skipping: the bytes of data from where a message starts (1), or none (0). *tmp: a
 * buffer to free afterwards (a start cut across two chunks). */
static int skip_to_start(cs_engine *e, cs_http *h, int dir, const uint8_t **data, size_t *len,
                         uint8_t **tmp)
{
    const uint8_t *p = *data;
    size_t n = *len, at;
    long cut;
    int partial;
    *tmp = NULL;
    if (h->carry_len[dir]) {                   /* the start of a line cut by the last chunk */
        size_t c = h->carry_len[dir];
        h->carry_len[dir] = 0;
        uint8_t *both = malloc(c + n);
        if (both) {
            memcpy(both, h->carry[dir], c);
            memcpy(both + c, p, n);
            if (starts_here(dir, both, c + n, &partial)) {
                h->skipping[dir] = 0;
                *tmp = both;
                *data = both;
                *len = c + n;
                return 1;
            }
            free(both);
        }
    }
    if (!find_start(dir, p, n, &at, &cut)) {
        if (cut >= 0 && n - (size_t)cut <= sizeof h->carry[dir]) {
            h->carry_len[dir] = n - (size_t)cut;
            memcpy(h->carry[dir], p + cut, h->carry_len[dir]);
        }
        e->counters[CSC_HTTP_GAP_SKIPPED] += n;
        return 0;
    }
    h->skipping[dir] = 0;
    e->counters[CSC_HTTP_GAP_SKIPPED] += at;
    *data = p + at;
    *len = n - at;
    return 1;
}

/* A SOCKS 4, 4a or 5 CONNECT handshake at the start of the connection (proxies carry C2 too):
 * 1 = complete, and h->skip[] says where the tunnelled bytes begin; 0 = need more bytes;
 * -1 = not SOCKS, or the proxy refused. */
static int socks5_addr(const uint8_t *p, size_t n, size_t at, size_t *need)
{
    if (n < at + 4) return 0;
    size_t alen = p[at + 3] == 1 ? 4 : p[at + 3] == 4 ? 16 : p[at + 3] == 3 ? (n < at + 5 ? 0 : 1u + p[at + 4]) : (size_t)-1;
    if (alen == (size_t)-1) return -1;
    if (!alen) return 0;
    *need = 4 + alen + 2;
    return n < at + *need ? 0 : 1;
}

static int socks_walk(cs_http *h)
{
    const uint8_t *c = h->pre[CS_C2S], *s = h->pre[CS_S2C];
    size_t cn = h->pre_len[CS_C2S], sn = h->pre_len[CS_S2C], ci, si, need = 0;
    int r;
    if (!cn) return 0;
    if (sn && s[0] != (c[0] == 4 ? 0 : 5)) return -1;
    if (c[0] == 4) {                                   /* SOCKS 4 / 4a */
        if (cn >= 2 && c[1] != 1) return -1;           /* CONNECT only */
        if (cn < 9) return 0;
        ci = 8;
        while (ci < cn && c[ci]) ci++;                 /* user id */
        if (ci++ >= cn) return 0;
        if (!c[4] && !c[5] && !c[6] && c[7]) {         /* 4a: host name follows */
            while (ci < cn && c[ci]) ci++;
            if (ci++ >= cn) return 0;
        }
        if (sn < 8) return 0;
        if (s[1] != 0x5a) return -1;
        si = 8;
    } else if (c[0] == 5) {                            /* SOCKS 5 */
        if (cn < 2) return 0;
        if (!c[1]) return -1;
        ci = 2u + c[1];
        if (cn < ci || sn < 2) return 0;
        si = 2;
        if (s[1] == 2) {                               /* username/password */
            if (cn < ci + 2) return 0;
            if (c[ci] != 1) return -1;
            size_t ul = c[ci + 1];
            if (cn < ci + 3 + ul) return 0;
            ci += 3 + ul + c[ci + 2 + ul];
            if (cn < ci || sn < 4) return 0;
            if (s[3] != 0) return -1;
            si = 4;
        } else if (s[1] != 0) return -1;
        if (cn >= ci + 2 && (c[ci] != 5 || c[ci + 1] != 1)) return -1;
        if ((r = socks5_addr(c, cn, ci, &need)) <= 0) return r;
        ci += need;
        if (sn >= si + 2 && s[si + 1] != 0) return -1;  /* request refused */
        if ((r = socks5_addr(s, sn, si, &need)) <= 0) return r;
        si += need;
    } else return -1;
    h->skip[CS_C2S] = ci;
    h->skip[CS_S2C] = si;
    h->socks = 1;
    return 1;
}

static void http_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len);

static int http_open(cs_engine *e, cs_flow *f, cs_http *h)
{
    h->connp = htp_connp_create(e->http_cfg);
    if (!h->connp) return -1;
    htp_connp_set_user_data(h->connp, f);
    struct timeval tv = now_tv(e);
    htp_connp_open(h->connp, f->ip_text[0], f->port[0], f->ip_text[1], f->port[1], &tv);
    return 0;
}

static void undecided(cs_flow *f, int verdict)
{
    if (verdict < 0) {
        free(f->http);
        f->http = NULL;
        f->http_decided = -1;
    }
}

void cs_http_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len)
{
    if (f->http_decided < 0) return;
    cs_http *h = f->http;
    if (h && h->skipping[dir]) {
        uint8_t *tmp;
        if (skip_to_start(e, h, dir, &data, &len, &tmp)) {
            /* a response starts while two requests wait: the first one's answer was lost.
             * (A client's lost_start is a request lost before the connection was known to
             * be HTTP: http_data gives it its stand-in once it is.) */
            if (dir == CS_S2C) {
                if (h->lost_start[dir] && h->connp && unanswered(h, NULL) >= 2)
                    feed_standin(e, h, dir);
                h->lost_start[dir] = 0;
            }
            http_data(e, f, dir, data, len);
        }
        free(tmp);
        return;
    }
    http_data(e, f, dir, data, len);
}

static void http_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len)
{
    if (f->http_decided > 0) {
        feed(e, f->http, dir, data, len);
        return;
    }
    /* Undecided: hold the first bytes of each direction until they tell. */
    if (!f->http && !(f->http = calloc(1, sizeof *f->http))) return;
    cs_http *h = f->http;
    size_t had = h->pre_len[dir], cap = sizeof h->pre[dir];
    size_t take = len < cap - had ? len : cap - had;
    memcpy(h->pre[dir] + had, data, take);
    h->pre_len[dir] += take;
    uint8_t first = h->pre[CS_C2S][0];
    if (!h->socks && h->pre_len[CS_C2S] && (first == 4 || first == 5)) {
        int r = socks_walk(h);
        if (r == 0 && take < len) r = -1;           /* a handshake that long is not one */
        if (r <= 0) { undecided(f, r); return; }
    }
    size_t base = h->skip[dir];
    if (h->pre_len[dir] <= base) return;            /* nothing after the SOCKS handshake yet */
    int c = classify(dir, h->pre[dir] + base, h->pre_len[dir] - base);
    /* Client bytes that are not clearly HTTP (odd or broken request lines) wait for the
     * server: an answer starting "HTTP/" makes it HTTP, anything else does not. */
    if (dir == CS_C2S && c < 0) c = 0;
    if (c == 0 && h->pre_len[dir] == cap) c = -1;
    if (c > 0 && http_open(e, f, h)) c = -1;
    if (c <= 0) { undecided(f, c); return; }
    f->http_decided = 1;
    if (h->lost_start[CS_C2S]) {               /* a request lost before this was known */
        h->lost_start[CS_C2S] = 0;
        feed_standin(e, h, CS_C2S);
    }
    /* what was held goes in first: the client's before the server's */
    size_t held = had > base ? had - base : 0;
    if (dir == CS_S2C && h->pre_len[CS_C2S] > h->skip[CS_C2S])
        feed(e, h, CS_C2S, h->pre[CS_C2S] + h->skip[CS_C2S], h->pre_len[CS_C2S] - h->skip[CS_C2S]);
    if (held) feed(e, h, dir, h->pre[dir] + base, held);
    /* of this chunk, what lies past the end of the SOCKS handshake */
    size_t from = had >= base ? 0 : base - had;
    if (from < len) feed(e, h, dir, data + from, len - from);
    if (dir == CS_C2S && h->pre_len[CS_S2C] > h->skip[CS_S2C])
        feed(e, h, CS_S2C, h->pre[CS_S2C] + h->skip[CS_S2C], h->pre_len[CS_S2C] - h->skip[CS_S2C]);
}

void cs_http_close(cs_engine *e, cs_flow *f)
{
    cs_http *h = f->http;
    if (!h) return;
    f->http = NULL;
    if (h->connp && h->lost_start[CS_S2C]) {
        /* bytes lost after a response and no response since: the oldest request still
         * unanswered lost its answer */
        htp_tx_t *tx;
        cs_tx *t = unanswered(h, &tx) ? htp_tx_get_user_data(tx) : NULL;
        if (t) t->lost[CS_S2C] = 1;
    }
    if (h->connp) {
        struct timeval tv = now_tv(e);
        closing = 1;
        for (int d = 0; d < 2; d++) retry_pending(e, h, d);
        htp_connp_close(h->connp, &tv);
        closing = 0;
        htp_conn_t *conn = htp_connp_get_connection(h->connp);
        if (conn && conn->transactions) {
            size_t n = htp_list_size(conn->transactions);
            for (size_t i = 0; i < n; i++) {
                htp_tx_t *tx = htp_list_get(conn->transactions, i);
                if (tx && htp_tx_get_user_data(tx)) report(e, f, tx);
            }
        }
        htp_connp_destroy_all(h->connp);
    }
    for (int d = 0; d < 2; d++) free(h->pending[d]);
    free(h);
}
