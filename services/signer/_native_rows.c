/* The signer's reading of the usual canonical message, compiled: what services.signer.worker's
 * decode_authenticated_row does for a message as canonical_event.encode_value writes it (headers in that
 * order, a MAC that holds, a key with a scope that permits the event) whose value orjson reads into a row of
 * the plain kind (every field of its type, integers in their column's range, JSON columns without floats and
 * with ASCII keys, event_time in UTC, no escaped NUL).
 *
 * decode() returns that row, or None for any other message: the Python path then reads it from the start and
 * accepts or refuses it, so every refusal (and its text) stays the Python path's. An exception raised by
 * anything called here (orjson, datetime, the cost helper, hashlib) also means None, except those that are not
 * an Exception (KeyboardInterrupt, SystemExit), which propagate.
 *
 * The schema (fields, their types, defaults and bounds) and the Python callables used are handed over once by
 * services/signer/rows.py through configure(), from the same definitions the Python path uses.
 *
 * The MAC is HMAC-SHA256 computed here, from the key's inner and outer SHA-256 midstates (made once per key,
 * see MacKey), on the CPU's SHA extensions where configure() found them to agree with hashlib; elsewhere
 * through hashlib states copied per message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <string.h>

#include "_sha256.h" /* SHA-256 on the CPU's SHA extensions, shared with _native_chain.c */

#define MAX_FIELDS 64
#define MAX_JSON_COLUMNS 8
#define MAX_PLAIN_DEPTH 64 /* deeper JSON is left to the Python path, which decides (and may refuse) it */
#define EVENT_ID_MAX 128
#define REQUEST_ID_MAX 64
#define MAC_HEX_LENGTH 64
#define DIGEST_LENGTH 32
#define SHA256_BLOCK 64
#define MAC_KEYS 8 /* keys whose midstates are kept: a keyring holds a few */

/* The JSON types a field may hold, as bits (the exact type: a bool is not an int here). */
enum {
    KIND_STR = 1,
    KIND_INT = 2,
    KIND_BOOL = 4,
    KIND_NONE = 8,
    KIND_DICT = 16,
    KIND_LIST = 32,
};

typedef struct {
    PyObject *name;          /* str */
    unsigned allowed;        /* KIND_* bits */
    int has_default;
    int default_is_dict;     /* a fresh {} for each row */
    PyObject *default_value; /* None, a bool, ... (immutable) */
    int bounded;
    long long low, high;     /* inclusive, when bounded */
} Field;

static Field fields[MAX_FIELDS];
static Py_ssize_t field_count;
static PyObject *field_index; /* name -> index */
static Py_ssize_t json_columns[MAX_JSON_COLUMNS];
static Py_ssize_t json_column_count;
static Py_ssize_t at_event_id, at_tenant_id, at_plane, at_event_type, at_event_time, at_received_at, at_cost;
static PyObject *loads, *from_iso, *utc, *received_at_of, *cost_of, *permits_name;
static PyTypeObject *row_type;
static PyObject *header_event_id, *header_request_id, *header_key_id, *header_mac;
static PyObject *name_copy, *name_update, *name_digest;
static PyObject *sha256_type; /* hashlib.sha256: the states of the path without the SHA extensions */
static int configured;

static unsigned
kind_of(PyObject *value)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type) return KIND_STR;
    if (type == &PyLong_Type) return KIND_INT;
    if (type == &PyBool_Type) return KIND_BOOL;
    if (value == Py_None) return KIND_NONE;
    if (type == &PyDict_Type) return KIND_DICT;
    if (type == &PyList_Type) return KIND_LIST;
    return 0;
}

/* shared.chain.json_is_plain, with a depth limit: 1 plain, 0 not plain (or too deep to decide here). */
static int
json_is_plain(PyObject *value, int depth)
{
    unsigned kind = kind_of(value);
    if (kind == KIND_DICT) {
        if (depth >= MAX_PLAIN_DEPTH) return 0;
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key)) return 0;
            if (!json_is_plain(item, depth + 1)) return 0;
        }
        return 1;
    }
    if (kind == KIND_LIST) {
        if (depth >= MAX_PLAIN_DEPTH) return 0;
        /* The list is the decoder's fresh object, which nothing else holds: its length stays put. */
        for (Py_ssize_t index = 0; index < PyList_GET_SIZE(value); index++) {
            if (!json_is_plain(PyList_GET_ITEM(value, index), depth + 1)) return 0;
        }
        return 1;
    }
    return kind == KIND_STR || kind == KIND_INT || kind == KIND_NONE || kind == KIND_BOOL;
}

