"""Cursor tokens: round trip, signature, tampering and scope binding."""

from __future__ import annotations

import base64
import json

import pytest

from events_api.cursor import Cursor, CursorSigner
from events_api.errors import BadRequest
from events_api.filters import FeedFilter, Order
from events_api.scope import Scope

SIGNER = CursorSigner(b"k" * 32)
ACME = Scope("acme")
CURSOR = Cursor(
    Order.ASC, FeedFilter(event_type="expense_report:*", criticality=(1, 2)), {0: 7, 3: 12}
)


def test_round_trip() -> None:
    token = SIGNER.encode(CURSOR, ACME)
    assert SIGNER.decode(token, ACME) == CURSOR
    assert token.startswith("c1.") and len(token) < 200


def test_a_page_cursor_keeps_its_bounds() -> None:
    bounded = Cursor(CURSOR.order, CURSOR.filter, {0: 3, 1: 5}, {0: 9, 1: 5})
    back = SIGNER.decode(SIGNER.encode(bounded, ACME), ACME)
    assert back == bounded and back.bound(0) == 9
    assert back.bound(7) == 0  # a partition the page did not know: nothing of it belongs
    assert SIGNER.decode(SIGNER.encode(CURSOR, ACME), ACME).bound(0) is None


def test_the_token_does_not_name_its_tenant() -> None:
    token = SIGNER.encode(CURSOR, Scope("very-secret-tenant-name"))
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert b"very-secret-tenant-name" not in payload


@pytest.mark.parametrize(
    "other",
    [Scope("globex"), Scope("acme", "u-1"), Scope("acme ", None)],
    ids=["other tenant", "user scope of the same tenant", "look-alike tenant"],
)
def test_a_cursor_is_useless_to_any_other_scope(other: Scope) -> None:
    token = SIGNER.encode(CURSOR, ACME)
    with pytest.raises(BadRequest, match="not valid for this API key"):
        SIGNER.decode(token, other)


def test_a_user_cursor_is_bound_to_its_user() -> None:
    token = SIGNER.encode(CURSOR, Scope("acme", "u-1"))
    assert SIGNER.decode(token, Scope("acme", "u-1")) == CURSOR
    with pytest.raises(BadRequest):
        SIGNER.decode(token, Scope("acme", "u-2"))


def test_another_deployment_secret_rejects_it() -> None:
    token = SIGNER.encode(CURSOR, ACME)
    with pytest.raises(BadRequest, match="not valid"):
        CursorSigner(b"x" * 32).decode(token, ACME)


def test_moving_a_position_breaks_the_signature() -> None:
    version, payload, mac = SIGNER.encode(CURSOR, ACME).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["p"][0][1] = 0  # rewind partition 0 to re-read another scope's... nothing: rejected
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(BadRequest, match="not valid"):
        SIGNER.decode(f"{version}.{forged}.{mac}", ACME)


def test_every_single_character_change_is_refused() -> None:
    token = SIGNER.encode(CURSOR, ACME)
    alphabet = "ABCabc019-_."
    for i in range(len(token)):
        for ch in alphabet:
            if ch == token[i]:
                continue
            tampered = token[:i] + ch + token[i + 1 :]
            try:
                decoded = SIGNER.decode(tampered, ACME)
            except BadRequest:
                continue
            # base64 padding bits can change without changing the bytes: same cursor.
            assert decoded == CURSOR


@pytest.mark.parametrize(
    "token", ["", "now-ish", "c1.", "c1.a.b", "c2.xx.yy", "c1.!!.??", "x" * 5000]
)
def test_garbage_is_a_bad_request(token: str) -> None:
    with pytest.raises(BadRequest):
        SIGNER.decode(token, ACME)


def test_descending_and_filters_survive() -> None:
    cursor = Cursor(
        Order.DESC,
        FeedFilter(start_us=1, end_us=2, user_id="u", code=(10_000,), request_id="r"),
        {1: 2},
    )
    assert SIGNER.decode(SIGNER.encode(cursor, ACME), ACME) == cursor
