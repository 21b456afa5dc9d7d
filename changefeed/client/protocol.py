"""The events API's wire contract on the client side, as pure functions: no I/O here.

Both flavours of the client (:mod:`changefeed.client.sync`, :mod:`changefeed.client.aio`)
build their requests and read the answers through this module, so they cannot drift apart:

* :func:`query` turns keyword filters into query parameters (datetimes become RFC 3339,
  lists of criticalities or codes become comma-separated lists, ``None`` is dropped);
* :func:`path` quotes each path segment completely, so ids holding ``/``, ``%`` or
  ``?`` reach the server as one segment;
* :func:`error_of` turns an error answer into the typed error its status calls for.

:class:`StreamState` is the stream's bookkeeping. The API gives one ``next_cursor`` per
poll answer, not per event, yet a caller wants to save its position after each event. A
position is therefore the answer's ``page_cursor`` (which asks for that same answer again,
however much was indexed since), plus the ids of the events of that answer already handed
out: resuming re-asks the same answer and drops the ids already seen, so nothing is
repeated and nothing skipped. Once the whole answer has been handed out, the position is
the answer's ``next_cursor`` alone. (Re-asking the plain cursor the answer was asked with
would not do: events indexed meanwhile can sort before the rest of the answer, and push
part of it into a later answer, past the point where the seen ids are dropped.)
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from changefeed.client.errors import (
    ApiError,
    BadParameter,
    ClientError,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
)
from changefeed.client.models import ChangeEvent, PollResult, parse_time

FILTERS = frozenset(
    {
        "start",
        "end",
        "event_type",
        "subject_type",
        "subject_id",
        "user",
        "criticality",
        "code",
        "request_id",
    }
)
POSITION_PREFIX = "cfpos1."


def query(filters: Mapping[str, Any], **extra: Any) -> dict[str, str]:
    """Query parameters of a list or poll request; unknown filter names are refused here,
    before a request is sent."""
    unknown = sorted(set(filters) - FILTERS)
    if unknown:
        raise TypeError(f"unknown filter {unknown[0]!r}; filters: {', '.join(sorted(FILTERS))}")
    params: dict[str, str] = {}
    for name, value in {**filters, **extra}.items():
        if value is None:
            continue
        params[name] = _text(value)
    return params


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


def path(*segments: str) -> str:
    """``/v1/<segment>/...`` with every segment quoted whole (``/`` becomes ``%2F``)."""
    return "/v1/" + "/".join(quote(str(s), safe="") for s in segments)


def error_of(status: int, body: bytes) -> ApiError:
    """The typed error for an error answer of the API."""
    code, message, detail = "error", body[:200].decode("utf-8", "replace"), {}
    try:
        document = json.loads(body)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            detail = error
    except ValueError:
        pass
    if status == 400:
        parameter = detail.get("parameter")
        return BadParameter(status, code, message, str(parameter) if parameter else None)
    if status == 401:
        return Unauthorized(status, code, message)
    if status == 403:
        return Forbidden(status, code, message)
    if status == 404:
        return NotFound(status, code, message)
    if status == 410:
        horizon = detail.get("horizon")
        try:
            moment = parse_time(horizon) if isinstance(horizon, str) else None
        except ValueError:
            moment = None
        return Gone(status, code, message, moment)
    return ApiError(status, code, message)


def json_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ClientError(f"the API answered something that is not JSON: {body[:80]!r}") from exc
    if not isinstance(document, dict):
        raise ClientError("the API answered JSON that is not an object")
    return document


# -- stream positions ----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: the cursor to ask with, and ids of its answer already seen."""

    cursor: str
    seen: tuple[str, ...] = ()

    def encode(self) -> str:
        if not self.seen:
            return self.cursor
        body = json.dumps({"c": self.cursor, "s": list(self.seen)}, separators=(",", ":"))
        return POSITION_PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> StreamPosition:
        """A position saved by :meth:`encode`, or a plain API cursor (``now`` included)."""
        token = token.strip()
        if not token.startswith(POSITION_PREFIX):
            return cls(token)
        raw = token[len(POSITION_PREFIX) :]
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            cursor, seen = body["c"], body["s"]
            if not isinstance(cursor, str) or not all(isinstance(s, str) for s in seen):
                raise TypeError("bad types")
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            raise ClientError(f"not a stream position: {token[:40]!r}") from exc
        return cls(cursor, tuple(seen))


@dataclass
class StreamState:
    """The stream's position and what it does with each poll answer."""

    position: StreamPosition
    _pending: list[tuple[ChangeEvent, StreamPosition]] = field(default_factory=list)

    @property
    def cursor(self) -> str:
        return self.position.cursor

    def accept(self, answer: PollResult) -> list[tuple[ChangeEvent, StreamPosition]]:
        """The events of ``answer`` to hand out, each with the position after it."""
        seen = set(self.position.seen)
        fresh = [e for e in answer.events if e.change_id not in seen]
        out = []
        # The ids seen so far belong to this same answer only when it was asked again from
        # the page cursor the position holds (a position with seen ids is always one).
        handed = list(self.position.seen)
        again = answer.page_cursor or self.position.cursor
        for n, event in enumerate(fresh):
            if n == len(fresh) - 1:
                after = StreamPosition(answer.next_cursor)
            else:
                handed.append(event.change_id)
                after = StreamPosition(again, tuple(handed))
            out.append((event, after))
        if not fresh:
            self.position = StreamPosition(answer.next_cursor)
        return out

    def advance(self, position: StreamPosition) -> None:
        self.position = position


def change_ids(events: Iterable[ChangeEvent]) -> list[str]:
    return [e.change_id for e in events]
