"""What an action may be: the one contract the publisher, the demo API and the processors share.

Every rule a well-formed ``ApiAction`` must meet beyond its Avro schema lives here, so that
whatever changefeed's own producers accept is exactly what the processors turn into a
change (a 2xx always becomes a change), and what other producers write that breaks a rule
is dead-lettered with the very same reason the publisher would have refused it with.
:func:`check_action` applies every rule and returns the action's payload parsed and
masked; :class:`ContractViolation` carries the reason.

Identities
    ``tenant_id`` and ``subject_type`` are names: 1 to 128 characters of ``A-Z a-z 0-9``
    and ``. _ : -``, starting with a letter or digit (:data:`NAME_PATTERN`). ``subject_id``,
    ``event_id``, ``request_id`` and ``event_type`` are any text without NUL (or another
    control character in the ids) and without lone surrogates, at most
    :data:`MAX_ID_CHARS` characters (``subject_id``: :data:`MAX_SUBJECT_ID_CHARS`).

Subject key
    The Kafka key of a subject's actions and changes, and its key in the processors' tables,
    is ``tenant/type/id`` with ``%`` written ``%25`` and ``/`` written ``%2F`` in each part
    (:func:`subject_key`). Names cannot hold either character, so only the id is ever
    escaped, and no two (tenant, type, id) triples share a key: ``acme`` / ``x`` /
    ``project/1`` is ``acme/x/project%2F1``, never ``acme/x/project/1``.

Payload (strict JSON)
    A create or update carries the subject's state as a JSON object; a custom event may
    carry any JSON value, or text of another content type. JSON payloads must be strict
    JSON (:func:`loads_strict`): valid Unicode (no lone surrogate, whether raw or written as
    a ``\\ud83d`` escape, as ``json.dumps`` writes a cut-off emoji), finite numbers (no
    ``NaN``/``Infinity``, no ``1e400``, which Python would read as infinity), nesting at
    most :data:`MAX_DEPTH` deep. Text payloads must be valid Unicode too. The usual payload
    is parsed by orjson, which refuses everything above by itself; text it refuses, text
    with more brackets than :data:`MAX_DEPTH` and values holding a float past the 64-bit
    integers (orjson reads a longer integer as one) are read again by :mod:`json` with the
    checks above, which give the reason. Both read every accepted text to the same value.

Size budget
    A change event carries a state payload up to 11 times in the worst case: previous and
    current state, and each changed value again in the patch and in the per-field changes,
    where non-ASCII text is ``\\u``-escaped (up to three times its UTF-8 size). The
    broker takes records of 1 MiB and the processors publish changes up to
    ``MAX_RECORD_BYTES`` (900,000 bytes), so the state payload of a create or update is at
    most :data:`MAX_STATE_PAYLOAD_BYTES` (64 KiB) of UTF-8 after masking; a custom event,
    which a change carries once, at most :data:`MAX_EVENT_PAYLOAD_BYTES` (512 KiB).

Masking
    :func:`check_action` masks the payload with the given
    :class:`~schemas.masking.Redactor` before measuring it, and fingerprints a clear API
    key in ``actor``. Masking is idempotent, so the processors masking what the publisher
    already masked changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.masking import Redactor

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
"""Tenant ids and subject types: what keys, paths and API keys can carry unambiguously."""
MAX_ID_CHARS = 256
MAX_SUBJECT_ID_CHARS = 512
MAX_DEPTH = 64
MAX_STATE_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_PAYLOAD_BYTES = 512 * 1024
MAX_CONTENT_TYPE_CHARS = 128
ACTIONS = ("create", "update", "delete", "custom")
_STATE_ACTIONS = ("create", "update")
_NAME = re.compile(f"^{NAME_PATTERN}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_INT64_BOUND = 9.2e18
"""Below 2**63 (about 9.22e18): no 64-bit integer reads as a float this large or larger."""
_FINGERPRINT = re.compile(r"^[a-z0-9-]{2,32}:[0-9a-f]{8,128}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_MAX_CACHED = 4096
_KNOWN_NAMES: set[str] = set()
"""Tenant ids and subject types already found valid (they repeat): a set lookup each."""
_JSON_MEDIA_TYPES: dict[str, bool] = {}
"""Content types already checked, and whether they are JSON."""


class ContractViolation(ValueError):
    """An action (or a part of one) breaks the contract; ``reason`` says which rule, how."""

    reason_code = "invalid_field"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedAction:
    """An action that meets the contract, with what the checks derived from it.

    ``payload`` is the parsed, masked payload (a JSON value; for text payloads the text;
    ``None`` for a delete or no payload); ``payload_text`` the text to carry and store;
    ``actor`` the actor with any clear API key replaced by its fingerprint;
    ``subject_key`` the subject's key (:func:`subject_key`); ``changed`` whether masking
    altered the payload or the actor.
    """

    payload: Any
    payload_text: str | None
    actor: dict[str, Any]
    subject_key: str
    occurred_at_us: int
    changed: bool


# -- identities ------------------------------------------------------------------------------


def check_name(field: str, value: object) -> str:
    """``value`` if it is a valid tenant id or subject type, else :class:`ContractViolation`."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ContractViolation(
            f"{field} must be 1-128 characters of letters, digits and . _ : - starting with a "
            f"letter or digit, got {_shown(value)}"
        )
    return value


