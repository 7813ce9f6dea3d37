/* The per-row work of appender.chain_rows for plain rows (ChainRow.plain), compiled.
 *
 * It does what the Python loop does for such a row, in the same order and with the same callables where
 * they decide the bytes (orjson.dumps with the same options and default=, shared.chain's timestamp texts
 * for any zone but UTC), so the results are the same bytes: the chain columns set on the row's values, the
 * content digest, the canonical bytes (content swapped for its digest and whole-second timestamps for their
 * text while orjson writes them, then put back), the row hash, the COPY record, the audit_content row, the
 * Merkle frontier and the merkle_subtrees record of the leaves that get one (shared.proofs.has_record).
 * SHA-256 runs on the CPU's SHA extensions where it has them, else through hashlib.
 *
 * A row it does not handle (not plain, a value of an unexpected type, one orjson refuses) it hands back to
 * the Python path, which then decides as it always did; it keeps nothing of that row (the chain columns it
 * may have set the Python path sets again to the same values).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "_sha256.h" /* SHA-256 on the CPU's SHA extensions, shared with _native_rows.c */

#define SALT_BYTES 32
#define HASH_BYTES 32
/* A leaf completes at most one subtree per bit of its index, the leaf itself included. */
#define MAX_COMPLETED ((sizeof(long long) * CHAR_BIT + 1) * HASH_BYTES)

/* Set once by configure(), from the Python definitions. */
static struct {
    PyObject *stored_columns;   /* tuple of str: the record's leading values, in order */
    PyObject *dumps;            /* orjson.dumps */
    PyObject *checked_option;   /* int: the canonical bytes' orjson options */
    PyObject *checked_default;  /* the canonical bytes' default= */
    PyObject *content_option;   /* int: the content's orjson options */
    PyObject *encode_error;     /* orjson.JSONEncodeError */
    PyObject *decimal_type;     /* decimal.Decimal */
    PyObject *event_time_text;  /* whole-second event_time -> its canonical text */
    PyObject *received_at_text; /* whole-second received_at -> its canonical text */
    PyObject *sha256;           /* hashlib.sha256 */
    PyObject *hash_version;     /* int */
    PyObject *row_tag;          /* bytes: the row hash's domain tag */
    long long record_mask;      /* a leaf gets a subtree record when leaf & mask == mask */
} config;

static PyObject *s_chain_seq, *s_signing_key_id, *s_hash_version, *s_content, *s_content_digest;
static PyObject *s_event_time, *s_received_at, *s_cost, *s_digest, *s_default, *s_option;
static PyObject *checked_kwnames, *content_kwnames;

static const unsigned char LEAF_PREFIX = 0x00;
static const unsigned char NODE_PREFIX = 0x01;


/* Whether sha256_of hashes with the CPU's SHA extensions: they are there and agree with hashlib (found by
 * configure), and in_place_wanted (tests turn it off to run the hashlib path). */
static int hash_in_place, in_place_works, in_place_wanted = 1;

/* SHA-256 of the concatenation of up to three parts: a new bytes object. */
static PyObject *
sha256_of(const void *a, Py_ssize_t a_size, const void *b, Py_ssize_t b_size, const void *c, Py_ssize_t c_size)
{
#ifdef HAVE_SHA_EXTENSIONS
    if (hash_in_place) {
        Sha256 sha;
        unsigned char digest[HASH_BYTES];
        sha256_start(&sha);
        sha256_add(&sha, a, (size_t)a_size);
        sha256_add(&sha, b, (size_t)b_size);
        sha256_add(&sha, c, (size_t)c_size);
        sha256_end(&sha, digest);
        return PyBytes_FromStringAndSize((const char *)digest, HASH_BYTES);
    }
#endif
    PyObject *data = PyBytes_FromStringAndSize(NULL, a_size + b_size + c_size);
    if (data == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data);
    memcpy(out, a, (size_t)a_size);
    if (b_size) {
        memcpy(out + a_size, b, (size_t)b_size);
    }
    if (c_size) {
        memcpy(out + a_size + b_size, c, (size_t)c_size);
    }
    PyObject *hasher = PyObject_CallOneArg(config.sha256, data);
    Py_DECREF(data);
    if (hasher == NULL) {
        return NULL;
    }
    PyObject *digest = PyObject_CallMethodNoArgs(hasher, s_digest);
    Py_DECREF(hasher);
    if (digest != NULL && !(PyBytes_CheckExact(digest) && PyBytes_GET_SIZE(digest) == HASH_BYTES)) {
        Py_DECREF(digest);
        PyErr_SetString(PyExc_TypeError, "sha256 gave no 32-byte digest");
        return NULL;
    }
    return digest;
}