/* Whether key (an exact str) is the field name (an ASCII str): by identity, or as ASCII text. */
static inline int
is_name(PyObject *key, PyObject *name)
{
    if (key == name) return 1;
    Py_ssize_t length = PyUnicode_GET_LENGTH(name);
    return PyUnicode_IS_COMPACT_ASCII(key) && PyUnicode_GET_LENGTH(key) == length
           && memcmp(PyUnicode_DATA(key), PyUnicode_DATA(name), (size_t)length) == 0;
}

/* The pattern [A-Za-z0-9._-] (and ':' when colon): the event id's and the request id's header. */
static int
is_id(PyObject *bytes, Py_ssize_t longest, int colon)
{
    Py_ssize_t length = PyBytes_GET_SIZE(bytes);
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(bytes);
    if (length < 1 || length > longest) return 0;
    for (Py_ssize_t index = 0; index < length; index++) {
        unsigned char c = text[index];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_'
              || c == '-' || (colon && c == ':'))) {
            return 0;
        }
    }
    return 1;
}

/* The (name, bytes) pair of a header as encode_value writes it, or NULL. */
static PyObject *
header_value(PyObject *pair, PyObject *name)
{
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) return NULL;
    PyObject *found = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
    if (!PyUnicode_CheckExact(found) || !PyBytes_CheckExact(value)) return NULL;
    if (found != name && PyUnicode_Compare(found, name) != 0) return NULL; /* exact str: cannot fail */
    return value;
}

static void
put_length(unsigned char *out, Py_ssize_t length)
{
    unsigned long long value = (unsigned long long)length;
    for (int index = 7; index >= 0; index--) {
        out[index] = (unsigned char)(value & 0xff);
        value >>= 8;
    }
}

