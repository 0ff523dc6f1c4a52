"""OpenAPI 3.1 description of the public HTTP surface (served at /api/openapi.json)."""

from __future__ import annotations

from functools import cache
from typing import Any

from .. import __version__
from ..model.alerts import AlertState, AlertType
from ..model.audit import AuditAction, Via
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
        errors: tuple[int, ...] = (400, 401, 403, 404, 503), required: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **{str(e): _ERR for e in errors}}}
    if body is not None:
        op["requestBody"] = {"required": required, "content": {"application/json": body}}
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
    group = {"type": "object", "required": ["schedule", "timeZone", "jobs", "example"], "properties": {
        "schedule": {"type": "string"}, "timeZone": {"type": "string"}, "resolved": {"type": "string"},
        "jobs": {"type": "integer", "description": "jobs firing at these instants"},
        "fires": {"type": "integer", "description": "(in a busiest slot) the requests they send in it"},
        "example": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}}}
    forecast_out = {"type": "object", "required": ["from", "to", "step", "counts", "total", "peak", "busiest",
                                                   "complete", "uncounted"], "properties": {
        "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
        "step": {"type": "integer"}, "counts": {"type": "array", "items": {"type": "integer"},
                                                "description": "requests in each slot, from 'from' on"},
        "total": {"type": "integer"}, "peak": {"type": "integer"}, "mean": {"type": "number"},
        "jobs": {"type": "integer"}, "groups": {"type": "integer"},
        "busiest": {"type": "array", "items": {"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"}, "fires": {"type": "integer"},
            "groups": {"type": "array", "items": group}}}},
        "complete": {"type": "boolean", "description": "false: some schedules were too costly to walk (uncounted)"},
        "uncounted": {"type": "array", "items": group, "description": "the first 20 groups not counted"},
        "uncountedJobs": {"type": "integer", "description": "jobs not counted, in all"},
        "computedAt": {"type": "string", "format": "date-time"}, "seconds": {"type": "number"}}}
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
        "lastExecutedAt": {"type": ["string", "null"]}, "isLocked": {"type": "boolean"},
        "state": {"type": "string", "enum": ["waiting", "running", "failing", "paused", "completed"]},
        "remainingRuns": {"type": ["integer", "null"], "description": "maxRuns less the scheduled runs so far"},
        "skipUntil": {"type": ["string", "null"], "description": "instants up to it are skipped by request"},
        "completedAt": {"type": ["string", "null"], "description": "when it completed (it can never fire again)"},
        "warnings": {"type": "array", "items": {"type": "string"},
                     "description": "(create and update) what the definition does not do as its fields might suggest"},
        "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
        "pausedReason": {"type": ["string", "null"], "description": "the note of the pause (or why it paused itself)"},
        "pausedBy": {"type": ["string", "null"], "description": "the actor who paused it (cronring: by itself)"},
        "pausedAt": {"type": ["string", "null"]},
        "pausedUntil": {"type": ["string", "null"], "description": "the pause ends by itself then"},
        "failStreak": {"type": "integer", "description": "failed scheduled runs in a row, to the last one recorded"},
        "failingSince": {"type": ["string", "null"], "description": "the scheduled instant of the streak's first"},
    }}
    change = {"type": "object", "description": "an audit row", "properties": {
        "id": {"type": "integer"}, "at": {"type": "string"}, "actor": {"type": "string"},
        "via": {"type": "string", "enum": [str(v) for v in Via]}, "node": {"type": "string"},
        "action": {"type": "string", "enum": [str(a) for a in AuditAction]}, "jobId": {"type": ["string", "null"]},
        "fromVersion": {"type": ["integer", "null"]}, "toVersion": {"type": ["integer", "null"]},
        "changes": {"type": "object", "description": "{field: [old, new]}, secrets masked"},
        "note": {"type": ["string", "null"]}, "subject": {"type": ["string", "null"]}}}
    version_out = {"type": "object", "properties": {
        "version": {"type": "integer"}, "at": {"type": "string", "description": "when it took force"},
        "deleted": {"type": "boolean"}, "completed": {"type": "boolean"},
        "complete": {"type": "boolean", "description": "false: written before release 3 (schedule, zone, pause only)"},
        "job": job_out, "change": {"anyOf": [change, {"type": "null"}]}}}
    alert_out = {"type": "object", "properties": {
        "id": {"type": "string"}, "type": {"type": "string", "enum": [str(t) for t in AlertType]},
        "at": {"type": "string"}, "jobId": {"type": ["string", "null"]},
        "state": {"type": "string", "enum": [str(s) for s in AlertState]}, "attempts": {"type": "integer"},
        "sentAt": {"type": ["string", "null"]}, "sentBy": {"type": ["string", "null"]},
        "statusCode": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
        "streak": {"type": "integer"}, "node": {"type": "string"}, "execution": {"type": "object"}}}
    bulk_out = {"type": "object", "properties": {
        "action": {"type": "string"}, "dryRun": {"type": "boolean"}, "selector": {"type": ["string", "null"]},
        "matched": {"type": "integer"}, "jobs": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "labels": {"type": "object"}, "ok": {"type": "boolean"},
            "error": {"type": "string"}, "executionId": {"type": "string"}, "version": {"type": "integer"}}}}}}

    def bulk_in(name: str) -> dict[str, Any]:
        props: dict[str, Any] = {
            "selector": {"type": "string", "maxLength": 1000, "description": "kubectl syntax: team=billing,env!=dev"},
            "ids": {"type": "array", "maxItems": 1000, "items": {"type": "string", "pattern": "^[0-9a-f]{1,32}$"}},
            "dryRun": {"type": "boolean"}}
        if name in ("pause", "resume"):
            props["note"] = note
        return {"type": "object", "additionalProperties": False, "properties": props,
                "anyOf": [{"required": ["selector"]}, {"required": ["ids"]}]}

    apply_item = {
        "type": "object", "additionalProperties": False,
        "properties": {**job_props, **{k: v for k, v in echoed.items() if k != "id"}, "id": {
            "type": "string", "pattern": "^[0-9a-f]{1,32}$",
            "description": "an existing job's: update it (PUT's semantics: a field left out stays as it is); "
                           "absent: create a job"}},
        # a create names its target and its schedule (or every schedule); an update names its job
        "anyOf": [{"required": ["uri", "schedule"]}, {"required": ["uri", "schedules"]}, {"required": ["id"]}]}
    apply_in = {"type": "object", "additionalProperties": False, "required": ["jobs"], "properties": {
        "jobs": {"type": "array", "maxItems": 1000, "items": apply_item,
                 "description": "at most 1,000 jobs; validated as a whole, written in one transaction or not at all"},
        "dryRun": {"type": "boolean", "description": "validate and answer as if written; write nothing"}}}
    apply_out = {"type": "object", "required": ["dryRun", "created", "updated", "unchanged", "jobs"], "properties": {
        "dryRun": {"type": "boolean"}, "created": {"type": "integer"}, "updated": {"type": "integer"},
        "unchanged": {"type": "integer", "description": "updates equal to the stored definition: nothing written"},
        "jobs": {"type": "array", "items": {"type": "object", "required": ["index", "id", "name", "version", "result"],
                                            "properties": {
            "index": {"type": "integer", "description": "the item's place in jobs"},
            "id": {"type": ["string", "null"], "description": "null: a create in a dry run"},
            "name": {"type": "string"}, "version": {"type": "integer", "description": "the job's version now"},
            "result": {"type": "string", "enum": ["created", "updated", "unchanged"]},
            "warnings": {"type": "array", "items": {"type": "string"}}}}}}}
    refused_item = {"type": "object", "required": ["index", "status", "error"], "properties": {
        "index": {"type": "integer", "description": "the item's place in jobs"},
        "name": {"type": ["string", "null"]}, "id": {"type": ["string", "null"]},
        "status": {"type": "integer", "description": "the single route's status for it: 400, 403, 404 (a job this "
                                                     "token cannot see), 409"},
        "error": {"type": "string", "description": "the single route's error for it (secrets masked); with more "
                                                   "than 5 fields refused, how many more"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 5,
                   "description": "the first 5 fields refused, each with its reason (the single route's details)"}}}
    apply_refused = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "details": {"description": "a refused batch: {refused, jobs} (how many items failed, of how many); else "
                                   "what was wrong with the request"},
        "items": {"type": "array", "items": refused_item, "description": "(a refused batch) each item that failed"}}}
    note = {"type": "string", "maxLength": 500, "not": {"pattern": "[\\u0000-\\u0008\\u000a-\\u001f]"}}
    pause_body = {"type": "object", "additionalProperties": False, "properties": {
        "note": {**note, "description": "why (shown as pausedReason, kept in the audit log)"},
        "until": {**INSTANT, "description": "the pause ends by itself then (a future instant)"}}}
    fire = {"type": "object", "required": ["utc", "local", "offset"], "properties": {
        "utc": {"type": "string"}, "local": {"type": "string"}, "offset": {"type": "string"},
        "sendAt": {"type": "string", "description": "with a jitter: when the request leaves"},
        "dst": {"type": "string", "description": "what a DST transition did to this fire"},
        "excluded": {"type": "string", "description": "with excluded=true: why this instant is not due"}}}
    preview_out = {"type": "object", "properties": {
        "fires": {"type": "array", "items": fire},
        "transitions": {"type": "array", "items": {"type": "object", "properties": {
            "at": {"type": "string"}, "kind": {"type": "string", "enum": ["gap", "overlap"]},
            "from": {"type": "string"}, "to": {"type": "string"}, "policy": {"type": "string"}}}},
        "resolved": {"type": "array", "items": {"type": "string"}, "description": "the expressions with H resolved"},
        "warnings": {"type": "array", "items": {"type": "string"}}}}
    calendar_props = {
        "timeZone": {"type": "string", "maxLength": 64, "description": "the calendar's wall clock (default UTC)"},
        "description": {"type": "string", "maxLength": 500},
        "dates": {"type": "array", "maxItems": 2000, "items": {"type": "string", "format": "date"},
                  "description": "local dates excluded whole (YYYY-MM-DD)"},
        "ranges": {"type": "array", "maxItems": 500, "items": {
            "type": "object", "required": ["from", "to"], "additionalProperties": False,
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
            "description": "local date-times, [from, to)"},
        "weekdays": {"type": "array", "maxItems": 7, "items": {"type": "integer", "minimum": 0, "maximum": 6},
                     "description": "0 = Sunday ... 6 = Saturday (cron's numbering)"},
    }
    calendar_in = {"type": "object", "additionalProperties": False, "properties": {
        **calendar_props, "name": {"type": "string", "description": "if given, the path's"},
        "version": {"description": "ignored"}, "updatedAt": {"description": "ignored"}}}
    calendar_out = {"type": "object", "properties": {
        **calendar_props, "name": {"type": "string"}, "version": {"type": "integer"}, "updatedAt": {"type": "string"}}}
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"}}
    if_match = {"name": "If-Match", "in": "header", "required": False, "schema": IF_MATCH}
    bid_param = {"name": "bid", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
    backfill_out = {"type": "object", "properties": {
        "id": {"type": "string"}, "jobId": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        "ticks": {"type": "integer", "description": "(on creation) the instants it will send or find done"},
        "concurrencyPolicy": {"type": "string"}, "maxPerSecond": {"type": "integer"},
        "total": {"type": "integer"}, "sent": {"type": "integer"}, "alreadyDone": {"type": "integer"},
        "failed": {"type": "integer"}, "progress": {"type": "number"},
        "state": {"type": "string", "enum": ["queued", "running", "done", "cancelled"]},
        "cursor": {"type": ["string", "null"]}, "node": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "createdAt": {"type": ["string", "null"]}, "updatedAt": {"type": ["string", "null"]}}}
    paths: dict[str, Any] = {
        "/api/crons": {
            "get": _op("List jobs (paginated: X-Next-Cursor / Link headers; a search, q, answers within ~0.1 s with what it"
                       " found so far: a page may then be short, even empty, with X-Next-Cursor to go on from and"
                       " X-Search-Progress, the share of the jobs searched, 0 to 1)",
                       {"200": _json({"type": "array", "items": _JOB})},
                       params=[_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                               _q("cursor", {"type": "integer", "minimum": 0, "maximum": 2**62}), _q("q", {"type": "string", "maxLength": 200}),
                               _q("state", {"type": "string", "enum": ["all", "active", "paused", "failing"],
                                            "description": "failing: the last scheduled run failed (failStreak > 0)"})],
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
        "/api/crons/{id}/pause": {"post": _op(
            "Pause, with a note and an end (both optional; pausing a paused job sets a new note or end)",
            {"200": _json(_JOB)}, params=[_ID], body={"schema": pause_body,
                                                      "example": {"note": "database maintenance",
                                                                  "until": "2026-12-06T18:00:00Z"}},
            required=False, errors=(400, 401, 403, 404, 413, 415, 503))},
        "/api/crons/{id}/resume": {"post": _op(
            "Resume (a note is optional)", {"200": _json(_JOB)}, params=[_ID],
            body={"schema": {"type": "object", "additionalProperties": False, "properties": {"note": note}}},
            required=False, errors=(400, 401, 403, 404, 413, 415, 503))},
        "/api/crons/{id}/versions": {"get": _op(
            "A job's versions, newest first, each with the change that made it", {"200": _json(
                {"type": "array", "items": version_out})},
            params=[_ID, _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _q("before", {"type": "integer", "minimum": 0, "maximum": 2**31})])},
        "/api/crons/{id}/versions/{v}": {"get": _op(
            "One version of a job", {"200": _json(version_out)},
            params=[_ID, {"name": "v", "in": "path", "required": True,
                          "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}}])},
        "/api/crons/{id}/restore": {"post": _op(
            "Restore a version: a new version equal to it (every field of its definition), audited",
            {"200": _json(_JOB)}, params=[_ID],
            body={"schema": {"type": "object", "required": ["version"], "additionalProperties": False,
                             "properties": {"version": {"type": "integer", "minimum": 1}}}, "example": {"version": 3}},
            errors=(400, 401, 403, 404, 409, 413, 415, 503))},
        **{f"/api/crons/{name}": {"post": _op(
            f"Bulk {name}: every job a label selector matches (and/or the ids listed), within the token's own "
            "selector; each audited; dryRun lists them", {"200": _json(bulk_out)},
            body={"schema": bulk_in(name), "example": {"selector": "team=billing", "dryRun": True}},
            errors=(400, 401, 403, 413, 415, 503))} for name in ("pause", "resume", "run", "delete")},
        "/api/crons/apply": {"post": _op(
            "Bulk apply: create (a job spec) and update (a spec with the id of a job) up to 1,000 jobs, validated as "
            "a whole and written in one transaction, or nothing (400, or 403 when a scoped token's selector refuses "
            "every one: items names each item that failed); an update equal to the stored definition is unchanged. "
            "413 (details: limit, the node's bytes, and values when it was the count) past "
            "CRONRING_MAX_APPLY_BODY_BYTES or 200,000 JSON values: send fewer jobs a request",
            {"200": _json(apply_out), "400": _json(apply_refused, "Refused, nothing written"),
             "403": _json(apply_refused, "Refused by the token's selector (or a read token), nothing written")},
            body={"schema": apply_in, "example": {"jobs": [
                {**EXAMPLE_JOB, "name": "nightly-report", "schedule": "0 3 * * *"},
                {"id": "0123456789abcdef", "paused": True}], "dryRun": True}},
            errors=(401, 409, 413, 415, 503))},
        "/api/audit": {"get": _op(
            "The audit log, newest first (X-Next-Cursor: the before of the next page)",
            {"200": _json({"type": "array", "items": change})},
            params=[_q("jobId", {"type": "string", "pattern": "^[0-9a-f]{1,32}$"}),
                    _q("actor", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"}),
                    _q("action", {"type": "string", "enum": [str(a) for a in AuditAction]}),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _q("before", {"type": "string", "description": "a row's id, or an RFC 3339 instant"})],
            errors=(400, 401, 503))},
        "/api/alerts": {"get": _op(
            "Alerts, newest first, with how far each got", {"200": _json({"type": "array", "items": alert_out})},
            params=[_q("jobId", {"type": "string", "pattern": "^[0-9a-f]{1,32}$"}),
                    _q("type", {"type": "string", "enum": [str(t) for t in AlertType]}),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}), _q("before", INSTANT)],
            errors=(400, 401, 503))},
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
            "Next fire times with UTC offsets, send times (jitter), DST notes and the zone's transitions",
            {"200": _json(preview_out)},
            params=[_ID, _q("count", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _q("from", INSTANT), _q("excluded", {"type": "string", "enum": ["true", "false", "1", "0"]})])},
        "/api/crons/{id}/skip": {"post": _op(
            "Skip the next count due instants, or every instant up to until (count 0 or until null: no skip)",
            {"200": _json(_JOB)}, params=[_ID],
            body={"schema": {"oneOf": [
                {"type": "object", "required": ["count"], "additionalProperties": False,
                 "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 10000}}},
                {"type": "object", "required": ["until"], "additionalProperties": False,
                 "properties": {"until": {"anyOf": [INSTANT, {"type": "null"}]}}}]},
                "example": {"count": 3}},
            errors=(400, 401, 403, 404, 409, 413, 415, 503))},
        "/api/crons/{id}/backfill": {"post": _op(
            "Send every due instant of [from, to) again, idempotently (202: its id and how many instants)",
            {"202": _json(backfill_out, "Accepted")}, params=[_ID],
            body={"schema": {"type": "object", "required": ["from", "to"], "additionalProperties": False, "properties": {
                "from": INSTANT, "to": INSTANT,
                "concurrencyPolicy": {"type": "string", "enum": ["forbid", "skip", "allow"],
                                      "description": "forbid (default): one instant at a time; allow: side by side"},
                "maxPerSecond": {"type": "integer", "minimum": 1, "maximum": 100}}},
                "example": {"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z", "maxPerSecond": 20}},
            errors=(400, 401, 403, 404, 409, 413, 415, 503))},
        "/api/crons/{id}/backfills": {"get": _op("A job's backfills, newest first", {"200": _json(
            {"type": "array", "items": backfill_out})}, params=[_ID])},
        "/api/crons/{id}/backfills/{bid}": {
            "get": _op("One backfill and how far it is", {"200": _json(backfill_out)}, params=[_ID, bid_param]),
            "delete": _op("Cancel a backfill (nothing is sent after it)", {"200": _json(backfill_out)},
                          params=[_ID, bid_param], errors=(401, 403, 404, 503)),
        },
        "/api/schedules/preview": {"post": _op(
            "Preview an unsaved definition (the form's live preview)", {"200": _json(preview_out)},
            body={"schema": {"type": "object", "additionalProperties": False, "properties": {
                **{k: JOB_FIELDS[k].schema for k in ("schedule", "schedules", "timeZone", "dstPolicy", "jitterSeconds",
                                                     "startAt", "endAt", "excludeCalendars")},
                "id": {"type": "string", "pattern": "^[0-9a-f]{0,32}$", "description": "a job's id: H resolves as its"},
                "excluded": {"type": "boolean", "description": "list excluded instants too"},
                "count": {"type": "integer", "minimum": 1, "maximum": 100},
                "from": {**INSTANT, "type": ["string", "null"], "description": "null or absent: now"}}},
                "example": {"schedule": "30 1 * * *", "timeZone": "Europe/Lisbon", "count": 3}},
            errors=(400, 401, 413, 415))},
        "/api/calendars": {"get": _op("Exclusion calendars", {"200": _json({"type": "array", "items": calendar_out})},
                                      errors=(401, 503))},
        "/api/calendars/{name}": {
            "get": _op("One calendar (ETag: its version)", {"200": _json(calendar_out)}, params=[name_param]),
            "put": _op("Create or replace a calendar (If-Match on version)",
                       {"200": _json(calendar_out), "201": _json(calendar_out, "Created")}, params=[name_param, if_match],
                       body={"schema": calendar_in, "example": {"timeZone": "Europe/Lisbon", "dates": ["2026-12-25"],
                                                                "weekdays": [0, 6]}},
                       errors=(400, 401, 403, 404, 409, 412, 413, 415, 503)),
            "delete": _op("Delete a calendar no job names (409 names the jobs that do)", {"200": _json({"type": "object"})},
                          params=[name_param, if_match], errors=(401, 403, 404, 409, 412, 503)),
        },
        "/api/crons/status/stream": {"get": {"summary": "Server-sent events: snapshot then job/execution/node deltas",
                                             "responses": {"200": {"description": "text/event-stream"}}}},
        "/api/crons/status-stream": {"get": {"summary": "Alias of /api/crons/status/stream",
                                             "responses": {"200": {"description": "text/event-stream"}}}},
        "/api/cluster": {"get": _op("Members, epoch, owned counts, recent hand-overs", {"200": _json({"type": "object"})},
                                    errors=(401, 503))},
        "/api/cluster/pulse": {"get": _op(
            "Every node's pulse over the last 15 minutes, a slot every 10 s: runs ended by state and lateness p50, p99"
            " and max (ms). A node that died keeps its points until they age out; an idle node reports zeros",
            {"200": _json({"type": "object", "required": ["seconds", "slots", "nodes"], "properties": {
                "seconds": {"type": "integer"}, "slots": {"type": "array", "items": {"type": "integer"},
                                                          "description": "each slot's start, epoch seconds"},
                "nodes": {"type": "object", "additionalProperties": {"type": "array", "items": {
                    "type": "object", "properties": {
                        "at": {"type": "integer"}, "states": {"type": "object",
                                                              "additionalProperties": {"type": "integer"}},
                        "p50Ms": {"type": ["integer", "null"]}, "p99Ms": {"type": ["integer", "null"]},
                        "maxMs": {"type": ["integer", "null"]}}}}}}})},
            errors=(401, 503))},
        "/api/forecast": {"get": _op(
            "How many requests the active jobs will send in each slot of [from, to), from their schedules (jittered"
            " jobs at their send times), with the busiest slots and the schedules behind them. Defaults: from now"
            " (down to its slot), to 24 hours later, step 60 s; at most 7 days and 10,080 slots. A token limited to"
            " a label selector sees its own jobs' forecast. Kept up to 60 s while no job changes; a node computes"
            " at most CRONRING_FORECASTS_PER_CALLER_PER_MINUTE (6) for one caller in any 60 s (429 beyond; a kept"
            " one costs nothing)",
            {"200": _json(forecast_out)},
            params=[_q("from", INSTANT), _q("to", INSTANT), _q("step", {"type": "integer", "minimum": 1,
                                                                       "maximum": 86400})],
            errors=(400, 401, 429, 503))},
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
