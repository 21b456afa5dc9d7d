"""The webhooks subsystem of one process, assembled from :class:`~changefeed.config.Settings`.

:class:`Webhooks` owns the followers of the ``webhooks`` and ``webhook_jobs`` topics, their
writer, the HTTP sender and the delivery service. :meth:`Webhooks.install` adds the
``/v1/webhooks`` routes to the events API's sub-application and starts and stops everything
with the web server that serves it, which is how ``changefeed worker`` runs it (the events
API's ``extend_api`` hook): every worker answers the endpoints, and delivers in a child
process (:mod:`webhooks.delivery_process`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from aiohttp import web

from changefeed.config import Settings
from changefeed.kafka.follower import TopicFollower
from webhooks.address_guard import AddressGuard, Resolve, system_resolve
from webhooks.delivery import DeliveryService
from webhooks.sealing import SecretSealer
from webhooks.sender import Sender
from webhooks.topics import (
    JOBS_TOPIC,
    SUBSCRIPTIONS_TOPIC,
    JobBook,
    SubscriptionBook,
    WebhookWriter,
)

STOP_TIMEOUT_S = 30.0
Delivery = Literal["child", "here", "off"]


class Webhooks:
    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Resolve = system_resolve,
        delivery: Delivery = "child",
    ) -> None:
        """``delivery``: ``child`` runs the delivery service in a child process
        (:mod:`webhooks.delivery_process`, what the worker does), ``here`` on this event loop
        (the child itself, and tests that inject a resolver), ``off`` serves the API only."""
        self.settings = settings
        sealer = SecretSealer(settings.derived_key("webhook-secrets"))
        self.guard = AddressGuard(settings.webhooks.allow_networks)
        self.book = SubscriptionBook(sealer)
        self.jobs = JobBook()
        self.subscription_follower = TopicFollower(
            settings.bootstrap, settings.topic(SUBSCRIPTIONS_TOPIC), 1, self.book.apply
        )
        self.job_follower = TopicFollower(
            settings.bootstrap, settings.topic(JOBS_TOPIC), settings.partitions, self.jobs.apply
        )
        self.writer = WebhookWriter(settings, sealer)
        self.sender = Sender(self.guard, settings.webhooks.timeout_s, resolve)
        self.delivery = (
            DeliveryService(
                settings,
                self.book,
                self.jobs,
                self.subscription_follower,
                self.job_follower,
                self.writer,
                self.sender,
            )
            if delivery == "here"
            else None
        )
        self._child_wanted = delivery == "child"
        self._child: BaseProcess | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.writer.start()
        await self.subscription_follower.start()
        await self.job_follower.start()
        if self.delivery is not None:
            await self.delivery.start()
        if self._child_wanted:
            from webhooks.delivery_process import run_delivery

            context = multiprocessing.get_context("spawn")
            self._child = context.Process(
                target=run_delivery,
                args=(self.settings, os.getpid()),
                name="webhook-delivery",
                daemon=True,
            )
            self._child.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._child is not None:
            child, self._child = self._child, None
            child.terminate()  # SIGTERM: it commits what was delivered, then leaves
            await asyncio.get_running_loop().run_in_executor(None, child.join, STOP_TIMEOUT_S)
            if child.is_alive():
                child.kill()
                child.join()
        if self.delivery is not None:
            await self.delivery.stop()
        await self.job_follower.stop()
        await self.subscription_follower.stop()
        await self.sender.close()
        await self.writer.stop()

    def install(self, events_app: web.Application) -> None:
        """Serve ``/v1/webhooks`` from the events API's sub-application, and run with it."""
        from events_api.http import OPENAPI_DOCUMENT
        from events_api.write_routes import add_failed_job_source
        from webhooks.http import add_routes
        from webhooks.openapi import extend_openapi

        add_routes(events_app, self)
        extend_openapi(events_app[OPENAPI_DOCUMENT])
        add_failed_job_source(events_app, WebhookFailedJobs(self))

        async def lifecycle(_: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        events_app.cleanup_ctx.append(lifecycle)


class WebhookFailedJobs:
    """Webhook delivery jobs as one kind of ``/v1/failed-jobs`` (the same jobs as
    ``/v1/webhooks/failed``, in the shared shape; ids prefixed with ``webhook:``)."""

    kind = "webhook"

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    async def _loaded(self) -> None:
        from events_api.errors import Unavailable

        if not await self.webhooks.job_follower.catch_up(10.0):
            raise Unavailable("webhook state is still loading; retry shortly")

    def _job(self, tenant_id: str, job_id: str) -> Any:
        job = self.webhooks.jobs.by_id.get(job_id.removeprefix("webhook:"))
        return job if job is not None and job.tenant_id == tenant_id else None

    async def jobs(self, tenant_id: str) -> list[dict[str, Any]]:
        from webhooks.jobs import shared_view

        await self._loaded()
        return [shared_view(job) for job in self.webhooks.jobs.select(tenant_id, None)]

    async def resume(self, tenant_id: str, job_id: str) -> bool:
        import time

        from webhooks.jobs import resumed_job

        await self._loaded()
        job = self._job(tenant_id, job_id)
        if job is None:
            return False
        await self.webhooks.writer.put_jobs([resumed_job(job, time.time_ns() // 1000)])
        return True

    async def delete(self, tenant_id: str, job_id: str) -> bool:
        await self._loaded()
        job = self._job(tenant_id, job_id)
        if job is None:
            return False
        await self.webhooks.writer.delete_jobs([job])
        return True