/* -1: an error that must propagate; 0: the call failed with an Exception (cleared: not usual). */
static int
failed(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* One key's HMAC-SHA256 in one domain, made from its keys entry (Keyring.states_by_header): the inner
 * SHA-256 state fed the key's inner pad and the domain, and the outer one fed its outer pad. Keying costs
 * more than the MAC of a short message, so it is done once per key and each message starts from a copy.
 * Both forms are kept, hashlib's objects and the midstates for the SHA extensions, so the tests can switch
 * between the two paths (hash_with_cpu). */
typedef struct {
    PyObject *entry; /* held, so that no other entry takes its address while it is cached */
    PyObject *inner_state, *outer_state;
#ifdef HAVE_SHA_EXTENSIONS
    Sha256 inner, outer;
#endif
} MacKey;

static MacKey *mac_keys[MAC_KEYS];
static int next_mac_key;
/* Whether the MAC is computed on the CPU's SHA extensions: they are there and agree with hashlib (found by
 * configure), and in_place_wanted (tests turn it off to run the hashlib path). */
static int hash_in_place, in_place_works, in_place_wanted = 1;
/* What configure found, kept for sha_extensions_present. */
static int in_place_found;

/* Zeroes memory even though it is about to be freed (which a plain memset before free may be dropped as). */
static void
wipe(void *memory, size_t size)
{
    volatile unsigned char *at = (volatile unsigned char *)memory;
    while (size--) *at++ = 0;
}

/* The midstates are key material: zeroed before their memory goes back. */
static void
forget_mac_key(MacKey *key)
{
    if (key == NULL) return;
    Py_XDECREF(key->entry);
    Py_XDECREF(key->inner_state);
    Py_XDECREF(key->outer_state);
    wipe(key, sizeof(*key));
    PyMem_Free(key);
}

static void
forget_mac_keys(void)
{
    for (int index = 0; index < MAC_KEYS; index++) {
        MacKey *key = mac_keys[index];
        mac_keys[index] = NULL;
        forget_mac_key(key);
    }
    next_mac_key = 0;
}

/* The MacKey of a keys entry (inner prefix, outer prefix, scope, answers) in *out: the one made already for
 * this very entry, or a new one (replacing the oldest when all are taken). 1 done; 0 hashlib raised an
 * Exception (cleared: the Python path decides); -1 an error to propagate (an entry of another shape). */
static int
mac_key_of(PyObject *entry, MacKey **out)
{
    for (int index = 0; index < MAC_KEYS; index++) {
        if (mac_keys[index] != NULL && mac_keys[index]->entry == entry) {
            *out = mac_keys[index];
            return 1;
        }
    }
    PyObject *inner_prefix = PyTuple_GET_ITEM(entry, 0), *outer_prefix = PyTuple_GET_ITEM(entry, 1);
    /* bytes, or auth.KeyMaterial (bytes that hide themselves from repr) */
    if (!PyBytes_Check(inner_prefix) || PyBytes_GET_SIZE(inner_prefix) < SHA256_BLOCK
        || !PyBytes_Check(outer_prefix) || PyBytes_GET_SIZE(outer_prefix) != SHA256_BLOCK) {
        PyErr_SetString(PyExc_TypeError, "a keys entry starts with the key's inner prefix and outer pad (bytes)");
        return -1;
    }
    MacKey *key = PyMem_Calloc(1, sizeof(MacKey));
    if (key == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    key->entry = Py_NewRef(entry);
    key->inner_state = PyObject_CallOneArg(sha256_type, inner_prefix);
    key->outer_state = key->inner_state == NULL ? NULL : PyObject_CallOneArg(sha256_type, outer_prefix);
    if (key->outer_state == NULL) {
        forget_mac_key(key);
        return failed();
    }
#ifdef HAVE_SHA_EXTENSIONS
    /* Only where configure found the instructions working: on a CPU without them they would kill the process
     * (SIGILL), and the hashlib states above are all the MAC then uses. */
    if (in_place_works) {
        sha256_start(&key->inner);
        sha256_add(&key->inner, (const unsigned char *)PyBytes_AS_STRING(inner_prefix),
                   (size_t)PyBytes_GET_SIZE(inner_prefix));
        sha256_start(&key->outer);
        sha256_add(&key->outer, (const unsigned char *)PyBytes_AS_STRING(outer_prefix), SHA256_BLOCK);
    }
#endif
    /* The slot holds the new key before the old one is released, so that nothing reached while releasing it
     * can find a freed key in the cache. */
    MacKey *evicted = mac_keys[next_mac_key];
    mac_keys[next_mac_key] = key;
    next_mac_key = (next_mac_key + 1) % MAC_KEYS;
    forget_mac_key(evicted);
    *out = key;
    return 1;
}

/* The inner and outer hashes through hashlib, from copies of the key's states: 1 with the digest in out, 0 (an
 * Exception on the way, or no 32-byte digest), -1 an error to propagate. */
static int
hashlib_mac(const MacKey *key, const unsigned char *prefix, Py_ssize_t prefix_length, PyObject *value,
            unsigned char out[DIGEST_LENGTH])
{
    int result = 0;
    PyObject *inner = NULL, *outer = NULL, *inner_digest = NULL, *digest = NULL, *done = NULL;
    /* Held for the calls below, which could reach code that changes the cache of keys. */
    PyObject *inner_state = Py_NewRef(key->inner_state), *outer_state = Py_NewRef(key->outer_state);
    PyObject *head = PyBytes_FromStringAndSize((const char *)prefix, prefix_length);
    if (head == NULL) goto error;
    inner = PyObject_CallMethodNoArgs(inner_state, name_copy);
    if (inner == NULL) goto error;
    done = PyObject_CallMethodOneArg(inner, name_update, head);
    if (done == NULL) goto error;
    Py_DECREF(done);
    done = PyObject_CallMethodOneArg(inner, name_update, value);
    if (done == NULL) goto error;
    Py_DECREF(done);
    inner_digest = PyObject_CallMethodNoArgs(inner, name_digest);
    if (inner_digest == NULL) goto error;
    outer = PyObject_CallMethodNoArgs(outer_state, name_copy);
    if (outer == NULL) goto error;
    done = PyObject_CallMethodOneArg(outer, name_update, inner_digest);
    if (done == NULL) goto error;
    Py_DECREF(done);
    digest = PyObject_CallMethodNoArgs(outer, name_digest);
    if (digest == NULL) goto error;
    if (PyBytes_CheckExact(digest) && PyBytes_GET_SIZE(digest) == DIGEST_LENGTH) {
        memcpy(out, PyBytes_AS_STRING(digest), DIGEST_LENGTH);
        result = 1;
    }
    goto done;
error:
    result = failed();
done:
    Py_DECREF(inner_state);
    Py_DECREF(outer_state);
    Py_XDECREF(head);
    Py_XDECREF(inner);
    Py_XDECREF(inner_digest);
    Py_XDECREF(outer);
    Py_XDECREF(digest);
    return result;
}

/* Whether mac (64 lowercase hex digits) is the HMAC-SHA256 of the fields under the key:
 * 1 yes, 0 no (or an Exception on the way), -1 an error to propagate. */
static int
mac_holds(const MacKey *key, PyObject *event_id, PyObject *request_id, PyObject *value, PyObject *mac)
{
    unsigned char prefix[8 + EVENT_ID_MAX + 8 + REQUEST_ID_MAX + 8];
    Py_ssize_t event_length = PyBytes_GET_SIZE(event_id), request_length = PyBytes_GET_SIZE(request_id);
    unsigned char *at = prefix;
    put_length(at, event_length);
    memcpy(at + 8, PyBytes_AS_STRING(event_id), (size_t)event_length);
    at += 8 + event_length;
    put_length(at, request_length);
    memcpy(at + 8, PyBytes_AS_STRING(request_id), (size_t)request_length);
    at += 8 + request_length;
    put_length(at, PyBytes_GET_SIZE(value));
    at += 8;

    unsigned char bytes[DIGEST_LENGTH];
#ifdef HAVE_SHA_EXTENSIONS
    if (hash_in_place) {
        /* Copies of the midstates: hashing overwrites each one's state before anything is read from it. */
        Sha256 inner = key->inner, outer = key->outer;
        unsigned char inner_digest[DIGEST_LENGTH];
        sha256_add(&inner, prefix, (size_t)(at - prefix));
        sha256_add(&inner, (const unsigned char *)PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        sha256_end(&inner, inner_digest);
        sha256_add(&outer, inner_digest, DIGEST_LENGTH);
        sha256_end(&outer, bytes);
    }
    else
#endif
    {
        int hashed = hashlib_mac(key, prefix, at - prefix, value, bytes);
        if (hashed <= 0) return hashed;
    }
    static const char hex[] = "0123456789abcdef";
    const unsigned char *sent = (const unsigned char *)PyBytes_AS_STRING(mac);
    unsigned difference = 0; /* every byte compared, as hmac.compare_digest does */
    for (int index = 0; index < DIGEST_LENGTH; index++) {
        difference |= (unsigned)(sent[2 * index] ^ (unsigned char)hex[bytes[index] >> 4]);
        difference |= (unsigned)(sent[2 * index + 1] ^ (unsigned char)hex[bytes[index] & 0x0f]);
    }
    return difference == 0;
}

/* Whether the key's scope permits (plane, event type), as KeyScope.permits answers: 1, 0, or -1 (error). */
static int
scope_permits(PyObject *scope, PyObject *answers, PyObject *plane, PyObject *event_type)
{
    if (PyDict_CheckExact(answers)) {
        PyObject *pair = PyTuple_Pack(2, plane, event_type);
        if (pair == NULL) return -1;
        PyObject *known = PyDict_GetItemWithError(answers, pair); /* borrowed */
        Py_DECREF(pair);
        if (known == Py_True) return 1;
        if (known == Py_False) return 0;
        if (known == NULL && PyErr_Occurred()) return -1;
    }
    PyObject *answer = PyObject_CallMethodObjArgs(scope, permits_name, plane, event_type, NULL);
    if (answer == NULL) return failed();
    int permitted = answer == Py_True;
    Py_DECREF(answer);
    return permitted;
}

/* The row of data (orjson's fresh dict, which becomes the row's values) or NULL with no error set when it is
 * not of the usual kind; NULL with an error set for an error to propagate. */
static PyObject *
usual_row(PyObject *data, PyObject *raw, PyObject *raw_event_id, PyObject *scope, PyObject *answers)
{
    PyObject *held[MAX_FIELDS]; /* borrowed from data */
    memset(held, 0, sizeof(held));
    Py_ssize_t position = 0, expected = 0;
    PyObject *key, *item;
    while (PyDict_Next(data, &position, &key, &item)) {
        if (!PyUnicode_CheckExact(key)) return NULL;
        Py_ssize_t index;
        if (expected < field_count && is_name(key, fields[expected].name)) {
            index = expected; /* the fields in their order, as CanonicalEvent.to_json writes them */
        }
        else {
            PyObject *index_object = PyDict_GetItemWithError(field_index, key);
            if (index_object == NULL) return NULL; /* an unknown field (a lookup of an exact str cannot fail) */
            index = PyLong_AsSsize_t(index_object);
            if (index < 0 || index >= field_count) {
                PyErr_Clear();
                return NULL;
            }
        }
        expected = index + 1;
        Field *field = &fields[index];
        unsigned kind = kind_of(item);
        if ((field->allowed & kind) == 0) return NULL;
        if (kind == KIND_INT && field->bounded) {
            int overflow = 0;
            long long number = PyLong_AsLongLongAndOverflow(item, &overflow);
            if (number == -1 && PyErr_Occurred()) return NULL;
            if (overflow != 0 || number < field->low || number > field->high) return NULL;
        }
        held[index] = item;
    }
    for (Py_ssize_t index = 0; index < field_count; index++) {
        if (held[index] == NULL && !fields[index].has_default) return NULL; /* a required field is missing */
    }
    for (Py_ssize_t column = 0; column < json_column_count; column++) {
        PyObject *value = held[json_columns[column]];
        if (value != NULL && !json_is_plain(value, 0)) return NULL;
    }
    /* An escaped NUL (the only way one arrives) is replaced as stored by the Python path. */
    const char *text = PyBytes_AS_STRING(raw);
    Py_ssize_t length = PyBytes_GET_SIZE(raw);
    for (const char *at = memchr(text, '\\', (size_t)length); at != NULL;
         at = memchr(at + 1, '\\', (size_t)(text + length - at - 1))) {
        if (text + length - at >= 6 && memcmp(at, "\\u0000", 6) == 0) return NULL;
    }
    PyObject *event_id = held[at_event_id], *event_type = held[at_event_type], *plane = held[at_plane];
    /* The event id the value names is exactly its header's (the header's bytes are ASCII). */
    if (!PyUnicode_IS_COMPACT_ASCII(event_id) || PyUnicode_GET_LENGTH(event_id) != PyBytes_GET_SIZE(raw_event_id)
        || memcmp(PyUnicode_DATA(event_id), PyBytes_AS_STRING(raw_event_id), (size_t)PyBytes_GET_SIZE(raw_event_id))
               != 0) {
        return NULL;
    }
    int permitted = scope_permits(scope, answers, plane, event_type);
    if (permitted <= 0) return NULL;

    PyObject *event_time = NULL, *received_at = NULL, *cost = NULL, *row = NULL;
    event_time = PyObject_CallOneArg(from_iso, held[at_event_time]);
    if (event_time == NULL) goto failure;
    if (!PyDateTime_CheckExact(event_time) || PyDateTime_DATE_GET_TZINFO(event_time) != utc) goto not_usual;
    received_at = PyObject_CallOneArg(received_at_of, held[at_received_at]);
    if (received_at == NULL) goto failure;
    if (held[at_cost] != NULL && held[at_cost] != Py_None) {
        cost = PyObject_CallOneArg(cost_of, held[at_cost]);
        if (cost == NULL) goto failure;
        if (cost == Py_None) goto not_usual;
    }
    /* Only now is data changed: the defaults of the fields it leaves out, in the fields' order, then the
     * parsed values in place of their texts. */
    for (Py_ssize_t index = 0; index < field_count; index++) {
        if (held[index] != NULL) continue;
        Field *field = &fields[index];
        PyObject *fresh = field->default_is_dict ? PyDict_New() : Py_NewRef(field->default_value);
        if (fresh == NULL) goto error;
        int stored = PyDict_SetItem(data, field->name, fresh);
        Py_DECREF(fresh);
        if (stored < 0) goto error;
    }
    if (PyDict_SetItem(data, fields[at_event_time].name, event_time) < 0) goto error;
    if (PyDict_SetItem(data, fields[at_received_at].name, received_at) < 0) goto error;
    if (cost != NULL && PyDict_SetItem(data, fields[at_cost].name, cost) < 0) goto error;
    /* A ChainRow (a tuple subclass) from its five values, as tuple.__new__ makes one. event_id and tenant_id
     * are still held by data. */
    row = row_type->tp_alloc(row_type, 5);
    if (row == NULL) goto error;
    PyTuple_SET_ITEM(row, 0, Py_NewRef(event_id));
    PyTuple_SET_ITEM(row, 1, Py_NewRef(held[at_tenant_id]));
    PyTuple_SET_ITEM(row, 2, Py_NewRef(data));
    PyTuple_SET_ITEM(row, 3, Py_NewRef(raw));
    PyTuple_SET_ITEM(row, 4, Py_NewRef(Py_True));
    goto done;
failure:
    if (failed() < 0) goto error;
not_usual:
    Py_CLEAR(row);
    goto done;
error:
    Py_CLEAR(row);
done:
    Py_XDECREF(event_time);
    Py_XDECREF(received_at);
    Py_XDECREF(cost);
    return row;
}

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode(value, headers, keys) takes three arguments");
        return NULL;
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "decode() before configure()");
        return NULL;
    }
    PyObject *value = args[0], *headers = args[1], *keys = args[2];
    if (!PyDict_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a dict");
        return NULL;
    }
    if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) == 0) Py_RETURN_NONE;
    Py_ssize_t count;
    PyObject **pairs;
    if (PyList_CheckExact(headers)) {
        count = PyList_GET_SIZE(headers);
        pairs = ((PyListObject *)headers)->ob_item;
    }
    else if (PyTuple_CheckExact(headers)) {
        count = PyTuple_GET_SIZE(headers);
        pairs = ((PyTupleObject *)headers)->ob_item;
    }
    else {
        Py_RETURN_NONE;
    }
    if (count != 3 && count != 4) Py_RETURN_NONE;
    /* Each header's bytes, referenced while they are used: nothing below runs until they are taken. */
    PyObject *raw_event_id = header_value(pairs[0], header_event_id);
    PyObject *raw_request_id = count == 4 ? header_value(pairs[1], header_request_id) : NULL;
    PyObject *key_id = header_value(pairs[count - 2], header_key_id);
    PyObject *mac = header_value(pairs[count - 1], header_mac);
    if (raw_event_id == NULL || key_id == NULL || mac == NULL || (count == 4 && raw_request_id == NULL))
        Py_RETURN_NONE;
    if (!is_id(raw_event_id, EVENT_ID_MAX, 1)) Py_RETURN_NONE;
    if (raw_request_id != NULL && !is_id(raw_request_id, REQUEST_ID_MAX, 0)) Py_RETURN_NONE;
    if (PyBytes_GET_SIZE(mac) != MAC_HEX_LENGTH) Py_RETURN_NONE;
    PyObject *entry = PyDict_GetItemWithError(keys, key_id); /* borrowed */
    if (entry == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4) {
        PyErr_SetString(PyExc_TypeError, "keys maps a key id to (inner prefix, outer pad, scope, answers)");
        return NULL;
    }
    PyObject *scope = PyTuple_GET_ITEM(entry, 2);
    if (scope == Py_None) Py_RETURN_NONE; /* a key with no scope may sign nothing: refused by the Python path */

    PyObject *result = NULL, *data = NULL;
    Py_INCREF(entry);
    Py_INCREF(raw_event_id);
    Py_INCREF(mac);
    if (raw_request_id == NULL) {
        raw_request_id = PyBytes_FromStringAndSize("", 0); /* the MAC covers an empty request id */
        if (raw_request_id == NULL) goto done;
    }
    else {
        Py_INCREF(raw_request_id);
    }
    MacKey *mac_key = NULL;
    int keyed = mac_key_of(entry, &mac_key);
    if (keyed < 0) goto done;
    if (keyed == 0) goto not_usual;
    int holds = mac_holds(mac_key, raw_event_id, raw_request_id, value, mac);
    if (holds < 0) goto done;
    if (holds == 0) goto not_usual;
    data = PyObject_CallOneArg(loads, value);
    if (data == NULL) {
        if (failed() < 0) goto done;
        goto not_usual;
    }
    if (!PyDict_CheckExact(data)) goto not_usual;
    result = usual_row(data, value, raw_event_id, scope, PyTuple_GET_ITEM(entry, 3));
    if (result != NULL || PyErr_Occurred()) goto done;
