"""Following a compacted topic: every record from the start, then live.

The state topics (``api_keys``, ``webhooks``, ``webhook_jobs``) are folded by every worker
into memory: :class:`TopicFollower` reads every partition of such a topic from the start,
hands each record to a callback, then follows new records. :meth:`TopicFollower.catch_up`
waits until every record written before the call has been applied (read-your-writes: a key
or a subscription the API just wrote is in force on the answer that follows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

RETRY_S = 1.0
Apply = Callable[[int, bytes | None, bytes | None], None]
"""``apply(partition, key, value)``; ``value`` None is a tombstone."""


class TopicFollower:
    """Applies every record of ``topic`` (all partitions), from the start, then live."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        apply: Apply,
        *,
        on_loaded: Callable[[], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.apply = apply
        self.on_loaded = on_loaded
        self.loaded = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"follow-{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self, timeout_s: float) -> bool:
        """Whether every record written before this call was applied within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self.loaded.wait(), timeout_s)
            consumer = self._consumer
            if consumer is None:
                return False
            tps = [TopicPartition(self.topic, p) for p in self._positions]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        except (KafkaError, TimeoutError):
            return False
        while any(self._positions.get(tp.partition, 0) < end for tp, end in ends.items()):
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
                log.exception("following %s failed; retrying", self.topic)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            initial = await consumer.end_offsets(tps)
            self._positions = {tp.partition: 0 for tp in tps}
            self._consumer = consumer
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=500, max_records=5000)
                for tp, messages in batches.items():
                    for message in messages:
                        self.apply(tp.partition, message.key, message.value)
                for tp in tps:
                    self._positions[tp.partition] = await consumer.position(tp)
                if not self.loaded.is_set() and all(
                    self._positions[tp.partition] >= initial[tp] for tp in tps
                ):
                    self.loaded.set()
                    if self.on_loaded is not None:
                        self.on_loaded()
                self._advanced.set()
        finally:
            self._consumer = None
            await consumer.stop()
