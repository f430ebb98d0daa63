/* Record building, columnar: the records of a kind are appended to buffers laid out as Arrow
 * arrays (validity bitmap, int32 offsets, values), and handed to Python a batch at a time as
 * bytes that pyarrow wraps without copying (c2scribe/arrow.py: batch_from_core).
 *
 * This is the Parquet sink's path: a Python object per field and per record, then a
 * conversion of each column, cost more than the engine itself on bodies-heavy traffic.
 * Values are what the dict backend gives after the schema's conversions (strings decoded as
 * UTF-8 with backslashreplace, timestamps in µs); tests/test_output_paths.py holds the
 * tables equal to records_to_table over Record objects.
 */
#include "core.h"

#include <string.h>

typedef struct { uint8_t *p; size_t len, cap; } cs_buf;

enum { CT_STR, CT_INT, CT_BOOL, CT_BYTES, CT_HEADERS, CT_STRLIST };

typedef struct {
    char *name;                   /* the record key (schema attribute) */
    int type;
    size_t len, nulls;            /* values in this batch */
    cs_buf valid;                 /* validity bitmap */
    cs_buf off;                   /* int32 offsets: strings, bytes, lists */
    cs_buf data;                  /* string bytes, int64 values, or the bool bitmap */
    size_t items;                 /* list columns: child values */
    cs_buf a_off, a_data;         /* ... strlist items, or header names */
    cs_buf b_off, b_data;         /* ... header values */
} cs_col;

#define KEY_CACHE 256
struct cs_table {
    char *kind;
    cs_col *cols;
    int ncols;
    size_t rows, bytes;
    struct { const char *k; int col; } cache[KEY_CACHE];   /* key literal -> column */
};

/* ---------- buffers ---------- */