not_usual:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(data);
    Py_XDECREF(raw_request_id);
    Py_DECREF(mac);
    Py_DECREF(raw_event_id);
    Py_DECREF(entry);
    return result;
}

static void
release_configuration(void)
{
    for (Py_ssize_t index = 0; index < field_count; index++) {
        Py_CLEAR(fields[index].name);
        Py_CLEAR(fields[index].default_value);
    }
    field_count = 0;
    json_column_count = 0;
    Py_CLEAR(field_index);
    Py_CLEAR(loads);
    Py_CLEAR(from_iso);
    Py_CLEAR(utc);
    Py_CLEAR(received_at_of);
    Py_CLEAR(cost_of);
    Py_CLEAR(row_type);
    Py_CLEAR(header_event_id);
    Py_CLEAR(header_request_id);
    Py_CLEAR(header_key_id);
    Py_CLEAR(header_mac);
    forget_mac_keys(); /* made with the hashlib of this configuration */
    Py_CLEAR(sha256_type);
    configured = 0;
}

static int
index_of(const char *name, Py_ssize_t *out)
{
    PyObject *index = PyDict_GetItemString(field_index, name);
    if (index == NULL) {
        PyErr_Format(PyExc_ValueError, "the fields have no %s", name);
        return -1;
    }
    *out = PyLong_AsSsize_t(index);
    return *out < 0 ? -1 : 0;
}

