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

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as SyncTopicPartition
from kafka.errors import KafkaError

from changefeed.config import Settings
from events_api.access.errors import ApiKeyError
from events_api.access.keyring import KeyRing
from events_api.access.keys import ApiKeyRecord

log = logging.getLogger(__name__)

TOPIC = "api_keys"
RETRY_S = 1.0
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
        self.settings = settings
        self.ring = ring
        self.tp = TopicPartition(settings.topic(TOPIC), 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._position = 0
        self._advanced = asyncio.Event()
        self._assigned = asyncio.Event()
        ring.attach(self.catch_up)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-key-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until every record written before this call has been applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self._assigned.wait(), timeout_s)
            consumer = self._consumer
            if consumer is None:
                return False
            end = (await asyncio.wait_for(consumer.end_offsets([self.tp]), timeout_s))[self.tp]
        except (AIOKafkaError, TimeoutError):
            return False
        while self._position < end:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._advanced.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep following after any broker trouble
                log.exception("following %s failed; retrying", self.tp.topic)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            fetch_max_wait_ms=200,
        )
        await consumer.start()
        try:
            consumer.assign([self.tp])
            await consumer.seek_to_beginning(self.tp)
            self._position = 0
            initial_end = (await consumer.end_offsets([self.tp]))[self.tp]
            self._consumer = consumer
            self._assigned.set()
            while True:
                if not self.ring.loaded and self._position >= initial_end:
                    self.ring.loaded = True
                batches = await consumer.getmany(self.tp, timeout_ms=1000)
                for message in batches.get(self.tp, []):
                    self._apply(message.key, message.value)
                self._position = await consumer.position(self.tp)
                self._advanced.set()
        finally:
            self._consumer = None
            self._assigned.clear()
            await consumer.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        key_id = key.decode(errors="replace") if key else ""
        if value is None:
            self.ring.apply(key_id, None)
            return
        try:
            self.ring.apply(key_id, ApiKeyRecord.decode(value))
        except ApiKeyError as exc:
            log.warning("skipping a record of %s that is not a key: %s", self.tp.topic, exc)
