"""Query parameters: accepted forms, and a 4xx with a message for everything else."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from events_api.errors import BadRequest
from events_api.filters import FeedFilter, Order, glob_of, parse_list_params


def parse(query: dict[str, str] | list[tuple[str, str]], *, poll: bool = False):  # type: ignore[no-untyped-def]
    return parse_list_params(MultiDict(query), poll=poll)


def test_defaults() -> None:
    params = parse({})
    assert params.filter == FeedFilter()
    assert not params.filter_given
    assert (params.limit, params.order, params.cursor) == (100, Order.ASC, None)


def test_one_sided_ranges_run_open() -> None:
    only_start = parse({"start": "2024-05-01T12:00:00Z"}).filter
    assert only_start.start_us == 1_714_564_800_000_000 and only_start.end_us is None
    only_end = parse({"end": "2024-05-01T14:00:00+02:00"}).filter
    assert only_end.end_us == 1_714_564_800_000_000 and only_end.start_us is None


def test_filters_are_parsed() -> None:
    params = parse(
        {
            "event_type": "expense_report:*",
            "subject_type": "expense_report",
            "subject_id": "42",
            "user": "u-1",
            "criticality": "3,1,1",
            "code": "10001",
            "request_id": "r-1",
            "limit": "5",
            "order": "desc",
        }
    )
    assert params.filter_given and params.order_given
    assert params.filter.event_type_is_pattern
    assert params.filter.criticality == (1, 3)
    assert params.filter.code == (10001,)
    assert (params.limit, params.order) == (5, Order.DESC)


def test_glob_escapes_everything_but_star() -> None:
    assert glob_of("a[b]?:*") == "a[[]b[]][?]:*"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "yesterday"}, "start must be an RFC 3339 time"),
        ({"start": "2024-05-01T12:00:00"}, "time zone"),
        ({"start": "2024-13-01T12:00:00Z"}, "RFC 3339"),
        ({"end": "2024-05-01"}, "end must be an RFC 3339 time"),
        ({"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, "before end"),
        ({"limit": "0"}, "limit must be from 1 to 1000"),
        ({"limit": "1001"}, "limit must be from 1 to 1000"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"criticality": "6"}, "criticality must be from 0 to 5"),
        ({"criticality": "1,,2"}, "criticality must be an integer"),
        ({"code": "-1"}, "code must be from 0"),
        ({"event_type": ""}, "event_type must not be empty"),
        ({"subject_id": "x" * 257}, "at most 256"),
        ({"subject_id": "a\x00b"}, "control characters"),
        ({"tenant": "globex"}, "the tenant is the API key's"),
        ({"evnt_type": "x"}, "unknown query parameter 'evnt_type'"),
        ([("limit", "1"), ("limit", "2")], "must be given once"),
        ({"timeout": "5"}, "unknown query parameter 'timeout'"),
    ],
)
def test_bad_values_are_bad_requests_that_say_why(query, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadRequest, match=message):
        parse(query)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "cursor is required"),
        ({"cursor": "now", "timeout": "0"}, "timeout must be more than 0"),
        ({"cursor": "now", "timeout": "61"}, "at most 60"),
        ({"cursor": "now", "timeout": "soon"}, "timeout must be a number"),
        ({"cursor": "now", "order": "asc"}, "unknown query parameter 'order'"),
    ],
)
def test_poll_parameters(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(query, poll=True)


def test_poll_timeout() -> None:
    assert parse({"cursor": "now", "timeout": "2.5"}, poll=True).timeout_s == 2.5


def test_canonical_form_round_trips() -> None:
    flt = parse({"start": "2024-05-01T12:00:00Z", "criticality": "2,1", "user": "u"}).filter
    assert FeedFilter.from_canonical(flt.canonical()) == flt
    assert flt.describe() == "start=2024-05-01T12:00:00.000000Z&user=u&criticality=1,2"
