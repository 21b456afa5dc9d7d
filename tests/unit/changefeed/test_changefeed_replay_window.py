from datetime import UTC, datetime, timedelta

import pytest

from changefeed.replay import ReplayError, ReplayWindow, parse_time

SINCE = datetime(2026, 11, 1, tzinfo=UTC)


def test_filters_use_key_and_ce_type_header() -> None:
    window = ReplayWindow(since=SINCE, tenant="acme", event_type="expense_*:*")
    headers = [("ce_type", b"expense_report:updated")]
    assert window.admits(b"acme/expense_report/1", headers)
    assert not window.admits(b"acmeco/expense_report/1", headers)  # prefix is the whole tenant
    assert not window.admits(b"acme/expense_report/1", [("ce_type", b"project:created")])
    assert not window.admits(b"acme/expense_report/1", [])
    assert not window.admits(None, headers)


def test_until_must_follow_since() -> None:
    with pytest.raises(ReplayError, match="after"):
        ReplayWindow(since=SINCE, until=SINCE - timedelta(seconds=1))


def test_parse_time_absolute_and_relative() -> None:
    assert parse_time("2026-11-01T00:00:00Z") == SINCE
    assert parse_time("2026-11-01T00:00:00") == SINCE  # naive means UTC
    two_hours_ago = parse_time("-2h")
    delta = datetime.now(UTC) - two_hours_ago
    assert timedelta(hours=2) - timedelta(seconds=5) < delta < timedelta(hours=2, seconds=5)
    with pytest.raises(ReplayError, match="not a time"):
        parse_time("yesterday")


def test_a_record_that_does_not_decode_is_written_raw_and_the_replay_goes_on() -> None:
    import io
    import json
    from types import SimpleNamespace

    from changefeed.replay import _jsonl_sink

    out = io.StringIO()
    write = _jsonl_sink(out, "changefeed.ChangeEvent")
    write(SimpleNamespace(partition=0, offset=7, value=b"not a change event"))
    write(SimpleNamespace(partition=0, offset=8, value=None))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["value"]["raw"] == b"not a change event".hex()
    assert first["value"]["undecodable"]
    assert second["value"] == {"raw": None}