def is_name(value: str) -> bool:
    return bool(_NAME.match(value))


def _is_plain_id(value: object, max_chars: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_chars and value.isprintable()


def _remember_name(name: str) -> None:
    if len(_KNOWN_NAMES) >= _MAX_CACHED:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES.add(name)


def check_text_id(field: str, value: object, max_chars: int = MAX_ID_CHARS) -> str:
    """A non-empty id of any text: no control characters, no lone surrogates, bounded."""
    if type(value) is str and 0 < len(value) <= max_chars and value.isprintable():
        return value  # the usual id; printable text has no control character nor surrogate
    if not isinstance(value, str) or not value:
        raise ContractViolation(f"{field} must not be empty")
    if len(value) > max_chars:
        raise ContractViolation(f"{field} must be at most {max_chars} characters")
    if "\x00" in value:
        raise ContractViolation(f"{field} must not contain NUL")
    if _CONTROL.search(value):
        raise ContractViolation(f"{field} must not contain control characters")
    if _SURROGATE.search(value):
        raise ContractViolation(f"{field} must not contain a lone surrogate (invalid Unicode)")
    return value


def encode_key_part(part: str) -> str:
    """One part of a subject key: ``%`` as ``%25``, ``/`` as ``%2F`` (in that order)."""
    if "%" in part:
        part = part.replace("%", "%25")
    if "/" in part:
        part = part.replace("/", "%2F")
    return part


def decode_key_part(part: str) -> str:
    """The inverse of :func:`encode_key_part`."""
    if "%" not in part:
        return part
    return part.replace("%2F", "/").replace("%25", "%")


def subject_key(tenant_id: str, subject_type: str, subject_id: str) -> str:
    """The subject's identity: the Kafka key of its actions and changes, its table key.

    Injective: each part is escaped (:func:`encode_key_part`), so the two ``/`` separators
    are the only unescaped ones and a key names exactly one (tenant, type, id).
    """
    return (
        f"{encode_key_part(tenant_id)}/{encode_key_part(subject_type)}/"
        f"{encode_key_part(subject_id)}"
    )


def parse_subject_key(key: str) -> tuple[str, str, str]:
    """(tenant, type, id) of a :func:`subject_key`; :class:`ContractViolation` otherwise."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ContractViolation(f"a subject key has three parts, got {_shown(key)}")
    tenant_id, subject_type, subject_id = (decode_key_part(p) for p in parts)
    return tenant_id, subject_type, subject_id


# -- strict JSON -----------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ContractViolation(f"payload is not valid JSON: it contains {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ContractViolation(
            f"payload is not valid JSON: the number {text[:40]} is too large to be finite"
        )
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_strict(text: str, what: str = "payload") -> Any:
    """The JSON value of ``text``, or :class:`ContractViolation` saying why it is not strict
    JSON (see the module docstring)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _loads_checked(text, what)  # which says why, in the contract's words
    if len(text) >= 19 and (  # shorter text holds neither 19 digits nor MAX_DEPTH brackets
        text.count("[") + text.count("{") > MAX_DEPTH or _holds_float_past_int64(value)
    ):
        return _loads_checked(text, what)
    return value


def _holds_float_past_int64(value: Any) -> bool:
    """Whether ``value`` holds a float beyond the 64-bit integers: orjson reads an integer
    literal past them as one (json, exactly), so such a value is read again by json."""
    kind = type(value)
    if kind is float:
        return not -_INT64_BOUND < value < _INT64_BOUND
    if kind is not dict and kind is not list:
        return False
    stack = [value]
    while stack:
        container = stack.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if not -_INT64_BOUND < item < _INT64_BOUND:
                    return True
            elif kind is dict or kind is list:
                stack.append(item)
    return False


def _loads_checked(text: str, what: str) -> Any:
    """:func:`loads_strict` with :mod:`json` and the contract's checks, one by one."""
    if not text.isascii() and _SURROGATE.search(text):
        raise ContractViolation(f"{what} contains a lone surrogate (invalid Unicode)")
    try:
        value = _DECODER.decode(text)
    except ContractViolation as exc:
        raise ContractViolation(exc.reason.replace("payload", what, 1)) from None
    except RecursionError:
        raise ContractViolation(f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise ContractViolation(f"{what} is not valid JSON: {exc}") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        check_json_value(value, what)
    if text.count("[") + text.count("{") > MAX_DEPTH:  # cheap bound first; walk only then
        depth = json_depth(value)
        if depth > MAX_DEPTH:
            raise ContractViolation(f"{what} is nested {depth} levels deep, over {MAX_DEPTH}")
    return value


def check_json_value(value: Any, what: str = "payload") -> None:
    """Refuse lone surrogates in any string or key of a parsed JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if _SURROGATE.search(item):
                raise ContractViolation(f"{what} contains a lone surrogate (invalid Unicode)")
        elif kind is dict:
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise ContractViolation(f"{what} contains a lone surrogate (invalid Unicode)")
                stack.append(child)
        elif kind is list:
            stack.extend(item)


def json_depth(value: Any) -> int:
    """How deeply containers nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
            children = item.values() if kind is dict else item
            stack.extend((child, depth) for child in children)
    return deepest


def dumps_strict(value: Any) -> str:
    """Compact JSON text of a value :func:`loads_strict` accepted (non-ASCII kept)."""
    return _JSON_TEXT.encode(value)


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# -- the action ------------------------------------------------------------------------------


def occurred_at_micros(moment: object) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ContractViolation("occurred_at must be a time with a zone")
        return (moment - _EPOCH) // _ONE_MICROSECOND
    if isinstance(moment, int) and not isinstance(moment, bool):
        return moment
    raise ContractViolation(f"occurred_at must be a time, got {type(moment).__name__}")


def check_action(action: Mapping[str, Any], redactor: Redactor | None) -> CheckedAction:
    """Apply every rule of the contract to ``action`` (a dict as the ``ApiAction`` schema
    reads it); mask its payload and actor with ``redactor`` (None: no masking).

    This runs once per published action: the usual case (printable ids, names seen before,
    an ASCII payload without a sensitive key) takes C-level checks only.
    """
    get = action.get
    event_id, request_id = get("event_id"), get("request_id")
    subject_id, event_type = get("subject_id"), get("event_type")
    if not (
        _is_plain_id(event_id, MAX_ID_CHARS)
        and _is_plain_id(request_id, MAX_ID_CHARS)
        and _is_plain_id(subject_id, MAX_SUBJECT_ID_CHARS)
        and _is_plain_id(event_type, MAX_ID_CHARS)
    ):
        check_text_id("event_id", event_id)
        check_text_id("request_id", request_id)
        check_text_id("subject_id", subject_id, MAX_SUBJECT_ID_CHARS)
        check_text_id("event_type", event_type)
    tenant_id, subject_type = get("tenant_id"), get("subject_type")
    if tenant_id not in _KNOWN_NAMES or subject_type not in _KNOWN_NAMES:
        _remember_name(check_name("tenant_id", tenant_id))
        _remember_name(check_name("subject_type", subject_type))
    kind = get("action")
    if kind not in ACTIONS:
        raise ContractViolation(f"action must be one of {', '.join(ACTIONS)}, got {_shown(kind)}")
    version = action.get("version")
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ContractViolation(f"version must not be negative, got {version}")
    occurred_at = occurred_at_micros(action.get("occurred_at"))
    if occurred_at <= 0:
        raise ContractViolation("occurred_at must be after the Unix epoch")
    criticality = action.get("criticality", 0)
    if not isinstance(criticality, int) or not 0 <= criticality <= 5:
        raise ContractViolation(f"criticality must be 0-5, got {criticality}")
    content_type = action.get("payload_content_type") or "application/json"
    is_json = _JSON_MEDIA_TYPES.get(content_type)
    if is_json is None:
        if len(content_type) > MAX_CONTENT_TYPE_CHARS or _CONTROL.search(content_type):
            raise ContractViolation(
                "payload_content_type must be a media type of at most 128 chars"
            )
        is_json = is_json_media_type(content_type)
        if len(_JSON_MEDIA_TYPES) < _MAX_CACHED:
            _JSON_MEDIA_TYPES[content_type] = is_json
    ref = action.get("subject_ref")
    if ref:
        check_text_id("subject_ref.key", ref.get("key"))
        check_text_id("subject_ref.id", ref.get("id"), MAX_SUBJECT_ID_CHARS)
    actor = action.get("actor") or {}
    for name in ("user_id", "application_id", "api_version"):
        value = actor.get(name)
        if value is not None and not _is_plain_id(value, MAX_ID_CHARS):
            check_text_id(f"actor.{name}", value)
    payload, text, changed = _check_payload(kind, get("payload"), is_json, content_type, redactor)
    fingerprint = actor.get("api_key_fingerprint")
    if fingerprint and redactor is not None and not _FINGERPRINT.match(fingerprint):
        # Whatever the producer sent, a clear key never goes further than this.
        actor = {**actor, "api_key_fingerprint": redactor.fingerprint_api_key(fingerprint)}
        changed = True
    return CheckedAction(
        payload=payload,
        payload_text=text,
        actor=actor,
        subject_key=subject_key(tenant_id, subject_type, subject_id),
        occurred_at_us=occurred_at,
        changed=changed,
    )


def _check_payload(
    kind: str, text: object, is_json: bool, content_type: str, redactor: Redactor | None
) -> tuple[Any, str | None, bool]:
    """(parsed and masked payload, its text, whether masking changed it)."""
    if kind == "delete":
        return None, None, False
    if text is None:
        if kind in _STATE_ACTIONS:
            raise ContractViolation(f"a {kind} must carry the subject's state as payload")
        return None, None, False
    if not isinstance(text, str):
        raise ContractViolation("payload must be text")
    if kind in _STATE_ACTIONS and not is_json:
        raise ContractViolation(f"payload_content_type {content_type!r} is not JSON")
    budget = MAX_STATE_PAYLOAD_BYTES if kind in _STATE_ACTIONS else MAX_EVENT_PAYLOAD_BYTES
    if len(text) > budget:  # characters <= bytes: refuse the obviously large before parsing
        raise ContractViolation(_too_large(kind, len(text.encode("utf-8", "replace")), budget))
    if is_json:
        value = loads_strict(text)
        if kind in _STATE_ACTIONS and type(value) is not dict:
            raise ContractViolation(f"the payload of a {kind} must be a JSON object")
        masked = redactor.redact(value) if redactor is not None else value
        changed = masked is not value
        out_text = dumps_strict(masked) if changed else text
        payload: Any = masked
    else:
        if _SURROGATE.search(text):
            raise ContractViolation("payload contains a lone surrogate (invalid Unicode)")
        out_text = redactor.redact_text(text) if redactor is not None else text
        changed = out_text is not text
        payload = out_text
    size = len(out_text) if out_text.isascii() else len(out_text.encode("utf-8"))
    if size > budget:
        raise ContractViolation(_too_large(kind, size, budget))
    return payload, out_text, changed


def _too_large(kind: str, size: int, budget: int) -> str:
    what = "state payload of a " + kind if kind in _STATE_ACTIONS else "payload of a custom event"
    return (
        f"the {what} is {size} bytes, over the {budget}-byte budget (its change event must stay"
        " under the broker's record size)"
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
