"""Which partition a key goes to: kafka-python's default, remembered per key.

The default partitioner hashes the key with murmur2, as the Java client does, so every
producer of the ``actions`` topic (in any language) puts one subject on one partition. In
kafka-python that hash is pure Python and costs microseconds per record; keys repeat (one per
subject), so the answer is remembered. The memo is keyed by partition count too, so a topic
that gains partitions is hashed afresh rather than answered from stale entries.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner, Partitioner

DEFAULT_MAX_KEYS = 200_000


class RememberingKeyPartitioner(Partitioner):
    """:class:`DefaultPartitioner` with a bounded memo of ``(topic, count, key) -> partition``.

    When the memo holds ``max_keys`` entries it is emptied and refilled, which bounds memory
    without the bookkeeping of an LRU; records without a key go to the default untouched.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._default = DefaultPartitioner()
        self._max_keys = max_keys
        self._known: dict[tuple[str, int, bytes], int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(
                self._default.partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            )
        memo = (topic, len(partitions), serialized_key)
        found = self._known.get(memo)
        if found is None:
            found = int(
                self._default.partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            )
            if len(self._known) >= self._max_keys:
                self._known.clear()
            self._known[memo] = found
        return found