static PyObject *
hex_of(PyObject *digest)
{
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t size = PyBytes_GET_SIZE(digest);
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(digest);
    PyObject *text = PyUnicode_New(size * 2, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < size; i++) {
        out[2 * i] = (Py_UCS1)digits[in[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)digits[in[i] & 15];
    }
    return text;
}

static void
put_digits(Py_UCS1 *out, int value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (Py_UCS1)('0' + value % 10);
        value /= 10;
    }
}

/* The canonical text of a whole-second timestamp: shared.chain.format_timestamp written out for one in UTC
 * (its isoformat, "YYYY-MM-DDTHH:MM:SS.000000", and "Z"); for any other zone, the Python function. */
static PyObject *
whole_second_text(PyObject *timestamp, PyObject *python_text)
{
    if (PyDateTime_DATE_GET_TZINFO(timestamp) != PyDateTime_TimeZone_UTC) {
        return PyObject_CallOneArg(python_text, timestamp);
    }
    PyObject *text = PyUnicode_New(27, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    memcpy(out, "0000-00-00T00:00:00.000000Z", 27);
    put_digits(out, PyDateTime_GET_YEAR(timestamp), 4);
    put_digits(out + 5, PyDateTime_GET_MONTH(timestamp), 2);
    put_digits(out + 8, PyDateTime_GET_DAY(timestamp), 2);
    put_digits(out + 11, PyDateTime_DATE_GET_HOUR(timestamp), 2);
    put_digits(out + 14, PyDateTime_DATE_GET_MINUTE(timestamp), 2);
    put_digits(out + 17, PyDateTime_DATE_GET_SECOND(timestamp), 2);
    return text;
}

/* orjson.dumps(value, <kwnames>=...): a new bytes object; NULL with the exception set. */
static PyObject *
dumps(PyObject *value, PyObject *default_, PyObject *option)
{
    PyObject *args[3] = {value, default_, option};
    PyObject *json;
    if (default_ != NULL) {
        json = PyObject_Vectorcall(config.dumps, args, 1, checked_kwnames);
    } else {
        args[1] = option;
        json = PyObject_Vectorcall(config.dumps, args, 1, content_kwnames);
    }
    if (json != NULL && !PyBytes_Check(json)) {
        Py_DECREF(json);
        PyErr_SetString(PyExc_TypeError, "orjson.dumps gave no bytes");
        return NULL;
    }
    return json;
}

/* An orjson.JSONEncodeError is cleared (returns 0: the Python path decides); anything else stays (-1). */
static int
refused_or_error(void)
{
    if (PyErr_ExceptionMatches(config.encode_error)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* The keys of a row's values, in the dict's order, and where the columns the row's work reads are among
 * them. Rows decoded from the same kind of message have the same keys in the same order (mostly the very
 * same objects: orjson keeps the keys it made), so a layout found once serves every such row: its values are
 * read by position in one pass over the dict instead of one lookup per column, and the row's own key objects
 * make each write a hit on the first compare. */
#define MAX_KEYS 128
#define LAYOUTS 16
typedef struct {
    Py_ssize_t size;
    PyObject **keys;          /* size strong references */
    Py_ssize_t *column_at;    /* of each stored column */
    Py_ssize_t content_at, event_time_at, received_at_at, cost_at;  /* -1: absent */
    Py_ssize_t chain_seq_at, signing_key_id_at, hash_version_at;
} Layout;

static Layout *layouts[LAYOUTS];
static int next_layout;

static void
free_layout(Layout *layout)
{
    if (layout == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < layout->size; i++) {
        Py_XDECREF(layout->keys[i]);
    }
    PyMem_Free(layout->keys);
    PyMem_Free(layout->column_at);
    PyMem_Free(layout);
}

/* Where ``name`` is among ``keys`` (all exact str): its index, -1 if absent, -2 on an error. */
static Py_ssize_t
position_of(PyObject *const *keys, Py_ssize_t size, PyObject *name)
{
    for (Py_ssize_t i = 0; i < size; i++) {
        if (keys[i] == name) {
            return i;
        }
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        int equal = PyObject_RichCompareBool(keys[i], name, Py_EQ);
        if (equal < 0) {
            return -2;
        }
        if (equal) {
            return i;
        }
    }
    return -1;
}

/* Two exact str equal? Mostly the same object; else compared by hash (cached in each), then text. */
static int
same_text(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(a);
    if (length != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)
        || PyObject_Hash(a) != PyObject_Hash(b)) {
        return 0;
    }
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(length * PyUnicode_KIND(a))) == 0;
}

static int
same_keys(const Layout *layout, PyObject *const *keys, Py_ssize_t size)
{
    if (layout->size != size) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!same_text(layout->keys[i], keys[i])) {
            return 0;
        }
    }
    return 1;
}

