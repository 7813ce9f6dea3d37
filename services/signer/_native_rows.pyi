"""The signer's reading of the usual canonical message, compiled from _native_rows.c (see rows.py)."""

from collections.abc import Callable
from typing import Any

from services.signer.rows import ChainRow
from shared.messages.auth import KeyStates

def configure(
    *,
    fields: tuple[tuple[str, int, bool, Any, int | None, int | None], ...],
    json_columns: tuple[str, ...],
    loads: Callable[[bytes], Any],
    from_iso: Callable[[str], Any],
    utc: Any,
    received_at: Callable[[str], Any],
    cost: Callable[[str], Any],
    row_type: type[ChainRow],
    headers: tuple[str, str, str, str],
    sha256: Callable[[bytes], Any],
) -> None: ...
def decode(value: object, headers: object, keys: dict[bytes, KeyStates], /) -> ChainRow | None: ...
def hash_with_cpu(wanted: bool, /) -> bool: ...
def sha_extensions_present(present: bool, /) -> bool: ...
def check_mac(entry: KeyStates, event_id: bytes, request_id: bytes, value: bytes, mac: bytes, /) -> bool: ...
