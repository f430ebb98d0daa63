/* HTTP/1.x over a flow's reassembled bytes, through libhtp 0.5 (Suricata's parser).
 *
 * One htp_connp per flow, created when the first bytes look like HTTP. Bodies reach us
 * dechunked and decompressed through the body-data hooks: we hash and count them, and keep
 * the first opt.body_keep bytes. A transaction crosses into Python once, when it completes
 * or when its connection ends (then flagged incomplete). Data libhtp did not consume
 * (HTP_STREAM_DATA_OTHER) is kept, bounded, and fed again once the other direction moved.
 */
#include "../_core/core.h"

#include <string.h>
#include <htp/htp.h>

struct cs_http {
    htp_connp_t *connp;
    uint8_t *pending[2];          /* bytes libhtp left unconsumed, per direction */
    size_t pending_len[2];
    uint8_t pre[2][64];           /* first bytes, while undecided whether this is HTTP */
    size_t pre_len[2];
    int stopped[2];               /* parser error, tunnel or close in that direction */
    int tunnel;
};

typedef struct cs_tx {
    int64_t start_us, end_us;
    cs_pos first, last;
    EVP_MD_CTX *sha[2];
    uint64_t body_len[2];
    uint8_t *keep[2];
    size_t keep_len[2];
    int keep_trunc[2];
    int response_only;
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

static void tx_touch(cs_engine *e, cs_tx *t)
{
    if (e->now_us > t->end_us) t->end_us = e->now_us;
    t->last.file = e->cur_file;
    t->last.frame = e->cur_frame;
}

static int on_request_start(htp_tx_t *tx)
{
    return tx_info(tx) ? HTP_OK : HTP_ERROR;
}

static int on_response_start(htp_tx_t *tx)
{
    int fresh = htp_tx_get_user_data(tx) == NULL;
    cs_tx *t = tx_info(tx);
    if (!t) return HTP_ERROR;
    if (fresh) t->response_only = 1;
    tx_touch(engine_of(tx->connp), t);
    return HTP_OK;
}

static int body_data(htp_tx_data_t *d, int dir)
{
    cs_engine *e = engine_of(d->tx->connp);
    cs_tx *t = tx_info(d->tx);
    if (!t) return HTP_ERROR;
    tx_touch(e, t);
    if (!d->data || !d->len) return HTP_OK;
    if (!t->sha[dir]) {
        t->sha[dir] = EVP_MD_CTX_new();
        if (!t->sha[dir] || !EVP_DigestInit_ex(t->sha[dir], cs_sha256, NULL)) return HTP_ERROR;
    }
    EVP_DigestUpdate(t->sha[dir], d->data, d->len);
    t->body_len[dir] += d->len;
    if (e->opt.body_keep) {
        size_t room = e->opt.body_keep - t->keep_len[dir];
        size_t take = d->len < room ? d->len : room;
        if (take) {
            if (!t->keep[dir]) {
                t->keep[dir] = malloc(e->opt.body_keep);
                if (!t->keep[dir]) return HTP_ERROR;
            }
            memcpy(t->keep[dir] + t->keep_len[dir], d->data, take);
            t->keep_len[dir] += take;
        }
        if (take < d->len) t->keep_trunc[dir] = 1;
    }
    return HTP_OK;
}

static int on_request_body(htp_tx_data_t *d) { return body_data(d, CS_C2S); }
static int on_response_body(htp_tx_data_t *d) { return body_data(d, CS_S2C); }

static void report(cs_engine *e, cs_flow *f, htp_tx_t *tx);

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

static PyObject *bstr_str(bstr *b)
{
    if (!b) Py_RETURN_NONE;
    return cs_str(bstr_ptr(b), bstr_len(b));
}

static PyObject *header_str(htp_table_t *t, const char *name)
{
    htp_header_t *h = t ? htp_table_get_c(t, name) : NULL;
    if (!h) Py_RETURN_NONE;
    return bstr_str(h->value);
}

static PyObject *headers_list(htp_table_t *t)
{
    size_t n = t ? htp_table_size(t) : 0;
    PyObject *l = PyList_New(0);
    for (size_t i = 0; l && i < n; i++) {
        htp_header_t *h = htp_table_get_index(t, i, NULL);
        if (!h) continue;
        PyObject *k = bstr_str(h->name), *v = bstr_str(h->value);
        PyObject *pair = k && v ? PyTuple_Pack(2, k, v) : NULL;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (!pair || PyList_Append(l, pair)) { Py_XDECREF(pair); Py_DECREF(l); return NULL; }
        Py_DECREF(pair);
    }
    return l;
}

static PyObject *flags_list(uint64_t flags)
{
    PyObject *l = PyList_New(0);
    for (size_t i = 0; l && i < sizeof tx_flag_names / sizeof *tx_flag_names; i++)
        if (flags & tx_flag_names[i].bit) {
            PyObject *s = PyUnicode_FromString(tx_flag_names[i].name);
            if (!s || PyList_Append(l, s)) { Py_XDECREF(s); Py_DECREF(l); return NULL; }
            Py_DECREF(s);
        }
    return l;
}

static PyObject *sha_or_none(EVP_MD_CTX *c)
{
    if (!c) Py_RETURN_NONE;
    return cs_hex_digest(c);
}

static PyObject *kept(cs_engine *e, cs_tx *t, int dir)
{
    if (!e->opt.body_keep) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)t->keep[dir], t->keep_len[dir]);
}

