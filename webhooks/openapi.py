"""The ``/v1/webhooks`` part of the events API's OpenAPI document.

:func:`extend_openapi` adds the paths, the request and response schemas (closed, as the rest
of the document, so the schema conformance run in the test suite catches any drift from
:mod:`webhooks.http`) and the ``payload_too_large`` error code to the document the events
API serves at ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any

from webhooks.subscriptions import (
    MAX_DESCRIPTION,
    MAX_EVENT_TYPES,
    MAX_OVERLAP_S,
    MAX_TEXT,
)

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_ID = {"type": "string", "pattern": "^wh_[0-9a-f]{16}$"}
_EVENT_TYPES = {"type": "array", "minItems": 1, "maxItems": MAX_EVENT_TYPES, "items": _TEXT}
_DESCRIPTION = {"type": "string", "maxLength": MAX_DESCRIPTION}
_ERRORS = {
    400: "The body or a parameter is invalid; the message says which and what is accepted.",
    401: "The API key is missing, malformed, unknown or revoked.",
    403: (
        "A user key (webhooks are managed with an admin key), or, for a change, a key "
        "without the write scope."
    ),
    404: "No such subscription or job for this key's tenant.",
    413: "The request body is larger than 64 KiB.",
    503: "Webhook state is still loading; retry shortly.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": _ERRORS[s],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for s in statuses
    }


def _answer(status: int, schema: str, description: str) -> dict[str, Any]:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": _ref(schema)}},
        }
    }


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _webhook(secret: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": _ID,
        "url": {"type": "string"},
        "event_types": _EVENT_TYPES,
        "subject_type": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "paused"]},
        "paused_reason": {"type": ["string", "null"]},
        "paused_at": _NULLABLE_TIME,
        "failing_since": _NULLABLE_TIME,
        "previous_secret_expires_at": {"type": "array", "items": _TIME},
        "created_at": _TIME,
        "updated_at": _TIME,
    }
    required = list(properties)
    if secret is not None:
        properties["secret"] = {
            "type": "string",
            "pattern": "^whsec_",
            "description": "The signing secret: shown in this answer only.",
        }
        if secret == "required":
            required.append("secret")
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


_SUBSCRIPTION_PATH = [
    {
        "name": "subscription_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The subscription's id (`wh_...`).",
    }
]

PATHS: dict[str, Any] = {
    "/v1/webhooks": {
        "post": {
            "operationId": "createWebhook",
            "summary": "Subscribe an endpoint to the tenant's changes",
            "requestBody": _body("WebhookCreate"),
            "responses": {
                **_answer(201, "WebhookWithSecret", "The subscription, with its secret (once)."),
                **_errors(400, 401, 403, 413, 503),
            },
        },
        "get": {
            "operationId": "listWebhooks",
            "summary": "The tenant's subscriptions",
            "responses": {
                **_answer(200, "WebhookList", "Every subscription of the tenant."),
                **_errors(400, 401, 403),
            },
        },
    },
    "/v1/webhooks/failed": {
        "get": {
            "operationId": "listFailedJobs",
            "summary": "Failed deliveries (jobs), queued for a retry or quit",
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["queued", "quit"]},
                },
                {
                    "name": "subscription_id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 10**9},
                },
                {
                    "name": "count",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                **_answer(200, "FailedJobPage", "A page of jobs, oldest first."),
                **_errors(400, 401, 403, 503),
            },
        },
        "delete": {
            "operationId": "deleteFailedJobs",
            "summary": "Drop one job, or a subscription's jobs (optionally of one state)",
            "requestBody": _body("FailedJobTarget"),
            "responses": {
                **_answer(200, "DeletedJobs", "How many jobs were dropped."),
                **_errors(400, 401, 403, 404, 413, 503),
            },
        },
    },
    "/v1/webhooks/failed/resume": {
        "post": {
            "operationId": "resumeFailedJobs",
            "summary": "Deliver one job now, or every quit job of a subscription",
            "requestBody": _body("ResumeTarget"),
            "responses": {
                **_answer(200, "ResumedJobs", "How many jobs were resumed."),
                **_errors(400, 401, 403, 404, 413, 503),
            },
        },
    },
    "/v1/webhooks/{subscription_id}": {
        "get": {
            "operationId": "getWebhook",
            "summary": "One subscription",
            "parameters": _SUBSCRIPTION_PATH,
            "responses": {
                **_answer(200, "Webhook", "The subscription."),
                **_errors(400, 401, 403, 404),
            },
        },
        "patch": {
            "operationId": "updateWebhook",
            "summary": "Change, pause, resume, or rotate the secret of a subscription",
            "parameters": _SUBSCRIPTION_PATH,
            "requestBody": _body("WebhookPatch"),
            "responses": {
                **_answer(200, "WebhookMaybeSecret", "The subscription (new secret, if rotated)."),
                **_errors(400, 401, 403, 404, 413, 503),
            },
        },
        "delete": {
            "operationId": "deleteWebhook",
            "summary": "Delete a subscription and its jobs",
            "parameters": _SUBSCRIPTION_PATH,
            "responses": {
                "204": {"description": "Deleted."},
                **_errors(400, 401, 403, 404, 503),
            },
        },
    },
}

SCHEMAS: dict[str, Any] = {
    "Webhook": _webhook(None),
    "WebhookWithSecret": _webhook("required"),
    "WebhookMaybeSecret": _webhook("optional"),
    "WebhookList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["webhooks", "count"],
        "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}, "count": _COUNT},
    },
    "WebhookCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url", "event_types"],
        "properties": {
            "url": {"type": "string", "maxLength": 2048, "description": "http(s) endpoint."},
            "event_types": {
                **_EVENT_TYPES,
                "description": 'Event types or patterns (`*` wildcard); `["*"]` for all.',
            },
            "subject_type": {"type": ["string", "null"], **{"maxLength": MAX_TEXT}},
            "description": _DESCRIPTION,
        },
    },
    "WebhookPatch": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "url": {"type": "string", "maxLength": 2048},
            "event_types": _EVENT_TYPES,
            "subject_type": {"type": ["string", "null"], "maxLength": MAX_TEXT},
            "description": _DESCRIPTION,
            "paused": {"type": "boolean"},
            "rotate_secret": {"type": "boolean"},
            "secret_overlap_s": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_OVERLAP_S,
                "description": "With rotate_secret: how long the old secret keeps signing.",
            },
        },
    },
    "ResumeTarget": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {"job_id": {"type": "string"}, "subscription_id": {"type": "string"}},
    },
    "FailedJobTarget": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "job_id": {"type": "string"},
            "subscription_id": {"type": "string"},
            "state": {"type": "string", "enum": ["queued", "quit"]},
        },
    },
    "FailedJob": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "subscription_id",
            "change_id",
            "state",
            "failure_count",
            "last_status",
            "last_error",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "subscription_id": _ID,
            "change_id": {"type": "string"},
            "state": {"type": "string", "enum": ["queued", "quit"]},
            "failure_count": _COUNT,
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": _NULLABLE_TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    },
    "FailedJobPage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs", "count", "total", "offset", "has_more", "counts"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("FailedJob")},
            "count": _COUNT,
            "total": _COUNT,
            "offset": _COUNT,
            "has_more": {"type": "boolean"},
            "counts": {
                "type": "object",
                "additionalProperties": False,
                "required": ["queued", "quit"],
                "properties": {"queued": _COUNT, "quit": _COUNT},
            },
        },
    },
    "ResumedJobs": {
        "type": "object",
        "additionalProperties": False,
        "required": ["resumed"],
        "properties": {"resumed": _COUNT},
    },
    "DeletedJobs": {
        "type": "object",
        "additionalProperties": False,
        "required": ["deleted"],
        "properties": {"deleted": _COUNT},
    },
}


def extend_openapi(document: dict[str, Any]) -> None:
    """Add the webhooks endpoints to the events API's ``document`` (in place)."""
    document["paths"].update(PATHS)
    schemas = document["components"]["schemas"]
    schemas.update(SCHEMAS)
    codes = schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    if "payload_too_large" not in codes:
        codes.append("payload_too_large")
    document["info"]["description"] += (
        "\n\n**Webhooks** (`/v1/webhooks`, admin keys only): push delivery of the same "
        "change events, signed with Standard Webhooks headers; failed deliveries are jobs "
        "that can be listed, resumed and deleted."
    )
