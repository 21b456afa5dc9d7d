"""Standard Webhooks signatures (https://www.standardwebhooks.com), sender and receiver side.

A delivery carries ``webhook-id`` (the change id: receivers dedupe on it),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per active secret, space-separated, so
a receiver that knows either the old or the new secret during a rotation's overlap accepts
it. Secrets are ``whsec_`` + base64 of 32 random bytes, as the standard's libraries expect.

:func:`verify` is the receiver's check (used by ``changefeed webhooks listen``): constant-time
comparison, and a timestamp tolerance against replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence

from webhooks.errors import SignatureError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
TOLERANCE_S = 300


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret."""
    text = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise SignatureError("a webhook secret must not be empty")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` of one key over ``id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with every key."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }


def verify(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """The message id of a delivery whose signature matches one of ``keys``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    given = lowered.get("webhook-signature")
    if not (msg_id and stamp and given):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("webhook-timestamp must be Unix seconds")
    timestamp = int(stamp)
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_s}s away from now")
    offered = [part for part in given.split(" ") if part.startswith("v1,")]
    for key in keys:
        expected = signature(key, msg_id, timestamp, body).encode()
        if any(hmac.compare_digest(expected, part.encode(errors="replace")) for part in offered):
            return msg_id
    raise SignatureError("no v1 signature matches the secret")
