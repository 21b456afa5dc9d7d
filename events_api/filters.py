"""Query parameters of the feed endpoints, parsed and checked once.

Every bad value is a :class:`~events_api.errors.BadRequest` that names the parameter
and says what is accepted; unknown parameters are refused too, so that a misspelt filter
never silently widens a query (and so that nobody believes a ``tenant`` parameter could
choose the tenant: it comes from the API key only).

Time range (seed 001): ``start`` and ``end`` are RFC 3339 times with a zone. ``start`` alone
reads from ``start`` on, with no upper bound (the range "runs to now", and keeps running as
new events arrive); ``end`` alone reads everything retained before ``end``. ``start`` is
inclusive, ``end`` exclusive, both on the event's ``created_at``.

``event_type`` is an exact type, or a pattern in which ``*`` matches any run of characters
(``expense_report:*``, ``*:deleted``). ``criticality`` and ``code`` take one value or a
comma-separated list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from events_api.errors import BadRequest
from events_api.events import epoch_micros, rfc3339_micros

_INTEGER = re.compile(r"^-?[0-9]{1,12}$")
MAX_TEXT = 256
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_POLL_TIMEOUT_S = 30.0
MAX_POLL_TIMEOUT_S = 60.0

FILTER_PARAMS = (
    "start",
    "end",
    "event_type",
    "subject_type",
    "subject_id",
    "user",
    "criticality",
    "code",
    "request_id",
)


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class FeedFilter:
    """What a list or poll selects within the caller's tenant (and user, for user keys)."""

    start_us: int | None = None
    end_us: int | None = None
    event_type: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    user_id: str | None = None
    criticality: tuple[int, ...] = ()
    code: tuple[int, ...] = ()
    request_id: str | None = None

    @property
    def event_type_is_pattern(self) -> bool:
        return self.event_type is not None and "*" in self.event_type

    def canonical(self) -> dict[str, Any]:
        """The filter as a small JSON object (set fields only), as cursors carry it."""
        out: dict[str, Any] = {}
        for name in (
            "start_us",
            "end_us",
            "event_type",
            "subject_type",
            "subject_id",
            "user_id",
            "request_id",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.criticality:
            out["criticality"] = list(self.criticality)
        if self.code:
            out["code"] = list(self.code)
        return out

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any]) -> FeedFilter:
        return cls(
            start_us=data.get("start_us"),
            end_us=data.get("end_us"),
            event_type=data.get("event_type"),
            subject_type=data.get("subject_type"),
            subject_id=data.get("subject_id"),
            user_id=data.get("user_id"),
            criticality=tuple(data.get("criticality", ())),
            code=tuple(data.get("code", ())),
            request_id=data.get("request_id"),
        )

    def is_empty(self) -> bool:
        return not self.canonical()

    def describe(self) -> str:
        """For messages: the filter as the query parameters that would produce it."""
        parts = []
        for key, value in self.canonical().items():
            if key in ("start_us", "end_us"):
                parts.append(f"{key[:-3]}={rfc3339_micros(value)}")
            elif isinstance(value, list):
                parts.append(f"{key}={','.join(str(v) for v in value)}")
            else:
                parts.append(f"{'user' if key == 'user_id' else key}={value}")
        return "&".join(parts) or "(no filters)"


@dataclass(frozen=True)
class ListParams:
    """A list or poll request: the filter, how to page, and how long to wait."""

    filter: FeedFilter = field(default_factory=FeedFilter)
    filter_given: bool = False
    limit: int = DEFAULT_LIMIT
    order: Order = Order.ASC
    order_given: bool = False
    cursor: str | None = None
    timeout_s: float = DEFAULT_POLL_TIMEOUT_S


class Params:
    """Read access to a request's query string that refuses repeats and unknown names."""

    def __init__(self, query: Mapping[str, str], allowed: Sequence[str]) -> None:
        getall = getattr(query, "getall", None)
        for name in query:
            if name not in allowed:
                hint = (
                    " (the tenant is the API key's; there is no tenant parameter)"
                    if name in ("tenant", "tenant_id")
                    else ""
                )
                raise BadRequest(
                    f"unknown query parameter {name!r}{hint}; accepted: {', '.join(allowed)}",
                    parameter=name,
                )
            if getall is not None and len(getall(name)) > 1:
                raise BadRequest(f"query parameter {name!r} must be given once", parameter=name)
        self._query = query

    def text(self, name: str) -> str | None:
        value = self._query.get(name)
        if value is None:
            return None
        return check_text(name, value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._query.get(name)
        if raw is None:
            return default
        return parse_int(name, raw, low, high)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self._query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(
                f"{name} must be a number of seconds, got {raw!r}", parameter=name
            ) from None
        if not low < value <= high:
            raise BadRequest(
                f"{name} must be more than {low:g} and at most {high:g}", parameter=name
            )
        return value

    def time(self, name: str) -> int | None:
        raw = self._query.get(name)
        return None if raw is None else parse_time(name, raw)

    def int_list(self, name: str, low: int, high: int) -> tuple[int, ...]:
        raw = self._query.get(name)
        if raw is None:
            return ()
        values = sorted({parse_int(name, part, low, high) for part in raw.split(",")})
        return tuple(values)


def check_text(name: str, value: str) -> str:
    """A non-empty identifier-like value: at most 256 characters, no control characters."""
    if not value:
        raise BadRequest(f"{name} must not be empty", parameter=name)
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name} must be at most {MAX_TEXT} characters", parameter=name)
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise BadRequest(f"{name} must not contain control characters", parameter=name)
    return value