static int
read_field(PyObject *spec, Field *field)
{
    PyObject *name, *default_value, *low, *high;
    int allowed, has_default;
    if (!PyArg_ParseTuple(spec, "UipOOO;a field is (name, kinds, has default, default, low, high)", &name, &allowed,
                          &has_default, &default_value, &low, &high)) {
        return -1;
    }
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_COMPACT_ASCII(name)) {
        PyErr_SetString(PyExc_ValueError, "a field's name is an ASCII str");
        return -1;
    }
    field->allowed = (unsigned)allowed;
    field->has_default = has_default;
    field->default_is_dict = 0;
    if (has_default) {
        if (PyDict_CheckExact(default_value)) {
            if (PyDict_GET_SIZE(default_value) != 0) {
                PyErr_SetString(PyExc_ValueError, "a dict default must be empty");
                return -1;
            }
            field->default_is_dict = 1;
        }
        else if (!(default_value == Py_None || PyBool_Check(default_value) || PyUnicode_CheckExact(default_value)
                   || PyLong_CheckExact(default_value))) {
            PyErr_SetString(PyExc_ValueError, "a default must be None, a bool, a str, an int or an empty dict");
            return -1;
        }
    }
    field->bounded = low != Py_None;
    if (field->bounded) {
        field->low = PyLong_AsLongLong(low);
        if (field->low == -1 && PyErr_Occurred()) return -1;
        field->high = PyLong_AsLongLong(high);
        if (field->high == -1 && PyErr_Occurred()) return -1;
    }
    field->name = Py_NewRef(name);
    field->default_value = Py_NewRef(default_value);
    return 0;
}

