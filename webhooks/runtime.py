"""The webhooks subsystem of one process, assembled from :class:`~changefeed.config.Settings`.

:class:`Webhooks` owns the followers of the ``webhooks`` and ``webhook_jobs`` topics, their
writer, the HTTP sender and the delivery service. :meth:`Webhooks.install` adds the
``/v1/webhooks`` routes to the events API's sub-application and starts and stops everything
with the web server that serves it, which is how ``changefeed worker`` runs it (the events
API's ``extend_api`` hook): the worker delivers, and every worker answers the endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from changefeed.config import Settings
from webhooks.address_guard import AddressGuard, Resolve, system_resolve
from webhooks.delivery import DeliveryService
from webhooks.sealing import SecretSealer
from webhooks.sender import Sender
from webhooks.topics import (
    JOBS_TOPIC,
    SUBSCRIPTIONS_TOPIC,
    JobBook,
    SubscriptionBook,
    TopicFollower,
    WebhookWriter,
)

READY_TIMEOUT_S = 60.0


class Webhooks:
    def __init__(
        self, settings: Settings, *, resolve: Resolve = system_resolve, deliver: bool = True
    ) -> None:
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
            if deliver
            else None
        )
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

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.delivery is not None:
            await self.delivery.stop()
        await self.job_follower.stop()
        await self.subscription_follower.stop()
        await self.sender.close()
        await self.writer.stop()

    def install(self, events_app: web.Application) -> None:
        """Serve ``/v1/webhooks`` from the events API's sub-application, and run with it."""
        from events_api.http import OPENAPI_DOCUMENT
        from webhooks.http import add_routes
        from webhooks.openapi import extend_openapi

        add_routes(events_app, self)
        extend_openapi(events_app[OPENAPI_DOCUMENT])

        async def lifecycle(_: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        events_app.cleanup_ctx.append(lifecycle)
