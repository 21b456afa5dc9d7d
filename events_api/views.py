"""The events API inside a processors worker: mounted on Faust's web server.

:func:`register_events_api` (added to the processors' app by ``changefeed worker``) serves the API
(:mod:`events_api.http`) under ``/v1``, ``GET /openapi.json`` and the explorer page
(``GET /explorer``, :mod:`events_api.explorer`) on the worker's web port, next to ``/healthz``
and ``/metrics`` (whose registry it shares, so one scrape shows processing and the API;
``/`` stays Faust's); the feed index, its indexer and the key ring start and
stop with that web server.

Lists, fetches and long polls are answered from this worker's own index of every ``changes``
partition, so any worker gives the same answer. A subject's current state lives in the
``subject_state`` table, of which each worker holds only its partitions:
:class:`TableSubjectStates` finds the subject key's partition (Kafka's default partitioner,
murmur2, as the producers of ``actions`` and Faust use), asks Faust's table routing
(``app.router.table_metadata``, the partition assignor's map of which worker serves which
changelog partition) for its owner, answers locally when that is this worker, and otherwise
forwards the request (with the caller's key, which every worker knows) to the owner's
canonical URL, marked so that it is never forwarded twice. The answer is therefore the same
whichever worker the client asks. (``app.router.key_store`` would do the lookup in one
call, but it hashes with the producer's metadata, which need not know changelog topics the
processors write through their own transactional producers.)

Schedules (:class:`TableSchedules`) are read from the ``schedules`` table the same way: a
subject's list is forwarded to its owner; a schedule or failed job named by id alone that
this worker does not hold is asked of every other worker (the one holding it answers, the
others 404), and the failed-jobs list merges every worker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
import faust
from aiohttp import web
from kafka.partitioner.default import murmur2
from yarl import URL

from changefeed.config import Settings
from events_api.errors import Unavailable
from events_api.events import rfc3339_micros
from events_api.http import mount
from events_api.relay import Relay, key_headers
from events_api.runtime import EventsApi
from events_api.subjects import SubjectStateView
from events_api.write_routes import PeerAnswer
from processors import models
from processors.health import HealthCheck, add_health_check, add_metrics
from processors.metrics import metrics_registry
from processors.tables import ChangeTables, tables_of
from schemas.schedules import Schedule

FORWARDED = "X-Changefeed-Forwarded"


def register_events_api(
    app: faust.App,
    settings: Settings,
    *,
    extend_api: Callable[[web.Application], None] | None = None,
) -> EventsApi:
    """Serve the events API from ``app``'s web server; returns it (tests inspect it).

    ``extend_api`` may add routes (and what runs with them) to the ``/v1`` sub-application
    before it is mounted, behind the same authentication (``changefeed worker`` adds the
    webhooks endpoints); the events API knows nothing of them.

    The feed index joins the worker's health (stuck or lagging: 503 with the reason), its
    JSON counters (``feed_indexed``, ``feed_skipped``, ``feed_lag_s`` in ``/metrics.json``)
    and its Prometheus registry (:mod:`events_api.metrics`).
    """
    api = EventsApi(
        settings,
        subjects=TableSubjectStates(app, settings.partitions),
        registry=metrics_registry(app),
        schedules=TableSchedules(app),
    )
    events_app = api.web_app()
    if extend_api is not None:
        extend_api(events_app)
    mount(app.web.web_app, events_app)  # type: ignore[attr-defined]

    def index_check() -> HealthCheck:
        ok, reason, details = api.indexer.health()
        return HealthCheck(ok, reason, details)

    def index_metrics() -> dict[str, object]:
        _, _, details = api.indexer.health()
        return {
            "feed_indexed": details["indexed"],
            "feed_skipped": details["skipped_records"],
            "feed_lag_s": details["lag_s"],
        }

    add_health_check(app, "feed_index", index_check)
    add_metrics(app, index_metrics)
    return api


class TableSubjectStates:
    """Current subject states from the processors' ``subject_state`` table."""

    def __init__(self, app: faust.App, partitions: int) -> None:
        self.app = app
        self.partitions = partitions
        self._relay = Relay()

    async def forward(self, request: web.Request, subject_key: str) -> web.StreamResponse | None:
        if request.headers.get(FORWARDED):
            return None  # the sender found this worker to be the owner
        if self.app.rebalancing:
            raise Unavailable("the workers are rebalancing their partitions; retry shortly")
        owner = self.owner_of(subject_partition(subject_key, self.partitions))
        if _same_node(owner, URL(str(self.app.conf.canonical_url))):
            return None
        return await self._ask(owner, request)

    def owner_of(self, partition: int) -> URL:
        """The canonical URL of the worker serving ``partition`` of ``subject_state``."""
        changelog = tables_of(self.app).subject_state_table.changelog_topic.get_topic_name()
        for url, topics in self.app.router.table_metadata(models.SUBJECT_STATE).items():
            if partition in topics.get(changelog, ()):
                return URL(url)
        raise Unavailable("the owner of this subject's partition is not known yet; retry")

    async def _ask(self, owner: URL, request: web.Request) -> web.Response:
        headers = {**key_headers(request), FORWARDED: "1"}
        # The raw path: decoded, a %2F of a subject id would become a separator and name
        # another route or subject on the owner.
        url = owner.with_path(request.rel_url.raw_path, encoded=True).with_query(request.query)
        try:
            return await self._relay.get(url, headers, str(owner))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the worker that holds this subject did not answer: {exc}") from exc

    async def state(self, subject_key: str) -> SubjectStateView | None:
        if not self.app.tables.actives_ready:
            raise Unavailable("this worker is still restoring its tables; retry shortly")
        found = tables_of(self.app).subject_state(subject_key)
        if found is None:
            return None
        return SubjectStateView(
            payload=found.payload,
            deleted=found.deleted,
            version=found.version,
            changed_at=None if found.occurred_at is None else rfc3339_micros(found.occurred_at),
            sequence=found.sequence,
        )

    async def close(self) -> None:
        await self._relay.close()


