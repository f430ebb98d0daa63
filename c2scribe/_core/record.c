/* Record building with three backends: a Python dict (for Record objects), a finished JSON
 * document (the jsonl fast path, where building Python objects per field would dominate), or
 * a row of the kind's columnar batch (the Parquet path: columns.c).
 *
 * Field names come from c2scribe.schema through set_key_names(); the JSON backend writes
 * exactly what json.dumps(..., ensure_ascii=True) writes for the same values after the
 * schema's conversions: strings are the bytes decoded as UTF-8 with "backslashreplace",
 * non-ASCII as \uXXXX, timestamps ISO 8601. tests/test_engine.py holds both paths equal.
 */
#include "core.h"

#include <string.h>
#include <time.h>

/* ---------- buffer ---------- */

static void put(cs_rec *r, const void *p, size_t n)
{
    if (r->err || !n) return;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 2048;
        while (cap < r->len + n) cap *= 2;
        char *nb = realloc(r->buf, cap);
        if (!nb) { r->err = 1; return; }
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
}

static void putc1(cs_rec *r, char c) { put(r, &c, 1); }
static void puts0(cs_rec *r, const char *s) { put(r, s, strlen(s)); }

/* The length of the complete, valid UTF-8 sequence at s (no overlong form, no surrogate,
 * at most U+10FFFF), or 0: what Python's decoder accepts; its code point in *cpp. */
size_t cs_utf8_seq(const uint8_t *s, size_t n, uint32_t *cpp)
{
    uint8_t c = s[0];
    uint32_t cp;
    size_t len;
    if (c < 0x80) { *cpp = c; return 1; }
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    *cpp = cp;
    return len;
}

/* JSON string body for bytes decoded as UTF-8 with backslashreplace, ensure_ascii. */
static void put_json_text(cs_rec *r, const uint8_t *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    char tmp[16];
    size_t i = 0, run = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') { i++; run++; continue; }
        if (run) put(r, s + i - run, run);
        run = 0;
        if (c < 0x80) {
            const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                            : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                            : c == '\f' ? "\\f" : NULL;
            if (esc) puts0(r, esc);
            else {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                puts0(r, tmp);
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = cs_utf8_seq(s + i, n - i, &cp);
        if (!len) {                              /* "\xNN" as text: the backslash escaped */
            char x[6] = {'\\', '\\', 'x', hexd[c >> 4], hexd[c & 15], 0};
            put(r, x, 5);
            i++;
            continue;
        }
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        } else snprintf(tmp, sizeof tmp, "\\u%04x", cp);
        puts0(r, tmp);
        i += len;
    }
    if (run) put(r, s + n - run, run);
}

static void put_json_string(cs_rec *r, const void *s, size_t n)
{
    putc1(r, '"');
    put_json_text(r, s, n);
    putc1(r, '"');
}

/* ---------- keys ---------- */

static void key(cs_rec *r, const char *k)
{
    putc1(r, r->n++ ? ',' : '{');
    const char *name = cs_key_utf8(k);
    if (!name) { r->err = 1; return; }
    put_json_string(r, name, strlen(name));
    putc1(r, ':');
}

static void dict_set(cs_rec *r, const char *k, PyObject *v)
{
    if (!r->err && cs_set(r->d, k, v)) r->err = 1;
    else if (r->err) Py_XDECREF(v);
}

/* ---------- API ---------- */

int cs_rec_begin(cs_engine *e, cs_rec *r, const char *kind)
{
    return cs_rec_begin_dict(e, r, kind, 1);
}

int cs_rec_begin_dict(cs_engine *e, cs_rec *r, const char *kind, int dict)
{
    memset(r, 0, sizeof *r);
    r->e = e;
    r->t = e->ntables ? cs_table_of(e, kind) : NULL;
    r->json = e->json && !r->t;
    if (!r->json && (!r->t || (e->dual && dict))) {      /* dual: the dict too, for decoders */
        r->d = cs_record_dict();
        if (!r->d) r->err = 1;
    }
    return r->err ? -1 : 0;
}

void cs_rec_null(cs_rec *r, const char *k)
{
    if (r->t) cs_col_null(r, k);
    if (r->json) { key(r, k); puts0(r, "null"); }
    else if (r->d) dict_set(r, k, Py_NewRef(Py_None));
}

void cs_rec_str(cs_rec *r, const char *k, const void *s, size_t n)
{
    if (!s) { cs_rec_null(r, k); return; }
    if (r->t) cs_col_str(r, k, s, n);
    if (r->json) { key(r, k); put_json_string(r, s, n); }
    else if (r->d) dict_set(r, k, cs_str(s, n));
}

void cs_rec_cstr(cs_rec *r, const char *k, const char *s)
{
    cs_rec_str(r, k, s, s ? strlen(s) : 0);
}

void cs_rec_int(cs_rec *r, const char *k, long long v)
{
    if (r->t) cs_col_int(r, k, v);
    if (r->json) {
        char tmp[32];
        key(r, k);
        snprintf(tmp, sizeof tmp, "%lld", v);
        puts0(r, tmp);
    } else if (r->d) dict_set(r, k, PyLong_FromLongLong(v));
}