/* The layout of ``keys``: a cached one, or a new one put in the cache. NULL without an exception when the
 * row lacks a column the work reads (the Python path then raises what it raises). */
static Layout *
layout_of(PyObject *const *keys, Py_ssize_t size)
{
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!PyUnicode_CheckExact(keys[i])) {
            return NULL;
        }
    }
    for (int i = 0; i < LAYOUTS; i++) {
        Layout *layout = layouts[i];
        if (layout != NULL && same_keys(layout, keys, size)) {
            return layout;
        }
    }
    Py_ssize_t columns = PyTuple_GET_SIZE(config.stored_columns);
    Layout *layout = PyMem_Calloc(1, sizeof(Layout));
    if (layout == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    layout->keys = PyMem_Calloc((size_t)size + 1, sizeof(PyObject *));
    layout->column_at = PyMem_Calloc((size_t)columns + 1, sizeof(Py_ssize_t));
    if (layout->keys == NULL || layout->column_at == NULL) {
        free_layout(layout);
        PyErr_NoMemory();
        return NULL;
    }
    layout->size = size;
    for (Py_ssize_t i = 0; i < size; i++) {
        layout->keys[i] = Py_NewRef(keys[i]);
    }
    for (Py_ssize_t i = 0; i < columns; i++) {
        layout->column_at[i] = position_of(keys, size, PyTuple_GET_ITEM(config.stored_columns, i));
        if (layout->column_at[i] < 0) {
            goto unusable;
        }
    }
    struct { Py_ssize_t *at; PyObject *name; } named[] = {
        {&layout->content_at, s_content}, {&layout->event_time_at, s_event_time},
        {&layout->received_at_at, s_received_at}, {&layout->cost_at, s_cost}, {&layout->chain_seq_at, s_chain_seq},
        {&layout->signing_key_id_at, s_signing_key_id}, {&layout->hash_version_at, s_hash_version},
    };
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        *named[i].at = position_of(keys, size, named[i].name);
        if (*named[i].at == -2) {
            goto unusable;
        }
    }
    if (layout->content_at < 0 || layout->event_time_at < 0 || layout->received_at_at < 0) {
        goto unusable;
    }
    free_layout(layouts[next_layout]);
    layouts[next_layout] = layout;
    next_layout = (next_layout + 1) % LAYOUTS;
    return layout;

unusable:
    free_layout(layout);
    return NULL;
}

/* Sets *canonical to shared.chain.canonical_bytes_v2_checked(values, committed), changing and restoring
 * ``values`` as that function does (the keys are the dict's own). Returns 1 when set, 0 when orjson refused
 * the values or one is not of the type expected (the general path decides), -1 on an error. */
