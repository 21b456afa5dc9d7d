from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.cloudevents import cloudevent_headers, parse_cloudevent_headers, rfc3339
from schemas.errors import DecodeError, EncodeError

OCCURRED = datetime(2024, 9, 18, 14, 3, 11, 402113, tzinfo=UTC)


def action_headers(**changes: object) -> list[tuple[str, bytes]]:
    arguments: dict[str, object] = {
        "id": "0b4c2b8e-5a0e-4d7f-9d1e-3f1c2a7b9e10",
        "type": "expense_report:updated",
        "source": "https://api.example.com/v2",
        "subject": "expense_report/123456",
        "time": OCCURRED,
    }
    arguments.update(changes)
    return cloudevent_headers(**arguments)  # type: ignore[arg-type]


def test_binary_mode_headers_follow_the_kafka_binding() -> None:
    assert action_headers() == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"0b4c2b8e-5a0e-4d7f-9d1e-3f1c2a7b9e10"),
        ("ce_source", b"https://api.example.com/v2"),
        ("ce_type", b"expense_report:updated"),
        ("ce_subject", b"expense_report/123456"),
        ("ce_time", b"2024-09-18T14:03:11.402113Z"),
        ("content-type", b"application/avro"),
    ]


def test_optional_attributes_are_left_out_when_not_given() -> None:
    headers = cloudevent_headers(id="1", type="t", source="/s")
    assert [key for key, _ in headers] == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "content-type",
    ]


def test_dataschema_and_content_type_are_passed_through() -> None:
    headers = dict(action_headers(dataschema="urn:example:schema", content_type="application/json"))
    assert headers["ce_dataschema"] == b"urn:example:schema"
    assert headers["content-type"] == b"application/json"


@pytest.mark.parametrize(
    "moment, expected",
    [
        (OCCURRED, "2024-09-18T14:03:11.402113Z"),
        (
            datetime(2024, 9, 18, 16, 3, 11, 402113, tzinfo=timezone(timedelta(hours=2))),
            "2024-09-18T14:03:11.402113Z",
        ),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00.000000Z"),
        (1_726_668_191_402_113, "2024-09-18T14:03:11.402113Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_time_is_rfc3339_utc_with_microseconds(moment: datetime | int, expected: str) -> None:
    assert rfc3339(moment) == expected
    if isinstance(moment, int):
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=moment)
    assert datetime.fromisoformat(expected) == moment


@pytest.mark.parametrize(
    "moment, message", [(datetime(2024, 9, 18, 14, 3), "aware"), (2**62, "out of range")]
)
def test_unusable_time_is_refused(moment: datetime | int, message: str) -> None:
    with pytest.raises(EncodeError, match=message) as caught:
        action_headers(time=moment)
    assert caught.value.field == "time"


@pytest.mark.parametrize("attribute", ["id", "type", "source"])
def test_empty_required_attribute_is_refused(attribute: str) -> None:
    with pytest.raises(EncodeError, match=attribute) as caught:
        action_headers(**{attribute: ""})
    assert caught.value.field == attribute


def test_parse_returns_attributes_by_name_and_ignores_other_headers() -> None:
    headers = [("traceparent", b"00-abc-def-01"), *action_headers(), ("ce_tenant", b"tenant-42")]

    attributes = parse_cloudevent_headers(headers)

    assert attributes == {
        "specversion": "1.0",
        "id": "0b4c2b8e-5a0e-4d7f-9d1e-3f1c2a7b9e10",
        "source": "https://api.example.com/v2",
        "type": "expense_report:updated",
        "subject": "expense_report/123456",
        "time": "2024-09-18T14:03:11.402113Z",
        "datacontenttype": "application/avro",
        "tenant": "tenant-42",
    }


def test_parse_accepts_aiokafka_tuples() -> None:
    attributes = parse_cloudevent_headers(tuple(action_headers()))
    assert attributes["type"] == "expense_report:updated"


@pytest.mark.parametrize(
    "headers, message",
    [
        (None, "lack ce_specversion, ce_id, ce_source, ce_type"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_type", b"t")], "lack ce_source"),
        ([*action_headers(), ("ce_id", b"again")], "more than once"),
        ([("ce_id", b"\xff\xfe"), *action_headers()[2:]], "not UTF-8"),
        ([("ce_subject", None), *action_headers()], "no value"),
        ([("ce_specversion", b"0.3"), *action_headers()[1:]], "is not 1.0"),
    ],
)
def test_unusable_headers_raise_decode_error(
    headers: list[tuple[str, bytes | None]] | None, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_cloudevent_headers(headers)


def test_microsecond_times_read_the_same_in_any_order_of_calls() -> None:
    # rfc3339 keeps the text of the last second it formatted: times within it, before it,
    # after it and on both sides of the epoch must all read as the datetime path reads them.
    import random

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    base = 1_764_409_000_000_000
    moments = [base + n for n in (0, 1, 999_999, 1_000_000, 999_999, -1, 5)]
    moments += [-1, 0, -1_000_000, -1_000_001, 253_402_300_799_999_999, -62_135_596_800_000_000]
    moments += [
        random.randrange(-62_135_596_800_000_000, 253_402_300_800_000_000) for _ in range(2000)
    ]
    for micros in moments:
        assert rfc3339(micros) == rfc3339(epoch + timedelta(microseconds=micros)), micros
