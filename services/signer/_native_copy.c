/* The signer's COPY rows in PostgreSQL's binary COPY format, compiled.
 *
 * The format is PostgreSQL's ("COPY ... WITH (FORMAT binary)"): the signature, a flags word and an empty
 * header extension; per row the number of fields, then per field its length (-1 for NULL) and its value in
 * the type's binary send format; a trailer of -1. The values are written as asyncpg writes them through the
 * signer's connections (shared/db/pool.py with bulk_writer=True): jsonb as the version byte then
 * orjson.dumps of the value, timestamptz as microseconds since 2000-01-01 UTC, numeric as the base-10000
 * digits numeric_recv reads.
 *
 * A value it does not write exactly (another type than the column's plain Python one, an integer out of the
 * column's range, a datetime outside UTC or at datetime.max/min, a special or out-of-range Decimal, anything
 * orjson refuses) makes encode() return None: the caller then COPYs the whole table through asyncpg.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

/* Set once by configure(). */
static struct {
    PyObject *dumps;        /* orjson.dumps, as the pool's jsonb codec calls it */
    PyObject *decimal_type; /* decimal.Decimal */
    PyObject *utc;          /* datetime.UTC */
} config;

static PyObject *s_as_tuple;

/* The column kinds encode() takes, one byte per column. */
enum {
    KIND_TEXT = 't',
    KIND_INT8 = 'q',
    KIND_INT4 = 'i',
    KIND_INT2 = 'h',
    KIND_BOOL = 'b',
    KIND_TIMESTAMPTZ = 'T',
    KIND_NUMERIC = 'n',
    KIND_JSONB = 'j',
    KIND_BYTEA = 'y',
};

typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

