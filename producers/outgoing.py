"""The Kafka record an action becomes: what the publisher sends and the spool keeps.

A plain tuple on purpose: one is built per published action, and a ``NamedTuple`` costs a
fraction of a dataclass to create on that hot path.
"""

from __future__ import annotations

from typing import NamedTuple

Headers = list[tuple[str, bytes]]


class OutgoingRecord(NamedTuple):
    """A fully encoded record: nothing about it is computed again when it is re-sent.

    ``event_id`` travels with it (it is also the ``ce_id`` header) so that delivery reports
    and the spool can name the action without decoding ``value``.
    """

    topic: str
    key: bytes
    value: bytes
    headers: Headers
    event_id: str
