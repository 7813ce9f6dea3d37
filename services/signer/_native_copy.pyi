"""The signer's COPY rows in PostgreSQL's binary COPY format, compiled (``_native_copy.c``)."""

from collections.abc import Callable, Sequence
from datetime import tzinfo
from decimal import Decimal
from typing import Any

def configure(dumps: Callable[[Any], bytes], decimal_type: type[Decimal], utc: tzinfo, /) -> None: ...
def encode(kinds: bytes, records: Sequence[Sequence[Any]], /) -> bytearray | None: ...
