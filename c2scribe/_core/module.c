/* c2scribe._core: the Python face of the C engine.
 *
 * Engine is sans-IO: the caller hands it capture-file bytes (or single packets) and gets back
 * the records that became complete, as a list of (kind, dict) pairs; kinds are "connection",
 * "http" and "capture_error". Dict keys are the attribute names of c2scribe/schema.py. With
 * json=True the dicts are finished JSON documents (bytes); with columns={kind: ...} the
 * records of those kinds come as columnar batches instead, a few thousand rows at a time
 * (dual=True: as well as dicts; with select, a callable, an "http" dict only when
 * select(head fields...) says so, and a connection as ("connection_end", conn_id)).
 * stream_chunks=True: a "stream" dict per chunk of reassembled bytes; with stream_select,
 * only of the connections stream_select(first bytes...) takes (see flow.c).
 * libnids is one global state per process, and the HTTP layer reaches the engine through
 * cs_the_engine, so only one Engine may be live at a time, whichever reassembly it uses.
 */
#include "core.h"
#include "../reassembly/ipfrag.h"
#include "../reassembly/tcpreasm.h"

#include <arpa/inet.h>
#include <string.h>

cs_engine *cs_the_engine;

typedef struct {
    PyObject_HEAD
    cs_engine e;
    int started;
} EngineObject;

/* ---------- helpers shared with the other C files ---------- */

void cs_fail(cs_engine *e) { e->py_error = 1; }

void cs_emit(cs_engine *e, const char *kind, PyObject *dict)
{
    PyObject *t = Py_BuildValue("(sN)", kind, dict);
    if (!t || !e->out || PyList_Append(e->out, t)) cs_fail(e);
    Py_XDECREF(t);
}

/* Record keys are string literals: intern each once, found again by its address. */
#define KEY_SLOTS 512
static struct { const char *c; PyObject *o; } key_cache[KEY_SLOTS];

static PyObject *key_names;   /* attribute name -> external name, from c2scribe.schema */
static long schema_version;

static PyObject *key_object(const char *key)
{
    size_t h = ((uintptr_t)key >> 3) & (KEY_SLOTS - 1);
    for (size_t i = 0; i < KEY_SLOTS; i++, h = (h + 1) & (KEY_SLOTS - 1)) {
        if (key_cache[h].c == key) return key_cache[h].o;
        if (!key_cache[h].c) {
            PyObject *o = key_names ? PyDict_GetItemString(key_names, key) : NULL;
            if (o) {
                Py_INCREF(o);
                PyUnicode_InternInPlace(&o);
            } else o = PyUnicode_InternFromString(key);
            if (!o) return NULL;
            key_cache[h].c = key;
            key_cache[h].o = o;
            return o;
        }
    }
    return PyUnicode_FromString(key);   /* table full: never with our key count */
}

const char *cs_key_utf8(const char *key)
{
    PyObject *o = key_object(key);
    return o ? PyUnicode_AsUTF8(o) : NULL;
}

int cs_set(PyObject *d, const char *key, PyObject *v)
{
    if (!v) return -1;
    PyObject *k = key_object(key);
    int r = k ? PyDict_SetItem(d, k, v) : -1;
    Py_DECREF(v);
    return r;
}

PyObject *cs_record_dict(void)
{
    return _PyDict_NewPresized(64);
}

PyObject *cs_str(const void *s, size_t len)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "backslashreplace");
}

int cs_hex_final(EVP_MD_CTX *ctx, char *out, size_t outlen)
{
    static const char hexd[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &n) || outlen < 2 * n + 1) return -1;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = hexd[md[i] >> 4];
        out[2 * i + 1] = hexd[md[i] & 15];
    }
    out[2 * n] = 0;
    return 0;
}

PyObject *cs_hex_digest(EVP_MD_CTX *ctx)
{
    char out[2 * EVP_MAX_MD_SIZE + 1];
    if (cs_hex_final(ctx, out, sizeof out)) Py_RETURN_NONE;
    return PyUnicode_FromString(out);
}

