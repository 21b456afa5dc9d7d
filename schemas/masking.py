"""Masking of sensitive fields, applied to both states of a subject before they are diffed.

A field listed as sensitive never leaves the processor in clear: not in the stored payloads,
not in the patch, not in the per-field changes. A change to it must still be visible, so a
value is not replaced by a constant but by a short keyed digest of itself::

    "[REDACTED:hmac:1a2b3c4d5e6f7a8b]"

Equal values mask equally and different values (almost surely) differently, hence the diff of
two masked documents shows a ``replace`` exactly where the clear value changed, with masked
text on both sides. The digest is an HMAC-SHA256 under a secret key, truncated to 64 bits: a
plain hash of a password or card number could be reversed by hashing a dictionary of likely
values, a keyed one cannot without the key. Masked values are stable only as long as the key
is: rotating it shows every sensitive field as changed once.

Sensitive fields are configured as RFC 6901 JSON Pointers (``/password``, ``/card/number``),
where a token ``*`` stands for any object key or array index (``/line_items/*/card_number``).
A literal ``*`` key therefore cannot be named on its own. Whatever sits at a matched pointer
is masked whole, objects and arrays included, and so is JSON ``null``: the only thing the
output tells about a sensitive value is whether it equals another.

The digest is taken over the value's JSON text with sorted keys, so ``1`` and ``1.0`` (equal
for the diff) mask differently; sensitive fields are in practice strings.

Sensitive **key names** are masked too, at any depth and inside arrays: a member whose
name, lower-cased and with ``_`` and ``-`` removed, ends with one of the configured names
(:data:`DEFAULT_SENSITIVE_KEYS`, normalised the same way) is masked whole. So ``password``
covers ``Password``, ``db_password`` and ``user.credentials[0].PASSWORD``; ``api_key``
covers ``apiKey``, ``API-KEY`` and ``stripe_api_key``. In text payloads (a custom event
that is not JSON) the value of every ``name=value`` or ``name: value`` pair of such a name
is masked in place (a value runs to the next blank, ``&``, ``;`` or ``,``, or is quoted;
``Bearer``/``Basic`` schemes are kept with the credential masked).

Masking is idempotent: a masked value is never masked again, so the publisher and the
processors may both mask the same document and agree.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any

from changefeed.errors import ConfigError
from schemas.errors import EncodeError

WILDCARD = "*"
MASK_PREFIX = "[REDACTED:hmac:"
DEFAULT_SENSITIVE_KEYS = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "credentials",
    "cookie",
    "session_id",
    "card_number",
    "cardnumber",
    "cvv",
    "cvc",
    "ssn",
    "iban",
)
"""Key names masked by default (suffix match after normalising, see the module docstring)."""
_MAX_CACHED_VERDICTS = 65_536
_MASKED = re.compile(r"^\[REDACTED:hmac:[0-9a-f]{16}\]$")
_TEXT_PAIR = re.compile(
    r"(?P<key>[A-Za-z0-9_.\-]+)(?P<quote>[\"']?)(?P<sep>[ \t]*[=:][ \t]*)"
    r"(?P<scheme>(?:bearer|basic|token|digest)[ \t]+)?"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&;,\"']+)",
    re.IGNORECASE,
)
MIN_SECRET_BYTES = 16
_DIGEST_BYTES = 8  # 16 hex digits: ample to tell changes apart, little to brute-force.
_VALUE_DOMAIN = b"changefeed.redact.value\x00"
_API_KEY_DOMAIN = b"changefeed.redact.api-key\x00"
_BAD_POINTER_ESCAPE = re.compile("~(?![01])")


@dataclass
class _PointerNode:
    """One step of the configured pointers: what to do with the value reached so far."""

    masked: bool = False
    children: dict[str, _PointerNode] = field(default_factory=dict)
    wildcard: _PointerNode | None = None

    def fold_wildcards(self) -> None:
        """Merge each wildcard into its named siblings, so one lookup finds every rule.

        With ``/a/x`` and ``/*/y`` configured, key ``a`` must honour both; after folding, the
        child ``a`` carries ``x`` and ``y`` and the walk never consults two nodes per key.
        """
        if self.wildcard is not None:
            for token, child in self.children.items():
                self.children[token] = _merge_nodes([child, self.wildcard])
            self.wildcard.fold_wildcards()
        for child in self.children.values():
            child.fold_wildcards()


def _merge_nodes(nodes: Sequence[_PointerNode]) -> _PointerNode:
    """A fresh node matching whatever any of ``nodes`` matches."""
    merged = _PointerNode(masked=any(node.masked for node in nodes))
    for token in {token for node in nodes for token in node.children}:
        merged.children[token] = _merge_nodes(
            [node.children[token] for node in nodes if token in node.children]
        )
    wildcards = [node.wildcard for node in nodes if node.wildcard is not None]
    if wildcards:
        merged.wildcard = _merge_nodes(wildcards)
    return merged


class Redactor:
    """Masks the configured sensitive fields of a document; see the module docstring.

    ``paths`` are JSON Pointers, ``secret`` the HMAC key (at least :data:`MIN_SECRET_BYTES`
    bytes, so the digests cannot be brute-forced). A bad path or key raises
    :class:`~changefeed.errors.ConfigError` at construction, not on the hot path.
    """

    def __init__(self, paths: Iterable[str], secret: bytes, keys: Iterable[str] = ()) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the redaction secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._paths = tuple(paths)
        self._keys = tuple(keys)
        names = sorted({normalize_key_name(k) for k in self._keys}, key=len, reverse=True)
        if any(not name for name in names):
            raise ConfigError("a sensitive key name must have a letter or digit")
        alternatives = "|".join(re.escape(name) for name in names)
        self._key_suffix = re.compile(f"(?:{alternatives})$") if names else None
        self._names = tuple(names)
        self._verdicts: dict[str, bool] = {}
        self._root = _PointerNode()
        for path in self._paths:
            self._add_path(path)
        self._root.fold_wildcards()
        self._top_level_keys = frozenset(self._root.children)

    @property
    def paths(self) -> tuple[str, ...]:
        return self._paths

    @property
    def keys(self) -> tuple[str, ...]:
        return self._keys

    def redact(self, document: Any) -> Any:
        """``document`` with every sensitive value masked; the input is never modified.

        Only the containers on the way to a masked value are copied; everything else is
        shared with the input. When nothing is masked the input itself is returned. The
        verdict on each key name is cached (documents of one API repeat the same names), so
        the walk costs a dictionary lookup per member.
        """
        root = self._root
        if (
            type(document) is dict
            and root.wildcard is None
            and document.keys().isdisjoint(self._top_level_keys)
        ):
            redacted = document
        else:
            redacted = self._redact_value(document, root)
        if self._key_suffix is None or type(redacted) not in (dict, list):
            return redacted
        return self._redact_names(redacted)

    def is_sensitive_key(self, name: str) -> bool:
        """Whether a member called ``name`` is masked by the key-name rules."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self._key_suffix is not None and bool(
                self._key_suffix.search(normalize_key_name(name))
            )
            if len(self._verdicts) >= _MAX_CACHED_VERDICTS:
                self._verdicts.clear()
            self._verdicts[name] = verdict
        return verdict

    def redact_text(self, text: str) -> str:
        """``text`` with the value of every ``name=value`` pair of a sensitive name masked;
        ``text`` itself when there is none."""
        if self._key_suffix is None or not self._mentions_sensitive_name(text):
            return text

        def replace(match: re.Match[str]) -> str:
            value = match.group("value")
            if not self.is_sensitive_key(match.group("key")) or _MASKED.match(value):
                return match.group(0)
            quote = ""
            if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
                quote, value = value[:1], value[1:-1]
                if _MASKED.match(value):
                    return match.group(0)
            head = match.group("key") + match.group("quote") + match.group("sep")
            return f"{head}{match.group('scheme') or ''}{quote}{self.mask(value)}{quote}"

        masked = _TEXT_PAIR.sub(replace, text)
        return text if masked == text else masked

    def _mentions_sensitive_name(self, text: str) -> bool:
        normalized = normalize_key_name(text)
        return any(name in normalized for name in self._names)

    def _redact_names(self, value: Any) -> Any:
        """``value`` with every member of a sensitive name masked, at any depth."""
        kind = type(value)
        if kind is dict:
            redacted: dict[str, Any] | None = None
            sensitive = self._verdicts.get
            for key, child in value.items():
                verdict = sensitive(key)
                if verdict is None:
                    verdict = self.is_sensitive_key(key)
                if verdict:
                    replacement = self.mask(child)
                elif type(child) is dict or type(child) is list:
                    replacement = self._redact_names(child)
                else:
                    continue
                if replacement is not child:
                    if redacted is None:
                        redacted = dict(value)
                    redacted[key] = replacement
            return value if redacted is None else redacted
        if kind is list:
            items: list[Any] | None = None
            for index, child in enumerate(value):
                if type(child) is not dict and type(child) is not list:
                    continue
                replacement = self._redact_names(child)
                if replacement is not child:
                    if items is None:
                        items = list(value)
                    items[index] = replacement
            return value if items is None else items
        return value

    def mask(self, value: Any) -> str:
        """The masked form of ``value``: equal for equal values under the same secret; a
        value that is already masked is returned as it is."""
        if type(value) is str and _MASKED.match(value):
            return value
        try:
            text = (
                _encode_json_string(value)
                if type(value) is str
                else json.dumps(value, sort_keys=True, separators=(",", ":"))
            )
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"sensitive value is not JSON: {exc}") from exc
        digest = self._digest(_VALUE_DOMAIN, text)
        return f"{MASK_PREFIX}{digest}]"

    def fingerprint_api_key(self, key: str) -> str:
        """A stable, non-reversible name for an API key, e.g. to record which key acted.

        ``"hmac-sha256:"`` plus 16 hex digits. Keyed and domain-separated from :meth:`mask`,
        so a key's fingerprint neither reveals it nor equals the mask of the same string.
        """
        return f"hmac-sha256:{self._digest(_API_KEY_DOMAIN, key)}"

    def _digest(self, domain: bytes, text: str) -> str:
        message = domain + text.encode("utf-8", "surrogatepass")
        return hmac.digest(self._secret, message, "sha256")[:_DIGEST_BYTES].hex()

    def _add_path(self, path: str) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(
                f"redaction path {path!r} must be a JSON Pointer below the root, like /password"
            )
        node = self._root
        for raw_token in path[1:].split("/"):
            token = _unescape_pointer_token(raw_token, path)
            if token == WILDCARD:
                if node.wildcard is None:
                    node.wildcard = _PointerNode()
                node = node.wildcard
            else:
                node = node.children.setdefault(token, _PointerNode())
        node.masked = True

    def _redact_value(self, value: Any, node: _PointerNode) -> Any:
        if node.masked:
            return self.mask(value)
        value_type = type(value)
        if value_type is dict:
            return self._redact_object(value, node)
        if value_type is list:
            return self._redact_array(value, node)
        return value

    def _redact_object(self, document: dict[str, Any], node: _PointerNode) -> dict[str, Any]:
        redacted: dict[str, Any] | None = None
        keys: Iterable[str] = document if node.wildcard is not None else node.children
        for key in keys:
            if key not in document:
                continue
            child = node.children.get(key, node.wildcard)
            if child is None:
                continue
            original = document[key]
            replacement = self._redact_value(original, child)
            if replacement is not original:
                if redacted is None:
                    redacted = dict(document)
                redacted[key] = replacement
        return document if redacted is None else redacted

    def _redact_array(self, items: list[Any], node: _PointerNode) -> list[Any]:
        redacted: list[Any] | None = None
        for index, child in self._array_rules(len(items), node):
            original = items[index]
            replacement = self._redact_value(original, child)
            if replacement is not original:
                if redacted is None:
                    redacted = list(items)
                redacted[index] = replacement
        return items if redacted is None else redacted

    @staticmethod
    def _array_rules(length: int, node: _PointerNode) -> Iterable[tuple[int, _PointerNode]]:
        """The (index, rule) pairs that apply to an array of ``length`` items."""
        if node.wildcard is not None:
            wildcard = node.wildcard
            return ((index, node.children.get(str(index), wildcard)) for index in range(length))
        return (
            (int(token), child)
            for token, child in node.children.items()
            if _is_array_index(token) and int(token) < length
        )


def normalize_key_name(name: str) -> str:
    """How key names are compared: lower case, without ``_`` and ``-``."""
    return name.lower().replace("_", "").replace("-", "")


def _is_array_index(token: str) -> bool:
    """RFC 6901 array index: decimal digits without a leading zero (``"0"`` itself is fine)."""
    return token.isascii() and token.isdigit() and (token == "0" or not token.startswith("0"))


def _unescape_pointer_token(token: str, path: str) -> str:
    """``~1`` -> ``/`` then ``~0`` -> ``~`` (RFC 6901); any other ``~`` is an error."""
    if "~" not in token:
        return token
    if _BAD_POINTER_ESCAPE.search(token):
        raise ConfigError(f"redaction path {path!r} has a '~' not followed by 0 or 1")
    return token.replace("~1", "/").replace("~0", "~")