/* -1: out of memory (a Python error is set). */
static int reserve(Buffer *buf, size_t more) {
    if (buf->len + more <= buf->cap)
        return 0;
    size_t cap = buf->cap ? buf->cap : 65536;
    while (cap < buf->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(buf->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

static inline void put16(Buffer *buf, uint16_t v) {
    unsigned char *p = (unsigned char *)buf->data + buf->len;
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    buf->len += 2;
}

static inline void put32(Buffer *buf, uint32_t v) {
    unsigned char *p = (unsigned char *)buf->data + buf->len;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    buf->len += 4;
}

static inline void put64(Buffer *buf, uint64_t v) {
    put32(buf, (uint32_t)(v >> 32));
    put32(buf, (uint32_t)v);
}

/* A length-prefixed field of n bytes. -1: out of memory. */
static int put_bytes(Buffer *buf, const char *bytes, Py_ssize_t n) {
    if (n > INT32_MAX) /* not a COPY field; unreachable for the signer's rows */
        return 1;
    if (reserve(buf, 4 + (size_t)n) < 0)
        return -1;
    put32(buf, (uint32_t)n);
    memcpy(buf->data + buf->len, bytes, (size_t)n);
    buf->len += (size_t)n;
    return 0;
}

/* Days from 0001-01-01 to the given proleptic Gregorian date (as datetime.toordinal() - 1). */
static long long days_before(int year, int month, int day) {
    static const int before_month[] = {0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    long long y = year - 1;
    long long days = y * 365 + y / 4 - y / 100 + y / 400 + before_month[month] + day - 1;
    if (month > 2 && (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
        days += 1;
    return days;
}

#define PG_EPOCH_DAYS 730119LL /* days_before(2000, 1, 1) */
#define USECS_PER_DAY 86400000000LL

/* The microseconds of datetime.max and datetime.min (UTC) since 2000-01-01: the pool's codec writes those two
 * as PostgreSQL's infinities, which this encoder leaves to it. */
static long long max_microseconds, min_microseconds;

/* Each returns 0 when the value was written, 1 when this encoder does not write it, -1 on a Python error. */

/* After a failed call: 1 (not written; asyncpg decides) for an Exception, which is cleared, and -1 for anything
 * else (KeyboardInterrupt, SystemExit), which propagates. */
static int declined(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 1;
}

static int put_text(Buffer *buf, PyObject *value) {
    if (!PyUnicode_CheckExact(value))
        return 1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
    if (utf8 == NULL) /* lone surrogates: asyncpg decides */
        return declined();
    return put_bytes(buf, utf8, n);
}

static int put_integer(Buffer *buf, PyObject *value, int size) {
    if (!PyLong_CheckExact(value))
        return 1;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow)
        return 1;
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (reserve(buf, 4 + 8) < 0)
        return -1;
    if (size == 8) {
        put32(buf, 8);
        put64(buf, (uint64_t)v);
    } else if (size == 4) {
        if (v < INT32_MIN || v > INT32_MAX)
            return 1;
        put32(buf, 4);
        put32(buf, (uint32_t)(int32_t)v);
    } else {
        if (v < INT16_MIN || v > INT16_MAX)
            return 1;
        put32(buf, 2);
        put16(buf, (uint16_t)(int16_t)v);
    }
    return 0;
}

static int put_bool(Buffer *buf, PyObject *value) {
    if (!PyBool_Check(value))
        return 1;
    if (reserve(buf, 5) < 0)
        return -1;
    put32(buf, 1);
    buf->data[buf->len++] = value == Py_True ? 1 : 0;
    return 0;
}

static int put_timestamptz(Buffer *buf, PyObject *value) {
    if (!PyDateTime_CheckExact(value) || PyDateTime_DATE_GET_TZINFO(value) != config.utc)
        return 1;
    long long days = days_before(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                 PyDateTime_GET_DAY(value)) - PG_EPOCH_DAYS;
    long long seconds = PyDateTime_DATE_GET_HOUR(value) * 3600LL + PyDateTime_DATE_GET_MINUTE(value) * 60LL
                        + PyDateTime_DATE_GET_SECOND(value);
    long long microseconds = days * USECS_PER_DAY + seconds * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(value);
    if (microseconds == max_microseconds || microseconds == min_microseconds)
        return 1;
    if (reserve(buf, 12) < 0)
        return -1;
    put32(buf, 8);
    put64(buf, (uint64_t)microseconds);
    return 0;
}

/* Decimals with more digits or a larger exponent than this are left to asyncpg (numeric(20,6) holds 20). */
#define MAX_DECIMAL_DIGITS 1000
#define MAX_DECIMAL_EXPONENT 10000
#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000

static inline long long floor_div4(long long p) { return p >= 0 ? p / 4 : -((-p + 3) / 4); }

/* numeric's binary format: ndigits, weight, sign, dscale (int16 each), then ndigits base-10000 digits, the
 * first of weight `weight` (value = sum of digit[i] * 10000^(weight - i)). dscale = the Decimal's fractional
 * digits, so numeric_recv truncates nothing; the column's typmod then rounds as for any client's value. */
static int put_numeric(Buffer *buf, PyObject *value) {
    if (Py_TYPE(value) != (PyTypeObject *)config.decimal_type)
        return 1;
    PyObject *parts = PyObject_CallMethodNoArgs(value, s_as_tuple);
    if (parts == NULL)
        return -1;
    int result = 1;
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 3)
        goto done;
    PyObject *sign_obj = PyTuple_GET_ITEM(parts, 0), *digits = PyTuple_GET_ITEM(parts, 1);
    PyObject *exponent_obj = PyTuple_GET_ITEM(parts, 2);
    if (!PyLong_CheckExact(exponent_obj) || !PyLong_CheckExact(sign_obj) || !PyTuple_Check(digits))
        goto done; /* NaN, sNaN, Infinity: exponent 'n', 'N', 'F' */
    int overflow;
    long long exponent = PyLong_AsLongLongAndOverflow(exponent_obj, &overflow);
    long sign = PyLong_AsLong(sign_obj);
    if (overflow || exponent < -MAX_DECIMAL_EXPONENT || exponent > MAX_DECIMAL_EXPONENT || (sign != 0 && sign != 1))
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(digits);
    if (n > MAX_DECIMAL_DIGITS)
        goto done;
    unsigned char decimal[MAX_DECIMAL_DIGITS];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(digits, i);
        long v = PyLong_CheckExact(d) ? PyLong_AsLong(d) : -1;
        if (v < 0 || v > 9) {
            PyErr_Clear();
            goto done;
        }
        decimal[i] = (unsigned char)v;
    }
    long long dscale = exponent < 0 ? -exponent : 0;
    if (dscale > 0x3FFF)
        goto done;
    /* Leading zeros carry nothing. */
    Py_ssize_t first = 0;
    while (first < n && decimal[first] == 0)
        first++;
    uint16_t groups[MAX_DECIMAL_DIGITS / 4 + 3];
    int ngroups = 0;
    long long weight = 0;
    if (first < n) {
        /* Digit i stands for 10^(exponent + n - 1 - i); group g holds the powers 4g .. 4g + 3. */
        long long top = exponent + (n - 1 - first);
        weight = floor_div4(top);
        long long bottom = floor_div4(exponent);
        ngroups = (int)(weight - bottom + 1);
        memset(groups, 0, sizeof(uint16_t) * (size_t)ngroups);
        static const uint16_t scale[4] = {1, 10, 100, 1000};
        for (Py_ssize_t i = first; i < n; i++) {
            long long power = exponent + (n - 1 - i);
            long long group = floor_div4(power);
            groups[weight - group] += (uint16_t)(decimal[i] * scale[power - 4 * group]);
        }
        while (ngroups > 0 && groups[ngroups - 1] == 0) /* trailing zero groups, as numeric_send strips them */
            ngroups--;
        if (weight < INT16_MIN || weight > INT16_MAX)
            goto done;
    }
    size_t size = 8 + 2 * (size_t)ngroups;
    if (reserve(buf, 4 + size) < 0) {
        result = -1;
        goto done;
    }
    put32(buf, (uint32_t)size);
    put16(buf, (uint16_t)ngroups);
    put16(buf, (uint16_t)(int16_t)weight);
    put16(buf, ngroups > 0 && sign == 1 ? NUMERIC_NEG : NUMERIC_POS);
    put16(buf, (uint16_t)dscale);
    for (int i = 0; i < ngroups; i++)
        put16(buf, groups[i]);
    result = 0;
done:
    Py_DECREF(parts);
    return result;
}

static int put_jsonb(Buffer *buf, PyObject *value) {
    if (PyDict_CheckExact(value) && PyDict_GET_SIZE(value) == 0) {
        /* The most common value (no content, no redactions): what orjson.dumps writes for it, without the call. */
        if (reserve(buf, 7) < 0)
            return -1;
        put32(buf, 3);
        memcpy(buf->data + buf->len, "\x01{}", 3);
        buf->len += 3;
        return 0;
    }
    PyObject *json = PyObject_CallOneArg(config.dumps, value);
    if (json == NULL) /* the pool's codec then writes it another way (json.dumps) or raises */
        return declined();
    int result = 1;
    if (PyBytes_CheckExact(json) && PyBytes_GET_SIZE(json) < INT32_MAX) {
        Py_ssize_t n = PyBytes_GET_SIZE(json);
        if (reserve(buf, 5 + (size_t)n) < 0) {
            result = -1;
        } else {
            put32(buf, (uint32_t)(n + 1));
            buf->data[buf->len++] = 1; /* jsonb's binary format version */
            memcpy(buf->data + buf->len, PyBytes_AS_STRING(json), (size_t)n);
            buf->len += (size_t)n;
            result = 0;
        }
    }
    Py_DECREF(json);
    return result;
}

static int put_bytea(Buffer *buf, PyObject *value) {
    if (!PyBytes_CheckExact(value))
        return 1;
    return put_bytes(buf, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
}

static int put_value(Buffer *buf, char kind, PyObject *value) {
    if (value == Py_None) {
        if (reserve(buf, 4) < 0)
            return -1;
        put32(buf, UINT32_MAX);
        return 0;
    }
    switch (kind) {
    case KIND_TEXT: return put_text(buf, value);
    case KIND_INT8: return put_integer(buf, value, 8);
    case KIND_INT4: return put_integer(buf, value, 4);
    case KIND_INT2: return put_integer(buf, value, 2);
    case KIND_BOOL: return put_bool(buf, value);
    case KIND_TIMESTAMPTZ: return put_timestamptz(buf, value);
    case KIND_NUMERIC: return put_numeric(buf, value);
    case KIND_JSONB: return put_jsonb(buf, value);
    case KIND_BYTEA: return put_bytea(buf, value);
    default: return 1;
    }
}

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

static PyObject *encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encode(kinds: bytes, records: sequence)");
        return NULL;
    }
    if (config.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_native_copy.configure() was not called");
        return NULL;
    }
    const char *kinds = PyBytes_AS_STRING(args[0]);
    Py_ssize_t columns = PyBytes_GET_SIZE(args[0]);
    if (columns > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many columns");
        return NULL;
    }
    PyObject *records = PySequence_Fast(args[1], "records must be a sequence");
    if (records == NULL)
        return NULL;
    Buffer buf = {NULL, 0, 0};
    PyObject *out = NULL;
    int status = reserve(&buf, sizeof SIGNATURE + 8);
    if (status == 0) {
        memcpy(buf.data, SIGNATURE, sizeof SIGNATURE);
        buf.len = sizeof SIGNATURE;
        put32(&buf, 0); /* flags: no OIDs */
        put32(&buf, 0); /* header extension: none */
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    for (Py_ssize_t r = 0; status == 0 && r < count; r++) {
        PyObject *record = items[r];
        PyObject **values;
        if (PyList_CheckExact(record) && PyList_GET_SIZE(record) == columns)
            values = ((PyListObject *)record)->ob_item;
        else if (PyTuple_Check(record) && PyTuple_GET_SIZE(record) == columns)
            values = ((PyTupleObject *)record)->ob_item;
        else {
            status = 1;
            break;
        }
        if (reserve(&buf, 2) < 0) {
            status = -1;
            break;
        }
        put16(&buf, (uint16_t)columns);
        for (Py_ssize_t c = 0; status == 0 && c < columns; c++)
            status = put_value(&buf, kinds[c], values[c]);
    }
    if (status == 0 && reserve(&buf, 2) == 0) {
        put16(&buf, UINT16_MAX); /* trailer */
        out = PyByteArray_FromStringAndSize(buf.data, (Py_ssize_t)buf.len);
    } else if (status == 1) {
        out = Py_NewRef(Py_None);
    }
    PyMem_Free(buf.data);
    Py_DECREF(records);
    return out;
}

static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "configure(dumps, decimal_type, utc)");
        return NULL;
    }
    Py_XSETREF(config.dumps, Py_NewRef(args[0]));
    Py_XSETREF(config.decimal_type, Py_NewRef(args[1]));
    Py_XSETREF(config.utc, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(dumps, decimal_type, utc): orjson.dumps, decimal.Decimal and datetime.UTC."},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(kinds, records) -> bytearray | None: the binary COPY data of records, one kind byte per column; "
     "None where a value is not one this encoder writes exactly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_copy", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native_copy(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    s_as_tuple = PyUnicode_InternFromString("as_tuple");
    if (s_as_tuple == NULL)
        return NULL;
    max_microseconds = (days_before(9999, 12, 31) - PG_EPOCH_DAYS) * USECS_PER_DAY + 86399999999LL;
    min_microseconds = -PG_EPOCH_DAYS * USECS_PER_DAY;
    return PyModule_Create(&module);
}