void cs_ip_format(int ipver, const uint8_t *ip, char *buf, size_t len)
{
    if (ipver == 4) snprintf(buf, len, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
    else if (!inet_ntop(AF_INET6, ip, buf, len)) snprintf(buf, len, "?");
}

PyObject *cs_ip_str(int ipver, const uint8_t *ip)
{
    char buf[INET6_ADDRSTRLEN];
    cs_ip_format(ipver, ip, buf, sizeof buf);
    return PyUnicode_FromString(buf);
}

PyObject *cs_file_name(cs_engine *e, int file)
{
    if (!e->files || file < 0 || file >= PyList_GET_SIZE(e->files)) Py_RETURN_NONE;
    return Py_NewRef(PyList_GET_ITEM(e->files, file));
}

/* ---------- packet path ---------- */

static void one_packet(cs_engine *e, const cs_packet *pkt)
{
    /* a hostile file can claim any time: keep it where microseconds fit an int64 */
    int64_t sec = pkt->ts_sec, lim = INT64_MAX / 1000000 - 1;
    if (sec > lim) sec = lim;
    if (sec < -lim) sec = -lim;
    int64_t ts = sec * 1000000 + pkt->ts_usec;
    e->cur_frame++;
    if (ts < e->now_us) cs_count(e, CSC_TIME_BACKWARDS);
    e->now_us = ts;
    if (e->opt.windowed) {
        if (e->win_done || ts < e->opt.win_start_us - e->opt.preroll_us) {
            e->counters[CSC_WINDOW_SKIPPED]++;
            return;
        }
        if (!e->win_started && ts >= e->opt.win_start_us) {
            e->win_started = 1;
            memcpy(e->counters_start, e->counters, sizeof e->counters);
        }
        if (!e->win_ended && ts >= e->opt.win_end_us) {
            e->win_ended = 1;
            memcpy(e->counters_end, e->counters, sizeof e->counters);
        }
        if (ts >= e->opt.win_end_us) {
            cs_flows_expire(e);
            if (ts >= e->next_edge_us) {
                /* the last edge crossed is enough: nothing was read since the earlier ones */
                int64_t width = e->opt.win_end_us - e->opt.win_start_us;
                int64_t edge = e->next_edge_us + (ts - e->next_edge_us) / width * width;
                if (edge > e->opt.last_edge_us)
                    edge = e->opt.last_edge_us - (e->opt.last_edge_us - e->opt.win_end_us) % width;
                cs_flows_window_edge(e, edge);
                e->next_edge_us = edge >= e->opt.last_edge_us ? INT64_MAX : edge + width;
            }
            if (e->own_live == 0 || ts >= e->opt.win_end_us + e->opt.lookahead_us) {
                e->win_done = 1;
                e->counters[CSC_WINDOW_SKIPPED]++;
                return;
            }
        }
    }
    e->counters[CSC_PACKETS]++;
    e->counters[CSC_BYTES] += pkt->caplen;
    cs_flows_expire(e);
    cs_l3 l3;
    switch (cs_link_to_ip(pkt->linktype, pkt->data, pkt->caplen, &l3)) {
    case CS_L3_OK:
        cs_count(e, l3.version == 4 ? CSC_IPV4 : CSC_IPV6);
        e->reasm->packet(e, &l3, pkt);
        break;
    case CS_L3_NOT_IP: cs_count(e, CSC_NON_IP); break;
    case CS_L3_TRUNCATED: cs_count(e, CSC_LINK_TRUNCATED); break;
    default: cs_count(e, CSC_LINK_UNSUPPORTED); break;
    }
}

static int on_packet(void *ctx, const cs_packet *pkt)
{
    cs_engine *e = ctx;
    one_packet(e, pkt);
    return e->py_error;
}

static PyObject *take_output(cs_engine *e)
{
    PyObject *out = e->out;
    e->out = PyList_New(0);
    if (e->py_error) {
        e->py_error = 0;
        Py_XDECREF(out);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "c2scribe engine failed");
        return NULL;
    }
    return out;
}

static void capture_error(cs_engine *e)
{
    cs_rec r;
    if (cs_rec_begin(e, &r, "capture_error") == 0) {
        PyObject *name = cs_file_name(e, e->cur_file);
        const char *n = name && name != Py_None ? PyUnicode_AsUTF8(name) : NULL;
        cs_rec_cstr(&r, "file", n);
        Py_XDECREF(name);
        cs_rec_int(&r, "offset", (long long)e->reader.error_offset);
        cs_rec_int(&r, "packets_before", (long long)e->reader.packets);
        cs_rec_cstr(&r, "message", e->reader.error);
    }
    cs_rec_end(&r, "capture_error", "dataset:capture_error", INT64_MIN);
    e->reader_failed = 1;
}

/* ---------- Engine type ---------- */