static PyObject *
configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *names[] = {"fields", "json_columns", "loads", "from_iso", "utc", "received_at", "cost", "row_type",
                            "headers", "sha256", NULL};
    PyObject *specs, *json_names, *loads_, *from_iso_, *utc_, *received_at_, *cost_, *row_type_, *header_names;
    PyObject *sha256_;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OOOOOO!O!O:configure", names, &PyTuple_Type, &specs,
                                     &PyTuple_Type, &json_names, &loads_, &from_iso_, &utc_, &received_at_, &cost_,
                                     &PyType_Type, &row_type_, &PyTuple_Type, &header_names, &sha256_)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(specs) > MAX_FIELDS || PyTuple_GET_SIZE(json_names) > MAX_JSON_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "too many fields or JSON columns");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)row_type_, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "row_type must be a tuple subclass");
        return NULL;
    }
    release_configuration();
    field_index = PyDict_New();
    if (field_index == NULL) return NULL;
    for (Py_ssize_t index = 0; index < PyTuple_GET_SIZE(specs); index++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, index);
        if (!PyTuple_Check(spec) || read_field(spec, &fields[index]) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a field is a tuple");
            goto error;
        }
        field_count = index + 1;
        PyObject *number = PyLong_FromSsize_t(index);
        if (number == NULL || PyDict_SetItem(field_index, fields[index].name, number) < 0) {
            Py_XDECREF(number);
            goto error;
        }
        Py_DECREF(number);
    }
    for (Py_ssize_t column = 0; column < PyTuple_GET_SIZE(json_names); column++) {
        PyObject *name = PyTuple_GET_ITEM(json_names, column);
        PyObject *index = PyDict_GetItemWithError(field_index, name);
        if (index == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a JSON column is not a field");
            goto error;
        }
        json_columns[column] = PyLong_AsSsize_t(index);
        json_column_count = column + 1;
    }
    if (index_of("event_id", &at_event_id) < 0 || index_of("tenant_id", &at_tenant_id) < 0
        || index_of("plane", &at_plane) < 0 || index_of("event_type", &at_event_type) < 0
        || index_of("event_time", &at_event_time) < 0 || index_of("received_at", &at_received_at) < 0
        || index_of("cost", &at_cost) < 0) {
        goto error;
    }
    /* The row's own fields must hold a str, and the timestamps arrive as one. */
    Py_ssize_t texts[] = {at_event_id, at_tenant_id, at_plane, at_event_type, at_event_time, at_received_at};
    for (size_t index = 0; index < sizeof(texts) / sizeof(texts[0]); index++) {
        if (fields[texts[index]].allowed != KIND_STR || fields[texts[index]].has_default) {
            PyErr_SetString(PyExc_ValueError, "event_id, tenant_id, plane, event_type and the times are required str");
            goto error;
        }
    }
    if ((fields[at_cost].allowed & ~(unsigned)(KIND_STR | KIND_NONE)) != 0) {
        PyErr_SetString(PyExc_ValueError, "cost is a str or None");
        goto error;
    }
    if (!PyArg_ParseTuple(header_names, "UUUU;headers are (event id, request id, key id, mac)", &header_event_id,
                          &header_request_id, &header_key_id, &header_mac)) {
        header_event_id = header_request_id = header_key_id = header_mac = NULL;
        goto error;
    }
    Py_INCREF(header_event_id);
    Py_INCREF(header_request_id);
    Py_INCREF(header_key_id);
    Py_INCREF(header_mac);
    loads = Py_NewRef(loads_);
    from_iso = Py_NewRef(from_iso_);
    utc = Py_NewRef(utc_);
    received_at_of = Py_NewRef(received_at_);
    cost_of = Py_NewRef(cost_);
    row_type = (PyTypeObject *)Py_NewRef(row_type_);
    sha256_type = Py_NewRef(sha256_);
    hash_in_place = 0;
