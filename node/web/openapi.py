"""OpenAPI 3.1 description of the public HTTP surface (served at /api/openapi.json)."""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..model.executions import Fate
from ..model.jobs import JOB_FIELDS, READ_ONLY, REQUIRED_FIELDS

_ERR = {"$ref": "#/components/responses/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}

EXAMPLE_JOB = {
    "uri": "http://127.0.0.1:3002/webhook",
    "httpMethod": "POST",
    "body": {"event": "scheduled_task", "timestamp": "{{timestamp}}"},
    "schedule": "*/30 * * * * *",
    "timeZone": "Europe/Lisbon",
}


def _op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        errors: tuple[int, ...] = (400, 401, 403, 404, 503)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **{str(e): _ERR for e in errors}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": body}}
    if params:
        op["parameters"] = params
    return op


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{1,32}$"}}


def _q(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


# An instant as the API reads it: RFC 3339 with an offset, between the years 1970 and 9000 (the year is the
# one rule JSON Schema's date-time format cannot say; the pattern says it).
INSTANT = {"type": "string", "format": "date-time", "pattern": "^(19[7-9][0-9]|[2-8][0-9]{3}|9000)-",
           "description": "RFC 3339 with a UTC offset, years 1970 to 9000"}
IF_MATCH = {"type": "string", "pattern": '^\\s*(\\*|(W/)?("[0-9]{1,18}"|[0-9]{1,18}))\\s*$',
            "description": "the job's version, as its ETag gives it, or *"}


@cache
def spec() -> dict[str, Any]:
    # generated from the definitions validation runs (node/jobs.py JOB_FIELDS): they cannot drift
    job_props: dict[str, Any] = {api: f.schema for api, f in JOB_FIELDS.items()}
    tick = {"type": "object", "required": ["scheduledAt", "fate", "executionId", "redelivered", "detail"],
            "properties": {"scheduledAt": {"type": "string", "format": "date-time"},
                           "fate": {"type": "string", "enum": [str(f) for f in Fate]},
                           "executionId": {"type": ["string", "null"]}, "redelivered": {"type": "boolean"},
                           "detail": {"type": "string"}}}
    ticks_out = {"type": "object", "required": ["jobId", "from", "to", "ticks", "truncated", "counts"], "properties": {
        "jobId": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        "ticks": {"type": "array", "items": tick}, "truncated": {"type": "boolean"},
        "nextFrom": {"type": ["string", "null"]},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}}
    echoed = {name: {"description": "ignored, any value: a job read back may be sent again"} for name in READ_ONLY}
    job_in = {"type": "object", "properties": {**job_props, **echoed}, "required": list(REQUIRED_FIELDS),
              "additionalProperties": False}
    job_patch = {"type": "object", "properties": {**job_props, **echoed}, "additionalProperties": False}
    job_out = {"type": "object", "properties": {
        **job_props, "id": {"type": "string"}, "version": {"type": "integer"}, "owner": {"type": ["string", "null"]},
        "nextRunAt": {"type": ["string", "null"]}, "running": {"type": "boolean"},
        "lastExecutedAt": {"type": ["string", "null"]}, "isLocked": {"type": "boolean"}, "state": {"type": "string"},
        "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
    }}
    preview_out = {"type": "object", "properties": {"fires": {"type": "array", "items": {"type": "object"}}}}
    paths: dict[str, Any] = {
        "/api/crons": {
            "get": _op("List jobs (paginated: X-Next-Cursor / Link headers)", {"200": _json({"type": "array", "items": _JOB})},
                       params=[_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                               _q("cursor", {"type": "integer", "minimum": 0, "maximum": 2**62}), _q("q", {"type": "string", "maxLength": 200}),
                               _q("state", {"type": "string", "enum": ["all", "active", "paused"]})],
                       errors=(400, 401, 503)),
            "post": _op("Create a job", {"201": _json(_JOB, "Created")},
                        body={"schema": {"$ref": "#/components/schemas/JobInput"}, "example": EXAMPLE_JOB},
                        errors=(400, 401, 403, 409, 413, 415, 503)),
        },
        "/api/crons/{id}": {
            "get": _op("Get a job with nextRunAt and its last execution", {"200": _json(_JOB)}, params=[_ID]),
            "put": _op("Update a job (partial allowed; If-Match on version)", {"200": _json(_JOB)},
                       body={"schema": {"$ref": "#/components/schemas/JobPatch"}, "example": {"paused": False}},
                       params=[_ID, {"name": "If-Match", "in": "header", "required": False, "schema": IF_MATCH}],
                       errors=(400, 401, 403, 404, 412, 413, 415, 503)),
            "patch": _op("Update a job (same as PUT)", {"200": _json(_JOB)},
                         body={"schema": {"$ref": "#/components/schemas/JobPatch"}}, params=[_ID],
                         errors=(400, 401, 403, 404, 412, 413, 415, 503)),
            "delete": _op("Delete a job", {"200": _json({"type": "object"})}, params=[_ID], errors=(401, 403, 404, 412, 503)),
        },
        "/api/crons/{id}/run": {"post": _op("Run now", {"202": _json({"type": "object"}, "Accepted")}, params=[_ID],
                                            errors=(401, 403, 404, 409, 429, 503))},
        "/api/crons/{id}/pause": {"post": _op("Pause", {"200": _json(_JOB)}, params=[_ID], errors=(401, 403, 404, 503))},
        "/api/crons/{id}/resume": {"post": _op("Resume", {"200": _json(_JOB)}, params=[_ID], errors=(401, 403, 404, 503))},
        "/api/crons/{id}/executions": {"get": _op(
            "Execution history, newest first", {"200": _json({"type": "array", "items": {"type": "object"}})},
            params=[_ID, _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _q("before", INSTANT)])},
        "/api/crons/{id}/ticks": {"get": _op(
            "Tick ledger: every scheduled instant in [from, to) under the definition in force then, with its fate",
            {"200": _json(ticks_out)},
            params=[_ID, _q("from", INSTANT), _q("to", INSTANT),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000})])},
        "/api/crons/{id}/preview": {"get": _op(
            "Next fire times with UTC offsets", {"200": _json(preview_out)},
            params=[_ID, _q("count", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _q("from", INSTANT)])},
        "/api/schedules/preview": {"post": _op(
            "Preview an unsaved schedule", {"200": _json(preview_out)},
            body={"schema": {"type": "object", "required": ["schedule"], "additionalProperties": False, "properties": {
                "schedule": JOB_FIELDS["schedule"].schema, "timeZone": JOB_FIELDS["timeZone"].schema,
                "count": {"type": "integer", "minimum": 1, "maximum": 100},
                "from": {**INSTANT, "type": ["string", "null"], "description": "null or absent: now"}}},
                "example": {"schedule": "30 1 * * *", "timeZone": "Europe/Lisbon", "count": 3}},
            errors=(400, 401, 413, 415))},
        "/api/crons/status/stream": {"get": {"summary": "Server-sent events: snapshot then job/execution/node deltas",
                                             "responses": {"200": {"description": "text/event-stream"}}}},
        "/api/crons/status-stream": {"get": {"summary": "Alias of /api/crons/status/stream",
                                             "responses": {"200": {"description": "text/event-stream"}}}},
        "/api/cluster": {"get": _op("Members, epoch, owned counts, recent hand-overs", {"200": _json({"type": "object"})},
                                    errors=(401, 503))},
        "/api/health": {"get": {"summary": "Health (503 when Redis or MariaDB is unreachable)",
                                "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"}, "Unhealthy")}}},
        "/livez": {"get": {"summary": "Liveness: the process and its event loop answer (no token needed)",
                           "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness: Redis, MariaDB, a fresh membership lease, not stopping "
                                       "(no token needed; 503 lists the failing checks)",
                            "responses": {"200": _json({"type": "object"}),
                                          "503": _json({"type": "object"}, "Not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain"}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "cronring", "version": __version__,
                 "description": "A distributed cron service: every tick fired once by a cluster of equal nodes."},
        "paths": paths,
        "components": {
            "schemas": {"Job": job_out, "JobInput": job_in, "JobPatch": job_patch},
            "responses": {"Error": _json({"type": "object", "properties": {"error": {"type": "string"}, "details": {}}},
                                         "Error")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