static int check_live(EngineObject *self)
{
    if (!self->started || self->e.finished) {
        PyErr_SetString(PyExc_RuntimeError, "engine is finished (libnids state was released)");
        return -1;
    }
    return 0;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"stream_keep", "body_keep", "http_pending_max", "bomb_limit",
                             "decompress_time_limit", "idle_timeout", "established_timeout",
                             "linger", "max_flows", "nids_streams", "nids_hosts", "json",
                             "json_bodies", "stream_chunks", "window_start_us", "window_end_us",
                             "lookahead", "preroll", "window_last_edge_us", "engine",
                             "tcp_policy", "frag_policy", "frag_timeout", "tcp_conn_max",
                             "tcp_total_max", "frag_max", "hole_timeout", "host_policies",
                             "stream_keep_http", "columns", "batch_rows", "batch_bytes", "dual", "select",
                             "stream_select", NULL};
    cs_options o = {
        .stream_keep = 0, .body_keep = 65536, .http_pending_max = 1 << 20,
        .bomb_limit = 64 << 20, .decompress_time_limit = 100000,
        .max_flows = 1 << 18, .nids_streams = 1 << 16, .nids_hosts = 4096,
    };
    double idle = 300, est = 3600, linger = 2;
    Py_ssize_t sk = 0, bk = 65536, pm = 1 << 20, bl = 64 << 20, tl = 100000, mf = 1 << 18;
    int ns = 1 << 16, nh = 4096, json = 0, json_bodies = 0, chunks = 0;
    PyObject *wstart = Py_None, *wend = Py_None, *wlast = Py_None, *hosts = NULL;
    int keep_http = 0;
    PyObject *columns = Py_None;
    Py_ssize_t batch_rows = 4096, batch_bytes = 8 << 20;
    int dual = 0;
    PyObject *select = Py_None, *stream_select = Py_None;
    double lookahead = 3600, preroll = 600, frag_timeout = 60, hole_timeout = 5;
    const char *engine = "nids", *tcp_policy = "bsd", *frag_policy = "first";
    Py_ssize_t conn_max = 8 << 20, total_max = (Py_ssize_t)512 << 20, frag_max = 32 << 20;
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ called twice");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$nnnnndddniipppOOddOsssdnnndOpOnnpOO", kwlist, &sk, &bk,
                                     &pm, &bl, &tl, &idle, &est, &linger, &mf, &ns, &nh, &json,
                                     &json_bodies, &chunks, &wstart, &wend, &lookahead, &preroll,
                                     &wlast, &engine, &tcp_policy, &frag_policy, &frag_timeout,
                                     &conn_max, &total_max, &frag_max, &hole_timeout, &hosts,
                                     &keep_http, &columns, &batch_rows, &batch_bytes, &dual, &select,
                                     &stream_select))
        return -1;
    if (select != Py_None && (!PyCallable_Check(select) || !dual)) {
        PyErr_SetString(PyExc_TypeError, "select must be a callable, and only with dual=True");
        return -1;
    }
    if (stream_select != Py_None && (!PyCallable_Check(stream_select) || !chunks)) {
        PyErr_SetString(PyExc_TypeError, "stream_select must be a callable, and only with "
                        "stream_chunks=True");
        return -1;
    }
    int native = strcmp(engine, "native") == 0;
    if (!native && strcmp(engine, "nids") != 0) {
        PyErr_Format(PyExc_ValueError, "unknown engine '%s' (nids or native)", engine);
        return -1;
    }
    o.native = native;
    o.tcp_policy = cs_tcp_policy_from_name(tcp_policy);
    if (o.tcp_policy < 0) {
        PyErr_Format(PyExc_ValueError, "unknown TCP overlap policy '%s'", tcp_policy);
        return -1;
    }
    o.frag_policy = cs_frag_policy_from_name(frag_policy);
    if (o.frag_policy < 0) {
        PyErr_Format(PyExc_ValueError, "unknown IP fragment overlap policy '%s'", frag_policy);
        return -1;
    }
    if (frag_timeout <= 0 || hole_timeout <= 0 || conn_max < 65536 || total_max < conn_max ||
        frag_max < 65536) {
        PyErr_SetString(PyExc_ValueError, "native engine limits must be positive (memory caps "
                        "at least 64 KiB, the total at least the per-connection one)");
        return -1;
    }
    o.frag_timeout_us = (int64_t)(frag_timeout * 1e6);
    o.hole_timeout_us = (int64_t)(hole_timeout * 1e6);
    o.tcp_conn_max = conn_max;
    o.tcp_total_max = total_max;
    o.frag_max = frag_max;
    o.stream_keep_http = keep_http;
    if ((wstart == Py_None) != (wend == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "window_start_us and window_end_us go together");
        return -1;
    }
    if (wstart != Py_None) {
        o.windowed = 1;
        o.win_start_us = PyLong_AsLongLong(wstart);
        o.win_end_us = PyLong_AsLongLong(wend);
        if (PyErr_Occurred()) return -1;
        o.lookahead_us = (int64_t)(lookahead * 1e6);
        o.preroll_us = (int64_t)(preroll * 1e6);
        o.last_edge_us = wlast == Py_None ? INT64_MAX : PyLong_AsLongLong(wlast);
        if (PyErr_Occurred()) return -1;
        if (o.win_end_us <= o.win_start_us || lookahead < 0 || preroll < 0) {
            PyErr_SetString(PyExc_ValueError, "empty window, or negative look-ahead or pre-roll");
            return -1;
        }
    }
    if (json && !key_names) {
        PyErr_SetString(PyExc_RuntimeError, "json output needs set_key_names() first");
        return -1;
    }
    if (batch_rows < 1 || batch_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "batch_rows and batch_bytes must be positive");
        return -1;
    }
    if (sk < 0 || bk < 0 || pm < 0 || bl <= 0 || tl <= 0 || mf < 16 || ns < 16 || nh < 1 ||
        idle <= 0 || est <= 0 || linger < 0) {
        PyErr_SetString(PyExc_ValueError, "engine limits must be positive");
        return -1;
    }
    if (cs_the_engine) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another c2scribe Engine is live in this process (libnids is one global "
                        "state): finish() it first");
        return -1;
    }
    o.stream_keep = sk; o.body_keep = bk; o.http_pending_max = pm; o.bomb_limit = bl;
    o.decompress_time_limit = tl; o.max_flows = mf; o.nids_streams = ns; o.nids_hosts = nh;
    o.idle_timeout_us = (int64_t)(idle * 1e6);
    o.established_timeout_us = (int64_t)(est * 1e6);
    o.linger_us = (int64_t)(linger * 1e6);

    /* host_policies: ((ip version, 16-byte address, prefix length, policy name), ...) */
    if (hosts && hosts != Py_None) {
        PyObject *seq = PySequence_Fast(hosts, "host_policies must be a sequence");
        if (!seq) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        o.host_policy = n ? calloc((size_t)n, sizeof *o.host_policy) : NULL;
        if (n && !o.host_policy) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < n; i++) {
            cs_host_policy *hp = &o.host_policy[i];
            Py_buffer a;
            const char *pol;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iy*is", &hp->ipver, &a,
                                  &hp->prefix, &pol)) {
                free(o.host_policy); Py_DECREF(seq); return -1;
            }
            int ok = a.len == 16 && (hp->ipver == 4 || hp->ipver == 6) && hp->prefix >= 0 &&
                     hp->prefix <= (hp->ipver == 4 ? 32 : 128);
            if (ok) memcpy(hp->addr, a.buf, 16);
            PyBuffer_Release(&a);
            hp->policy = cs_tcp_policy_from_name(pol);
            if (!ok || hp->policy < 0) {
                PyErr_Format(PyExc_ValueError, "bad host policy #%zd", i);
                free(o.host_policy); Py_DECREF(seq); return -1;
            }
        }
        o.n_host_policy = (int)n;
        Py_DECREF(seq);
    }

    cs_engine *e = &self->e;
    memset(e, 0, sizeof *e);
    e->opt = o;
    e->reasm = native ? &cs_native_ops : &cs_nids_ops;
    e->json = json;
    e->json_bodies = json_bodies;
    e->stream_chunks = chunks && !json;
    e->batch_rows = (size_t)batch_rows;
    e->batch_bytes = (size_t)batch_bytes;
    e->dual = dual;
    e->select = select == Py_None ? NULL : Py_NewRef(select);
    e->stream_select = stream_select == Py_None ? NULL : Py_NewRef(stream_select);
    if (columns != Py_None && cs_tables_init(e, columns)) {
        cs_tables_free(e);
        return -1;
    }
    e->schema_version = schema_version;
    e->cur_file = -1;
    e->now_us = INT64_MIN / 2;
    e->next_edge_us = o.windowed ? o.win_end_us : INT64_MAX;
    e->out = PyList_New(0);
    e->files = PyList_New(0);
    e->http_log = PyDict_New();
    if (!e->out || !e->files || !e->http_log) return -1;
    if (cs_flows_init(e) || cs_http_init(e)) {
        PyErr_NoMemory();
        return -1;
    }
    char err[512];
    cs_the_engine = e;
    if (e->reasm->start(e, err, sizeof err)) {
        cs_the_engine = NULL;
        PyErr_SetString(PyExc_RuntimeError, err);
        return -1;
    }
    self->started = 1;
    return 0;
}