static int
checked_canonical(PyObject *values, const Layout *layout, PyObject *const *keys, PyObject *const *found,
                  PyObject *committed, PyObject **canonical)
{
    PyObject *content_key = keys[layout->content_at];
    PyObject *event_time_key = keys[layout->event_time_at];
    PyObject *received_at_key = keys[layout->received_at_at];
    PyObject *cost_key = layout->cost_at < 0 ? NULL : keys[layout->cost_at];
    PyObject *content = found[layout->content_at];
    PyObject *event_time = found[layout->event_time_at];
    PyObject *received_at = found[layout->received_at_at];
    PyObject *cost = cost_key == NULL ? NULL : found[layout->cost_at];
    if (!PyDateTime_CheckExact(event_time) || !PyDateTime_CheckExact(received_at)) {
        return 0;
    }
    int status = -1;
    PyObject *event_time_text = NULL, *received_at_text = NULL, *cost_text = NULL, *hex = NULL, *json = NULL;
    /* orjson leaves out ".000000" on a whole second; the canonical form never does. */
    if (PyDateTime_DATE_GET_MICROSECOND(event_time) == 0) {
        event_time_text = whole_second_text(event_time, config.event_time_text);
        if (event_time_text == NULL) {
            goto done;
        }
    }
    if (PyDateTime_DATE_GET_MICROSECOND(received_at) == 0) {
        received_at_text = whole_second_text(received_at, config.received_at_text);
        if (received_at_text == NULL) {
            goto done;
        }
    }
    /* The text orjson's default= would give the cost, without the call back into Python. */
    if (cost != NULL && Py_IS_TYPE(cost, (PyTypeObject *)config.decimal_type)) {
        cost_text = PyObject_Str(cost);
        if (cost_text == NULL) {
            goto done;
        }
    }
    hex = hex_of(committed);
    if (hex == NULL) {
        goto done;
    }

    /* The same changes to the dict as the Python path, in the same order: its key order stays the same. */
    if (PyDict_DelItem(values, content_key) < 0) {
        goto done;
    }
    int swapped = PyDict_SetItem(values, s_content_digest, hex) == 0
        && (event_time_text == NULL || PyDict_SetItem(values, event_time_key, event_time_text) == 0)
        && (received_at_text == NULL || PyDict_SetItem(values, received_at_key, received_at_text) == 0)
        && (cost_text == NULL || PyDict_SetItem(values, cost_key, cost_text) == 0);
    if (swapped) {
        json = dumps(values, config.checked_default, config.checked_option);
    }
    /* Put everything back, keeping any exception of the above for after. */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int restored = (PyDict_DelItem(values, s_content_digest) == 0 || (PyErr_Clear(), 1))
        && PyDict_SetItem(values, content_key, content) == 0
        && (event_time_text == NULL || PyDict_SetItem(values, event_time_key, event_time) == 0)
        && (received_at_text == NULL || PyDict_SetItem(values, received_at_key, received_at) == 0)
        && (cost_text == NULL || PyDict_SetItem(values, cost_key, cost) == 0);
    if (!restored) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        Py_CLEAR(json);
        goto done;
    }
    PyErr_Restore(type, value, traceback);
    if (json == NULL) {
        status = swapped ? refused_or_error() : -1;
        goto done;
    }
    *canonical = json;
    status = 1;

done:
    Py_XDECREF(event_time_text);
    Py_XDECREF(received_at_text);
    Py_XDECREF(cost_text);
    Py_XDECREF(hex);
    return status;
}

/* shared.merkle.append_leaf(stack, size, entry), returning the completed hashes only when ``wanted``
 * (else Py_None): 1 done, -1 error. */