static const char *tx_state(htp_tx_t *tx, cs_tx *t)
{
    int req = tx->request_progress, res = tx->response_progress;
    if (t->response_only) return res >= HTP_RESPONSE_COMPLETE ? "response_only" : "partial_response_only";
    if (req < HTP_REQUEST_COMPLETE) return res > HTP_RESPONSE_NOT_STARTED ? "partial_request" : "partial_request_no_response";
    if (res == HTP_RESPONSE_NOT_STARTED) return "no_response";
    if (res < HTP_RESPONSE_COMPLETE) return "partial_response";
    return "complete";
}

static PyObject *uri_part(htp_uri_t *u, int which)
{
    if (!u) Py_RETURN_NONE;
    bstr *b = which == 0 ? u->path : which == 1 ? u->query : which == 2 ? u->scheme : u->hostname;
    return bstr_str(b);
}

static void tx_free(cs_tx *t)
{
    for (int i = 0; i < 2; i++) {
        if (t->sha[i]) EVP_MD_CTX_free(t->sha[i]);
        free(t->keep[i]);
    }
    free(t);
}

static void report(cs_engine *e, cs_flow *f, htp_tx_t *tx)
{
    cs_tx *t = htp_tx_get_user_data(tx);
    if (!t) return;
    htp_tx_set_user_data(tx, NULL);
    f->http_tx++;
    cs_count(e, CSC_HTTP_TRANSACTIONS);
    if (e->py_error) { tx_free(t); return; }
    int has_response = tx->response_progress > HTP_RESPONSE_NOT_STARTED;
    int no_request = t->response_only;
    PyObject *d = cs_record_dict();
    int ok = d &&
        !cs_set(d, "conn_id", PyUnicode_FromString(f->id)) &&
        !cs_set(d, "community_id", PyUnicode_FromString(f->community_id)) &&
        !cs_set(d, "index", PyLong_FromSize_t(tx->index + 1)) &&
        !cs_set(d, "start_us", PyLong_FromLongLong(t->start_us)) &&
        !cs_set(d, "end_us", PyLong_FromLongLong(t->end_us)) &&
        !cs_set(d, "ip_version", PyLong_FromLong(f->ipver)) &&
        !cs_set(d, "src_ip", PyUnicode_FromString(f->ip_text[0])) &&
        !cs_set(d, "src_port", PyLong_FromLong(f->port[0])) &&
        !cs_set(d, "dst_ip", PyUnicode_FromString(f->ip_text[1])) &&
        !cs_set(d, "dst_port", PyLong_FromLong(f->port[1])) &&
        !cs_set(d, "method", no_request ? Py_NewRef(Py_None) : bstr_str(tx->request_method)) &&
        !cs_set(d, "uri", no_request ? Py_NewRef(Py_None) : bstr_str(tx->request_uri)) &&
        !cs_set(d, "request_protocol", no_request ? Py_NewRef(Py_None) : bstr_str(tx->request_protocol)) &&
        !cs_set(d, "http_09", PyBool_FromLong(tx->is_protocol_0_9)) &&
        !cs_set(d, "hostname", bstr_str(tx->request_hostname)) &&
        !cs_set(d, "host_header", header_str(tx->request_headers, "host")) &&
        !cs_set(d, "url_scheme", uri_part(tx->parsed_uri_raw, 2)) &&
        !cs_set(d, "url_path", uri_part(tx->parsed_uri_raw, 0)) &&
        !cs_set(d, "url_query", uri_part(tx->parsed_uri_raw, 1)) &&
        !cs_set(d, "url_port", tx->request_port_number > 0 ? PyLong_FromLong(tx->request_port_number)
                                                            : Py_NewRef(Py_None)) &&
        !cs_set(d, "user_agent", header_str(tx->request_headers, "user-agent")) &&
        !cs_set(d, "referrer", header_str(tx->request_headers, "referer")) &&
        !cs_set(d, "x_forwarded_for", header_str(tx->request_headers, "x-forwarded-for")) &&
        !cs_set(d, "request_content_type", header_str(tx->request_headers, "content-type")) &&
        !cs_set(d, "request_headers", headers_list(tx->request_headers)) &&
        !cs_set(d, "request_body_bytes", PyLong_FromUnsignedLongLong(t->body_len[CS_C2S])) &&
        !cs_set(d, "request_body_wire_bytes", PyLong_FromLongLong(tx->request_message_len > 0 ? tx->request_message_len : 0)) &&
        !cs_set(d, "request_body_sha256", sha_or_none(t->sha[CS_C2S])) &&
        !cs_set(d, "request_body", kept(e, t, CS_C2S)) &&
        !cs_set(d, "request_body_truncated", PyBool_FromLong(t->keep_trunc[CS_C2S])) &&
        !cs_set(d, "status_code", has_response && tx->response_status_number > 0
                                      ? PyLong_FromLong(tx->response_status_number) : Py_NewRef(Py_None)) &&
        !cs_set(d, "status_text", has_response ? bstr_str(tx->response_status) : Py_NewRef(Py_None)) &&
        !cs_set(d, "status_phrase", has_response ? bstr_str(tx->response_message) : Py_NewRef(Py_None)) &&
        !cs_set(d, "response_protocol", has_response ? bstr_str(tx->response_protocol) : Py_NewRef(Py_None)) &&
        !cs_set(d, "response_content_type", header_str(tx->response_headers, "content-type")) &&
        !cs_set(d, "response_headers", headers_list(tx->response_headers)) &&
        !cs_set(d, "response_body_bytes", PyLong_FromUnsignedLongLong(t->body_len[CS_S2C])) &&
        !cs_set(d, "response_body_wire_bytes", PyLong_FromLongLong(tx->response_message_len > 0 ? tx->response_message_len : 0)) &&
        !cs_set(d, "response_body_sha256", sha_or_none(t->sha[CS_S2C])) &&
        !cs_set(d, "response_body", kept(e, t, CS_S2C)) &&
        !cs_set(d, "response_body_truncated", PyBool_FromLong(t->keep_trunc[CS_S2C])) &&
        !cs_set(d, "continue_100", PyBool_FromLong(tx->seen_100continue)) &&
        !cs_set(d, "state", PyUnicode_FromString(tx_state(tx, t))) &&
        !cs_set(d, "flags", flags_list(tx->flags)) &&
        !cs_set(d, "tunnel", PyBool_FromLong(f->http && f->http->tunnel &&
                                             tx->request_method_number == HTP_M_CONNECT)) &&
        !cs_set(d, "file_first", cs_file_name(e, t->first.file)) &&
        !cs_set(d, "frame_first", PyLong_FromUnsignedLongLong(t->first.frame)) &&
        !cs_set(d, "file_last", cs_file_name(e, t->last.file)) &&
        !cs_set(d, "frame_last", PyLong_FromUnsignedLongLong(t->last.frame));
    tx_free(t);
    if (ok) cs_emit(e, "http", d);
    else { Py_XDECREF(d); cs_fail(e); }
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
    for (int k = 0; known_methods[k]; k++)
        if (strlen(known_methods[k]) == i - start && memcmp(known_methods[k], p + start, i - start) == 0)
            return 1;
    /* Unknown method: HTTP only if the request line ends in HTTP/x.y */
    const uint8_t *nl = memchr(p + i, '\n', n - i);
    if (!nl) return n < sizeof ((cs_http *)0)->pre[0] ? 0 : -1;
    size_t ll = nl - p;
    if (ll && p[ll - 1] == '\r') ll--;
    return ll >= 9 + i && memcmp(p + ll - 8, " HTTP/", 6) == 0 ? 1 : -1;
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

static int http_open(cs_engine *e, cs_flow *f, cs_http *h)
{
    h->connp = htp_connp_create(e->http_cfg);
    if (!h->connp) return -1;
    htp_connp_set_user_data(h->connp, f);
    struct timeval tv = now_tv(e);
    htp_connp_open(h->connp, f->ip_text[0], f->port[0], f->ip_text[1], f->port[1], &tv);
    return 0;
}

void cs_http_data(cs_engine *e, cs_flow *f, int dir, const uint8_t *data, size_t len)
{
    if (f->http_decided < 0) return;
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
    int c = classify(dir, h->pre[dir], h->pre_len[dir]);
    if (c == 0 && h->pre_len[dir] == cap) c = -1;
    if (c < 0 || (c > 0 && http_open(e, f, h))) {
        /* Server spoke first in something else, or the client did not speak HTTP. */
        free(h);
        f->http = NULL;
        f->http_decided = -1;
        return;
    }
    if (c == 0) return;
    f->http_decided = 1;
    if (dir == CS_S2C && h->pre_len[CS_C2S]) feed(e, h, CS_C2S, h->pre[CS_C2S], h->pre_len[CS_C2S]);
    feed(e, h, dir, h->pre[dir], had);
    feed(e, h, dir, data, len);
    if (dir == CS_C2S && h->pre_len[CS_S2C]) feed(e, h, CS_S2C, h->pre[CS_S2C], h->pre_len[CS_S2C]);
}

void cs_http_close(cs_engine *e, cs_flow *f)
{
    cs_http *h = f->http;
    if (!h) return;
    f->http = NULL;
    if (h->connp) {
        struct timeval tv = now_tv(e);
        for (int d = 0; d < 2; d++) retry_pending(e, h, d);
        htp_connp_close(h->connp, &tv);
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
