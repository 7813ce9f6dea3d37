"""RFC 8785 (JSON Canonicalization Scheme) serialisation, fast for the values audit rows hold.

The rfc8785 package is exact but pure Python and slow (about 100 µs for an audit row). For the JSON our
rows contain (objects with ASCII keys, strings, integers within 2^53, booleans, null) orjson
produces byte-for-byte the same output, because for those values JCS and compact, key-sorted, UTF-8 JSON
(orjson with OPT_SORT_KEYS) agree: the same escapes (\\b \\f \\n \\r \\t, \\" \\\\, other
controls as lower-case \\u00xx, nothing else escaped) and, for ASCII keys, the same key order. Anything else
(floats, non-ASCII keys, integers beyond 2^53) takes the exact path.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

_MAX_SAFE_INT = 2**53 - 1


def _fast_path_ok(value: Any) -> bool:
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            item_kind = type(item)
            # Most values in audit rows are plain strings: settle those without a call.
            if item_kind is not str and item is not None and not _fast_path_ok(item):
                return False
        return True
    if kind is list:
        return all(_fast_path_ok(v) for v in value)
    return False


def canonicalize(value: Any) -> bytes:
    if _fast_path_ok(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return bytes(rfc8785.dumps(value))