#ifdef HAVE_SHA_EXTENSIONS
    int agrees = sha256_extensions_agree(sha256_type);
    if (agrees < 0) goto error;
    in_place_works = agrees;
#endif
    in_place_found = in_place_works;
    hash_in_place = in_place_works && in_place_wanted;
    configured = 1;
    Py_RETURN_NONE;
error:
    release_configuration();
    return NULL;
}

/* For the tests: as on a CPU without the SHA extensions (present false), or as configure found the CPU (true);
 * the keys cached so far are forgotten, so that keys are made afresh as they are on such a CPU. */
static PyObject *
sha_extensions_present(PyObject *module, PyObject *present)
{
    (void)module;
    int flag = PyObject_IsTrue(present);
    if (flag < 0) return NULL;
    forget_mac_keys();
    in_place_works = flag && in_place_found;
    hash_in_place = in_place_works && in_place_wanted;
    return PyBool_FromLong(in_place_works);
}

static PyObject *
hash_with_cpu(PyObject *module, PyObject *wanted)
{
    (void)module;
    int flag = PyObject_IsTrue(wanted);
    if (flag < 0) return NULL;
    in_place_wanted = flag;
    hash_in_place = in_place_works && in_place_wanted;
    return PyBool_FromLong(hash_in_place);
}

