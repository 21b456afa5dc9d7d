"""The write side's part of the OpenAPI document: generated events, schedules, failed jobs.

Merged into :data:`events_api.openapi.OPENAPI`; the routes are in
:mod:`events_api.write_routes`, the rules in :mod:`events_api.writes` and
:mod:`schemas.schedules`.
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 256}
_OBJECT: dict[str, Any] = {"type": "object"}
_ERRORS = {
    400: "The body or a parameter is invalid; the message names the field.",
    401: "The API key is missing, malformed, unknown or revoked.",
    403: "The key lacks the scope (`write` to change, `read` to look) or is not an admin key.",
    404: "No such schedule or failed job for this key's tenant.",
    503: "The events API cannot store or read this now (the broker unreachable and the spool "
    "unusable, a worker restoring or rebalancing); retry.",
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


def _answer(status: str, description: str) -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": _OBJECT}}}
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "The same key within retention gives the same ids and one event.",
}
_EVENT_FIELDS: dict[str, Any] = {
    "subject_type": {"type": "string", "description": "Target entity type, e.g. `device`."},
    "subject_id": {"type": "string", "description": "Target entity id."},
    "code": {"type": "integer", "minimum": 10000, "description": "Custom code (>= 10000)."},
    "criticality": {"type": "integer", "minimum": 0, "maximum": 5},
    "event_type": {"type": "string", "description": "Default `custom:<code>`."},
    "payload": {"description": "JSON, or a string for a non-JSON content type."},
    "content_type": {"type": "string", "description": "Default `application/json`."},
    "idempotency_key": {"type": "string"},
}
_SCHEDULE_ID = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "schema": _TEXT,
    "description": "The schedule's id.",
}
_JOB = {
    "type": "object",
    "required": ["job_id"],
    "properties": {"job_id": {"type": "string", "description": "`schedule:<id>@<time>`"}},
}


def _command(operation: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "summary": summary,
        "parameters": [_SCHEDULE_ID],
        "responses": {
            **_answer("202", "Accepted; the owning worker applies it in order."),
            **_errors(400, 401, 403, 404, 503),
        },
    }


WRITE_PATHS: dict[str, Any] = {
    "/v1/events": {
        "post": {
            "operationId": "generateEvent",
            "summary": "Generate an event (needs the write scope)",
            "description": "The server sets the time. Answers 202 with `event_id` and the "
            "`change_id` the event will have in the feed.",
            "parameters": [_IDEMPOTENCY],
            "requestBody": _body({"type": "object", "properties": _EVENT_FIELDS}),
            "responses": {
                **_answer("202", "Accepted: delivered or durably spooled."),
                **_errors(400, 401, 403, 503),
            },
        }
    },
    "/v1/schedules": {
        "post": {
            "operationId": "createSchedule",
            "summary": "Schedule events for a subject (admin key, write scope)",
            "description": "`at` (one time) or `every` (ISO 8601 duration or cron, UTC) with "
            "optional `start`, `until`, `count`.",
            "parameters": [_IDEMPOTENCY],
            "requestBody": _body(
                {
                    "type": "object",
                    "properties": {
                        **{k: v for k, v in _EVENT_FIELDS.items() if k != "idempotency_key"},
                        "at": _TIME,
                        "every": {"type": "string"},
                        "start": _TIME,
                        "until": _TIME,
                        "count": {"type": "integer", "minimum": 1},
                    },
                }
            ),
            "responses": {
                **_answer("202", "Accepted: the schedule as it will be stored."),
                **_errors(400, 401, 403, 503),
            },
        }
    },
    "/v1/schedules/{schedule_id}": {
        "get": {
            "operationId": "getSchedule",
            "summary": "A schedule with its trigger state and next event time",
            "parameters": [_SCHEDULE_ID],
            "responses": {**_answer("200", "The schedule."), **_errors(400, 401, 403, 404, 503)},
        },
        "delete": _command("deleteSchedule", "Delete a schedule"),
    },
    "/v1/schedules/{schedule_id}/pause": {"post": _command("pauseSchedule", "Pause a schedule")},
    "/v1/schedules/{schedule_id}/resume": {
        "post": _command("resumeSchedule", "Resume a paused, blocked or failed schedule")
    },
    "/v1/subjects/{subject_type}/{subject_id}/schedules": {
        "get": {
            "operationId": "getSubjectSchedules",
            "summary": "A subject's schedules",
            "parameters": [
                {"name": "subject_type", "in": "path", "required": True, "schema": _TEXT},
                {"name": "subject_id", "in": "path", "required": True, "schema": _TEXT},
            ],
            "responses": {**_answer("200", "The schedules."), **_errors(400, 401, 403, 503)},
        }
    },
    "/v1/failed-jobs": {
        "get": {
            "operationId": "listFailedJobs",
            "summary": "Failed jobs (scheduled events; webhook deliveries share the model)",
            "parameters": [
                {
                    "name": "kind",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["schedule", "webhook"]},
                },
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["queued", "quit"]},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "count",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                **_answer("200", "A page of failed jobs."),
                **_errors(400, 401, 403, 503),
            },
        },
        "delete": {
            "operationId": "deleteFailedJob",
            "summary": "Abandon a failed job",
            "requestBody": _body(_JOB),
            "responses": {**_answer("202", "Accepted."), **_errors(400, 401, 403, 404, 503)},
        },
    },
    "/v1/failed-jobs/resume": {
        "post": {
            "operationId": "resumeFailedJob",
            "summary": "Retry a failed job now",
            "requestBody": _body(_JOB),
            "responses": {**_answer("202", "Accepted."), **_errors(400, 401, 403, 404, 503)},
        }
    },
}