static int
append_leaf(PyObject *stack, long long size, PyObject *entry, int wanted, PyObject **completed)
{
    char hashes[MAX_COMPLETED];
    Py_ssize_t filled = 0;
    PyObject *node = sha256_of(&LEAF_PREFIX, 1, PyBytes_AS_STRING(entry), PyBytes_GET_SIZE(entry), NULL, 0);
    if (node == NULL) {
        return -1;
    }
    if (wanted) {
        memcpy(hashes, PyBytes_AS_STRING(node), HASH_BYTES);
        filled = HASH_BYTES;
    }
    while (size & 1) {
        Py_ssize_t depth = PyList_GET_SIZE(stack);
        if (depth == 0) {
            PyErr_SetString(PyExc_IndexError, "pop from empty list");
            Py_DECREF(node);
            return -1;
        }
        PyObject *left = PyList_GET_ITEM(stack, depth - 1);
        Py_INCREF(left);
        if (PyList_SetSlice(stack, depth - 1, depth, NULL) < 0) {
            Py_DECREF(left);
            Py_DECREF(node);
            return -1;
        }
        if (!PyBytes_Check(left)) {
            PyErr_SetString(PyExc_TypeError, "a frontier hash is not bytes");
            Py_DECREF(left);
            Py_DECREF(node);
            return -1;
        }
        PyObject *parent = sha256_of(&NODE_PREFIX, 1, PyBytes_AS_STRING(left), PyBytes_GET_SIZE(left),
                                     PyBytes_AS_STRING(node), HASH_BYTES);
        Py_DECREF(left);
        Py_DECREF(node);
        if (parent == NULL) {
            return -1;
        }
        node = parent;
        if (wanted && filled + HASH_BYTES <= (Py_ssize_t)sizeof(hashes)) {
            memcpy(hashes + filled, PyBytes_AS_STRING(node), HASH_BYTES);
            filled += HASH_BYTES;
        }
        size >>= 1;
    }
    int appended = PyList_Append(stack, node);
    Py_DECREF(node);
    if (appended < 0) {
        return -1;
    }
    if (wanted) {
        *completed = PyBytes_FromStringAndSize(hashes, filled);
        return *completed == NULL ? -1 : 1;
    }
    *completed = Py_NewRef(Py_None);
    return 1;
}

typedef struct {
    const char *salts;
    PyObject *states, *key_id, *pending, *contents, *digests, *subtrees;
} Batch;

