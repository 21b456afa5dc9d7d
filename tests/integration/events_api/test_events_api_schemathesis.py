"""schemathesis over ``/openapi.json`` against the running API: no 5xx, no schema drift.

Cases are generated from the served document (positive and negative data) and sent with a
valid admin key, so they reach the real handlers and the real index (filled with events
from a real ``changes`` topic). Every built-in check runs (server errors, status codes,
content types, response schemas and headers, negative data rejection, ignored auth...)
except ``positive_data_acceptance``: it expects every schema-valid request to succeed, and
some cannot, by design, for reasons a schema does not express: ``start`` after ``end``, a
``cursor`` that is any string but not one we signed. Those answer 400 with a message, which
the status code and schema checks still verify. Long-poll timeouts are capped at half a
second to keep the run short. Requests whose line exceeds aiohttp's 8 KiB limit never reach
the API: they are only checked to be refused.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from events_api_harness import ChangePublisher, ThreadedApi, change_event
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.openapi import OPENAPI

POLL_TIMEOUT_CAP = 0.5
MAX_REQUEST_LINE = 8190 - len("GET  HTTP/1.1")


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, broker_settings: BrokerSettings
) -> Iterator[ThreadedApi]:
    unique = uuid.uuid4().hex[:10]
    cfg = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=Path(tmp_path_factory.mktemp("schemathesis")),
        broker=broker_settings,
    )
    ensure_topics(cfg)
    api = ThreadedApi(cfg)
    publisher = ChangePublisher(cfg)
    publisher.publish(
        *[change_event(i, subject_id=str(i % 3), user=f"u-{i % 2}") for i in range(20)]
    )
    api.wait_indexed(dict(publisher.ends))
    publisher.close()
    yield api
    api.close()


# The document the API serves is this dict (checked below), so cases can be generated from
# it at collection time, before the server runs.
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_served_document_is_the_one_tested(served: ThreadedApi) -> None:
    with urllib.request.urlopen(f"{served.base_url}/openapi.json", timeout=10) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(OPENAPI))


def _seconds(value: object) -> float:
    """A timeout as the API would read it; anything unreadable counts as no wait."""
    if isinstance(value, bool):
        return 0.0
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_contract(case: schemathesis.Case, served: ThreadedApi) -> None:
    if case.operation.path == "/v1/events/poll":
        query = case.query if case.query is not None else {}
        timeout = query.get("timeout")
        if timeout is None or _seconds(timeout) > POLL_TIMEOUT_CAP:
            query["timeout"] = POLL_TIMEOUT_CAP
        case.query = query
    headers = {"Authorization": f"Bearer {served.keys['acme-admin']}"}
    response = case.call(base_url=served.base_url, headers=headers, timeout=10)
    if len(response.request.url or "") > MAX_REQUEST_LINE:
        # Refused by aiohttp's HTTP parser (plain text, as the document says), not the API.
        assert response.status_code == 400
        return
    case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])
