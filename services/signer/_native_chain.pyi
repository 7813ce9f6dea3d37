"""The per-row work of ``appender.chain_rows`` for plain rows, compiled (``_native_chain.c``)."""

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

def configure(
    stored_columns: tuple[str, ...],
    dumps: Callable[..., bytes],
    checked_option: int,
    checked_default: Callable[[Any], Any],
    content_option: int,
    encode_error: type[Exception],
    decimal_type: type[Decimal],
    event_time_text: Callable[[Any], str],
    received_at_text: Callable[[Any], str],
    sha256: Callable[[bytes], Any],
    hash_version: int,
    row_tag: bytes,
    record_mask: int,
    /,
) -> None: ...
def chain_plain(
    rows: Sequence[Any],
    start: int,
    stop: int,
    salts: bytes,
    states: dict[str, list[Any]],
    key_id: str,
    pending: list[list[Any]],
    contents: list[tuple[str, int, bytes, Any]],
    digests: list[bytes],
    subtrees: list[tuple[str, int, bytes]],
    /,
) -> int: ...
def hash_with_cpu(wanted: bool, /) -> bool: ...