def parse_int(name: str, raw: str, low: int, high: int) -> int:
    text = raw.strip()
    if not _INTEGER.match(text):
        raise BadRequest(
            f"{name} must be an integer from {low} to {high}, got {raw!r}", parameter=name
        )
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}", parameter=name)
    return value


def parse_time(name: str, raw: str) -> int:
    """Epoch microseconds of an RFC 3339 time that names its zone (``Z`` or ``+02:00``)."""
    text = raw.strip()
    if len(text) < 19 or text[10] not in "Tt ":
        raise BadRequest(
            f"{name} must be an RFC 3339 time such as 2024-05-01T12:00:00Z, got {raw!r}",
            parameter=name,
        )
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        raise BadRequest(
            f"{name} must be an RFC 3339 time such as 2024-05-01T12:00:00Z, got {raw!r}",
            parameter=name,
        ) from None
    if moment.tzinfo is None:
        raise BadRequest(
            f"{name} must give its time zone (Z or +hh:mm), got {raw!r}", parameter=name
        )
    if not 1970 <= moment.year <= 9999 or moment.utcoffset() is None:
        raise BadRequest(f"{name} is out of range: {raw!r}", parameter=name)
    try:
        return epoch_micros(moment)
    except OverflowError:
        raise BadRequest(f"{name} is out of range: {raw!r}", parameter=name) from None


def parse_filter(params: Params) -> tuple[FeedFilter, bool]:
    """The filter of a list/poll request, and whether any filter parameter was given."""
    start = params.time("start")
    end = params.time("end")
    if start is not None and end is not None and start >= end:
        raise BadRequest("start must be before end", parameter="start")
    event_type = params.text("event_type")
    if event_type is not None and "**" in event_type:
        event_type = _collapse_stars(event_type)
    flt = FeedFilter(
        start_us=start,
        end_us=end,
        event_type=event_type,
        subject_type=params.text("subject_type"),
        subject_id=params.text("subject_id"),
        user_id=params.text("user"),
        criticality=params.int_list("criticality", 0, 5),
        code=params.int_list("code", 0, 2**31 - 1),
        request_id=params.text("request_id"),
    )
    return flt, not flt.is_empty()


def _collapse_stars(pattern: str) -> str:
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    return pattern


def glob_of(pattern: str) -> str:
    """The SQLite ``GLOB`` pattern for an ``event_type`` pattern: only ``*`` is special."""
    escaped = []
    for ch in pattern:
        if ch in "[]?":
            escaped.append(f"[{ch}]")
        else:
            escaped.append(ch)
    return "".join(escaped)


def parse_list_params(query: Mapping[str, str], *, poll: bool = False) -> ListParams:
    """The parameters of ``GET /v1/events`` (or, with ``poll``, ``/v1/events/poll``)."""
    allowed = [*FILTER_PARAMS, "limit", "cursor"]
    allowed += ["timeout"] if poll else ["order"]
    params = Params(query, allowed)
    flt, given = parse_filter(params)
    order_text = params.text("order") or Order.ASC.value
    try:
        order = Order(order_text)
    except ValueError:
        raise BadRequest(
            f"order must be asc or desc, got {order_text!r}", parameter="order"
        ) from None
    cursor = params.text("cursor")
    if poll and cursor is None:
        raise BadRequest(
            "cursor is required: pass the next_cursor of a list, or now", parameter="cursor"
        )
    return ListParams(
        filter=flt,
        filter_given=given,
        limit=params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        order=order,
        order_given=params.text("order") is not None,
        cursor=cursor,
        timeout_s=params.number("timeout", DEFAULT_POLL_TIMEOUT_S, 0.0, MAX_POLL_TIMEOUT_S),
    )
