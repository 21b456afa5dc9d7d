"""The client's retry rules and stream positions, on httpx's in-process transport."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from changefeed.client import (
    Client,
    FileCursorStore,
    Gone,
    RetryPolicy,
    Unavailable,
)
from changefeed.client.models import PollResult
from changefeed.client.protocol import StreamPosition, StreamState, path, query

EVENT = {
    "change_id": "c1",
    "event_id": "e1",
    "request_id": "r1",
    "tenant_id": "acme",
    "action": "create",
    "event_type": "x:created",
    "subject_type": "x",
    "subject_id": "1",
    "subject_changed_at": "2026-11-20T00:00:00.000000Z",
    "created_at": "2026-11-20T00:00:01.000000Z",
}
NO_WAIT = RetryPolicy(attempts=4, base_s=0.0, cap_s=0.0)


def client_answering(*answers: tuple[int, dict[str, object]], log: list[str]) -> Client:
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(str(request.url))
        status, body = queue.pop(0) if queue else (503, {"error": {"code": "unavailable"}})
        return httpx.Response(status, json=body)

    return Client("http://api", "k", retry=NO_WAIT, transport=httpx.MockTransport(handle))


def test_503_is_retried_until_an_answer() -> None:
    log: list[str] = []
    page = {"events": [EVENT], "has_more": False, "next_cursor": "c"}
    with client_answering((503, {}), (503, {}), (200, page), log=log) as client:
        assert [e.change_id for e in client.events()] == ["c1"]
    assert len(log) == 3


def test_retries_are_bounded() -> None:
    log: list[str] = []
    with client_answering(log=log) as client, pytest.raises(Unavailable) as failed:
        client.page()
    assert len(log) == NO_WAIT.attempts == failed.value.attempts


def test_connection_errors_are_retried_then_unavailable() -> None:
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    client = Client("http://api", "k", retry=NO_WAIT, transport=httpx.MockTransport(refuse))
    with client, pytest.raises(Unavailable):
        client.page()
    assert len(calls) == NO_WAIT.attempts


def test_backoff_grows_with_full_jitter_and_a_cap() -> None:
    top = RetryPolicy(attempts=8, base_s=0.5, cap_s=4.0, random=lambda: 1.0)
    assert [top.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert RetryPolicy(random=lambda: 0.0).delay(3) == 0.0
    assert top.delay(0, retry_after_s=2.5) == 2.5  # a server's Retry-After within the cap
    assert top.budget_s() == 0.5 + 1 + 2 + 4 * 4


def test_gone_carries_the_horizon() -> None:
    error = {"error": {"code": "gone", "message": "m", "horizon": "2026-11-21T10:00:00.000000Z"}}
    with client_answering((410, error), log=[]) as client, pytest.raises(Gone) as gone:
        client.page()
    assert gone.value.horizon is not None and gone.value.horizon.isoformat().startswith(
        "2026-11-21T10:00:00"
    )


def test_ids_are_sent_as_one_path_segment() -> None:
    assert path("subjects", "a/b", "%2F?x") == "/v1/subjects/a%2Fb/%252F%3Fx"
    assert query({"criticality": [1, 3], "user": None}) == {"criticality": "1,3"}
    with pytest.raises(TypeError):
        query({"tenant": "other"})


def _answer(cursor: str, *ids: str) -> PollResult:
    events = [{**EVENT, "change_id": i} for i in ids]
    return PollResult.from_json({"message": "new_change", "events": events, "next_cursor": cursor})


def test_stream_positions_resume_inside_an_answer_without_repeats() -> None:
    state = StreamState(StreamPosition("c0"))
    handed = state.accept(_answer("c1", "a", "b", "c"))
    assert [e.change_id for e, _ in handed] == ["a", "b", "c"]
    middle = handed[0][1]  # after "a": re-ask from c0, skip "a"
    assert middle == StreamPosition("c0", ("a",))
    assert handed[-1][1] == StreamPosition("c1")
    resumed = StreamState(StreamPosition.decode(middle.encode()))
    again = resumed.accept(_answer("c1", "a", "b", "c"))
    assert [e.change_id for e, _ in again] == ["b", "c"]


def test_a_position_inside_an_answer_holds_the_answers_page_cursor() -> None:
    """Re-asking the cursor an answer was asked with may answer differently (changes indexed
    meanwhile sort first); the answer's page cursor gives the same answer back."""
    state = StreamState(StreamPosition("c0"))
    answer = PollResult.from_json(
        {
            "message": "new_change",
            "events": [{**EVENT, "change_id": i} for i in ("a", "b")],
            "next_cursor": "c1",
            "page_cursor": "p0",
        }
    )
    handed = state.accept(answer)
    assert handed[0][1] == StreamPosition("p0", ("a",))
    assert handed[1][1] == StreamPosition("c1")


def test_file_store_replaces_atomically(tmp_path: Path) -> None:
    store = FileCursorStore(tmp_path / "deep" / "pos")
    assert store.load() is None
    store.save("one")
    store.save(StreamPosition("c0", ("a",)).encode())
    assert StreamPosition.decode(store.load() or "") == StreamPosition("c0", ("a",))
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["pos"]  # no temp file left
    json.dumps(store.load())
