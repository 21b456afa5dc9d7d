"""Webhooks: signed push delivery of change events to subscribers' endpoints.

A subsystem of its own, above ``processors/`` and beside ``events_api/``:

* :mod:`webhooks.subscriptions` - what a subscription is, how it is validated and matched;
* :mod:`webhooks.signing` - Standard Webhooks signatures (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``);
* :mod:`webhooks.sealing` - signing secrets encrypted at rest;
* :mod:`webhooks.address_guard` - which targets a worker may connect to;
* :mod:`webhooks.retry` and :mod:`webhooks.jobs` - the retry schedule and failed jobs, as
  pure functions;
* :mod:`webhooks.topics` - the compacted ``webhooks`` and ``webhook_jobs`` topics;
* :mod:`webhooks.progress` - how far a ``changes`` partition may be committed;
* :mod:`webhooks.sender` - one HTTP attempt, through the guard;
* :mod:`webhooks.delivery` - the worker's delivery service (reads ``changes``);
* :mod:`webhooks.http` and :mod:`webhooks.openapi` - the ``/v1/webhooks`` endpoints of the
  events API and their part of its OpenAPI document;
* :mod:`webhooks.listen` - a local receiver for people trying it.

Nothing in ``processors/`` or ``events_api/`` imports this package; ``changefeed worker``
composes them (:mod:`webhooks.runtime`).
"""
