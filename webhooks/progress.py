"""How far a ``changes`` partition may be committed for webhook delivery.

Reading a record that matches subscriptions *holds* its offset once per matching
subscription; each delivery *resolves* it once it was delivered or written as a job (acked
by the broker). The committable position is the lowest offset still held, or the next
offset to read when nothing is held: everything before it is delivered or durable as a job,
so after a crash delivery resumes there (at least once; later deliveries may repeat).
"""

from __future__ import annotations


class PartitionProgress:
    def __init__(self, start: int) -> None:
        self.next_offset = start
        self.held: dict[int, int] = {}
        self.committed = start

    def read(self, offset: int, holds: int = 0) -> None:
        self.next_offset = offset + 1
        if holds:
            self.held[offset] = self.held.get(offset, 0) + holds

    def resolve(self, offset: int) -> None:
        left = self.held.get(offset, 0) - 1
        if left > 0:
            self.held[offset] = left
        else:
            self.held.pop(offset, None)

    def committable(self) -> int:
        return min(self.held) if self.held else self.next_offset

    @property
    def holding(self) -> int:
        return len(self.held)