/* One row: 1 chained, 0 left to the Python path (nothing kept), -1 error. */
static int
chain_row(const Batch *batch, PyObject *row, Py_ssize_t index)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 5 || PyTuple_GET_ITEM(row, 4) != Py_True) {
        return 0;
    }
    PyObject *tenant = PyTuple_GET_ITEM(row, 1);
    PyObject *values = PyTuple_GET_ITEM(row, 2);
    if (!PyDict_CheckExact(values) || PyDict_GET_SIZE(values) > MAX_KEYS) {
        return 0;
    }
    PyObject *state = PyDict_GetItemWithError(batch->states, tenant);
    if (state == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyList_CheckExact(state) || PyList_GET_SIZE(state) != 3 || !PyLong_CheckExact(PyList_GET_ITEM(state, 0))
        || !PyBytes_CheckExact(PyList_GET_ITEM(state, 1)) || !PyList_CheckExact(PyList_GET_ITEM(state, 2))) {
        return 0;
    }
    int overflow;
    long long last = PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(state, 0), &overflow);
    if (overflow || last < 0 || last == LLONG_MAX) {
        return 0;
    }
    PyObject *keys[MAX_KEYS], *found[MAX_KEYS], *key, *value;
    Py_ssize_t size = 0, position = 0;
    while (size < MAX_KEYS && PyDict_Next(values, &position, &key, &value)) {
        keys[size] = key;
        found[size] = value;
        size++;
    }
    Layout *layout = layout_of(keys, size);
    if (layout == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }

    int status = -1;
    PyObject *seq = NULL, *salt = NULL, *json = NULL, *committed = NULL, *canonical = NULL;
    PyObject *digest = NULL, *record = NULL, *stored = NULL, *completed = NULL, *leaf = NULL, *subtree = NULL;
    /* Held for the row's duration: the Python code called on the way (default=, the timestamp texts)
     * could change what the batch's containers hold. */
    Py_INCREF(row);
    Py_INCREF(state);
    PyObject *prev = Py_NewRef(PyList_GET_ITEM(state, 1));
    PyObject *stack = Py_NewRef(PyList_GET_ITEM(state, 2));
    Py_ssize_t columns = PyTuple_GET_SIZE(config.stored_columns);
    /* [*_event_values(values), seq, prev, digest, key_id, HASH_VERSION, committed, None]: the values first,
     * while the positions found are the dict's; the row's work changes none of them. */
    record = PyList_New(columns + 7);
    if (record == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < columns; i++) {
        PyList_SET_ITEM(record, i, Py_NewRef(found[layout->column_at[i]]));
    }
    /* The record holds the stored columns' values; the content and the keys written to are held here. */
    Py_ssize_t held_at[] = {layout->content_at, layout->event_time_at, layout->received_at_at, layout->cost_at};
    PyObject *held[2 * sizeof(held_at) / sizeof(held_at[0])] = {NULL};
    for (size_t i = 0; i < sizeof(held_at) / sizeof(held_at[0]); i++) {
        if (held_at[i] >= 0) {
            held[2 * i] = Py_NewRef(keys[held_at[i]]);
            held[2 * i + 1] = Py_NewRef(found[held_at[i]]);
        }
    }
    PyObject *content = found[layout->content_at];

    seq = PyLong_FromLongLong(last + 1);
    if (seq == NULL
        || PyDict_SetItem(values, layout->chain_seq_at < 0 ? s_chain_seq : keys[layout->chain_seq_at], seq) < 0
        || PyDict_SetItem(values, layout->signing_key_id_at < 0 ? s_signing_key_id : keys[layout->signing_key_id_at],
                          batch->key_id) < 0
        || PyDict_SetItem(values, layout->hash_version_at < 0 ? s_hash_version : keys[layout->hash_version_at],
                          config.hash_version) < 0) {
        goto release;
    }
    salt = PyBytes_FromStringAndSize(batch->salts + index * SALT_BYTES, SALT_BYTES);
    if (salt == NULL) {
        goto release;
    }

    /* shared.chain.plain_content_digest */
    int nonempty = PyObject_IsTrue(content);
    if (nonempty < 0) {
        goto release;
    }
    if (nonempty) {
        json = dumps(content, NULL, config.content_option);
        if (json == NULL) {
            status = refused_or_error();
            goto release;
        }
        committed = sha256_of(PyBytes_AS_STRING(salt), SALT_BYTES, PyBytes_AS_STRING(json), PyBytes_GET_SIZE(json),
                              NULL, 0);
    } else {
        committed = sha256_of(PyBytes_AS_STRING(salt), SALT_BYTES, "{}", 2, NULL, 0);
    }
    if (committed == NULL) {
        goto release;
    }

    int checked = checked_canonical(values, layout, keys, found, committed, &canonical);
    if (checked <= 0) {
        status = checked;
        goto release;
    }
    /* shared.chain.row_hash */
    digest = sha256_of(PyBytes_AS_STRING(config.row_tag), PyBytes_GET_SIZE(config.row_tag), PyBytes_AS_STRING(prev),
                       PyBytes_GET_SIZE(prev), PyBytes_AS_STRING(canonical), PyBytes_GET_SIZE(canonical));
    if (digest == NULL) {
        goto release;
    }
    PyList_SET_ITEM(record, columns, Py_NewRef(seq));
    PyList_SET_ITEM(record, columns + 1, Py_NewRef(prev));
    PyList_SET_ITEM(record, columns + 2, Py_NewRef(digest));
    PyList_SET_ITEM(record, columns + 3, Py_NewRef(batch->key_id));
    PyList_SET_ITEM(record, columns + 4, Py_NewRef(config.hash_version));
    PyList_SET_ITEM(record, columns + 5, Py_NewRef(committed));
    PyList_SET_ITEM(record, columns + 6, Py_NewRef(Py_None));
    stored = PyTuple_Pack(4, tenant, seq, salt, content);
    if (stored == NULL || PyList_Append(batch->pending, record) < 0 || PyList_Append(batch->contents, stored) < 0
        || PyList_Append(batch->digests, digest) < 0) {
        goto release;
    }
    /* The state's list is the one held above: put the new head in it. */
    if (PyList_SetItem(state, 0, Py_NewRef(seq)) < 0 || PyList_SetItem(state, 1, Py_NewRef(digest)) < 0) {
        goto release;
    }
    int wanted = (last & config.record_mask) == config.record_mask;
    if (append_leaf(stack, last, digest, wanted, &completed) < 0) {
        goto release;
    }
    if (wanted) {
        leaf = PyLong_FromLongLong(last);
        subtree = leaf == NULL ? NULL : PyTuple_Pack(3, tenant, leaf, completed);
        if (subtree == NULL || PyList_Append(batch->subtrees, subtree) < 0) {
            goto release;
        }
    }
    status = 1;

