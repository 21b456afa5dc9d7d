"""Signatures: ours verify with the standardwebhooks package, and its verify ours."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks.errors import SignatureError
from webhooks.signing import new_secret, secret_key, signed_headers, verify


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2000), msg_id=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True))
def test_standardwebhooks_verifies_what_we_sign(body: bytes, msg_id: str) -> None:
    secret = new_secret()
    text = body.decode("latin-1").encode()  # the package verifies text; any UTF-8 body
    headers = signed_headers([secret_key(secret)], msg_id, int(time.time()), text)
    Webhook(secret).verify(text, headers, json_parse=False)


def test_both_secrets_of_a_rotation_verify_and_a_third_does_not() -> None:
    old, new, other = new_secret(), new_secret(), new_secret()
    body = b'{"change_id":"c1"}'
    headers = signed_headers([secret_key(new), secret_key(old)], "c1", int(time.time()), body)
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_our_verify_accepts_the_packages_signature_and_refuses_tampering() -> None:
    secret = new_secret()
    now = int(time.time())
    body = b'{"a":1}'
    signature = Webhook(secret).sign("msg_1", _dt(now), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert verify([secret_key(secret)], headers, body, now_s=now) == "msg_1"
    with pytest.raises(SignatureError):
        verify([secret_key(secret)], headers, b'{"a":2}', now_s=now)
    with pytest.raises(SignatureError, match="away from now"):
        verify([secret_key(secret)], headers, body, now_s=now + 3600)
    for broken in ({**headers, "webhook-timestamp": "12x"}, {"webhook-id": "msg_1"}):
        with pytest.raises(SignatureError):
            verify([secret_key(secret)], broken, body, now_s=now)
    with pytest.raises(SignatureError):
        verify([secret_key(secret)], {**headers, "webhook-signature": "v1,\udcff"}, body, now_s=now)


def test_secrets_are_whsec_base64_of_32_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    with pytest.raises(SignatureError):
        secret_key("whsec_not base64!")


def _dt(seconds: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)
