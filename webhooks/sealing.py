"""Signing secrets encrypted at rest: AES-256-GCM under a key derived from the deployment
secret (``Settings.derived_key("webhook-secrets")``).

The ``webhooks`` topic holds sealed secrets only; every worker of a deployment shares the
deployment secret and can open them to sign. The subscription id is the associated data,
so a sealed secret copied onto another subscription's record does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from webhooks.errors import SealError

NONCE_BYTES = 12


class SecretSealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, secret: str, subscription_id: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), subscription_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, subscription_id: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            opened = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], subscription_id.encode()
            )
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SealError(
                f"the secret of {subscription_id} does not open: is CHANGEFEED_SECRET the "
                "deployment's?"
            ) from exc
        return opened.decode()
