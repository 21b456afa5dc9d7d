"""From an ApiAction dict to the Kafka record that carries it: key, Avro value, headers.

Key: the subject key, ``tenant_id/subject_type/subject_id`` with ``%`` and ``/`` escaped in
each part (:func:`schemas.action_contract.subject_key`). Kafka keeps order within a
partition, and the key picks the partition, so every action on one subject is read in the
order it was published, and every re-send of one event (same key) lands beside the
original, where the processors' dedupe finds it.

Value: the action in Avro single-object encoding (:mod:`schemas.codec`). Headers: the
CloudEvents Kafka binding (:mod:`schemas.cloudevents`), so consumers can route on event type
and subject without decoding.

Everything that can be wrong with an action is found here, before anything is sent or
spooled, and raised as :class:`InvalidActionError`: bad input is the caller's bug and must not
be retried forever from the spool. The rules are :mod:`schemas.action_contract`'s, the ones
the processors dead-letter by: an action that passes here becomes a change, and one refused
here carries (``InvalidActionError.reason``) the reason its dead letter would have.

Secrets: the payload is masked (:class:`~schemas.masking.Redactor`: configured paths and
key names at any depth, ``name=value`` pairs in text) and a clear API key in ``actor`` is
replaced by its fingerprint before encoding, so ``actions`` carries no secret from this
publisher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from producers.errors import InvalidActionError
from producers.outgoing import Headers, OutgoingRecord
from schemas.action_contract import ContractViolation, check_action, encode_key_part
from schemas.action_contract import subject_key as contract_subject_key
from schemas.cloudevents import (
    AVRO_CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    HEADER_PREFIX,
    SPEC_VERSION,
    rfc3339,
)
from schemas.codec import Codec
from schemas.errors import EncodeError
from schemas.masking import Redactor

API_ACTION = "changefeed.ApiAction"
_MAX_CACHED_TYPES = 4096


def action_key(tenant_id: str, subject_type: str, subject_id: str) -> bytes:
    """The Kafka key of every action on one subject (the escaped subject key)."""
    return contract_subject_key(tenant_id, subject_type, subject_id).encode()


class ActionEncoder:
    """Encodes actions for one topic; ``default_source`` fills a missing ``source``;
    ``redactor`` masks payloads and actors (None: nothing is masked; the publisher always
    passes the deployment's).

    The headers are those of :func:`schemas.cloudevents.cloudevent_headers`, built here
    from parts prepared once (names, spec version, content type, the default source, each
    event type seen), because this runs once per published action and the generic function
    costs several microseconds a call; a unit test holds the two to the same output.
    """

    def __init__(
        self, topic: str, codec: Codec, default_source: str, redactor: Redactor | None = None
    ) -> None:
        self.topic = topic
        self._redactor = redactor
        self._codec = codec
        self._default_source = default_source
        self._spec_version = (HEADER_PREFIX + "specversion", SPEC_VERSION.encode())
        self._content_type = (CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE.encode())
        self._sources: dict[str, tuple[str, bytes]] = {}
        self._types: dict[str, tuple[str, bytes]] = {}

    def encode(self, action: Mapping[str, Any]) -> OutgoingRecord:
        """The record for ``action``; :class:`InvalidActionError` if it does not fit."""
        if type(action) is not dict and not isinstance(action, Mapping):
            raise InvalidActionError(f"an action is a mapping, not {type(action).__name__}")
        try:
            checked = check_action(action, self._redactor)
        except ContractViolation as exc:
            raise InvalidActionError(
                f"action {action.get('event_id')!r} refused: {exc.reason}", reason=exc.reason
            ) from None
        if not action.get("source") or checked.changed:
            action = {
                **action,
                "source": action.get("source") or self._default_source,
                "payload": checked.payload_text,
                "actor": checked.actor,
            }
        try:
            value = self._codec.encode(API_ACTION, action)
            event_id = action["event_id"]
            subject = (
                f"{encode_key_part(action['subject_type'])}/{encode_key_part(action['subject_id'])}"
            )
            headers = self._headers(action, event_id, subject)
        except EncodeError as exc:
            raise InvalidActionError(
                f"action {action.get('event_id')!r} is invalid: {exc}"
            ) from exc
        return OutgoingRecord(self.topic, checked.subject_key.encode(), value, headers, event_id)

    def _headers(self, action: Mapping[str, Any], event_id: str, subject: str) -> Headers:
        """The CloudEvents binary-mode headers, in :func:`cloudevent_headers`' order."""
        return [
            self._spec_version,
            ("ce_id", event_id.encode()),
            self._cached(self._sources, "ce_source", action["source"]),
            self._cached(self._types, "ce_type", action["event_type"]),
            ("ce_subject", subject.encode()),
            ("ce_time", rfc3339(action["occurred_at"]).encode()),
            self._content_type,
        ]

    @staticmethod
    def _cached(cache: dict[str, tuple[str, bytes]], name: str, text: str) -> tuple[str, bytes]:
        header = cache.get(text)
        if header is None:
            header = (name, text.encode())
            if len(cache) < _MAX_CACHED_TYPES:
                cache[text] = header
        return header
