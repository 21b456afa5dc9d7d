"""The identity of a change, derived from the identity of the action that caused it.

An action can be delivered more than once (producer retries, consumer restarts), and every
delivery yields the same change. Its ``change_id`` is therefore not random but a UUIDv5
(RFC 9562, SHA-1 name-based) of the action's ``event_id`` under a fixed namespace: any
consumer, in any language, can recompute it and drop duplicates without asking us.

The namespace is :data:`CHANGE_ID_NAMESPACE`,
``0148a28e-b2ed-5f9d-b8fb-cc70e193f6af``, itself ``uuid5(NAMESPACE_URL,
"urn:changefeed:change-id")``. It is written out as a literal because it must never change:
a new namespace would give every past change a new id and defeat deduplication across the
switch.

It lives in ``schemas/`` because both sides compute it: the processors when they derive a
change, the events API when it answers a generated event with the id its change will get.
"""

from __future__ import annotations

import hashlib
import uuid

from schemas.errors import SchemaError


class IdentityError(SchemaError):
    """No change id can be derived from this event id."""

    reason_code = "invalid_field"


CHANGE_ID_NAMESPACE = uuid.UUID("0148a28e-b2ed-5f9d-b8fb-cc70e193f6af")
_NAMESPACE_BYTES = CHANGE_ID_NAMESPACE.bytes


def change_id(event_id: str) -> str:
    """The canonical text (lower-case, hyphenated) of the UUIDv5 of ``event_id``.

    Raises :class:`IdentityError` for an empty ``event_id`` (every action without an id
    would otherwise share one change id, and all but the first would be dropped as
    duplicates) and for one that is not valid Unicode text (a lone surrogate has no UTF-8
    form, so no other consumer could recompute the id).
    """
    if not event_id:
        raise IdentityError("cannot derive a change id from an empty event_id")
    try:
        name = event_id.encode()
    except UnicodeEncodeError as exc:
        raise IdentityError(f"event_id {event_id!r} is not valid Unicode text") from exc
    # uuid.uuid5, without building a UUID object (this runs once per action).
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
