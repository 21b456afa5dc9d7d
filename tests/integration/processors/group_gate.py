"""Consumer-group probes for the liveness tests: what the broker says of a worker group, and a
member driven by the test that holds the group's rebalances open until it is told to leave.

The group coordinator completes a rebalance when every known member has sent its JoinGroup,
or, for a member that does not, when its session (or the rebalance timeout) runs out. A
worker's JoinGroup therefore waits as long as some member keeps heartbeating without
rejoining: :class:`GroupGate` is that member. While it holds, a worker started on the group
stays in the middle of joining (its JoinGroup parked at the broker, no assignment yet) for
as long as the test needs, instead of a window of some milliseconds; when it leaves, the
rebalance completes at once with the workers whose JoinGroup is parked, dead or alive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import errors as aiokafka_errors
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.coordinator.protocol import (
    ConsumerProtocol,
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.protocol.group import (
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    SyncGroupRequest,
)
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

FAUST_PROTOCOL = "faust"
"""The assignment protocol Faust's consumers offer: a member must offer it to share the group."""


@dataclass(frozen=True)
class GroupState:
    state: str
    members: frozenset[str]

    @property
    def rebalancing(self) -> bool:
        return self.state in ("PreparingRebalance", "CompletingRebalance")


class GroupProbe:
    """DescribeGroups answers for one consumer group (kafka-python's admin client)."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.group_id = group_id
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="liveness-probe")

    def state(self) -> GroupState | None:
        """The group's state and member ids; None while the broker cannot say (no group yet,
        coordinator loading)."""
        try:
            group = self.admin.describe_groups([self.group_id])[self.group_id]
        except KafkaError:
            return None
        if group.get("error"):
            return None
        return GroupState(group["group_state"], frozenset(m["member_id"] for m in group["members"]))

    def describe(self) -> str:
        """The group as the broker sees it, each member with its assignment (when Stable):
        what a failure message needs to tell a stuck partition from a slow one."""
        try:
            group = self.admin.describe_groups([self.group_id])[self.group_id]
        except KafkaError as exc:
            return f"group {self.group_id}: not described ({exc!r})"
        members = {}
        for member in group["members"]:
            assignment = member.get("member_assignment") or {}
            members[member["member_id"]] = {
                held["topic"]: held["partitions"]
                for held in assignment.get("assigned_partitions", ())
            }
        return f"group {self.group_id} {group['group_state']}, members {members}"

    def close(self) -> None:
        self.admin.close()


def next_leader(members_in_join_order: Sequence[str]) -> str:
    """The member the coordinator makes leader when the current leader leaves the group.

    Kafka 4.1's ``ClassicGroup.remove`` takes the first key of its ``java.util.HashMap`` of
    members: the lowest bucket of a 16-bucket table (``String.hashCode`` spread by
    ``h ^ h >>> 16``), members of one bucket in the order they joined. The liveness test
    uses it to decide which of two joining workers to kill so that the survivor does (or
    does not) lead the next generation; the test checks afterwards that it did.
    """

    def bucket(member_id: str) -> int:
        h = 0
        for char in member_id:
            h = (31 * h + ord(char)) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & 15

    return min(members_in_join_order, key=lambda m: (bucket(m), members_in_join_order.index(m)))


def group_report(bootstrap: str, group_id: str) -> str:
    """:meth:`GroupProbe.describe` in one call, for failure messages."""
    probe = GroupProbe(bootstrap, group_id)
    try:
        return probe.describe()
    finally:
        probe.close()


class GroupGate:
    """A member of the group that joins first, then only heartbeats: it never rejoins.

    Its rebalance timeout is long, so a rebalance that a worker's JoinGroup starts waits for
    it until :meth:`release` (LeaveGroup), which completes the rebalance with whoever joined.
    """

    SESSION_TIMEOUT_MS = 30_000
    REBALANCE_TIMEOUT_MS = 180_000
    HEARTBEAT_INTERVAL_S = 1.0

    def __init__(self, bootstrap: str, group_id: str, topics: Iterable[str]) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = sorted(topics)
        self.member_id = ""
        self.generation = -1
        self.heartbeat_errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._client: AIOKafkaClient | None = None
        self._node: int | None = None
        self._heartbeats: asyncio.Task[None] | None = None

    def hold(self, timeout_s: float = 60.0) -> GroupGate:
        """Join the (empty) group as its leader, with nothing assigned, and start heartbeating."""
        self._thread.start()
        self._call(self._join(), timeout_s)
        return self

    def release(self, timeout_s: float = 30.0) -> None:
        """Leave the group: a rebalance waiting for this member completes now."""
        if self._client is None:
            return
        try:
            self._call(self._leave(), timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
            self._client = None

    def _call(self, coroutine: Any, timeout_s: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _send(self, request: Any) -> Any:
        assert self._client is not None and self._node is not None
        return await self._client.send(self._node, request, group=ConnectionGroup.COORDINATION)

    async def _join(self) -> None:
        self._client = AIOKafkaClient(bootstrap_servers=self.bootstrap, client_id="liveness-gate")
        await self._client.bootstrap()
        self._node = await self._client.coordinator_lookup(CoordinationType.GROUP, self.group_id)
        metadata = ConsumerProtocolMemberMetadata(0, self.topics, b"").encode()
        response = await self._join_request(metadata)
        if aiokafka_errors.for_code(response.error_code) is aiokafka_errors.MemberIdRequired:
            self.member_id = response.member_id  # KIP-394: the first JoinGroup hands out an id
            response = await self._join_request(metadata)
        error = aiokafka_errors.for_code(response.error_code)
        if error is not aiokafka_errors.NoError:
            raise error(f"the gate could not join {self.group_id}")
        if response.leader_id != response.member_id:
            raise AssertionError(f"the gate must be the first member of {self.group_id}")
        self.member_id, self.generation = response.member_id, response.generation_id
        nothing = ConsumerProtocolMemberAssignment(0, [], b"").encode()
        response = await self._send(
            SyncGroupRequest(
                self.group_id,
                self.generation,
                self.member_id,
                None,
                [(member[0], nothing) for member in response.members],
            )
        )
        error = aiokafka_errors.for_code(response.error_code)
        if error is not aiokafka_errors.NoError:
            raise error(f"the gate could not sync {self.group_id}")
        self._heartbeats = asyncio.create_task(self._heartbeat())

    async def _join_request(self, metadata: bytes) -> Any:
        return await self._send(
            JoinGroupRequest(
                self.group_id,
                self.SESSION_TIMEOUT_MS,
                self.REBALANCE_TIMEOUT_MS,
                self.member_id,
                None,
                ConsumerProtocol.PROTOCOL_TYPE,
                [(FAUST_PROTOCOL, metadata)],
            )
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.HEARTBEAT_INTERVAL_S)
            try:
                response = await self._send(
                    HeartbeatRequest(self.group_id, self.generation, self.member_id)
                )
            except aiokafka_errors.KafkaError as exc:
                self.heartbeat_errors.append(repr(exc))
                continue
            error = aiokafka_errors.for_code(response.error_code)
            # REBALANCE_IN_PROGRESS is the point: the gate never rejoins.
            if error not in (aiokafka_errors.NoError, aiokafka_errors.RebalanceInProgressError):
                self.heartbeat_errors.append(error.__name__)

    async def _leave(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        try:
            await self._send(LeaveGroupRequest(self.group_id, self.member_id))
        finally:
            assert self._client is not None
            await self._client.close()
