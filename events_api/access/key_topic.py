"""The ``api_keys`` topic: where keys are written (CLI) and read (every worker).

The topic is compacted and has one partition; its Kafka key is the key id and its value
the JSON :class:`~events_api.access.keys.ApiKeyRecord` (digest, never the key). Creating a
key appends its record; revoking appends the record again with ``revoked_at`` set, so
compaction keeps exactly the latest state of each key and a revocation is never lost.

:class:`KeyStore` is the CLI's synchronous side (kafka-python); :class:`KeyFollower` runs in
each worker (aiokafka), reads the topic from the beginning and then follows it, so a new or
revoked key takes effect on every worker within a fetch round trip.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as SyncTopicPartition
from kafka.errors import KafkaError

from changefeed.config import Settings
from changefeed.kafka.follower import TopicFollower
from events_api.access.errors import ApiKeyError
from events_api.access.keyring import KeyRing
from events_api.access.keys import ApiKeyRecord

log = logging.getLogger(__name__)

TOPIC = "api_keys"
# The CLI's clients give up on an unreachable broker after this, not kafka-python's 30 s.
_BOOTSTRAP_TIMEOUT_MS = 5_000


class KeyStore:
    """Create, list and revoke keys from the command line."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.topic = settings.topic(TOPIC)
        self.timeout_s = timeout_s

    def records(self) -> dict[str, ApiKeyRecord]:
        """The latest record of every key, read from the start of the topic to its end."""
        tp = SyncTopicPartition(self.topic, 0)
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                enable_auto_commit=False,
                group_id=None,
                isolation_level="read_committed",
                bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            )
        except KafkaError as exc:
            raise ApiKeyError(f"cannot reach Kafka at {self.settings.bootstrap}: {exc}") from exc
        try:
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            found: dict[str, ApiKeyRecord] = {}
            deadline = time.monotonic() + self.timeout_s
            while consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise ApiKeyError(f"reading {self.topic} timed out")
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        key_id = message.key.decode() if message.key else ""
                        if message.value is None:
                            found.pop(key_id, None)
                        else:
                            found[key_id] = ApiKeyRecord.decode(message.value)
            return found
        except KafkaError as exc:
            raise ApiKeyError(f"reading {self.topic} failed: {exc}") from exc
        finally:
            consumer.close()

    def put(self, record: ApiKeyRecord) -> None:
        try:
            producer = KafkaProducer(
                bootstrap_servers=self.settings.bootstrap,
                acks="all",
                bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            )
        except KafkaError as exc:
            raise ApiKeyError(f"cannot reach Kafka at {self.settings.bootstrap}: {exc}") from exc
        try:
            producer.send(self.topic, key=record.key_id.encode(), value=record.encode()).get(
                timeout=self.timeout_s
            )
        except KafkaError as exc:
            raise ApiKeyError(f"writing to {self.topic} failed: {exc}") from exc
        finally:
            producer.close()

    def revoke(self, key_id: str) -> ApiKeyRecord:
        record = self.records().get(key_id)
        if record is None:
            raise ApiKeyError(f"no API key with id {key_id}")
        if record.revoked:
            return record
        revoked = record.revoke()
        self.put(revoked)
        return revoked


class KeyFollower:
    """Keeps a :class:`KeyRing` equal to the topic: loads it, then follows new records."""

    def __init__(self, settings: Settings, ring: KeyRing) -> None:
        self.ring = ring
        self.topic = settings.topic(TOPIC)
        self.follower = TopicFollower(
            settings.bootstrap, self.topic, 1, self._apply, on_loaded=self._loaded
        )
        ring.attach(self.catch_up)

    async def start(self) -> None:
        await self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until every record written before this call has been applied."""
        return await self.follower.catch_up(timeout_s)

    def _loaded(self) -> None:
        self.ring.loaded = True

    def _apply(self, _partition: int, key: bytes | None, value: bytes | None) -> None:
        key_id = key.decode(errors="replace") if key else ""
        if value is None:
            self.ring.apply(key_id, None)
            return
        try:
            self.ring.apply(key_id, ApiKeyRecord.decode(value))
        except ApiKeyError as exc:
            log.warning("skipping a record of %s that is not a key: %s", self.topic, exc)
