"""The small error hierarchy of the API, and the middleware that maps it to HTTP statuses."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
import structlog
from aiohttp import web

from .. import metrics
from ..model.calendars import CalendarError
from ..model.errors import (
    Conflict,
    LeaseNotFresh,
    NotFound,
    RunInFlight,
    StoreUnavailable,
    TooManyJobs,
    UnknownCalendars,
    VersionConflict,
)
from ..model.jobs import ValidationError
from ..model.schedule import ScheduleError
from ..scheduling.outbound import OutboundDenied

log = structlog.get_logger("api")


class ApiError(Exception):
    status = 400
    headers: dict[str, str] = {}

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="cronring"'}


class Forbidden(ApiError):
    status = 403


class UnsupportedMediaType(ApiError):
    status = 415


class RequestTimeout(ApiError):
    status = 408


class PreconditionFailed(ApiError):
    status = 412


class TooManyRequests(ApiError):
    status = 429


class Busy(ApiError):
    """The node is doing this kind of work for others: retry shortly."""

    status = 503
    headers = {"Retry-After": "5"}


class PayloadTooLarge(ApiError):
    status = 413


class BatchRefused(ApiError):
    """A batch refused whole, nothing of it written: one entry per item that failed (``items``: index, name, id,
    status, error, fields), answered once, beside a ``details`` of two counts. 403 when every one is a scoped token's
    refusal, else 400."""

    def __init__(self, items: list[dict[str, Any]], total: int) -> None:
        super().__init__(f"{len(items)} of {total} job(s) refused: nothing was written",
                         {"refused": len(items), "jobs": total})
        self.items = items
        self.status = 403 if items and all(i["status"] == 403 for i in items) else 400


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def error_response(status: int, message: str, details: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "details": details}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = error_response(e.status, e.message, e.details, e.headers)
    except (ValidationError, CalendarError) as e:
        resp = error_response(400, "invalid input", e.details)
    except UnknownCalendars as e:
        resp = error_response(400, "invalid input", {"excludeCalendars": f"no such calendar: {e}"})
    except Conflict as e:
        resp = error_response(409, str(e), e.details)
    except ScheduleError as e:
        resp = error_response(400, "invalid schedule", {"schedule": str(e)})
    except OutboundDenied as e:
        resp = error_response(400, "invalid input", {"uri": str(e)})
    except NotFound:
        resp = error_response(404, "not found")
    except VersionConflict as e:
        resp = error_response(412, "version mismatch: reload and retry", {"currentVersion": e.current},
                              {"ETag": f'"{e.current}"'})
    except (TooManyJobs, RunInFlight) as e:
        resp = error_response(409, str(e))
    except LeaseNotFresh as e:
        resp = error_response(503, str(e), None, {"Retry-After": "1"})
    except StoreUnavailable:
        resp = error_response(503, "database unavailable; retry shortly", None, {"Retry-After": "5"})
    except web.HTTPRequestEntityTooLarge:
        resp = error_response(413, "request body too large", {"limit": request.client_max_size})
    except web.HTTPException as e:
        if e.status < 400:
            raise
        resp = error_response(e.status, e.reason, None, {k: v for k, v in e.headers.items() if k in ("Allow", "Location")})
    except json.JSONDecodeError as e:
        resp = error_response(400, "body is not valid JSON", {"body": str(e)})
    except UnicodeDecodeError:
        resp = error_response(400, "body is not valid UTF-8")
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        resp = error_response(503, "redis unavailable; retry shortly", None, {"Retry-After": "5"})
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        resp = error_response(500, "internal error")
    metrics.API_REQUESTS.labels(f"{resp.status // 100}xx").inc()
    # bounded labels: route templates (never paths), known methods
    resource = getattr(request.match_info.route, "resource", None)
    route = resource.canonical if resource is not None else "unmatched"
    if not route.startswith("/api/crons/status"):  # streams last for hours: a gauge counts them instead
        method = request.method if request.method in _METHODS else "other"
        metrics.api_latency(route, method).observe(time.perf_counter() - t0)
    return resp