class TableSchedules:
    """Schedules from the processors' ``schedules`` table (this worker's partitions), and
    the other workers' answers for a schedule this worker does not hold."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._relay = Relay()

    def _tables(self) -> ChangeTables:
        if not self.app.tables.actives_ready:
            raise Unavailable("this worker is still restoring its tables; retry shortly")
        return tables_of(self.app)

    async def schedule(self, schedule_id: str) -> Schedule | None:
        return self._tables().schedule(schedule_id)

    async def subject_schedules(self, subject: str) -> list[Schedule]:
        return self._tables().subject_schedules(subject)

    async def failed(self, tenant_id: str) -> list[Schedule]:
        return self._tables().failed_schedules(tenant_id)

    async def subject_deleted(self, subject: str) -> bool:
        found = self._tables().subject_state(subject)
        return found is not None and found.deleted

    async def ask_peers(
        self, request: web.Request, body: bytes | None, query: Mapping[str, str] | None = None
    ) -> list[PeerAnswer]:
        """The same request (method, raw path, ``query``, ``body``, the caller's key) as
        every other worker answers it; none when this request was itself forwarded."""
        if request.headers.get(FORWARDED):
            return []
        if self.app.rebalancing:
            raise Unavailable("the workers are rebalancing their partitions; retry shortly")
        own = URL(str(self.app.conf.canonical_url))
        peers = [
            URL(url)
            for url in self.app.router.table_metadata(models.SCHEDULES)
            if not _same_node(URL(url), own)
        ]
        if not peers:
            return []
        headers = {**key_headers(request), FORWARDED: "1"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        session = self._relay.session()

        async def ask(peer: URL) -> PeerAnswer:
            url = peer.with_path(request.rel_url.raw_path, encoded=True).with_query(
                request.query if query is None else query
            )
            async with session.request(request.method, url, headers=headers, data=body) as got:
                return PeerAnswer(str(peer), got.status, await got.read(), got.content_type)

        try:
            return list(await asyncio.gather(*(ask(peer) for peer in peers)))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"another worker did not answer: {exc}") from exc

    async def close(self) -> None:
        await self._relay.close()


def subject_partition(subject_key: str, partitions: int) -> int:
    """The partition of a subject's actions, changes and table entries (murmur2 of the
    escaped subject key, :func:`schemas.action_contract.subject_key`, as the producers
    hash it)."""
    return (murmur2(subject_key.encode()) & 0x7FFFFFFF) % partitions


def _same_node(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)