static int reserve(cs_buf *b, size_t n)
{
    if (b->len + n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put(cs_buf *b, const void *p, size_t n)
{
    if (!n) return 0;                        /* (an empty buffer has no memory yet) */
    if (reserve(b, n)) return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int put_off(cs_buf *off, size_t v)
{
    if (v > INT32_MAX) return -1;            /* a batch's column past 2 GiB */
    int32_t o = (int32_t)v;
    return put(off, &o, sizeof o);
}

/* bit i of a bitmap (bits appended in order: i is the length before) */
static int put_bit(cs_buf *b, size_t i, int v)
{
    if (i % 8 == 0) {
        uint8_t z = 0;
        if (put(b, &z, 1)) return -1;
    }
    if (v) b->p[i / 8] |= (uint8_t)(1u << (i % 8));
    return 0;
}

/* UTF-8 with invalid bytes as the text "\xNN", as bytes.decode("utf-8", "backslashreplace") */
static int put_text(cs_buf *b, const uint8_t *s, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    size_t i = 0, run = 0;
    if (reserve(b, n)) return -1;
    while (i < n) {
        uint32_t cp;
        size_t k = s[i] < 0x80 ? 1 : cs_utf8_seq(s + i, n - i, &cp);
        if (k) { i += k; run += k; continue; }
        if (run && put(b, s + i - run, run)) return -1;
        run = 0;
        char x[4] = {'\\', 'x', hexd[s[i] >> 4], hexd[s[i] & 15]};
        if (put(b, x, 4)) return -1;
        i++;
    }
    return run ? put(b, s + n - run, run) : 0;
}

static void buf_free(cs_buf *b) { free(b->p); memset(b, 0, sizeof *b); }

/* ---------- tables ---------- */

static void col_reset(cs_col *c)
{
    c->len = c->nulls = c->items = 0;
    c->valid.len = c->data.len = 0;
    c->off.len = c->a_off.len = c->b_off.len = 0;
    c->a_data.len = c->b_data.len = 0;
    put_off(&c->off, 0);                    /* the first offset of each (reserved at init) */
    put_off(&c->a_off, 0);
    put_off(&c->b_off, 0);
}

static void table_free(cs_table *t)
{
    for (int i = 0; i < t->ncols; i++) {
        cs_col *c = &t->cols[i];
        free(c->name);
        buf_free(&c->valid); buf_free(&c->off); buf_free(&c->data);
        buf_free(&c->a_off); buf_free(&c->a_data); buf_free(&c->b_off); buf_free(&c->b_data);
    }
    free(t->cols);
    free(t->kind);
    free(t);
}

void cs_tables_free(cs_engine *e)
{
    for (int i = 0; i < e->ntables; i++) table_free(e->tables[i]);
    free(e->tables);
    e->tables = NULL;
    e->ntables = 0;
}

static int type_code(const char *s)
{
    static const struct { const char *name; int code; } types[] = {
        {"str", CT_STR}, {"ip", CT_STR}, {"int", CT_INT}, {"ts", CT_INT}, {"bool", CT_BOOL},
        {"bytes", CT_BYTES}, {"headers", CT_HEADERS}, {"strlist", CT_STRLIST},
    };
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(s, types[i].name) == 0) return types[i].code;
    return -1;
}

/* spec: {kind: [(key, schema type), ...]}, the columns in their table's order */
int cs_tables_init(cs_engine *e, PyObject *spec)
{
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "columns must be a dict {kind: [(key, type), ...]}");
        return -1;
    }
    Py_ssize_t pos = 0, n = PyDict_Size(spec);
    PyObject *kind, *cols;
    e->tables = calloc(n ? (size_t)n : 1, sizeof *e->tables);
    if (!e->tables) { PyErr_NoMemory(); return -1; }
    while (PyDict_Next(spec, &pos, &kind, &cols)) {
        const char *k = PyUnicode_AsUTF8(kind);
        PyObject *seq = k ? PySequence_Fast(cols, "columns of a kind must be a sequence") : NULL;
        if (!seq) return -1;
        cs_table *t = calloc(1, sizeof *t);
        Py_ssize_t nc = PySequence_Fast_GET_SIZE(seq);
        if (t) e->tables[e->ntables++] = t;
        if (!t || !(t->kind = strdup(k)) || !(t->cols = calloc(nc ? (size_t)nc : 1, sizeof *t->cols))) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < nc; i++) {
            const char *name, *type;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ss", &name, &type)) {
                Py_DECREF(seq);
                return -1;
            }
            cs_col *c = &t->cols[t->ncols];
            c->type = type_code(type);
            if (c->type < 0) {
                PyErr_Format(PyExc_ValueError, "column %s of %s: no columnar type for %s", name, k, type);
                Py_DECREF(seq);
                return -1;
            }
            if (!(c->name = strdup(name))) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
            t->ncols++;
            if (reserve(&c->off, 4) || reserve(&c->a_off, 4) || reserve(&c->b_off, 4)) {
                Py_DECREF(seq);
                PyErr_NoMemory();
                return -1;
            }
            col_reset(c);
        }
        Py_DECREF(seq);
    }
    return 0;
}

cs_table *cs_table_of(cs_engine *e, const char *kind)
{
    for (int i = 0; i < e->ntables; i++)
        if (strcmp(e->tables[i]->kind, kind) == 0) return e->tables[i];
    return NULL;
}

static int find_col(cs_table *t, const char *k)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, k) == 0) return i;
    return -1;
}

/* The column of key k for this record's next value; NULL: not a column (ignored, as
 * schema.from_core ignores keys that are not fields) or an error (r->err set). */
static cs_col *col_for(cs_rec *r, const char *k)
{
    if (r->err) return NULL;
    cs_table *t = r->t;
    int idx = -2;
    size_t h = ((uintptr_t)k >> 3) & (KEY_CACHE - 1);
    for (size_t i = 0; i < KEY_CACHE; i++, h = (h + 1) & (KEY_CACHE - 1)) {
        if (t->cache[h].k == k) { idx = t->cache[h].col; break; }
        if (!t->cache[h].k) {
            idx = find_col(t, k);
            t->cache[h].k = k;
            t->cache[h].col = idx;
            break;
        }
    }
    if (idx == -2) idx = find_col(t, k);      /* cache full: never with our key count */
    if (idx < 0) return NULL;
    cs_col *c = &t->cols[idx];
    if (c->len != t->rows) {
        PyErr_Format(PyExc_RuntimeError, "record field %s set twice", k);
        r->err = 1;
        return NULL;
    }
    return c;
}

