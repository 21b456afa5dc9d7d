"""Opaque, signed feed cursors (seed 004's ``stream_position``, seed 002's ``pagingToken``).

A cursor is a vector of ``changes`` offsets, one per partition, plus the order and the
filter it was issued for. A *page cursor* (a poll answer's ``page_cursor``) also carries
``bounds``: each partition's indexed end when that answer was read. Asked again, it reads
the same rows, so it gives the same answer however much was indexed since: a consumer that
stopped inside an answer resumes exactly there.

Ascending, ``positions[p]`` is the next offset of partition ``p`` not yet delivered;
descending, it is the offset below which reading continues. Offsets are
what make paging exact: each partition is delivered as a prefix, in offset order, so "after
the cursor" never skips nor repeats an event, however late a partition is indexed.

The token is ``c1.<payload>.<mac>`` (base64url), where ``mac`` is an HMAC-SHA256 (truncated
to 128 bits) under a key derived from the deployment secret, over the payload *and* the
scope (tenant, and user for user keys) it was issued to. The scope is not in the payload:
a cursor reveals nothing about its tenant, and presented by any other scope it simply fails
verification. A cursor changed by a single bit fails the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from events_api.errors import BadRequest
from events_api.filters import FeedFilter, Order
from events_api.scope import Scope

VERSION = "c1"
MAC_BYTES = 16
MAX_TOKEN = 4096
MAX_OFFSET = (1 << 40) - 1
MAX_PARTITION = (1 << 20) - 1
NOT_VALID = "cursor is not valid for this API key (it was altered, or issued to another key)"


@dataclass(frozen=True)
class Cursor:
    order: Order
    filter: FeedFilter
    positions: dict[int, int] = field(default_factory=dict)
    bounds: dict[int, int] | None = None

    def position(self, partition: int) -> int | None:
        return self.positions.get(partition)

    def bound(self, partition: int) -> int | None:
        """The offset reading of ``partition`` stops before (None: unbounded). A partition a
        page cursor does not know appeared after the page was read: nothing of it belongs."""
        if self.bounds is None:
            return None
        return self.bounds.get(partition, self.positions.get(partition, 0))


class CursorSigner:
    """Issues and verifies cursor tokens for one deployment secret."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the cursor key must be at least 16 bytes")
        self._key = key

    def encode(self, cursor: Cursor, scope: Scope) -> str:
        body = {
            "o": "a" if cursor.order is Order.ASC else "d",
            "f": cursor.filter.canonical(),
            "p": sorted([p, o] for p, o in cursor.positions.items()),
        }
        if cursor.bounds is not None:
            body["u"] = sorted([p, o] for p, o in cursor.bounds.items())
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        mac = self._mac(payload, scope)
        return f"{VERSION}.{_b64(payload)}.{_b64(mac)}"

    def decode(self, token: str, scope: Scope) -> Cursor:
        """The cursor of ``token``, or :class:`BadRequest` when it is not one of ours for
        ``scope``."""
        if len(token) > MAX_TOKEN:
            raise BadRequest("cursor is too long to be one of ours", parameter="cursor")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise BadRequest(
                "cursor is malformed: pass a next_cursor exactly as received", parameter="cursor"
            )
        try:
            payload = _unb64(parts[1])
            mac = _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise BadRequest(
                "cursor is malformed: pass a next_cursor exactly as received",
                parameter="cursor",
            ) from None
        if not hmac.compare_digest(mac, self._mac(payload, scope)):
            raise BadRequest(NOT_VALID, parameter="cursor")
        try:
            return _parse(json.loads(payload))
        except (ValueError, TypeError, KeyError, AttributeError):
            # Signed by us but unreadable: only a different release could have written it.
            raise BadRequest(
                "cursor was issued by an incompatible version; start again", parameter="cursor"
            ) from None

    def _mac(self, payload: bytes, scope: Scope) -> bytes:
        message = scope.binding() + b"\x00" + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]


def _parse(body: dict[str, Any]) -> Cursor:
    order = {"a": Order.ASC, "d": Order.DESC}[body["o"]]
    positions = _offsets(body["p"])
    bounds = _offsets(body["u"]) if "u" in body else None
    flt = body["f"]
    if not isinstance(flt, dict):
        raise TypeError("filter must be an object")
    return Cursor(order, FeedFilter.from_canonical(flt), positions, bounds)


def _offsets(pairs: Any) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for partition, offset in pairs:
        if not (isinstance(partition, int) and isinstance(offset, int)):
            raise TypeError("positions must be integers")
        if not (0 <= partition <= MAX_PARTITION and 0 <= offset <= MAX_OFFSET):
            raise ValueError("position out of range")
        offsets[partition] = offset
    return offsets


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
