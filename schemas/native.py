"""The native Avro reader and writer, when the ``changefeed_native`` extension is installed.

``native/`` holds its source (Rust); ``scripts/bootstrap.sh`` builds and installs it with the
package. It reads and writes the bodies of the changefeed schemas several times faster than
fastavro (a ``ChangeEvent`` is read in about a quarter of the time) and is held to fastavro
byte for byte and value for value (``tests/unit/schemas/test_schemas_native.py``):

* :func:`reader` gives ``read(data, start) -> (value, end)``: the value fastavro's
  ``schemaless_reader`` returns for the body starting at ``data[start]`` with the same writer
  schema, and the position after it. Anything it is not certain of (truncated bytes, invalid
  UTF-8, an index out of range, a varint over 64 bits, a boolean byte other than 0 and 1)
  raises ``ValueError``: the caller then asks fastavro, which decides, so values and errors
  are fastavro's either way.
* :func:`writer` gives ``encode(record) -> bytes | None``: ``prefix`` and the body fastavro's
  ``schemaless_writer`` writes, or ``None`` for any value outside what it handles exactly
  (see ``native/src/lib.rs``; e.g. a subclass where a plain type is expected, a missing
  field, a datetime), which the caller's other writers then handle.

Both return ``None`` when the extension is missing, when ``CHANGEFEED_NATIVE=0`` disables it,
or when the schema uses a type it does not handle; callers keep their own path for that case.
This module is the only one that imports the extension.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

try:
    import changefeed_native as _native
except ImportError:  # not built: fastavro serves
    _native = None

Read = Callable[[bytes, int], tuple[Any, int]]
Encode = Callable[[Any], bytes | None]

# fastavro reads a timestamp as this epoch plus a timedelta; so does the native reader.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def available() -> bool:
    """Whether the extension is installed and not disabled by ``CHANGEFEED_NATIVE=0``."""
    return _native is not None and os.environ.get("CHANGEFEED_NATIVE", "1") != "0"


def reader(schema: Any, *, micros: bool = False) -> Read | None:
    """The native reader of a fastavro-parsed writer schema, or None (see the module doc);
    ``micros`` reads timestamps as int microseconds instead of datetimes."""
    if not available():
        return None
    assert _native is not None
    try:
        return _native.Reader(schema, None if micros else _EPOCH).read_from  # type: ignore[no-any-return]
    except ValueError:  # a type it does not handle
        return None


def writer(schema: Any, prefix: bytes = b"") -> Encode | None:
    """The native writer of a fastavro-parsed schema, or None (see the module doc)."""
    if not available():
        return None
    assert _native is not None
    try:
        return _native.Writer(schema, prefix).encode  # type: ignore[no-any-return]
    except ValueError:
        return None
