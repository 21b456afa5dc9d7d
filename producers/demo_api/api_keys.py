"""API keys of the demo API: accepted, never kept; only a keyed fingerprint is recorded.

The fingerprint is :meth:`schemas.masking.Redactor.fingerprint_api_key` (HMAC-SHA256,
truncated), so the same key always has the same name in the feed while the key itself
cannot be recovered, not even by hashing a list of guesses without the secret. The secret is
created once per data directory (mode 0600) so fingerprints stay stable across restarts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from changefeed.config import Settings
from changefeed.errors import ConfigError
from schemas.masking import MIN_SECRET_BYTES, Redactor

Fingerprint = Callable[[str], str]
SECRET_BYTES = 32


def fingerprinter(secret: bytes) -> Fingerprint:
    """The fingerprint function of ``secret``."""
    return Redactor((), secret).fingerprint_api_key


def secret_path(settings: Settings) -> Path:
    return settings.data_dir / "demo-api" / "api-key-fingerprint.secret"


def load_or_create_secret(path: Path) -> bytes:
    """The secret stored at ``path``, created (random, owner-only) if absent."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(SECRET_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return load_or_create_secret(path)
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
        return secret
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes; delete it to renew")
    return secret
