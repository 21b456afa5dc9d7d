"""The table values round-trip whatever the payload holds."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from processors import models

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
payloads = st.none() | st.just("") | json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
positions = st.tuples(st.none() | st.integers(0, 2**62), st.integers(0, 2**62), st.text(min_size=1))


@given(
    payload=payloads,
    deleted=st.booleans(),
    sequence=st.integers(0, 2**40),
    recent=st.lists(positions, max_size=models.RECENT_CHANGES),
)
def test_subject_state_round_trips(
    payload: str | None, deleted: bool, sequence: int, recent: list[tuple[int | None, int, str]]
) -> None:
    state = models.SubjectState(
        payload,
        deleted,
        recent[-1][0] if recent else None,
        recent[-1][1] if recent else None,
        sequence,
        "e1",
        None,
        tuple(models.RecentChange(*entry) for entry in recent),
    )
    assert models.SubjectState.decode(state.encode()) == state


@given(payload=payloads, seen_ms=st.integers(0, 2**50), change_id=st.none() | st.text())
def test_seen_event_round_trips(payload: str | None, seen_ms: int, change_id: str | None) -> None:
    seen = models.SeenEvent(seen_ms, change_id, payload)
    assert models.SeenEvent.decode(seen.encode()) == seen
