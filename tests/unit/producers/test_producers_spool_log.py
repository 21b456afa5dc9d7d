"""The durable spool: order, acknowledgement, restart recovery, torn tails, corruption."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.errors import SpoolCorruptError, SpoolError, SpoolLockedError
from producers.outgoing import OutgoingRecord
from producers.spool import Spool, segment_path
from producers.spool_format import (
    FRAME_HEADER,
    SEGMENT_MAGIC,
    FrameError,
    check_frame_header,
    decode_payload,
    encode_frame,
)


def make_record(n: int, *, size: int = 40) -> OutgoingRecord:
    return OutgoingRecord(
        topic="t.actions",
        key=f"tenant/expense/{n % 7}".encode(),
        value=bytes([n % 251]) * size,
        headers=[("ce_id", f"ev-{n}".encode()), ("content-type", b"application/avro")],
        event_id=f"ev-{n}",
    )


def drain_all(spool: Spool, batch: int = 1000) -> list[OutgoingRecord]:
    records = []
    while entries := spool.read_batch(batch):
        records += [e.record for e in entries]
        spool.ack(entries[-1])
    return records


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.log"))


def test_records_come_back_in_append_order_with_every_field(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        records = [make_record(n) for n in range(50)]
        for record in records:
            spool.append(record)
        assert spool.pending == 50
        assert drain_all(spool, batch=7) == records
        assert spool.is_empty()


def test_reading_without_ack_keeps_records_and_rewind_reads_them_again(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for n in range(5):
            spool.append(make_record(n))
        first = spool.read_batch(3)
        assert [e.record.event_id for e in first] == ["ev-0", "ev-1", "ev-2"]
        spool.ack(first[0])
        spool.rewind()
        again = spool.read_batch(10)
        assert [e.record.event_id for e in again] == ["ev-1", "ev-2", "ev-3", "ev-4"]
        assert spool.pending == 4


def test_ack_of_last_entry_removes_every_file_but_the_lock(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=512) as spool:
        for n in range(30):
            spool.append(make_record(n))
        assert len(segment_files(tmp_path)) > 1
        drain_all(spool)
        assert [p.name for p in tmp_path.iterdir()] == ["lock"]
        spool.append(make_record(99))  # usable again after emptying
        assert [e.record.event_id for e in spool.read_batch(5)] == ["ev-99"]


def test_acknowledged_segments_are_deleted_as_the_cursor_passes_them(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=512) as spool:
        for n in range(30):
            spool.append(make_record(n))
        before = len(segment_files(tmp_path))
        entries = spool.read_batch(20)
        spool.ack(entries[-1])
        assert len(segment_files(tmp_path)) < before
        assert spool.pending == 10
        assert [e.record.event_id for e in spool.read_batch(100)] == [
            f"ev-{n}" for n in range(20, 30)
        ]


def test_restart_resumes_after_the_acknowledged_records(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=600) as spool:
        for n in range(25):
            spool.append(make_record(n))
        spool.ack(spool.read_batch(11)[-1])
        spool.read_batch(5)  # read but not acknowledged: a crash mid-drain
    with Spool(tmp_path, segment_bytes=600) as reopened:
        assert reopened.recovery.pending == 14
        assert [r.event_id for r in drain_all(reopened)] == [f"ev-{n}" for n in range(11, 25)]


def test_appends_after_restart_follow_the_recovered_records(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(make_record(1))
    with Spool(tmp_path) as spool:
        spool.append(make_record(2))
        assert [r.event_id for r in drain_all(spool)] == ["ev-1", "ev-2"]


def test_a_stale_cursor_re_sends_records_rather_than_losing_them(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for n in range(6):
            spool.append(make_record(n))
        spool.ack(spool.read_batch(2)[-1])
        stale = (tmp_path / "cursor").read_text()
        spool.ack(spool.read_batch(2)[-1])
    (tmp_path / "cursor").write_text(stale)  # the last cursor update was lost in a crash
    with Spool(tmp_path) as spool:
        assert [r.event_id for r in drain_all(spool)] == [f"ev-{n}" for n in range(2, 6)]


@pytest.mark.parametrize("cut", [1, 5, 8, 20])
def test_a_torn_last_record_is_discarded_and_appends_continue(tmp_path: Path, cut: int) -> None:
    with Spool(tmp_path) as spool:
        for n in range(3):
            spool.append(make_record(n))
    segment = segment_files(tmp_path)[-1]
    whole = segment.read_bytes()
    frame_size = (len(whole) - len(SEGMENT_MAGIC)) // 3
    segment.write_bytes(whole[: len(whole) - frame_size + cut])  # last frame half-written
    with Spool(tmp_path) as spool:
        assert spool.recovery.pending == 2
        assert spool.recovery.torn_bytes == cut
        spool.append(make_record(3))
        assert [r.event_id for r in drain_all(spool)] == ["ev-0", "ev-1", "ev-3"]


def test_a_last_record_with_a_bad_checksum_is_treated_as_torn(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for n in range(3):
            spool.append(make_record(n))
    segment = segment_files(tmp_path)[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert [r.event_id for r in drain_all(spool)] == ["ev-0", "ev-1"]


def test_corruption_in_an_earlier_segment_is_an_error_not_silent_loss(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=300) as spool:
        for n in range(10):
            spool.append(make_record(n))
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[len(SEGMENT_MAGIC) + 12] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolCorruptError, match="segment-"):
        Spool(tmp_path, segment_bytes=300)


def test_a_segment_torn_while_being_created_is_recovered(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(make_record(1))
    segment_path(tmp_path, 1).write_bytes(SEGMENT_MAGIC[:3])
    with Spool(tmp_path) as spool:
        assert spool.recovery.pending == 1
        spool.append(make_record(2))
        assert [r.event_id for r in drain_all(spool)] == ["ev-1", "ev-2"]


def test_a_foreign_file_is_not_taken_for_a_segment(tmp_path: Path) -> None:
    segment_path(tmp_path, 0).write_bytes(b"not a spool segment at all")
    segment_path(tmp_path, 1).write_bytes(SEGMENT_MAGIC)
    with pytest.raises(SpoolCorruptError, match="bad magic"):
        Spool(tmp_path)


def test_one_directory_has_one_owner(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolLockedError):
        Spool(tmp_path)
    Spool(tmp_path).close()  # released on close


def test_a_closed_spool_refuses_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(make_record(1))


def recording_fsync(synced: list[int], real_fsync: Callable[[int], None]) -> Callable[[int], None]:
    """An fsync that records the file descriptors of regular files (not directories)."""

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(fd)
        real_fsync(fd)

    return fsync


def test_fsync_follows_the_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    synced: list[int] = []
    import producers.spool as spool_module

    real_fsync = spool_module.os.fsync
    monkeypatch.setattr(spool_module.os, "fsync", recording_fsync(synced, real_fsync))
    with Spool(tmp_path, fsync_interval_s=1.0, clock=lambda: now[0]) as spool:
        synced.clear()
        spool.append(make_record(1))
        spool.append(make_record(2))
        assert synced == []  # written to the OS, not yet forced to disk
        now[0] = 1.5
        spool.sync_if_due()
        assert len(synced) == 1
        spool.sync_if_due()
        assert len(synced) == 1  # nothing new to sync


def test_fsync_interval_zero_syncs_every_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    import producers.spool as spool_module

    real_fsync = spool_module.os.fsync
    monkeypatch.setattr(spool_module.os, "fsync", recording_fsync(synced, real_fsync))
    with Spool(tmp_path, fsync_interval_s=0) as spool:
        synced.clear()
        for n in range(3):
            spool.append(make_record(n))
        assert len(synced) == 3


def test_a_copy_of_the_directory_replays_the_same_records(tmp_path: Path) -> None:
    source = tmp_path / "a"
    with Spool(source, segment_bytes=400) as spool:
        for n in range(12):
            spool.append(make_record(n, size=n * 3))
        spool.ack(spool.read_batch(4)[-1])
    shutil.copytree(source, tmp_path / "b")
    with Spool(tmp_path / "b", segment_bytes=400) as copy:
        assert drain_all(copy) == [make_record(n, size=n * 3) for n in range(4, 12)]


headers_strategy = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=8)


@given(
    topic=st.text(min_size=1, max_size=40),
    key=st.binary(max_size=100),
    value=st.binary(max_size=2000),
    headers=headers_strategy,
    event_id=st.text(max_size=60),
)
def test_any_record_survives_the_frame_format(
    topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]], event_id: str
) -> None:
    record = OutgoingRecord(topic, key, value, headers, event_id)
    frame = encode_frame(record)
    length, crc = check_frame_header(frame)
    assert length == len(frame) - FRAME_HEADER.size
    assert decode_payload(frame[FRAME_HEADER.size :], crc) == record


@given(data=st.binary(min_size=1, max_size=300))
def test_garbage_is_never_taken_for_a_record(data: bytes) -> None:
    record = make_record(1)
    payload = encode_frame(record)[FRAME_HEADER.size :]
    if data == payload:
        return
    _, crc = check_frame_header(encode_frame(record))
    with pytest.raises(FrameError):
        decode_payload(data, crc)
