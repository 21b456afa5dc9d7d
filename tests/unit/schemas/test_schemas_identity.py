"""change_id: the documented UUIDv5, recomputable by any consumer, never changing."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.identity import CHANGE_ID_NAMESPACE, IdentityError, change_id


def _uuid5_by_hand(namespace: uuid.UUID, name: str) -> str:
    """RFC 9562 section 5.5 spelled out, as a consumer without a UUID library would do it."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def test_namespace_is_the_documented_derivation() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:changefeed:change-id") == CHANGE_ID_NAMESPACE
    assert str(CHANGE_ID_NAMESPACE) == "0148a28e-b2ed-5f9d-b8fb-cc70e193f6af"


def test_known_event_ids_keep_their_change_ids() -> None:
    # Pinned: if these move, every consumer's deduplication breaks across the release.
    assert change_id("evt-0001") == "30ec55e7-f44a-5e4b-a3b0-c9bbbd1b91fb"
    assert change_id("01J9Z3Q8K6V3W2X1Y0Z9A8B7C6") == "0ae4017a-ea0a-5abe-9931-ef9e7e901544"


@given(st.text(min_size=1))
def test_change_id_is_a_canonical_uuid5_any_consumer_can_recompute(event_id: str) -> None:
    derived = change_id(event_id)
    parsed = uuid.UUID(derived)
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == derived  # canonical lower-case hyphenated text
    assert derived == _uuid5_by_hand(CHANGE_ID_NAMESPACE, event_id)
    assert change_id(event_id) == derived


@given(st.sets(st.text(min_size=1, max_size=12), min_size=2, max_size=50))
def test_distinct_event_ids_get_distinct_change_ids(event_ids: set[str]) -> None:
    assert len({change_id(event_id) for event_id in event_ids}) == len(event_ids)


def test_an_empty_event_id_is_refused() -> None:
    with pytest.raises(IdentityError, match="empty"):
        change_id("")


def test_an_event_id_without_utf8_form_is_refused() -> None:
    with pytest.raises(IdentityError, match="Unicode"):
        change_id("evt-\ud800")