static void release(EngineObject *self)
{
    cs_engine *e = &self->e;
    if (self->started && !e->finished) {
        /* Dropped without finish(): release libnids, discarding what it still held. */
        e->reasm->finish(e);
        e->finished = 1;
    }
    if (e->reader_open) cs_reader_free(&e->reader);
    e->reader_open = 0;
    if (self->started && e->reasm->stop) e->reasm->stop(e);
    cs_flows_free(e);
    cs_http_free_cfg(e);
    cs_tables_free(e);
    free(e->opt.host_policy);
    e->opt.host_policy = NULL;
    e->opt.n_host_policy = 0;
    if (cs_the_engine == e) cs_the_engine = NULL;
}

static void Engine_dealloc(EngineObject *self)
{
    release(self);
    Py_CLEAR(self->e.out);
    Py_CLEAR(self->e.files);
    Py_CLEAR(self->e.http_log);
    Py_CLEAR(self->e.select);
    Py_CLEAR(self->e.stream_select);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Engine_open_file(EngineObject *self, PyObject *name)
{
    cs_engine *e = &self->e;
    if (check_live(self)) return NULL;
    if (!PyUnicode_Check(name)) return PyErr_Format(PyExc_TypeError, "file name must be str");
    if (e->reader_open) cs_reader_free(&e->reader);
    cs_reader_init(&e->reader);
    e->reader_open = 1;
    e->reader_failed = 0;
    if (PyList_Append(e->files, name)) return NULL;
    e->cur_file = (int)PyList_GET_SIZE(e->files) - 1;
    e->cur_frame = 0;
    Py_RETURN_NONE;
}

static PyObject *Engine_feed(EngineObject *self, PyObject *arg)
{
    cs_engine *e = &self->e;
    Py_buffer view;
    if (check_live(self)) return NULL;
    if (!e->reader_open) return PyErr_Format(PyExc_RuntimeError, "feed() before open_file()");
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    if (!e->reader_failed) {
        int rc = cs_reader_feed(&e->reader, view.buf, view.len, on_packet, e);
        if (rc == CS_ERROR) capture_error(e);
    }
    PyBuffer_Release(&view);
    return take_output(e);
}

static PyObject *Engine_close_file(EngineObject *self, PyObject *unused)
{
    (void)unused;
    cs_engine *e = &self->e;
    if (check_live(self)) return NULL;
    if (e->reader_open && !e->reader_failed && !e->win_done &&
        cs_reader_finish(&e->reader) == CS_ERROR)
        capture_error(e);
    if (e->reader_open) cs_reader_free(&e->reader);
    e->reader_open = 0;
    return take_output(e);
}

static PyObject *Engine_feed_packet(EngineObject *self, PyObject *args)
{
    cs_engine *e = &self->e;
    long long ts_us;
    int linktype;
    Py_buffer view;
    if (check_live(self)) return NULL;
    if (!PyArg_ParseTuple(args, "Liy*", &ts_us, &linktype, &view)) return NULL;
    if (e->cur_file < 0) {
        PyObject *n = PyUnicode_FromString("<packets>");
        if (!n || PyList_Append(e->files, n)) { Py_XDECREF(n); PyBuffer_Release(&view); return NULL; }
        Py_DECREF(n);
        e->cur_file = 0;
    }
    cs_packet p = {
        .ts_sec = ts_us >= 0 ? ts_us / 1000000 : -((-ts_us + 999999) / 1000000),
        .caplen = (uint32_t)view.len, .origlen = (uint32_t)view.len,
        .linktype = linktype, .data = view.buf,
    };
    p.ts_usec = (uint32_t)(ts_us - p.ts_sec * 1000000);
    one_packet(e, &p);
    PyBuffer_Release(&view);
    return take_output(e);
}

static PyObject *Engine_finish(EngineObject *self, PyObject *unused)
{
    (void)unused;
    cs_engine *e = &self->e;
    if (check_live(self)) return NULL;
    if (e->reader_open && !e->reader_failed && !e->win_done &&
        cs_reader_finish(&e->reader) == CS_ERROR)
        capture_error(e);
    e->reasm->finish(e);
    cs_flows_flush_all(e);
    cs_tables_flush(e);
    e->finished = 1;
    PyObject *out = take_output(e);
    release(self);
    return out;
}

/* counters() -> all counts; counters(True) -> in a windowed run, only what happened between
 * the window's start and end (packets read before and after it are other windows'). */
static PyObject *Engine_counters(EngineObject *self, PyObject *args)
{
    cs_engine *e = &self->e;
    int window = 0;
    if (!PyArg_ParseTuple(args, "|p", &window)) return NULL;
    window = window && e->opt.windowed;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < CSC__COUNT; i++) {
        uint64_t n = e->counters[i];
        if (window) {
            uint64_t hi = e->win_ended ? e->counters_end[i] : n;
            uint64_t lo = e->win_started ? e->counters_start[i] : hi;
            n = hi - lo;
        }
        PyObject *v = Py_BuildValue("(KNK)", (unsigned long long)n,
                                    cs_file_name(e, e->counter_first[i].file),
                                    (unsigned long long)e->counter_first[i].frame);
        if (!v || PyDict_SetItemString(d, cs_counter_names[i], v)) { Py_XDECREF(v); Py_DECREF(d); return NULL; }
        Py_DECREF(v);
    }
    PyObject *live = d ? Py_BuildValue("(KOK)", (unsigned long long)e->nflows, Py_None, 0ULL) : NULL;
    if (d && (!live || PyDict_SetItemString(d, "flows_live", live))) Py_CLEAR(d);
    Py_XDECREF(live);
    return d;
}

