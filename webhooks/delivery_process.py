"""The delivery service in a child process of the worker.

``changefeed worker`` runs webhook delivery in a process of its own (spawned when the
worker's web server starts), so HTTP deliveries, signing and job bookkeeping use the other
core and never take the worker's interpreter from the processing of ``actions`` or the
events API. The child builds its own followers of ``webhooks`` and ``webhook_jobs``, its own
writer and sender (:class:`~webhooks.runtime.Webhooks` with delivery in-process), and:

* stops gracefully on SIGTERM (what the worker sends when it stops): it commits what was
  delivered and leaves the consumer group;
* leaves at once when the worker is gone (SIGKILL included): a thread watches the parent's
  pid; the consumer group then hands its partitions to the next owner, which resumes from
  the committed positions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

from changefeed.config import Settings

PARENT_CHECK_S = 0.5


def run_delivery(settings: Settings, parent: int) -> None:
    """The child's entry point (``multiprocessing`` spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker handles Ctrl-C and stops us
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    logging.basicConfig(
        level=logging.WARNING,
        format="[%(asctime)s] [webhook-delivery %(process)d] %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_deliver(settings))


async def _deliver(settings: Settings) -> None:
    from webhooks.runtime import Webhooks

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    webhooks = Webhooks(settings, delivery="here")
    await webhooks.start()
    try:
        await stop.wait()
    finally:
        await webhooks.stop()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)