static void done(cs_rec *r, cs_col *c, int valid, int rc)
{
    if (rc || put_bit(&c->valid, c->len, valid)) { r->err = 1; return; }
    if (!valid) c->nulls++;
    c->len++;
}

static int put_null_value(cs_col *c)
{
    switch (c->type) {
    case CT_INT: { int64_t z = 0; return put(&c->data, &z, sizeof z); }
    case CT_BOOL: return put_bit(&c->data, c->len, 0);
    case CT_STR: case CT_BYTES: return put_off(&c->off, c->data.len);
    default: return put_off(&c->off, c->items);
    }
}

void cs_col_null(cs_rec *r, const char *k)
{
    cs_col *c = col_for(r, k);
    if (c) done(r, c, 0, put_null_value(c));
}

void cs_col_str(cs_rec *r, const char *k, const void *s, size_t n)
{
    cs_col *c = col_for(r, k);
    if (!c) return;
    if (c->type != CT_STR && c->type != CT_BYTES) { r->err = 1; return; }
    size_t before = c->data.len;
    int rc = c->type == CT_STR ? put_text(&c->data, s, n) : put(&c->data, s, n);
    r->t->bytes += c->data.len - before;
    done(r, c, 1, rc || put_off(&c->off, c->data.len));
}

void cs_col_int(cs_rec *r, const char *k, long long v)
{
    cs_col *c = col_for(r, k);
    if (!c) return;
    if (c->type != CT_INT) { r->err = 1; return; }
    int64_t x = v;
    done(r, c, 1, put(&c->data, &x, sizeof x));
}

void cs_col_bool(cs_rec *r, const char *k, int v)
{
    cs_col *c = col_for(r, k);
    if (!c) return;
    if (c->type != CT_BOOL) { r->err = 1; return; }
    done(r, c, 1, put_bit(&c->data, c->len, v != 0));
}

void cs_col_list_begin(cs_rec *r, const char *k)
{
    cs_col *c = col_for(r, k);
    if (c && c->type != CT_HEADERS && c->type != CT_STRLIST) { r->err = 1; c = NULL; }
    r->list_col = c;
}

static int put_item(cs_buf *off, cs_buf *data, const void *s, size_t n)
{
    return put_text(data, s, n) || put_off(off, data->len);
}

void cs_col_item(cs_rec *r, const void *s, size_t n)
{
    cs_col *c = r->list_col;
    if (!c || r->err) return;
    size_t before = c->a_data.len;
    if (c->type != CT_STRLIST || put_item(&c->a_off, &c->a_data, s, n)) { r->err = 1; return; }
    r->t->bytes += c->a_data.len - before + 4;
    c->items++;
}

void cs_col_pair(cs_rec *r, const void *a, size_t an, const void *b, size_t bn)
{
    cs_col *c = r->list_col;
    if (!c || r->err) return;
    size_t before = c->a_data.len + c->b_data.len;
    if (c->type != CT_HEADERS || put_item(&c->a_off, &c->a_data, a, an) ||
        put_item(&c->b_off, &c->b_data, b, bn)) { r->err = 1; return; }
    r->t->bytes += c->a_data.len + c->b_data.len - before + 8;
    c->items++;
}

void cs_col_list_end(cs_rec *r)
{
    cs_col *c = r->list_col;
    r->list_col = NULL;
    if (c && !r->err) done(r, c, 1, put_off(&c->off, c->items));
}

/* ---------- batches ---------- */

static PyObject *bytes_of(const cs_buf *b, size_t n)
{
    return PyBytes_FromStringAndSize(n ? (const char *)b->p : "", (Py_ssize_t)n);
}

/* One column as (null count, validity or None, offsets, data, items, child offsets, child
 * data, second child offsets, second child data); what a type does not use is None. */
