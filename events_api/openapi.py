"""The OpenAPI 3.1 document of the events API, served at ``GET /openapi.json``.

Written by hand next to the views (:mod:`events_api.http`), with response schemas
closed (``additionalProperties: false``) so that a schema conformance run (schemathesis,
in the test suite) fails the moment an answer and this document drift apart.
"""

from __future__ import annotations

from typing import Any

from events_api.openapi_writes import WRITE_PATHS
from schemas.action_contract import NAME_PATTERN

_TEXT = {"type": "string", "minLength": 1, "maxLength": 256}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_ANY: dict[str, Any] = {}

FEED_GUARANTEES = """
**Paging guarantees.** `next_cursor` resumes exactly where the page ended: following it
delivers every matching event exactly once (no gap, no repeat), including events that
arrive while you page, whatever order the feed's partitions are indexed in. A cursor is
opaque and signed; it works only for the API key scope (tenant, and user for user keys) it
was issued to, and carries its filters and order: send it alone, or with the same filters.

**Order.** Within a page events are ordered by `(created_at, position)`. Across ascending
pages an event that was indexed late may carry an earlier `created_at` than events already
delivered (events follow completion time); it is delivered, never skipped. Descending pages
read the feed as it stood at the first page, newest first, down to the oldest retained
event (`next_cursor` is then null).

**Retention.** The feed keeps 7 days (the deployment's retention setting). A first page
with `start` or `end` before that horizon answers 410 Gone, as does a cursor whose
position has been purged: those events are gone, and an empty page would hide it.

**Cursor `now`** starts at the tip: only events indexed after the request follow.
""".strip()


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "A parameter is invalid; the message says which and what is accepted.",
        401: "The API key is missing, malformed, unknown or revoked.",
        403: "The key's role does not allow this.",
        404: "Nothing of the kind exists for this key (another tenant's objects included).",
        410: "The events asked for are older than retention and have been purged.",
        503: "The worker cannot answer yet (starting or rebalancing); retry.",
    }
    return {
        str(s): {
            "description": descriptions[s],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for s in statuses
    }


def _ok(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": _ref(schema_name)}},
        }
    }