void cs_rec_bool(cs_rec *r, const char *k, int v)
{
    if (r->t) cs_col_bool(r, k, v);
    if (r->json) { key(r, k); puts0(r, v ? "true" : "false"); }
    else if (r->d) dict_set(r, k, PyBool_FromLong(v));
}

void cs_iso(int64_t us, char out[32])
{
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) { frac += 1000000; sec--; }
    struct tm tm;
    time_t t = (time_t)sec;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

void cs_rec_ts(cs_rec *r, const char *k, int64_t us)
{
    if (r->t) cs_col_int(r, k, us);
    if (r->json) {
        char iso[32];
        cs_iso(us, iso);
        key(r, k);
        putc1(r, '"');
        puts0(r, iso);
        putc1(r, '"');
    } else if (r->d) dict_set(r, k, PyLong_FromLongLong(us));
}

/* Kept content (bodies, stream bytes): bytes in dicts; in jsonl only with --bodies, base64;
 * in columns only with bodies (else null, as records_to_table without bodies). */
void cs_rec_bytes(cs_rec *r, const char *k, const void *p, size_t n, int present)
{
    if (r->t) {
        if (present && r->e->json_bodies) cs_col_str(r, k, n ? p : "", n);
        else cs_col_null(r, k);
        if (!r->d) return;
    }
    if (r->d) {
        dict_set(r, k, present ? PyBytes_FromStringAndSize(p, n) : Py_NewRef(Py_None));
        return;
    }
    if (!r->e->json_bodies) return;
    if (!present) { cs_rec_null(r, k); return; }
    key(r, k);
    putc1(r, '"');
    size_t need = 4 * ((n + 2) / 3) + 1;
    unsigned char *b = malloc(need);
    if (!b) { r->err = 1; return; }
    int m = n ? EVP_EncodeBlock(b, p, (int)n) : 0;
    put(r, b, m);
    free(b);
    putc1(r, '"');
}

void cs_rec_list_begin(cs_rec *r, const char *k)
{
    r->items = 0;
    r->list_key = k;
    if (r->t) cs_col_list_begin(r, k);
    if (r->json) { key(r, k); putc1(r, '['); }
    else if (r->d && !r->err && !(r->list = PyList_New(0))) r->err = 1;
}

void cs_rec_item(cs_rec *r, const void *s, size_t n)
{
    if (r->t) cs_col_item(r, s, n);
    if (r->json) {
        if (r->items++) putc1(r, ',');
        put_json_string(r, s, n);
        return;
    }
    if (!r->d || r->err) return;
    PyObject *v = cs_str(s, n);
    if (!v || PyList_Append(r->list, v)) r->err = 1;
    Py_XDECREF(v);
}

void cs_rec_pair(cs_rec *r, const void *a, size_t an, const void *b, size_t bn)
{
    if (r->t) cs_col_pair(r, a, an, b, bn);
    if (r->json) {
        if (r->items++) putc1(r, ',');
        putc1(r, '[');
        put_json_string(r, a, an);
        putc1(r, ',');
        put_json_string(r, b, bn);
        putc1(r, ']');
        return;
    }
    if (!r->d || r->err) return;
    PyObject *x = cs_str(a, an), *y = cs_str(b, bn);
    PyObject *t = x && y ? PyTuple_Pack(2, x, y) : NULL;
    if (!t || PyList_Append(r->list, t)) r->err = 1;
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(t);
}

void cs_rec_list_end(cs_rec *r)
{
    if (r->t) cs_col_list_end(r);
    if (r->json) { putc1(r, ']'); return; }
    if (r->list) dict_set(r, r->list_key, r->list);
    r->list = NULL;
}

/* The fields every jsonl document has, then emit. */
void cs_rec_end(cs_rec *r, const char *kind, const char *dataset_key, int64_t timestamp_us)
{
    cs_engine *e = r->e;
    if (r->t) {
        cs_col_end(r);
        if (!r->d) return;
    }
    if (r->json) {
        if (timestamp_us == INT64_MIN) cs_rec_null(r, "@timestamp");
        else cs_rec_ts(r, "@timestamp", timestamp_us);
        key(r, "event.dataset");
        const char *ds = cs_key_utf8(dataset_key);
        if (ds) put_json_string(r, ds, strlen(ds));
        else r->err = 1;
        cs_rec_int(r, "c2scribe.schema_version", e->schema_version);
        putc1(r, '}');
    }
    if (r->err) {
        Py_XDECREF(r->d);
        Py_XDECREF(r->list);
        free(r->buf);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        cs_fail(e);
        return;
    }
    if (r->json) {
        PyObject *b = PyBytes_FromStringAndSize(r->buf, r->len);
        free(r->buf);
        if (!b) { cs_fail(e); return; }
        cs_emit(e, kind, b);
    } else cs_emit(e, kind, r->d);
}
