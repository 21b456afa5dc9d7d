"""Field parsers for the demo API's JSON bodies: each returns the clean value or raises.

A parser takes the raw JSON value and returns what is stored; on bad input it raises
:class:`FieldInvalid` with a message meant for the API caller. Keeping them as small
functions lets every resource declare its fields as data (see :mod:`.domain`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Parser = Callable[[Any], Any]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_AMOUNT = 1_000_000_000


class FieldInvalid(ValueError):
    """A value the caller sent does not fit its field (becomes a 422 naming the field)."""


def text(max_length: int, *, allow_empty: bool = False) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise FieldInvalid("must be a string")
        stripped = value.strip()
        if not stripped and not allow_empty:
            raise FieldInvalid("must not be empty")
        if len(stripped) > max_length:
            raise FieldInvalid(f"must be at most {max_length} characters")
        return stripped

    return parse


def choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in options:
            raise FieldInvalid(f"must be one of {', '.join(options)}")
        return str(value)

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldInvalid("must be true or false")
    return value


def amount(value: Any) -> float:
    """A positive money amount with at most two decimals (JSON number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldInvalid("must be a number")
    if not math.isfinite(value) or value <= 0 or value >= MAX_AMOUNT:
        raise FieldInvalid(f"must be greater than 0 and less than {MAX_AMOUNT}")
    if round(value, 2) != value:
        raise FieldInvalid("must have at most two decimals")
    return float(value)


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FieldInvalid("must be a non-negative integer")
    return value


def currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise FieldInvalid("must be a three-letter ISO 4217 code such as USD")
    return value


def identifier(value: Any) -> str:
    """An object id: the string form of a positive integer (ints are accepted too)."""
    if isinstance(value, bool):
        raise FieldInvalid("must be an id")
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return str(int(value))
    raise FieldInvalid("must be an id")