_FILTERS = [
    _param(
        "start",
        "query",
        _TIME,
        "Events created at or after this RFC 3339 time (with zone). Alone, the range has no "
        "upper bound: it runs to now.",
    ),
    _param(
        "end",
        "query",
        _TIME,
        "Events created before this RFC 3339 time. Alone, from the oldest retained event.",
    ),
    _param(
        "event_type",
        "query",
        _TEXT,
        "Exact type (`expense_report:updated`) or pattern where `*` matches anything "
        "(`expense_report:*`).",
    ),
    _param("subject_type", "query", _TEXT, "Only this subject type."),
    _param("subject_id", "query", _TEXT, "Only this subject id."),
    _param(
        "user",
        "query",
        _TEXT,
        "Only events caused by this user. User keys may only name their own user.",
    ),
    _param(
        "criticality",
        "query",
        {"type": "string", "pattern": "^[0-5](,[0-5])*$"},
        "Criticality 0-5 (0 n/a, 1 critical ... 5 trivial); comma-separated for several.",
    ),
    _param(
        "code",
        "query",
        {"type": "string", "pattern": "^[0-9]{1,10}(,[0-9]{1,10})*$"},
        "Event code (system < 10000, custom >= 10000); comma-separated for several.",
    ),
    _param("request_id", "query", _TEXT, "Only events of this API request."),
]
_LIMIT = _param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "Page size.",
)
_CURSOR = {
    **_param(
        "cursor",
        "query",
        {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[A-Za-z0-9._-]+$"},
        "`next_cursor` of a previous answer, or `now` for the tip.",
    ),
    "examples": {"tip": {"value": "now"}},
}
_SUBJECT_PATH = [
    _param(
        "subject_type",
        "path",
        {"type": "string", "pattern": f"^{NAME_PATTERN}$"},
        "Subject type, e.g. `expense_report`: 1-128 letters, digits and `. _ : -`; anything"
        " else (an encoded `/` too) answers 400.",
    ),
    _param(
        "subject_id",
        "path",
        _TEXT,
        "Subject id, URL-encoded: a `/` of the id is sent as `%2F` and names that id only.",
    ),
]

_EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "change_id",
        "event_id",
        "request_id",
        "tenant_id",
        "action",
        "event_type",
        "subject_type",
        "subject_id",
        "subject_ref",
        "version",
        "actor",
        "criticality",
        "code",
        "internal",
        "payload_content_type",
        "previous_payload",
        "current_payload",
        "payload_changes",
        "field_changes",
        "late",
        "subject_sequence",
        "subject_changed_at",
        "created_at",
        "source",
        "position",
    ],
    "properties": {
        "change_id": {"type": "string", "description": "Stable id (UUIDv5 of event_id)."},
        "event_id": {"type": "string"},
        "request_id": {"type": "string", "description": "The API request that caused it."},
        "tenant_id": {"type": "string"},
        "action": {"type": "string", "enum": ["create", "update", "delete", "custom"]},
        "event_type": {"type": "string"},
        "subject_type": {"type": "string"},
        "subject_id": {"type": "string"},
        "subject_ref": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["key", "id"],
            "properties": {"key": {"type": "string"}, "id": {"type": "string"}},
        },
        "version": {"type": ["integer", "null"]},
        "actor": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_id", "application_id", "api_version", "api_key_fingerprint"],
            "properties": {
                "user_id": _NULLABLE_TEXT,
                "application_id": _NULLABLE_TEXT,
                "api_version": _NULLABLE_TEXT,
                "api_key_fingerprint": {
                    "type": ["string", "null"],
                    "description": "A fingerprint of the key used; never the key.",
                },
            },
        },
        "criticality": {"type": "integer"},
        "code": {"type": "integer"},
        "internal": {"type": "boolean"},
        "payload_content_type": {"type": "string"},
        "previous_payload": {**_ANY, "description": "State before (JSON); null on create."},
        "current_payload": {**_ANY, "description": "State after (JSON); null on delete."},
        "payload_changes": {
            "type": "array",
            "description": "RFC 6902 operations turning previous_payload into current_payload.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["op", "path"],
                "properties": {
                    "op": {
                        "type": "string",
                        "enum": ["add", "remove", "replace", "move", "copy", "test"],
                    },
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": _ANY,
                },
            },
        },
        "field_changes": {
            "type": "object",
            "description": "JSON Pointer of each changed leaf -> old and new value.",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["old", "new"],
                "properties": {"old": _ANY, "new": _ANY},
            },
        },
        "late": {
            "type": "boolean",
            "description": "Arrived after a newer change of the subject; did not change its "
            "current state.",
        },
        "subject_sequence": {"type": "integer", "minimum": 0},
        "subject_changed_at": _TIME,
        "created_at": _TIME,
        "source": {"type": "string"},
        "position": {
            "type": "object",
            "additionalProperties": False,
            "required": ["partition", "offset"],
            "properties": {
                "partition": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
    },
}

