"""A Python client of the changefeed events API, blocking (:class:`Client`) or asyncio
(:class:`AsyncClient`), with typed results and errors and a resumable stream.

    from changefeed.client import Client, FileCursorStore

    with Client("http://127.0.0.1:6066", api_key) as client:
        for change, position in client.stream(store=FileCursorStore("feed.position")):
            handle(change)
"""

from changefeed.client.aio import AsyncClient
from changefeed.client.cursor_store import CursorStore, FileCursorStore, MemoryCursorStore
from changefeed.client.errors import (
    ApiError,
    BadParameter,
    ClientError,
    CursorStoreError,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
    Unavailable,
)
from changefeed.client.models import (
    Actor,
    ChangeEvent,
    FieldChange,
    Page,
    PatchOperation,
    PollResult,
    Position,
    SubjectRef,
    SubjectState,
)
from changefeed.client.retry import RetryPolicy
from changefeed.client.sync import Client

__all__ = [
    "Actor",
    "ApiError",
    "AsyncClient",
    "BadParameter",
    "ChangeEvent",
    "Client",
    "ClientError",
    "CursorStore",
    "CursorStoreError",
    "FieldChange",
    "FileCursorStore",
    "Forbidden",
    "Gone",
    "MemoryCursorStore",
    "NotFound",
    "Page",
    "PatchOperation",
    "PollResult",
    "Position",
    "RetryPolicy",
    "SubjectRef",
    "SubjectState",
    "Unauthorized",
    "Unavailable",
]