/* decode()'s MAC check alone, for the tests: with a keys entry, the two ids and the value. */
static PyObject *
check_mac(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *entry, *event_id, *request_id, *value, *mac;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!:check_mac", &PyTuple_Type, &entry, &PyBytes_Type, &event_id,
                          &PyBytes_Type, &request_id, &PyBytes_Type, &value, &PyBytes_Type, &mac)) {
        return NULL;
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "check_mac() before configure()");
        return NULL;
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4 || !PyBytes_CheckExact(event_id)
        || PyBytes_GET_SIZE(event_id) > EVENT_ID_MAX || !PyBytes_CheckExact(request_id)
        || PyBytes_GET_SIZE(request_id) > REQUEST_ID_MAX || !PyBytes_CheckExact(value)
        || !PyBytes_CheckExact(mac) || PyBytes_GET_SIZE(mac) != MAC_HEX_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "check_mac(entry, event id, request id, value, mac) as decode() takes them");
        return NULL;
    }
    MacKey *key = NULL;
    int keyed = mac_key_of(entry, &key);
    if (keyed <= 0) return keyed < 0 ? NULL : Py_NewRef(Py_False);
    int holds = mac_holds(key, event_id, request_id, value, mac);
    if (holds < 0) return NULL;
    return PyBool_FromLong(holds);
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "Hand over the schema and the callables the Python path uses (services/signer/rows.py does, once)."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(value, headers, keys): the row of a usual canonical message, or None for the Python path."},
    {"hash_with_cpu", hash_with_cpu, METH_O,
     "hash_with_cpu(wanted: bool) -> bool\nThe MAC on the CPU's SHA extensions where they work (the default), or "
     "through hashlib; returns whether the CPU's are used."},
    {"sha_extensions_present", sha_extensions_present, METH_O,
     "sha_extensions_present(present: bool) -> bool\nAs on a CPU without the SHA extensions (False) or as configure "
     "found this one (True); returns whether they are used where wanted (tests)."},
    {"check_mac", check_mac, METH_VARARGS,
     "check_mac(entry, event_id, request_id, value, mac) -> bool\nWhether decode() finds the MAC holds (tests)."},
    {NULL, NULL, 0, NULL},
};

/* The keys' midstates do not outlive the module (where the interpreter frees it). */
static void
free_module(void *module)
{
    (void)module;
    forget_mac_keys();
}

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "services.signer._native_rows",
    "The signer's reading of the usual canonical message, compiled (see services/signer/rows.py).", -1, methods,
    NULL, NULL, NULL, free_module,
};

PyMODINIT_FUNC
PyInit__native_rows(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    name_copy = PyUnicode_InternFromString("copy");
    name_update = PyUnicode_InternFromString("update");
    name_digest = PyUnicode_InternFromString("digest");
    permits_name = PyUnicode_InternFromString("permits");
    if (name_copy == NULL || name_update == NULL || name_digest == NULL || permits_name == NULL) return NULL;
    return PyModule_Create(&module_definition);
}