release:
    for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
        Py_XDECREF(held[i]);
    }
done:
    Py_XDECREF(seq);
    Py_XDECREF(salt);
    Py_XDECREF(json);
    Py_XDECREF(committed);
    Py_XDECREF(canonical);
    Py_XDECREF(digest);
    Py_XDECREF(record);
    Py_XDECREF(stored);
    Py_XDECREF(completed);
    Py_XDECREF(leaf);
    Py_XDECREF(subtree);
    Py_DECREF(prev);
    Py_DECREF(stack);
    Py_DECREF(state);
    Py_DECREF(row);
    return status;
}

static PyObject *
chain_plain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (config.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_native_chain.configure() was not called");
        return NULL;
    }
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "chain_plain() takes 10 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *rows = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    if (stop == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *salts = args[3];
    Batch batch = {NULL, args[4], args[5], args[6], args[7], args[8], args[9]};
    if (!PyList_Check(rows) && !PyTuple_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list or a tuple");
        return NULL;
    }
    if (!PyBytes_Check(salts) || !PyDict_Check(batch.states) || !PyUnicode_Check(batch.key_id)
        || !PyList_Check(batch.pending) || !PyList_Check(batch.contents) || !PyList_Check(batch.digests)
        || !PyList_Check(batch.subtrees)) {
        PyErr_SetString(PyExc_TypeError, "chain_plain(rows, start, stop, salts: bytes, states: dict, key_id: str, "
                                         "pending: list, contents: list, digests: list, subtrees: list)");
        return NULL;
    }
    if (start < 0 || stop < start || stop > PySequence_Fast_GET_SIZE(rows)
        || PyBytes_GET_SIZE(salts) / SALT_BYTES < stop) {
        PyErr_SetString(PyExc_ValueError, "rows or salts out of range");
        return NULL;
    }
    Py_INCREF(salts);  /* the salts are read through a pointer into it */
    batch.salts = PyBytes_AS_STRING(salts);
    Py_ssize_t index = start;
    for (; index < stop; index++) {
        if (index >= PySequence_Fast_GET_SIZE(rows)) {  /* a list shortened meanwhile */
            break;
        }
        int chained = chain_row(&batch, PySequence_Fast_GET_ITEM(rows, index), index);
        if (chained < 0) {
            Py_DECREF(salts);
            return NULL;
        }
        if (chained == 0) {
            break;
        }
    }
    Py_DECREF(salts);
    return PyLong_FromSsize_t(index);
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *stored_columns, *dumps_, *checked_option, *checked_default, *content_option, *encode_error;
    PyObject *decimal_type, *event_time_text, *received_at_text, *sha256, *hash_version, *row_tag;
    long long record_mask;
    if (!PyArg_ParseTuple(args, "O!OO!OO!OOOOOO!O!L:configure", &PyTuple_Type, &stored_columns, &dumps_,
                          &PyLong_Type, &checked_option, &checked_default, &PyLong_Type, &content_option,
                          &encode_error, &decimal_type, &event_time_text, &received_at_text, &sha256,
                          &PyLong_Type, &hash_version, &PyBytes_Type, &row_tag, &record_mask)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(stored_columns); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(stored_columns, i))) {
            PyErr_SetString(PyExc_TypeError, "stored columns must be str");
            return NULL;
        }
    }
    if (!PyType_Check(decimal_type) || !PyExceptionClass_Check(encode_error)) {
        PyErr_SetString(PyExc_TypeError, "decimal_type must be a type and encode_error an exception class");
        return NULL;
    }
    Py_XSETREF(config.stored_columns, Py_NewRef(stored_columns));
    Py_XSETREF(config.dumps, Py_NewRef(dumps_));
    Py_XSETREF(config.checked_option, Py_NewRef(checked_option));
    Py_XSETREF(config.checked_default, Py_NewRef(checked_default));
    Py_XSETREF(config.content_option, Py_NewRef(content_option));
    Py_XSETREF(config.encode_error, Py_NewRef(encode_error));
    Py_XSETREF(config.decimal_type, Py_NewRef(decimal_type));
    Py_XSETREF(config.event_time_text, Py_NewRef(event_time_text));
    Py_XSETREF(config.received_at_text, Py_NewRef(received_at_text));
    Py_XSETREF(config.sha256, Py_NewRef(sha256));
    Py_XSETREF(config.hash_version, Py_NewRef(hash_version));
    Py_XSETREF(config.row_tag, Py_NewRef(row_tag));
    config.record_mask = record_mask;
    hash_in_place = 0;
