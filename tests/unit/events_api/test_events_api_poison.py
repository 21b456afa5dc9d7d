"""No record on ``changes`` stops the feed: what cannot be stored or rendered is skipped and
counted, payloads that are not strict JSON are served as strings, bad numbers answer 400."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from change_events import T0, change_event
from events_api_server import api_under_test

from events_api.index import FeedIndex
from events_api.indexer import _ChildIndex, to_indexed
from events_api.scope import Scope
from schemas.codec import default_codec

SURROGATE_TEXT = '{"name":"broken emoji \\ud83d"}'  # what json.dumps writes for a cut emoji


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def encoded(change: dict[str, object]) -> bytes:
    return default_codec().encode("changefeed.ChangeEvent", change)


async def test_a_lone_surrogate_payload_does_not_stop_other_tenants(tmp_path: Path) -> None:
    poison = change_event(1, tenant="acme", current=None)
    poison["current_payload"] = SURROGATE_TEXT
    async with api_under_test(tmp_path) as api:
        api.add(0, poison, change_event(2, tenant="globex"))
        api.add(0, change_event(3, tenant="globex"))

        status, body = await api.get("/v1/events", label="globex-admin")
        assert status == 200
        assert [e["event_id"] for e in body["events"]] == ["ev-globex-2", "ev-globex-3"]

        response = await api.client.get("/v1/events", headers=api.auth("acme-admin"))
        assert response.status == 200
        text = await response.text()
        (event,) = strict_loads(text)["events"]  # type: ignore[index]
        # Served as the text it is (a JSON string), never as a string no encoder can write.
        assert event["current_payload"] == SURROGATE_TEXT
        text.encode("utf-8")


async def test_a_number_too_large_for_a_float_is_never_served_as_infinity(
    tmp_path: Path,
) -> None:
    custom = change_event(1, action="custom", current=None)
    custom["current_payload"] = '{"reading": 1e400, "nan": 1}'
    async with api_under_test(tmp_path) as api:
        api.add(0, custom)
        response = await api.client.get("/v1/events", headers=api.auth("acme-admin"))
        text = await response.text()
        assert response.status == 200
        assert "Infinity" not in text
        (event,) = strict_loads(text)["events"]  # type: ignore[index]
        assert event["current_payload"] == '{"reading": 1e400, "nan": 1}'


def test_a_row_sqlite_refuses_is_skipped_and_the_batch_stored(tmp_path: Path) -> None:
    index = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    index.open()
    codec = default_codec()
    good = [to_indexed(codec, 0, n, encoded(change_event(n, unique_id=True))) for n in (0, 2)]
    bad = replace(
        to_indexed(codec, 0, 1, encoded(change_event(1))), body='{"x":"\ud83d"}'
    )  # a body that reached SQLite unchecked
    tenants, refused = index.add([good[0], bad, good[1]], {0: 3})
    assert tenants == {"acme"}
    assert [(event.offset, type(exc).__name__) for event, exc in refused] == [
        (1, "UnicodeEncodeError")
    ]
    assert index.partitions()[0].next_offset == 3
    with index.reading() as reader:
        assert reader.by_change_id(Scope("acme"), good[1].change_id) is not None
    index.close()


def test_the_writer_counts_undecodable_and_unstorable_records(tmp_path: Path) -> None:
    index = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    index.open()
    _ChildIndex.index, _ChildIndex.codec, _ChildIndex.topic = index, default_codec(), "changes"
    _ChildIndex.skipped = 0
    try:
        records = [
            (0, 0, b"not avro at all"),
            (0, 1, encoded(change_event(1, created_us=T0 + 1))),
        ]
        tenants, indexed = _ChildIndex.write(records, {0: 2})
        assert (tenants, indexed, _ChildIndex.skipped) == ({"acme"}, 1, 1)
        assert "changes[0]@0" in _ChildIndex.last_skip
        assert index.partitions()[0].next_offset == 2  # the position moved past it
    finally:
        _ChildIndex.index = _ChildIndex.codec = None
        _ChildIndex.skipped, _ChildIndex.last_skip = 0, ""
        index.close()


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/events", {"limit": "--5"}),
        ("/v1/events", {"criticality": "--1"}),
        ("/v1/events", {"code": "1--0"}),
        ("/v1/subjects/latest", {"page": "--5"}),
        ("/v1/subjects/expense_report/1/history", {"after_sequence": "--5"}),
        ("/v1/subjects/expense_report/1/history", {"limit": "-"}),
    ],
)
async def test_malformed_integers_answer_400(
    tmp_path: Path, path: str, query: dict[str, str]
) -> None:
    async with api_under_test(tmp_path) as api:
        api.add(0, change_event(1))
        status, body = await api.get(path, **query)
        assert status == 400, body
        assert body["error"]["code"] == "bad_request"


async def test_an_encoded_slash_in_a_subject_id_names_that_id_only(tmp_path: Path) -> None:
    async with api_under_test(tmp_path) as api:
        api.add(0, change_event(1, subject_type="project", subject_id="x/project/1"))
        api.add(0, change_event(2, subject_type="project", subject_id="1", tenant="globex"))
        response = await api.client.get(
            "/v1/subjects/project/x%2Fproject%2F1/history", headers=api.auth("acme-admin")
        )
        assert response.status == 200
        assert [e["subject_id"] for e in (await response.json())["events"]] == ["x/project/1"]
        # A subject type is a name: an encoded slash in it names nothing.
        response = await api.client.get(
            "/v1/subjects/x%2Fproject/1", headers=api.auth("acme-admin")
        )
        assert response.status == 400
        assert "subject_type" in (await response.json())["error"]["message"]


def test_index_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a usual umask: world-readable unless the index says no
    try:
        index = FeedIndex(tmp_path / "feed" / "changes.sqlite3", "changes")
        index.open()
        index.add([to_indexed(default_codec(), 0, 0, encoded(change_event(1)))], {0: 1})
        files = sorted(p for p in (tmp_path / "feed").iterdir())
        assert {p.name for p in files} >= {"changes.sqlite3", "changes.sqlite3-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((tmp_path / "feed").stat().st_mode) == 0o700
        index.close()
    finally:
        os.umask(old_umask)


def test_bodies_keep_integers_past_64_bits_and_non_ascii_text() -> None:
    from events_api.events import event_json, render_event

    change = change_event(1, action="custom", current=None)
    change["current_payload"] = '{"big": 123456789012345678901234567890, "name": "Zoë ✓"}'
    body = event_json(change, 0, 7)
    # orjson writes neither an integer past 64 bits nor reads one as such: the body falls back
    # to json and keeps it exact.
    assert json.loads(body) == render_event(change, 0, 7)
    assert json.loads(body)["current_payload"]["big"] == 123456789012345678901234567890
    assert "Zoë ✓" in body and "\\u" not in body


def test_a_body_with_a_lone_surrogate_is_rendered_and_refused_by_the_storable_check() -> None:
    from events_api.events import event_json
    from events_api.indexer import check_storable

    change = change_event(1, action="custom", current=None)
    change["current_payload"] = "not json \ud83d"  # decoded from another producer's Avro
    change["payload_content_type"] = "text/plain"
    body = event_json(change, 0, 1)  # orjson refuses it: json renders it
    assert body.endswith("}") and "not json \ud83d" in body
    event = replace(to_indexed(default_codec(), 0, 1, encoded(change_event(1))), body=body)
    with pytest.raises(UnicodeEncodeError):
        check_storable(event)


def test_errors_of_the_reading_child_come_back_as_feed_errors_that_unpickle(
    tmp_path: Path,
) -> None:
    # The writer process reads Kafka itself; whatever fails there must reach the worker as
    # an error it can unpickle (a client library's error may not), naming what failed.
    import asyncio
    import pickle

    from events_api.errors import FeedError

    class Broken:
        async def read(self) -> None:
            raise ConnectionResetError("the broker went away")

        async def stop(self) -> None:
            return None

    index = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    index.open()
    _ChildIndex.index, _ChildIndex.codec, _ChildIndex.topic = index, default_codec(), "changes"
    _ChildIndex.loop = asyncio.new_event_loop()
    try:
        with pytest.raises(FeedError, match="not reading its topic"):
            _ChildIndex.call("follow_step")
        _ChildIndex.reader = Broken()  # type: ignore[assignment]
        with pytest.raises(FeedError) as raised:
            _ChildIndex.call("follow_step")
        again = pickle.loads(pickle.dumps(raised.value))
        assert type(again) is FeedError
        assert str(again) == "ConnectionResetError: the broker went away"
        _ChildIndex.call("follow_stop")
        assert _ChildIndex.reader is None
    finally:
        _ChildIndex.loop.close()
        _ChildIndex.index = _ChildIndex.codec = _ChildIndex.loop = _ChildIndex.reader = None
        index.close()
