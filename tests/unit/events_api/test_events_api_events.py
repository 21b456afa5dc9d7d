"""The API rendering of a change: the same whichever way its timestamps were decoded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from change_events import T0, change_event

from events_api.events import CHANGE_EVENT_SCHEMA, event_json, rfc3339
from events_api.indexer import to_indexed
from schemas.codec import Codec, default_codec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_microsecond_times_render_as_datetimes_do_in_any_order_of_calls() -> None:
    # The int path keeps the text of the last second it formatted: times within it, before
    # it, after it and on both sides of the epoch must all read as the datetime path reads them.
    moments = [T0 + n for n in (0, 1, 999_999, 1_000_000, 999_999, -1, 5)]
    moments += [-1, 0, -1_000_000, -1_000_001, 253_402_300_799_999_999, -62_135_596_800_000_000]
    moments += [
        random.randrange(-62_135_596_800_000_000, 253_402_300_800_000_000) for _ in range(2000)
    ]
    random.shuffle(moments)
    for micros in moments:
        assert rfc3339(micros) == rfc3339(EPOCH + timedelta(microseconds=micros)), micros


def test_the_index_row_is_rendered_as_from_datetimes() -> None:
    """to_indexed reads timestamps as int micros; rows and bodies are those of datetimes."""
    for codec in (default_codec(), Codec(use_native=False)):
        for n in range(50):
            record = change_event(n, created_us=T0 + n * 700_001, late=n % 7 == 0)
            record["subject_changed_at"] = T0 - n * 86_400_000_123
            value = codec.encode(CHANGE_EVENT_SCHEMA, record)
            row = to_indexed(codec, 3, 1000 + n, value)
            as_datetimes = codec.decode(value, CHANGE_EVENT_SCHEMA)
            assert isinstance(as_datetimes["created_at"], datetime)
            assert row.body == event_json(as_datetimes, 3, 1000 + n)
            assert row.created_us == T0 + n * 700_001