#ifdef HAVE_SHA_EXTENSIONS
    int agrees = sha256_extensions_agree(sha256);
    if (agrees < 0) {
        return NULL;
    }
    in_place_works = agrees;
#endif
    hash_in_place = in_place_works && in_place_wanted;
    Py_RETURN_NONE;
}

static PyObject *
hash_with_cpu(PyObject *Py_UNUSED(module), PyObject *wanted)
{
    int flag = PyObject_IsTrue(wanted);
    if (flag < 0) {
        return NULL;
    }
    in_place_wanted = flag;
    hash_in_place = in_place_works && in_place_wanted;
    return PyBool_FromLong(hash_in_place);
}

static PyMethodDef methods[] = {
    {"hash_with_cpu", hash_with_cpu, METH_O,
     "hash_with_cpu(wanted: bool) -> bool\nSHA-256 on the CPU's SHA extensions where they work (the default), "
     "or through hashlib; returns whether the CPU's are used."},
    {"configure", configure, METH_VARARGS,
     "configure(stored_columns, dumps, checked_option, checked_default, content_option, encode_error, "
     "decimal_type, event_time_text, received_at_text, sha256, hash_version, row_tag, record_mask)\n"
     "The definitions the compiled path follows, from the Python modules that own them."},
    {"chain_plain", (PyCFunction)(void (*)(void))chain_plain, METH_FASTCALL,
     "chain_plain(rows, start, stop, salts, states, key_id, pending, contents, digests, subtrees) -> int\n"
     "Chains rows[start:stop] while they are plain; returns the index of the first row it left to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native_chain", "The per-row work of chain_rows for plain rows, compiled.", -1, methods,
};

static int
intern(PyObject **target, const char *text)
{
    *target = PyUnicode_InternFromString(text);
    return *target == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__native_chain(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    if (intern(&s_chain_seq, "chain_seq") < 0 || intern(&s_signing_key_id, "signing_key_id") < 0
        || intern(&s_hash_version, "hash_version") < 0 || intern(&s_content, "content") < 0
        || intern(&s_content_digest, "content_digest") < 0 || intern(&s_event_time, "event_time") < 0
        || intern(&s_received_at, "received_at") < 0 || intern(&s_cost, "cost") < 0
        || intern(&s_digest, "digest") < 0 || intern(&s_default, "default") < 0 || intern(&s_option, "option") < 0) {
        return NULL;
    }
    checked_kwnames = PyTuple_Pack(2, s_default, s_option);
    content_kwnames = PyTuple_Pack(1, s_option);
    if (checked_kwnames == NULL || content_kwnames == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