static PyObject *col_tuple(const cs_col *c)
{
    size_t bits = (c->len + 7) / 8;
    PyObject *v[9] = {PyLong_FromSize_t(c->nulls), NULL, NULL, NULL, PyLong_FromSize_t(c->items),
                      NULL, NULL, NULL, NULL};
    v[1] = c->nulls ? bytes_of(&c->valid, bits) : Py_NewRef(Py_None);
    int offsets = c->type != CT_INT && c->type != CT_BOOL;
    v[2] = offsets ? bytes_of(&c->off, c->off.len) : Py_NewRef(Py_None);
    v[3] = c->type == CT_HEADERS || c->type == CT_STRLIST ? Py_NewRef(Py_None)
         : bytes_of(&c->data, c->type == CT_BOOL ? bits : c->data.len);
    int kids = c->type == CT_HEADERS ? 2 : c->type == CT_STRLIST ? 1 : 0;
    v[5] = kids ? bytes_of(&c->a_off, c->a_off.len) : Py_NewRef(Py_None);
    v[6] = kids ? bytes_of(&c->a_data, c->a_data.len) : Py_NewRef(Py_None);
    v[7] = kids == 2 ? bytes_of(&c->b_off, c->b_off.len) : Py_NewRef(Py_None);
    v[8] = kids == 2 ? bytes_of(&c->b_data, c->b_data.len) : Py_NewRef(Py_None);
    for (int i = 0; i < 9; i++)
        if (!v[i]) {
            for (int j = 0; j < 9; j++) Py_XDECREF(v[j]);
            return NULL;
        }
    PyObject *t = PyTuple_New(9);
    if (!t) {
        for (int j = 0; j < 9; j++) Py_DECREF(v[j]);
        return NULL;
    }
    for (int i = 0; i < 9; i++) PyTuple_SET_ITEM(t, i, v[i]);
    return t;
}

/* Buffers are kept for the next batch, unless one value made them much larger than a batch
 * (a body of up to 64 MiB with decoders): those are given back. */
static void table_reset(cs_table *t, size_t batch_bytes)
{
    for (int i = 0; i < t->ncols; i++) {
        cs_col *c = &t->cols[i];
        cs_buf *bufs[] = {&c->data, &c->a_data, &c->b_data};
        for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
            if (bufs[k]->cap > 2 * batch_bytes + 65536) buf_free(bufs[k]);
        col_reset(c);
    }
    t->rows = t->bytes = 0;
}

/* The table's rows as one batch, (rows, [column, ...]), emitted as (kind, batch). */
static void table_flush(cs_engine *e, cs_table *t)
{
    if (!t->rows || e->py_error) return;
    PyObject *cols = PyList_New(t->ncols);
    for (int i = 0; cols && i < t->ncols; i++) {
        PyObject *c = col_tuple(&t->cols[i]);
        if (!c) Py_CLEAR(cols);
        else PyList_SET_ITEM(cols, i, c);
    }
    PyObject *batch = cols ? Py_BuildValue("(nN)", (Py_ssize_t)t->rows, cols) : NULL;
    table_reset(t, e->batch_bytes);
    if (!batch) { cs_fail(e); return; }
    cs_emit(e, t->kind, batch);
}

void cs_tables_flush(cs_engine *e)
{
    for (int i = 0; i < e->ntables; i++) table_flush(e, e->tables[i]);
}

/* The record's fields not set are null; a batch is emitted once it is big enough. A record
 * that failed half-way leaves its batch inconsistent: the batch is dropped with it (the
 * engine call raises). */
void cs_col_end(cs_rec *r)
{
    cs_table *t = r->t;
    cs_engine *e = r->e;
    for (int i = 0; !r->err && i < t->ncols; i++) {
        cs_col *c = &t->cols[i];
        if (c->len == t->rows) done(r, c, 0, put_null_value(c));
    }
    if (r->err) {
        table_reset(t, e->batch_bytes);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_MemoryError, "columnar record buffers");
        cs_fail(e);
        return;
    }
    t->rows++;
    if (t->rows >= e->batch_rows || t->bytes >= e->batch_bytes) table_flush(e, t);
}
