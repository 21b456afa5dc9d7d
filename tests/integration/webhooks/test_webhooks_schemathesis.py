"""schemathesis over the ``/v1/webhooks`` part of ``/openapi.json``: no 5xx, no schema drift.

The events API runs with the webhooks endpoints (delivery off: generated subscriptions
must not send anything anywhere) on a real broker; cases are generated from the served
document's webhooks paths, positive and negative, with a valid admin key. Every built-in
check runs except ``positive_data_acceptance`` (a schema-valid URL may still be refused by
the address guard, a job id may not exist: those answer 4xx with a message, which the
status code and schema checks still verify).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from webhooks_harness import create_keys

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.openapi import OPENAPI
from events_api.runtime import serve
from webhooks.openapi import extend_openapi
from webhooks.runtime import Webhooks

DOCUMENT: dict[str, Any] = json.loads(json.dumps(OPENAPI))
extend_openapi(DOCUMENT)
schema = schemathesis.openapi.from_dict(DOCUMENT).include(path_regex="^/v1/webhooks")


class Served:
    def __init__(self, cfg: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.keys = create_keys(cfg)
        webhooks = Webhooks(cfg, delivery="off")
        self.api, self.runner, port = self._run(serve(cfg, extend_api=webhooks.install))
        self.base_url = f"http://127.0.0.1:{port}"
        assert self._run(self.api.wait_ready(60.0))
        assert self._run(webhooks.subscription_follower.catch_up(60.0))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def close(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, broker_settings: BrokerSettings
) -> Iterator[Served]:
    unique = uuid.uuid4().hex[:10]
    cfg = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=Path(tmp_path_factory.mktemp("schemathesis-webhooks")),
        broker=broker_settings,
    )
    ensure_topics(cfg)
    running = Served(cfg)
    yield running
    running.close()


def test_the_served_document_includes_the_webhooks(served: Served) -> None:
    with urllib.request.urlopen(f"{served.base_url}/openapi.json", timeout=10) as response:
        assert json.loads(response.read()) == DOCUMENT


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_webhooks_api_keeps_its_contract(case: schemathesis.Case, served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.keys['acme-admin']}"}
    response = case.call(base_url=served.base_url, headers=headers, timeout=30)
    case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])