static PyObject *Engine_window_done(EngineObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->e.win_done);
}

static PyObject *Engine_now_us(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (self->e.now_us == INT64_MIN / 2) Py_RETURN_NONE;
    return PyLong_FromLongLong(self->e.now_us);
}

static PyObject *Engine_http_messages(EngineObject *self, PyObject *unused)
{
    (void)unused;
    return PyDict_Copy(self->e.http_log);
}

static PyMethodDef Engine_methods[] = {
    {"open_file", (PyCFunction)Engine_open_file, METH_O,
     "Start the next file of the capture chain (connections carry over)."},
    {"feed", (PyCFunction)Engine_feed, METH_O, "Feed capture-file bytes; returns new records."},
    {"close_file", (PyCFunction)Engine_close_file, METH_NOARGS,
     "End of the current file; reports a truncated or empty file."},
    {"feed_packet", (PyCFunction)Engine_feed_packet, METH_VARARGS,
     "feed_packet(ts_us, linktype, frame) -> records."},
    {"finish", (PyCFunction)Engine_finish, METH_NOARGS,
     "End of input: flush every connection still open; releases libnids."},
    {"counters", (PyCFunction)Engine_counters, METH_VARARGS,
     "counters(window=False) -> {name: (count, first file, first frame)}"},
    {"window_done", (PyCFunction)Engine_window_done, METH_NOARGS,
     "Windowed run: True once nothing more needs reading."},
    {"now_us", (PyCFunction)Engine_now_us, METH_NOARGS,
     "Capture time of the last packet read (µs), or None."},
    {"http_messages", (PyCFunction)Engine_http_messages, METH_NOARGS,
     "libhtp warnings and errors with their counts."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "c2scribe._core.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "libnids + libhtp engine: capture bytes in, records out.",
    .tp_methods = Engine_methods,
    .tp_init = (initproc)Engine_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *set_key_names(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *mapping;
    long version;
    if (!PyArg_ParseTuple(args, "O!l", &PyDict_Type, &mapping, &version)) return NULL;
    if (key_names) return PyErr_Format(PyExc_RuntimeError, "key names are already set");
    Py_INCREF(mapping);
    key_names = mapping;
    schema_version = version;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_key_names", set_key_names, METH_VARARGS,
     "set_key_names(mapping, schema_version): once, before any Engine; mapping = {record key: "
     "external field name}."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef coremodule = {
    PyModuleDef_HEAD_INIT, "c2scribe._core", "C engine of c2scribe (libnids + libhtp).", -1,
    module_methods,
};

const EVP_MD *cs_sha256, *cs_sha1;

PyMODINIT_FUNC PyInit__core(void)
{
    if (PyType_Ready(&EngineType) < 0) return NULL;
    cs_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    cs_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    if (!cs_sha256 || !cs_sha1) return PyErr_Format(PyExc_ImportError, "libcrypto has no SHA-256/SHA-1");
    PyObject *m = PyModule_Create(&coremodule);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) { Py_DECREF(m); return NULL; }
    PyModule_AddStringConstant(m, "ENGINES", "nids native");
    return m;
}
