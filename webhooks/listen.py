"""``changefeed webhooks listen``: a local endpoint to try webhooks with.

It accepts ``POST`` on any path, checks the Standard Webhooks signature with the secret(s)
given (``--secret``, repeatable, or ``CHANGEFEED_WEBHOOK_SECRET``), and prints one JSON line
per delivery: whether the signature verified, the ``webhook-id``, and the change's type,
subject and id. A delivery that does not verify is answered 401 (so the sender retries);
without any secret nothing can be verified, every delivery is printed as ``unverified``
and answered 204. Repeated ``webhook-id`` values are flagged as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from aiohttp import web

from webhooks.errors import SignatureError
from webhooks.signing import secret_key, verify

MAX_BODY = 8 * 1024 * 1024


def receiver_app(secrets: Sequence[str], out: TextIO) -> web.Application:
    keys = [secret_key(s) for s in secrets]
    seen: set[str] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        line: dict[str, Any] = {"received_at": round(time.time(), 3), "path": request.path}
        msg_id = request.headers.get("webhook-id", "")
        if keys:
            try:
                verify(keys, request.headers, body, now_s=time.time())
            except SignatureError as exc:
                line.update(verified=False, error=str(exc), webhook_id=msg_id)
                print(json.dumps(line), file=out, flush=True)
                return web.json_response({"error": str(exc)}, status=401)
            line["verified"] = True
        else:
            line["verified"] = "unverified"
        line["webhook_id"] = msg_id
        if msg_id in seen:
            line["duplicate"] = True
        seen.add(msg_id)
        try:
            change = json.loads(body)
            line.update(
                event_type=change.get("event_type"),
                subject=f"{change.get('subject_type')}/{change.get('subject_id')}",
                tenant_id=change.get("tenant_id"),
            )
        except (ValueError, AttributeError):
            line["body_bytes"] = len(body)
        print(json.dumps(line), file=out, flush=True)
        return web.Response(status=204)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/{tail:.*}", receive)
    return app


async def _serve(host: str, port: int, secrets: Sequence[str], out: TextIO) -> None:
    runner = web.AppRunner(receiver_app(secrets, out), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    note = "verifying signatures" if secrets else "NOT verifying (no --secret)"
    print(f"listening on http://{host}:{port}/ ({note}); Ctrl-C stops", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_listener(host: str, port: int, secrets: Sequence[str], out: TextIO = sys.stdout) -> int:
    for secret in secrets:
        secret_key(secret)  # a malformed secret is an error now, not on every delivery
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, secrets, out))
    return 0