_EVENTS = {"type": "array", "items": _ref("ChangeEvent")}
_COUNT = {"type": "integer", "minimum": 0}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "changefeed events API",
        "version": "1.0.0",
        "description": "Change events of your tenant: list with filters and cursors, fetch "
        "one, by API request, by subject, and long polling.\n\n"
        "**Access.** Every call needs an API key (`Authorization: Bearer <key>` or "
        "`X-Api-Key`). The key decides the tenant; an admin key reads the tenant's whole "
        "log, a user key only the events its user caused.\n\n"
        '**Errors** are JSON `{"error": {"code", "message"}}`, except a request line '
        "longer than 8 KiB, which the HTTP server refuses with a plain-text 400 before the "
        "API sees it.\n\n" + FEED_GUARANTEES,
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"apiKey": []}],
    "paths": {
        "/v1/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "List change events",
                "description": FEED_GUARANTEES,
                "parameters": [
                    *_FILTERS,
                    _LIMIT,
                    _param(
                        "order", "query", {"type": "string", "enum": ["asc", "desc"]}, "Time order."
                    ),
                    _CURSOR,
                ],
                "responses": {
                    **_ok("EventPage", "A page of events and the cursor to continue."),
                    **_errors(400, 401, 403, 410, 503),
                },
            }
        },
        "/v1/events/poll": {
            "get": {
                "operationId": "pollEvents",
                "summary": "Long poll for events after a cursor",
                "description": "Waits up to `timeout` seconds. Answers `new_change` with the "
                "events as soon as any follow the cursor, or `reconnect` (with a fresh "
                "`next_cursor`) when the time is up: call again with `next_cursor`. Filters "
                "as for the list; the cursor must be ascending (or `now`).",
                "parameters": [
                    *_FILTERS,
                    _LIMIT,
                    {**_CURSOR, "required": True},
                    _param(
                        "timeout",
                        "query",
                        {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 60,
                            "default": 30,
                        },
                        "Seconds to wait at most.",
                    ),
                ],
                "responses": {
                    **_ok("PollResult", "New events, or the instruction to reconnect."),
                    **_errors(400, 401, 403, 410, 503),
                },
            }
        },
        "/v1/events/{change_id}": {
            "get": {
                "operationId": "getEvent",
                "summary": "Fetch one change event",
                "parameters": [_param("change_id", "path", _TEXT, "The event's change_id.")],
                "responses": {
                    **_ok("ChangeEvent", "The event."),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/requests/{request_id}/events": {
            "get": {
                "operationId": "getRequestEvents",
                "summary": "All change events of one API request",
                "description": "Up to 1000 events, in time order.",
                "parameters": [_param("request_id", "path", _TEXT, "The API request id.")],
                "responses": {
                    **_ok("RequestEvents", "The request's events."),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/subjects/latest": {
            "get": {
                "operationId": "latestPerSubject",
                "summary": "The most recent change of every subject",
                "description": "Newest first, one event per subject, paged by number.",
                "parameters": [
                    _param("subject_type", "query", _TEXT, "Only subjects of this type."),
                    _param(
                        "page",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1},
                        "Page number, from 1.",
                    ),
                    _LIMIT,
                ],
                "responses": {
                    **_ok("LatestPage", "One page of subjects' latest changes."),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/v1/subjects/{subject_type}/{subject_id}": {
            "get": {
                "operationId": "getSubject",
                "summary": "A subject's current state and latest change (admin keys)",
                "description": "The state is the processors' current state of the subject, "
                "kept beyond retention; `latest_change` is null once its last change is past "
                "retention.",
                "parameters": _SUBJECT_PATH,
                "responses": {
                    **_ok("Subject", "The subject."),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/v1/subjects/{subject_type}/{subject_id}/history": {
            "get": {
                "operationId": "getSubjectHistory",
                "summary": "A subject's changes within retention",
                "description": "In the order they were recorded (`subject_sequence`), late "
                "ones included. User keys see their own changes only.",
                "parameters": [
                    *_SUBJECT_PATH,
                    _LIMIT,
                    _param(
                        "after_sequence",
                        "query",
                        {"type": "integer", "minimum": 0},
                        "Continue after this subject_sequence (next_after_sequence).",
                    ),
                ],
                "responses": {
                    **_ok("SubjectHistory", "The subject's changes."),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        },
        "schemas": {
            "ChangeEvent": _EVENT,
            "Error": {
                "type": "object",
                "additionalProperties": False,
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["code", "message"],
                        "properties": {
                            "code": {
                                "type": "string",
                                "enum": [
                                    "bad_request",
                                    "unauthorized",
                                    "forbidden",
                                    "not_found",
                                    "method_not_allowed",
                                    "gone",
                                    "unavailable",
                                    "internal",
                                ],
                            },
                            "message": {"type": "string", "minLength": 1},
                            "parameter": {
                                "type": "string",
                                "description": "the query or path parameter a 400 is about",
                            },
                            "horizon": {
                                "type": "string",
                                "format": "date-time",
                                "description": "on a 410: events created before this are gone",
                            },
                        },
                    }
                },
            },
            "EventPage": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "events",
                    "count",
                    "has_more",
                    "remaining",
                    "remaining_exact",
                    "order",
                    "next_cursor",
                ],
                "properties": {
                    "events": _EVENTS,
                    "count": {**_COUNT, "description": "Events in this page."},
                    "has_more": {"type": "boolean"},
                    "remaining": {
                        **_COUNT,
                        "description": "Matching events after this page, as of this answer "
                        "(counted up to 10000: see remaining_exact).",
                    },
                    "remaining_exact": {"type": "boolean"},
                    "order": {"type": "string", "enum": ["asc", "desc"]},
                    "next_cursor": {
                        "type": ["string", "null"],
                        "description": "Where the next page starts; null at the end of a "
                        "descending listing. Ascending cursors never end: keep it to read "
                        "what arrives later.",
                    },
                },
            },
            "PollResult": {
                "type": "object",
                "additionalProperties": False,
                "required": ["message", "events", "count", "retry_timeout", "next_cursor"],
                "properties": {
                    "message": {"type": "string", "enum": ["new_change", "reconnect"]},
                    "events": _EVENTS,
                    "count": _COUNT,
                    "retry_timeout": {"type": "number"},
                    "next_cursor": {"type": "string"},
                    "page_cursor": {
                        "type": "string",
                        "description": (
                            "With `new_change`: asks for this same answer again (the same "
                            "events in the same order, however much arrived since). A "
                            "consumer that handled part of an answer resumes from it and "
                            "skips the events it handled."
                        ),
                    },
                },
            },
            "RequestEvents": {
                "type": "object",
                "additionalProperties": False,
                "required": ["request_id", "count", "events"],
                "properties": {
                    "request_id": {"type": "string"},
                    "count": _COUNT,
                    "events": _EVENTS,
                },
            },
            "LatestPage": {
                "type": "object",
                "additionalProperties": False,
                "required": ["count", "meta", "events"],
                "properties": {
                    "count": _COUNT,
                    "events": _EVENTS,
                    "meta": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["count", "page_count", "page_number", "page_size"],
                        "properties": {
                            "count": {**_COUNT, "description": "Subjects in all pages."},
                            "page_count": _COUNT,
                            "page_number": {"type": "integer", "minimum": 1},
                            "page_size": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
            "Subject": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "subject_type",
                    "subject_id",
                    "deleted",
                    "state",
                    "version",
                    "changed_at",
                    "sequence",
                    "latest_change",
                ],
                "properties": {
                    "subject_type": {"type": "string"},
                    "subject_id": {"type": "string"},
                    "deleted": {"type": "boolean"},
                    "state": {**_ANY, "description": "Current state (JSON); null if deleted."},
                    "version": {"type": ["integer", "null"]},
                    "changed_at": {"type": ["string", "null"], "format": "date-time"},
                    "sequence": {
                        "type": ["integer", "null"],
                        "minimum": 0,
                        "description": "How many changes of the subject were recorded.",
                    },
                    "latest_change": {
                        "oneOf": [_ref("ChangeEvent"), {"type": "null"}],
                    },
                },
            },
            "SubjectHistory": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "subject_type",
                    "subject_id",
                    "count",
                    "has_more",
                    "next_after_sequence",
                    "events",
                ],
                "properties": {
                    "subject_type": {"type": "string"},
                    "subject_id": {"type": "string"},
                    "count": _COUNT,
                    "has_more": {"type": "boolean"},
                    "next_after_sequence": {"type": ["integer", "null"]},
                    "events": _EVENTS,
                },
            },
        },
    },
}

# -- who the key is (the explorer's sign-in) -----------------------------------------------

OPENAPI["paths"]["/v1/me"] = {
    "get": {
        "operationId": "getMe",
        "summary": "Who the presented API key is: tenant, role, user",
        "description": "What a client (the explorer page) shows after sign-in. Never the key "
        "nor its digest.",
        "parameters": [],
        "responses": {
            **_ok("Me", "The key's tenant and role."),
            **_errors(400, 401, 503),
        },
    }
}
OPENAPI["components"]["schemas"]["Me"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key_id", "key_name", "tenant_id", "role", "user_id", "retention_ms"],
    "properties": {
        "key_id": {"type": "string", "description": "The key's public id (16 hex digits)."},
        "key_name": {"type": "string", "description": "The name given at creation."},
        "tenant_id": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "user"]},
        "user_id": {
            "type": ["string", "null"],
            "description": "The user a user key is bound to; null for admin keys.",
        },
        "retention_ms": {
            "type": "integer",
            "minimum": 1,
            "description": "How long the feed keeps events.",
        },
    },
}


def _merge_write_paths() -> None:
    paths = OPENAPI["paths"]
    for path, operations in WRITE_PATHS.items():
        paths.setdefault(path, {}).update(operations)


_merge_write_paths()
