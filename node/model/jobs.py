"""The job record and its validation: the API's JSON fields <-> a frozen Job.

Pure: no I/O. Field names on the wire are the seed's (camelCase).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from . import schedule as sched
from .assertions import check_expect_body, check_expect_json
from .calendars import Calendar
from .labels import KEY_PATTERN, MAX_LABELS, VALUE_PATTERN, check_labels
from .schedule import DEFAULT_DST, DstPolicy, GapPolicy, OverlapPolicy
from .times import rfc3339
from .timetable import MAX_SCHEDULES, Timetable, shortest_interval


class MisfirePolicy(StrEnum):
    SKIP = "skip"
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"


class ConcurrencyPolicy(StrEnum):
    ALLOW = "allow"  # every tick runs, whatever is in flight
    FORBID = "forbid"  # a tick due while a run is in flight is recorded skipped (alias: skip)
    BUFFER_ONE = "buffer_one"  # ... waits (at most one) and runs when the run in flight ends
    BUFFER_ALL = "buffer_all"  # ... every such tick waits, in order, while within misfireGraceSeconds
    REPLACE = "replace"  # the run in flight is aborted (recorded cancelled) and the tick runs


CONCURRENCY_ALIASES = {"skip": ConcurrencyPolicy.FORBID}  # Temporal's name for forbid
BUFFERING = frozenset({ConcurrencyPolicy.BUFFER_ONE, ConcurrencyPolicy.BUFFER_ALL})


class Delivery(StrEnum):
    AT_MOST_ONCE = "at_most_once"  # a tick whose claimer died before an outcome is abandoned, never re-sent
    AT_LEAST_ONCE = "at_least_once"  # ... is re-sent by the next owner as the same execution (within the grace)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
SENSITIVE_HEADER = re.compile(r"authorization|cookie|token|secret|password|api[-_]?key", re.I)
MAX_HEADERS = 50
RETRY_FLOOR_MS = 100  # no retry sooner than this after the last attempt (firing holds to it for older jobs too)


_NO_HEADERS: dict[str, str] = {}  # shared, never mutated (jobs are frozen)


class ValidationError(ValueError):
    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str = ""
    seq: int = 0
    name: str = ""
    schedule: str
    time_zone: str = "UTC"
    paused: bool = False
    uri: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    timeout_ms: int = 10_000
    retries: int = 0
    retry_backoff_ms: int = 1_000
    retry_max_backoff_ms: int = 30_000
    expect_status: tuple[int, ...] = ()
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace_seconds: int = 60
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    follow_redirects: bool = False
    delivery: Delivery = Delivery.AT_MOST_ONCE
    # scheduling (release 3): more expressions, bounds, a run cap, jitter, DST rules, calendars, a skip
    more_schedules: tuple[str, ...] = ()  # the expressions after ``schedule`` (API: ``schedules`` is all of them)
    start_at: datetime | None = None  # instants before are not due
    end_at: datetime | None = None  # instants at or after are not due
    max_runs: int | None = None  # scheduled runs after which the job is completed
    jitter_seconds: int = 0
    dst_policy: DstPolicy = DEFAULT_DST
    exclude_calendars: tuple[str, ...] = ()
    skip_until: datetime | None = None  # instants up to it are skipped by request (POST .../skip)
    # operations (release 3): alerts, auto-pause, why and by whom it is paused
    labels: dict[str, str] = field(default_factory=dict)  # team=billing: selectors, scoped tokens, alerts
    # response assertions besides expect_status (model/assertions.py)
    expect_body: str | None = None  # a substring, or /regex/flags
    expect_json: tuple[tuple[str, Any], ...] = ()  # (path, equals)
    max_duration_ms: int | None = None
    pause_after_failures: int = 0  # consecutive failed scheduled runs after which it pauses itself (0: never)
    alert_uri: str | None = None  # where its alerts go (else CRONRING_ALERT_URL)
    paused_reason: str | None = None
    paused_by: str | None = None
    paused_at: datetime | None = None
    paused_until: datetime | None = None  # the pause ends by itself then
    version: int = 0
    fence: int = 0
    owner: str | None = None
    active_since: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    runs: int = 0  # scheduled runs so far (counted against max_runs)
    completed_at: datetime | None = None  # it can never fire again (maxRuns reached, @at fired, endAt passed)
    fail_streak: int = 0  # consecutive failed scheduled runs, up to the last one recorded
    failing_since: datetime | None = None  # the scheduled instant of the streak's first failure

    @property
    def schedules(self) -> tuple[str, ...]:
        return (self.schedule, *self.more_schedules)

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    @property
    def active(self) -> bool:
        """Due to fire: neither paused nor completed."""
        return not self.paused and self.completed_at is None

    def spec(self) -> dict[str, Any]:
        """What is stored in the ``spec`` column (everything not a column of its own). The scheduling
        fields of release 3 are written only when set: a release-2 node reads the rest as before."""
        out: dict[str, Any] = {
            "uri": self.uri, "method": self.method, "headers": self.headers, "body": self.body,
            "timeout_ms": self.timeout_ms, "retries": self.retries, "retry_backoff_ms": self.retry_backoff_ms,
            "retry_max_backoff_ms": self.retry_max_backoff_ms, "expect_status": list(self.expect_status),
            "misfire_policy": str(self.misfire_policy), "misfire_grace_seconds": self.misfire_grace_seconds,
            "concurrency_policy": str(self.concurrency_policy), "follow_redirects": self.follow_redirects,
            "delivery": str(self.delivery),
        }
        if self.more_schedules:
            out["more_schedules"] = list(self.more_schedules)
        for key, t in (("start_at", self.start_at), ("end_at", self.end_at), ("skip_until", self.skip_until)):
            if t is not None:
                out[key] = rfc3339(t)
        if self.max_runs is not None:
            out["max_runs"] = self.max_runs
        if self.jitter_seconds:
            out["jitter_seconds"] = self.jitter_seconds
        if self.dst_policy != DEFAULT_DST:
            out["dst_policy"] = self.dst_policy.to_api()
        if self.exclude_calendars:
            out["exclude_calendars"] = list(self.exclude_calendars)
        if self.labels:
            out["labels"] = self.labels
        if self.expect_body is not None:
            out["expect_body"] = self.expect_body
        if self.expect_json:
            out["expect_json"] = [{"path": p, "equals": v} for p, v in self.expect_json]
        if self.max_duration_ms is not None:
            out["max_duration_ms"] = self.max_duration_ms
        if self.pause_after_failures:
            out["pause_after_failures"] = self.pause_after_failures
        if self.alert_uri:
            out["alert_uri"] = self.alert_uri
        if self.paused:
            for key, v in (("paused_reason", self.paused_reason), ("paused_by", self.paused_by)):
                if v:
                    out[key] = v
            for key, t in (("paused_at", self.paused_at), ("paused_until", self.paused_until)):
                if t is not None:
                    out[key] = rfc3339(t)
        return out

    @property
    def uses_release_3_scheduling(self) -> bool:
        """Fields a release-2 node would not obey (it fires the job as plain cron)."""
        return bool(self.more_schedules or self.start_at or self.end_at or self.max_runs is not None
                    or self.jitter_seconds or self.dst_policy != DEFAULT_DST or self.exclude_calendars
                    or self.skip_until or sched.has_h(self.schedule) or self.schedule.lower().startswith("@at")
                    or self.concurrency_policy not in (ConcurrencyPolicy.ALLOW, ConcurrencyPolicy.FORBID))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        spec = row["spec"]
        if not isinstance(spec, dict):
            spec = json.loads(spec)  # (a packed job carries it decoded: see pack_job)
        # Interned strings and one shared empty mapping: 100k owned jobs mostly repeat these.
        return cls(
            id=row["id"], seq=int(row.get("seq") or 0), name=row["name"], schedule=sys.intern(row["schedule"]),
            time_zone=sys.intern(row["time_zone"]), paused=bool(row["paused"]), uri=sys.intern(spec["uri"]),
            method=sys.intern(spec["method"]),
            headers=spec.get("headers") or _NO_HEADERS, body=spec.get("body"), timeout_ms=spec["timeout_ms"],
            # a job stored before the retry floor reads as having it (a GET echoed in a PUT stays valid)
            retries=spec["retries"], retry_backoff_ms=max(RETRY_FLOOR_MS, spec["retry_backoff_ms"]),
            retry_max_backoff_ms=max(RETRY_FLOOR_MS, spec["retry_max_backoff_ms"]),
            expect_status=tuple(spec.get("expect_status") or ()),
            misfire_policy=MisfirePolicy(spec["misfire_policy"]), misfire_grace_seconds=spec["misfire_grace_seconds"],
            concurrency_policy=ConcurrencyPolicy(spec["concurrency_policy"]),
            follow_redirects=bool(spec.get("follow_redirects", False)),
            delivery=Delivery(spec.get("delivery", "at_most_once")), version=int(row["version"]),
            fence=int(row["fence"]), owner=row.get("owner"), active_since=_utc(row.get("active_since")),
            created_at=_utc(row.get("created_at")), updated_at=_utc(row.get("updated_at")),
            **scheduling_from_spec(spec), runs=int(row.get("runs") or 0), completed_at=_utc(row.get("completed_at")),
            **operations_from_spec(spec, bool(row["paused"])), fail_streak=int(row.get("fail_streak") or 0),
            failing_since=_utc(row.get("failing_since")),
        )

    @property
    def parsed_schedule(self) -> sched.Schedule:
        """The first expression, parsed with the job's seed and DST policy."""
        return sched.parse(self.schedule, self.time_zone, seed=self.id, dst=self.dst_policy)

    def parsed_schedules(self) -> tuple[sched.Schedule, ...]:
        return tuple(sched.parse(e, self.time_zone, seed=self.id, dst=self.dst_policy) for e in self.schedules)

    def timetable(self, calendars: Mapping[str, Calendar] | None = None) -> Timetable:
        """Every instant the job is scheduled for (``calendars``: by name; a name not found excludes nothing,
        as a calendar deleted under a job cannot be: the API refuses it)."""
        return _timetable(self.id, self.schedules, self.time_zone, self.dst_policy, self.start_at, self.end_at,
                          self.jitter_seconds, self.exclude_calendars, calendars)

    @property
    def remaining_runs(self) -> int | None:
        return None if self.max_runs is None else max(0, self.max_runs - self.runs)

    def succeeded(self, status: int) -> bool:
        return status in self.expect_status if self.expect_status else 200 <= status < 300

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "uri": masked_uri(self.uri), "httpMethod": self.method,
            "headers": masked_headers(self.headers), "body": self.body, "schedule": self.schedule,
            "timeZone": self.time_zone, "paused": self.paused, "timeoutMs": self.timeout_ms,
            "retries": self.retries, "retryBackoffMs": self.retry_backoff_ms,
            "retryMaxBackoffMs": self.retry_max_backoff_ms, "expectStatus": list(self.expect_status),
            "misfirePolicy": str(self.misfire_policy), "misfireGraceSeconds": self.misfire_grace_seconds,
            "concurrencyPolicy": str(self.concurrency_policy), "followRedirects": self.follow_redirects,
            "delivery": str(self.delivery), "schedules": list(self.schedules), "startAt": rfc3339(self.start_at),
            "endAt": rfc3339(self.end_at), "maxRuns": self.max_runs, "remainingRuns": self.remaining_runs,
            "jitterSeconds": self.jitter_seconds, "dstPolicy": self.dst_policy.to_api(),
            "excludeCalendars": list(self.exclude_calendars), "skipUntil": rfc3339(self.skip_until),
            "completedAt": rfc3339(self.completed_at), "labels": self.labels, "expectBody": self.expect_body,
            "expectJson": [{"path": p, "equals": v} for p, v in self.expect_json] or None,
            "maxDurationMs": self.max_duration_ms,
            "pauseAfterFailures": self.pause_after_failures,
            "alertUri": masked_uri(self.alert_uri) if self.alert_uri else None, "pausedReason": self.paused_reason,
            "pausedBy": self.paused_by, "pausedAt": rfc3339(self.paused_at), "pausedUntil": rfc3339(self.paused_until),
            "failStreak": self.fail_streak, "failingSince": rfc3339(self.failing_since),
            "version": self.version, "owner": self.owner,
            "createdAt": rfc3339(self.created_at), "updatedAt": rfc3339(self.updated_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSummary:
    """What every node keeps in memory for every job: enough to compute ownership."""

    id: str
    version: int
    paused: bool
    deleted: bool
    completed: bool = False

    @property
    def active(self) -> bool:
        return not (self.paused or self.deleted or self.completed)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobSummary:
        return cls(id=row["id"], version=int(row["version"]), paused=bool(row["paused"]),
                   deleted=row["deleted_at"] is not None, completed=row.get("completed_at") is not None)


def summary_digest(s: JobSummary) -> int:
    """One live job's summary as a 64-bit number (the first 8 bytes of an md5); XORed over a node's share it is
    compared with MariaDB's (store/jobs.share_digest computes the same in SQL)."""
    return digest_of(s.id, s.version, s.paused, s.completed)


def digest_of(job_id: str, version: int, paused: bool, completed: bool) -> int:
    """``summary_digest`` of the summary these fields make (without making it: a catalogue's pass over 200,000)."""
    key = f"{job_id}:{version}:{int(paused)}:{int(completed)}".encode()
    return int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest()[:8], "big")


def _timetable(job_id: str, schedules: tuple[str, ...], time_zone: str, dst: DstPolicy, start_at: datetime | None,
               end_at: datetime | None, jitter: int, exclude: tuple[str, ...],
               calendars: Mapping[str, Calendar] | None) -> Timetable:
    cals = tuple(c for n in exclude if calendars and (c := calendars.get(n)) is not None)
    parsed = tuple(sched.parse(e, time_zone, seed=job_id, dst=dst) for e in schedules)
    if jitter:  # the jitter's offsets are the job's own (seeded by its id)
        return Timetable(schedules=parsed, start_at=start_at, end_at=end_at, calendars=cals, jitter=jitter, seed=job_id)
    return _shared_timetable(parsed, start_at, end_at, cals)


@lru_cache(maxsize=4096)
def _shared_timetable(schedules: tuple[sched.Schedule, ...], start_at: datetime | None, end_at: datetime | None,
                      calendars: tuple[Calendar, ...]) -> Timetable:
    """One timetable for every job with the same instants (no jitter): a hundred thousand yearly jobs share one
    (it is frozen; memory per owned job)."""
    return Timetable(schedules=schedules, start_at=start_at, end_at=end_at, calendars=calendars)


_PACKED = ("id", "seq", "name", "schedule", "time_zone", "paused", "version", "fence", "owner", "active_since",
           "created_at", "updated_at", "runs", "completed_at", "fail_streak", "failing_since", "spec")
_PACKED_TIMES = (9, 10, 11, 13, 15)  # the positions of the row's times (microseconds since the epoch, packed)
_PACK_WBITS = -10  # a raw deflate stream, 1 KB window: the dictionary fits, and each call allocates little
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
# marshal's version 2: no back-references, whose flag bit depends on each object's reference count (a row read from
# MariaDB and the same row made from a Job would marshal to different bytes, and miss the preset dictionary)
_MARSHAL = 2
_US = timedelta(microseconds=1)


def _row(job: Job) -> list[Any]:
    row: list[Any] = [job.id, job.seq, job.name, job.schedule, job.time_zone, job.paused, job.version, job.fence, job.owner,
           job.active_since, job.created_at, job.updated_at, job.runs, job.completed_at, job.fail_streak,
           job.failing_since, job.spec()]
    for k in _PACKED_TIMES:
        if (t := row[k]) is not None:
            row[k] = (t - _EPOCH) // _US
    return row


@lru_cache(maxsize=1)
def _primed() -> tuple[Any, Any]:
    """A compressor and a decompressor primed with what most packed jobs share (every default of a definition,
    the key names of its spec) as deflate's preset dictionary, so a packed job is its differences from it. Each
    pack or unpack works on a copy: priming one hashes the whole dictionary, a copy does not."""
    dictionary = marshal.dumps(_row(Job(id="0" * 16, name="daily report", schedule="0 0 * * *",
                                        uri="http://example.com/webhook", version=1, fence=1,
                                        active_since=datetime(2026, 1, 1, tzinfo=UTC))), _MARSHAL)
    return (zlib.compressobj(3, zlib.DEFLATED, _PACK_WBITS, 1, zlib.Z_DEFAULT_STRATEGY, dictionary),
            zlib.decompressobj(_PACK_WBITS, dictionary))


class StoredJob:
    """A job's row as a takeover reads it (store/codec.OWNER_COLS, its spec decoded): what a new owner schedules
    from, without making the Job. A node taking 200,000 jobs over builds none of them (the ~55 fields of each were
    a fifth of the takeover's time): it keeps them packed (``pack``, the bytes ``unpack_job`` reads) and the timer
    makes the Job when one is due. ``job()`` makes it now."""

    __slots__ = ("_job", "row", "spec")

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row
        spec = row["spec"]
        self.spec: dict[str, Any] = spec if isinstance(spec, dict) else json.loads(spec)
        self._job: Job | None = None

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def version(self) -> int:
        return int(self.row["version"])

    @property
    def fence(self) -> int:
        return int(self.row["fence"])

    @property
    def runs(self) -> int:
        return int(self.row.get("runs") or 0)

    @property
    def active_since(self) -> datetime | None:
        return _utc(self.row.get("active_since"))

    @property
    def exclude_calendars(self) -> tuple[str, ...]:
        return tuple(self.spec.get("exclude_calendars") or ())

    def timetable(self, calendars: Mapping[str, Calendar] | None = None) -> Timetable:
        """What ``Job.timetable`` gives for this row (read off the row and spec: no Job is made)."""
        spec = self.spec
        dst = spec.get("dst_policy")
        return _timetable(self.id, (self.row["schedule"], *(spec.get("more_schedules") or ())), self.row["time_zone"],
                          DstPolicy(GapPolicy(dst["gap"]), OverlapPolicy(dst["overlap"])) if dst else DEFAULT_DST,
                          _instant(spec.get("start_at")), _instant(spec.get("end_at")),
                          int(spec.get("jitter_seconds") or 0), self.exclude_calendars, calendars)

    def job(self) -> Job:
        if self._job is None:
            self._job = Job.from_row({**self.row, "spec": self.spec})
        return self._job

    def pack(self) -> bytes:
        """The bytes ``pack_job`` makes of ``job()``, made from the row (``unpack_job`` gives back an equal Job)."""
        if self._job is not None:
            return pack_job(self._job)
        r = self.row
        row = [r["id"], int(r.get("seq") or 0), r["name"], r["schedule"], r["time_zone"], bool(r["paused"]),
               int(r["version"]), int(r["fence"]), r.get("owner"), r.get("active_since"), r.get("created_at"),
               r.get("updated_at"), int(r.get("runs") or 0), r.get("completed_at"), int(r.get("fail_streak") or 0),
               r.get("failing_since"), self.spec]
        for k in _PACKED_TIMES:
            if (t := row[k]) is not None:
                row[k] = ((t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)) - _NAIVE_EPOCH) // _US
        z = _primed()[0].copy()
        packed: bytes = z.compress(marshal.dumps(row, _MARSHAL)) + z.flush()
        return packed


def pack_job(job: Job) -> bytes:
    """A job in about 70 bytes (~650 as a Job object): how an owner keeps a job whose next instant is far away
    (scheduling/ownership.Owned). Its row and spec, marshalled (the interpreter's own format: the bytes never
    leave the process) and deflated against a preset dictionary. ``unpack_job`` gives back an equal Job."""
    z = _primed()[0].copy()
    packed: bytes = z.compress(marshal.dumps(_row(job), _MARSHAL)) + z.flush()
    return packed


def unpack_job(packed: bytes) -> Job:
    z = _primed()[1].copy()
    row = marshal.loads(z.decompress(packed) + z.flush())  # noqa: S302 (only pack_job's bytes, made in this process)
    for k in _PACKED_TIMES:
        if row[k] is not None:
            row[k] = _EPOCH + row[k] * _US
    return Job.from_row(dict(zip(_PACKED, row, strict=True)))


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def scheduling_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The release-3 scheduling fields of a stored spec (absent: their defaults)."""
    dst = spec.get("dst_policy")
    return {
        "more_schedules": tuple(spec.get("more_schedules") or ()), "start_at": _instant(spec.get("start_at")),
        "end_at": _instant(spec.get("end_at")), "max_runs": spec.get("max_runs"),
        "jitter_seconds": int(spec.get("jitter_seconds") or 0),
        "dst_policy": DstPolicy(GapPolicy(dst["gap"]), OverlapPolicy(dst["overlap"])) if dst else DEFAULT_DST,
        "exclude_calendars": tuple(spec.get("exclude_calendars") or ()), "skip_until": _instant(spec.get("skip_until")),
    }


_NO_LABELS: dict[str, str] = {}  # shared: most jobs have none


def operations_from_spec(spec: dict[str, Any], paused: bool) -> dict[str, Any]:
    """The operations fields of a stored spec: alerts, auto-pause, the pause's reason (while paused)."""
    out: dict[str, Any] = {"labels": spec.get("labels") or _NO_LABELS, "expect_body": spec.get("expect_body"),
                           "expect_json": tuple((a["path"], a["equals"]) for a in spec.get("expect_json") or ()),
                           "max_duration_ms": spec.get("max_duration_ms"),
                           "pause_after_failures": int(spec.get("pause_after_failures") or 0),
                           "alert_uri": spec.get("alert_uri")}
    if paused:
        out.update(paused_reason=spec.get("paused_reason"), paused_by=spec.get("paused_by"),
                   paused_at=_instant(spec.get("paused_at")), paused_until=_instant(spec.get("paused_until")))
    return out


MASK = "***"


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if SENSITIVE_HEADER.search(k) else v) for k, v in headers.items()}


_SENSITIVE_PARAM = re.compile(r"([?&;](?:[^=&;#]*(?:token|secret|password|passwd|signature|sig|api[-_]?key|"
                              r"access[-_]?key|auth)[^=&;#]*)=)([^&;#]*)", re.I)


def masked_uri(uri: str) -> str:
    """Hide a password in the URL's userinfo (http://user:***@host/...) and the values of query
    parameters named like credentials (?api_key=***)."""
    parts = urlsplit(uri)
    if parts.password is not None:
        uri = uri.replace(f":{parts.password}@", f":{MASK}@", 1)
    if parts.query:
        uri = _SENSITIVE_PARAM.sub(lambda m: m.group(1) + (MASK if m.group(2) else ""), uri)
    return uri


def secret_values(job: Job) -> list[str]:
    """The job's own secrets, to be masked wherever a target echoes them (excerpts, errors)."""
    found: list[str] = []
    for k, v in job.headers.items():
        if SENSITIVE_HEADER.search(k) and v:
            found.append(v)
            scheme, _, token = v.partition(" ")  # "Bearer abc": the token alone too
            if token and scheme.isalpha():
                found.append(token)
    for uri in (job.uri, job.alert_uri or ""):
        parts = urlsplit(uri)
        if parts.password:
            found.append(parts.password)
        found += [m.group(2) for m in _SENSITIVE_PARAM.finditer(uri) if m.group(2)]
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def redact(text: str | None, secrets: list[str]) -> str | None:
    if not text or not secrets:
        return text
    for v in secrets:
        text = text.replace(v, MASK)
    return text


def _origin(uri: str) -> tuple[str, str, int | None]:
    p = urlsplit(uri)
    try:
        port = p.port
    except ValueError:
        port = None
    return p.scheme.lower(), (p.hostname or "").lower(), port or {"http": 80, "https": 443}.get(p.scheme.lower())


def _unmask(job: Job, base: Job | None) -> Job:
    """A masked value sent back (a GET echoed into a PUT) keeps the stored secret, as long as the
    target's origin is the same: a secret nobody re-entered is never sent to a new origin."""
    if base is None:
        return job
    kept = [k for k, v in job.headers.items() if v == MASK and k in base.headers]
    if kept and _origin(job.uri) != _origin(base.uri):
        raise ValidationError({"headers": f"the target's origin changed: enter {', '.join(kept)} again "
                                          "(a stored secret is never sent to a new origin)"})
    headers = {k: (base.headers.get(k, v) if v == MASK else v) for k, v in job.headers.items()}
    uri = job.uri
    if masked_uri(base.uri) == uri:
        uri = base.uri
    alert = job.alert_uri
    if alert and base.alert_uri and masked_uri(base.alert_uri) == alert:
        alert = base.alert_uri
    return replace(job, headers=headers, uri=uri, alert_uri=alert)


# ---- validation -------------------------------------------------------------------

READ_ONLY = {"id", "version", "createdAt", "updatedAt", "nextRunAt", "owner", "running", "lastExecutedAt",
             "isLocked", "lastExecution", "state", "remainingRuns", "skipUntil", "completedAt", "nextRuns", "warnings",
             # set by pause/resume and the scheduler, never by an edit
             "pausedReason", "pausedBy", "pausedAt", "pausedUntil", "failStreak", "failingSince"}


def _int_field(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be an integer")
    if not lo <= v <= hi:
        raise ValueError(f"must be between {lo} and {hi}")
    return v


def _encodable(v: str) -> bool:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# In a name, also what makes a terminal or a page show something else than is there: C1 controls (U+009B
# is a terminal's CSI), bidi marks, overrides and isolates (U+061C too), the line and paragraph
# separators, and invisible characters (soft hyphen, zero-width space, word joiners, the BOM). The
# zero-width joiners U+200C/D stay: emoji sequences and several scripts need them.
_DECEPTIVE_CLASS = ("[\\u0080-\\u009f\\u00ad\\u061c\\u180e\\u200b\\u200e\\u200f\\u202a-\\u202e"
                    "\\u2060-\\u2064\\u2066-\\u2069\\u2028\\u2029\\ufeff]")
_DECEPTIVE = re.compile(_DECEPTIVE_CLASS)


def _check_name(v: Any) -> str:
    name = _str_field(v, 200)
    if _DECEPTIVE.search(name):
        raise ValueError("must not contain C1 controls, bidi marks or overrides, line separators or invisible characters")
    return name


def _str_field(v: Any, max_len: int, *, empty_ok: bool = True) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    if _CONTROL.search(v):
        raise ValueError("must not contain control characters")
    if not _encodable(v):
        raise ValueError("must be valid Unicode (a lone surrogate is not)")
    if len(v) > max_len:
        raise ValueError(f"must be at most {max_len} characters")
    if not empty_ok and not v.strip():
        raise ValueError("must not be empty")
    return v


def _check_uri(v: Any) -> str:
    uri: str = _str_field(v, 2048, empty_ok=False).strip()
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if any(c in uri for c in "\r\n\t "):
        raise ValueError("must not contain whitespace")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return uri


def _check_headers(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError("must be an object of header names to string values")
    if len(v) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(k, str) or not _HEADER_NAME.fullmatch(k):
            raise ValueError(f"invalid header name {k[:40]!r}")
        if k.lower() in RESERVED_HEADERS or k.lower().startswith("x-cron-"):
            raise ValueError(f"header {k!r} is set by cronring and cannot be overridden")
        if not isinstance(val, str) or any(c in val for c in "\r\n\x00") or len(val) > 8192 or not _encodable(val):
            raise ValueError(f"header {k!r} must be a single-line string of at most 8192 characters")
        if _CONTROL.search(val):  # every run would fail on it ("Forbidden control character")
            raise ValueError(f"header {k!r} must not contain control characters")
        out[k] = val
    return out


def _check_expect(v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or len(v) > 20:
        raise ValueError("must be a status code or a list of at most 20 status codes")
    return tuple(_int_field(x, 100, 599) for x in v)


MAX_BODY_DEPTH = 64  # a body nested deeper is refused (every run failed with RecursionError past ~600)


def _check_shape(v: Any, max_bytes: int) -> None:
    """Refuse a JSON value nested more than MAX_BODY_DEPTH deep, or of more values than ``max_bytes`` (each takes a
    byte of JSON at least: it is too big, and is never serialised to be measured). Iterative, and it stops there: a
    body of 2.8 million ``{}`` was walked whole, then serialised, holding the loop for seconds."""
    stack, values = [(v, 1)], 1
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict | list):
            if d > MAX_BODY_DEPTH:
                raise ValueError(f"must not nest more than {MAX_BODY_DEPTH} levels deep")
            values += len(value)
            if values > max_bytes:
                raise ValueError(f"has more than {max_bytes} values; the limit is {max_bytes} bytes")
            stack.extend((x, d + 1) for x in (value.values() if isinstance(value, dict) else value))


def _check_body(v: Any, max_bytes: int) -> Any:
    if v is None:
        return None
    _check_shape(v, max_bytes)
    try:
        size = len(v.encode()) if isinstance(v, str) else len(json.dumps(v, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise ValueError("must be a JSON value or a string (no NaN or Infinity)") from None
    if isinstance(v, str) and "\x00" in v:
        raise ValueError("must not contain NUL characters")
    if isinstance(v, str) and not _encodable(v):
        raise ValueError("must be valid Unicode (a lone surrogate is not)")
    if size > max_bytes:
        raise ValueError(f"is {size} bytes; the limit is {max_bytes}")
    return v


def _check_method(v: Any) -> str:
    if not isinstance(v, str) or v.upper() not in METHODS:
        raise ValueError(f"must be one of {', '.join(METHODS)}")
    return v.upper()


def _check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _check_enum(enum: type[StrEnum], aliases: Mapping[str, StrEnum] | None = None) -> Any:
    def check(v: Any) -> StrEnum:
        if aliases and isinstance(v, str) and v in aliases:
            return aliases[v]
        try:
            return enum(v)
        except (ValueError, TypeError):
            names = [e.value for e in enum] + list(aliases or ())
            raise ValueError(f"must be one of {', '.join(names)}") from None

    return check


MAX_EXCLUDE_CALENDARS = 10
MAX_RUNS = 1_000_000_000
MAX_JITTER = 3600


def check_instant(v: Any) -> datetime:
    """An RFC 3339 instant with its offset, 1970 to 9000 (the API's rule for instants)."""
    if not isinstance(v, str) or not _RFC3339.fullmatch(v):
        raise ValueError("must be an RFC 3339 instant with its UTC offset (2026-12-24T18:00:00Z)")
    try:
        t = datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an RFC 3339 instant with its UTC offset (2026-12-24T18:00:00Z)") from None
    if not 1970 <= t.year <= 9000:
        raise ValueError("must be between 1970 and 9000")
    return t.astimezone(UTC)


_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
RFC3339_PATTERN = _RFC3339.pattern


def _check_schedules(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_SCHEDULES:
        raise ValueError(f"must be a list of 1 to {MAX_SCHEDULES} cron expressions")
    out = []
    for i, e in enumerate(v):
        try:
            out.append(_str_field(e, sched.MAX_EXPRESSION_LEN, empty_ok=False))
        except ValueError as err:
            raise ValueError(f"[{i}] {err}") from None
    return tuple(out)


def _check_calendar_names(v: Any) -> tuple[str, ...]:
    from .calendars import NAME

    if not isinstance(v, list) or len(v) > MAX_EXCLUDE_CALENDARS or not all(isinstance(n, str) and NAME.match(n) for n in v):
        raise ValueError(f"must be a list of at most {MAX_EXCLUDE_CALENDARS} calendar names")
    return tuple(dict.fromkeys(v))


def _check_dst(v: Any) -> DstPolicy:
    if not isinstance(v, dict) or not set(v) <= {"gap", "overlap"}:
        raise ValueError('must be an object {"gap": "shift"|"skip", "overlap": "first"|"second"|"both"}')
    try:
        return DstPolicy(GapPolicy(v.get("gap", "shift")), OverlapPolicy(v.get("overlap", "first")))
    except ValueError:
        raise ValueError('gap must be shift or skip; overlap must be first, second or both') from None


# ---- the job's fields: one definition each, for validation and for the OpenAPI schema ------------

_NOT_NULL: Any = object()
MAX_PAUSE_AFTER = 1000
_CONTROL_CLASS = "[\\u0000-\\u0008\\u000b-\\u001f\\u007f]"  # _CONTROL as a JSON Schema (ECMA-262) class


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One job field on the wire: its ``Job`` attribute, the check ``validate`` runs, and the JSON Schema
    the OpenAPI document publishes for it (``JobInput``/``JobPatch``). The constructors below build the
    check and the schema from the same bounds, so what is published is what is enforced; a test feeds
    both the same values and compares (tests/unit/test_openapi_drift.py). Where a rule cannot be said in
    JSON Schema (a parsable schedule, a reserved header, the body's size) the schema is the weaker one:
    whatever it refuses, the check refuses too."""

    api: str
    attr: str
    check: Callable[[Any, int], Any]  # (value, max_body_bytes) -> the attribute's value; ValueError if bad
    schema: dict[str, Any]
    null: Any = _NOT_NULL  # what JSON null sets the field to, when null is allowed
    required: bool = False
    exact: bool = True  # the schema says everything the check enforces (the drift test checks equivalence)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


def _integer(api: str, attr: str, lo: int, hi: int, description: str = "") -> FieldSpec:
    schema: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
    return FieldSpec(api, attr, lambda v, _m: _int_field(v, lo, hi), _described(schema, description))


def _boolean(api: str, attr: str) -> FieldSpec:
    return FieldSpec(api, attr, lambda v, _m: _check_bool(v), {"type": "boolean"})


def _enum(api: str, attr: str, enum: type[StrEnum], description: str = "") -> FieldSpec:
    check = _check_enum(enum)
    schema: dict[str, Any] = {"type": "string", "enum": [e.value for e in enum]}
    return FieldSpec(api, attr, lambda v, _m: check(v), _described(schema, description))


def _string(api: str, attr: str, max_len: int, *, empty_ok: bool = True, null: Any = _NOT_NULL, required: bool = False,
            exact: bool = True, **extra: Any) -> FieldSpec:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_len, "not": {"pattern": _CONTROL_CLASS}}
    if not empty_ok:
        schema["pattern"] = "\\S"  # something besides spaces
    schema.update(extra)
    return FieldSpec(api, attr, lambda v, _m: _str_field(v, max_len, empty_ok=empty_ok),
                     _nullable(schema) if null is not _NOT_NULL else schema, null, required, exact)


_STATUS = {"type": "integer", "minimum": 100, "maximum": 599}
_CONCURRENCY = _check_enum(ConcurrencyPolicy, CONCURRENCY_ALIASES)
JOB_FIELDS: dict[str, FieldSpec] = {f.api: f for f in (
    FieldSpec("name", "name", lambda v, _m: _check_name(v),
              _nullable({"type": "string", "maxLength": 200, "not": {"pattern": _CONTROL_CLASS[:-1] + _DECEPTIVE_CLASS[1:]}}),
              ""),
    FieldSpec("uri", "uri", lambda v, _m: _check_uri(v),
              {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^\\s*[hH][tT][tT][pP][sS]?://[^/?#\\s]"},
              required=True, exact=False),  # also: a valid port, no whitespace inside, not credentials + Authorization
    FieldSpec("httpMethod", "method", lambda v, _m: _check_method(v),
              {"type": "string", "description": f"one of {', '.join(METHODS)}, in any case (stored upper-case)",
               "pattern": "^(" + "|".join("".join(f"[{c}{c.lower()}]" for c in m) for m in METHODS) + ")$"}),
    FieldSpec("headers", "headers", lambda v, _m: _check_headers(v), _nullable({
        "type": "object", "maxProperties": MAX_HEADERS,
        "propertyNames": {"pattern": _HEADER_NAME.pattern.replace("\\Z", "$")},
        "additionalProperties": {"type": "string", "maxLength": 8192, "not": {"pattern": _CONTROL_CLASS[:-1] + "\\r\\n]"}},
        "description": "not Host, Content-Length, Transfer-Encoding, Connection nor X-Cron-*: cronring sets them; "
                       "values of secret-looking names (Authorization, Cookie, *token*, *secret*, *password*, "
                       "*api-key*) are stored and shown masked"}), {}, exact=False),
    FieldSpec("body", "body", _check_body, {"description": "a JSON value, or a string sent as it is; at most "
                                                          "CRONRING_MAX_JOB_BODY_BYTES (64 KiB by default)"},
              None, exact=False),
    _string("schedule", "schedule", sched.MAX_EXPRESSION_LEN, empty_ok=False, required=True, exact=False,
            description="5-field cron, 6-field with seconds, or @hourly/@daily/@weekly/@monthly/@yearly"),
    _string("timeZone", "time_zone", 64, empty_ok=False, exact=False, description="an IANA time zone; default UTC"),
    _boolean("paused", "paused"),
    _integer("timeoutMs", "timeout_ms", 1, 300_000),
    _integer("retries", "retries", 0, 10),
    _integer("retryBackoffMs", "retry_backoff_ms", RETRY_FLOOR_MS, 3_600_000,
             f"at most retryMaxBackoffMs (default 1000); at least {RETRY_FLOOR_MS}"),
    _integer("retryMaxBackoffMs", "retry_max_backoff_ms", RETRY_FLOOR_MS, 3_600_000,
             "at least retryBackoffMs (default 30000)"),
    FieldSpec("expectStatus", "expect_status", lambda v, _m: _check_expect(v), _nullable({"anyOf": [
        _STATUS, {"type": "array", "maxItems": 20, "items": _STATUS}]}), ()),
    _enum("misfirePolicy", "misfire_policy", MisfirePolicy),
    _integer("misfireGraceSeconds", "misfire_grace_seconds", 0, 7 * 24 * 3600),
    FieldSpec("concurrencyPolicy", "concurrency_policy", lambda v, _m: _CONCURRENCY(v), {
        "type": "string", "enum": [e.value for e in ConcurrencyPolicy] + list(CONCURRENCY_ALIASES),
        "description": "allow (default); forbid (alias skip): a tick due while a run is in flight is recorded "
                       "skipped; buffer_one: at most one such tick waits and runs when the run ends; buffer_all: "
                       "every such tick waits, in order, within misfireGraceSeconds; replace: the run in flight "
                       "is aborted (recorded cancelled) and the tick runs"}),
    _boolean("followRedirects", "follow_redirects"),
    _enum("delivery", "delivery", Delivery,
          "at_least_once: a tick whose claimer died before recording an outcome is re-sent by the next owner as "
          "the same execution (same X-Cron-Execution-Id and Idempotency-Key) within misfireGraceSeconds"),
    FieldSpec("schedules", "more_schedules", lambda v, _m: _check_schedules(v), _nullable({
        "type": "array", "minItems": 1, "maxItems": MAX_SCHEDULES,
        "items": {"type": "string", "maxLength": sched.MAX_EXPRESSION_LEN, "pattern": "\\S"},
        "description": "every expression of the job (their instants merged: one shared by two fires once); "
                       "the first is `schedule`. Setting `schedule` alone makes it the only one"}), (), exact=False),
    FieldSpec("startAt", "start_at", lambda v, _m: check_instant(v), _nullable(
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN,
         "description": "instants before it are not due (ledger: excluded); RFC 3339, years 1970-9000"}),
        None, exact=False),
    FieldSpec("endAt", "end_at", lambda v, _m: check_instant(v), _nullable(
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN,
         "description": "instants at or after it are not due; once it has passed the job is completed"}),
        None, exact=False),
    FieldSpec("maxRuns", "max_runs", lambda v, _m: _int_field(v, 1, MAX_RUNS), _nullable(
        {"type": "integer", "minimum": 1, "maximum": MAX_RUNS,
         "description": "after this many scheduled runs the job is completed (remainingRuns says how many are "
                        "left); null: no limit"}), None),
    FieldSpec("jitterSeconds", "jitter_seconds", lambda v, _m: _int_field(v, 0, MAX_JITTER), {
        "type": "integer", "minimum": 0, "maximum": MAX_JITTER,
        "description": "each request is sent up to this many seconds after its instant (a fixed offset per job "
                       "and instant, the same on every node); shorter than the schedule's shortest interval"},
        exact=False),  # (the interval rule is between two fields)
    FieldSpec("dstPolicy", "dst_policy", lambda v, _m: _check_dst(v), _nullable({
        "type": "object", "additionalProperties": False,
        "properties": {"gap": {"type": "string", "enum": [e.value for e in GapPolicy]},
                       "overlap": {"type": "string", "enum": [e.value for e in OverlapPolicy]}},
        "description": "fixed-time schedules at DST transitions: gap shift (fire at the gap's end) or skip; "
                       "overlap first, second or both occurrences; interval schedules follow real time"}),
        DEFAULT_DST),
    FieldSpec("excludeCalendars", "exclude_calendars", lambda v, _m: _check_calendar_names(v), _nullable({
        "type": "array", "maxItems": MAX_EXCLUDE_CALENDARS,
        "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"},
        "description": "names of exclusion calendars (/api/calendars): an instant any of them excludes is not "
                       "sent and is recorded excluded"}), (), exact=False),
    FieldSpec("labels", "labels", lambda v, _m: check_labels(v), _nullable({
        "type": "object", "maxProperties": MAX_LABELS, "propertyNames": {"pattern": KEY_PATTERN, "maxLength": 317},
        "additionalProperties": {"type": "string", "pattern": VALUE_PATTERN},
        "description": "a string map in Kubernetes' syntax (team: billing); select with ?label=team=billing; a token "
                       "limited to a selector sees and changes only the jobs it matches"}), {}, exact=False),
    FieldSpec("expectBody", "expect_body", lambda v, _m: check_expect_body(v), _nullable(
        {"type": "string", "minLength": 1, "maxLength": 1000,
         "description": "the response must contain this text, or match /regex/ (flags i, m, s; a match may take at "
                        "most 50 ms), within its first 64 KiB; else the run failed and says why"}), None, exact=False),
    FieldSpec("expectJson", "expect_json", lambda v, _m: check_expect_json(v), _nullable(
        {"type": "array", "minItems": 1, "maxItems": 20, "items": {
            "type": "object", "required": ["path", "equals"], "additionalProperties": False,
            "properties": {"path": {"type": "string", "pattern": "^\\$", "maxLength": 200}, "equals": {}}},
         "description": "the JSON response's value at each path ($.status, $.items[0].id, $[\"a b\"]) must equal"}),
        (), exact=False),
    FieldSpec("maxDurationMs", "max_duration_ms", lambda v, _m: _int_field(v, 1, 3_600_000), _nullable(
        {"type": "integer", "minimum": 1, "maximum": 3_600_000,
         "description": "a run slower than this (all its attempts) failed: too slow"}), None),
    _integer("pauseAfterFailures", "pause_after_failures", 0, MAX_PAUSE_AFTER,
             "after this many consecutive failed scheduled runs the job pauses itself (audited as cronring, a "
             "job.paused alert); 0: never"),
    FieldSpec("alertUri", "alert_uri", lambda v, _m: _check_uri(v), _nullable(
        {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^\\s*[hH][tT][tT][pP][sS]?://[^/?#\\s]",
         "description": "where this job's alerts are POSTed (instead of CRONRING_ALERT_URL); shown masked"}),
        None, exact=False),
)}
FIELDS = {api: f.attr for api, f in JOB_FIELDS.items()}  # API field -> Job attribute
REQUIRED_FIELDS = tuple(api for api, f in JOB_FIELDS.items() if f.required)


def validate(payload: Any, *, base: Job | None = None, max_body_bytes: int = 64 * 1024,
             now: datetime | None = None) -> Job:
    """Build a Job from an API payload (create when ``base`` is None, partial update otherwise). ``now``: the
    instant an ``@at`` or the bounds are judged against (default: the clock)."""
    if not isinstance(payload, dict):
        raise ValidationError({"body": "must be a JSON object"})
    now = now or datetime.now(UTC)
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, v in payload.items():
        if not isinstance(key, str):
            errors[str(key)] = "unknown field"
            continue
        if key in READ_ONLY:
            continue  # echoing a GET back in a PUT is harmless
        spec = JOB_FIELDS.get(key)
        if spec is None:
            errors[key[:60]] = "unknown field"
            continue
        if v is None and spec.null is not _NOT_NULL:
            values[spec.attr] = spec.null
            continue
        try:
            values[spec.attr] = spec.check(v, max_body_bytes)
        except ValueError as e:
            errors[key] = str(e)
    if base is None:
        for required in REQUIRED_FIELDS:
            if required not in payload and required not in errors and not (required == "schedule" and "schedules" in payload):
                errors[required] = "is required"
    _merge_schedules(payload, values, errors)
    if base is None and "schedule" not in values and not errors.keys() & {"schedule", "schedules"}:
        errors["schedule"] = "is required (schedules is null or empty)"  # {"schedules": null} alone names none
    job = replace(base, **values) if base is not None else None

    def get(attr: str, default: Any) -> Any:
        return values.get(attr, getattr(base, attr) if base is not None else default)

    expressions = (get("schedule", None), *get("more_schedules", ()))
    zone = get("time_zone", "UTC")
    dst = get("dst_policy", DEFAULT_DST)
    parsed: list[sched.Schedule] = []
    if expressions[0] is not None and "schedule" not in errors and "schedules" not in errors and "timeZone" not in errors:
        key = "schedules" if len(expressions) > 1 else "schedule"
        for expression in expressions:
            try:
                parsed.append(sched.parse(expression, zone, dst=dst))
            except sched.ScheduleError as err:
                errors["timeZone" if "time zone" in str(err) else key] = str(err)
                break
    backoff = get("retry_backoff_ms", 1_000)
    if get("retry_max_backoff_ms", 30_000) < backoff:
        errors.setdefault("retryMaxBackoffMs", "must be at least retryBackoffMs")
    uri = get("uri", "")
    headers = get("headers", {})
    if urlsplit(uri).username is not None and any(k.lower() == "authorization" for k in headers):
        errors.setdefault("headers", "an Authorization header and credentials in the URL cannot be combined")
    if parsed and len(parsed) == len(expressions):
        _check_timing(parsed, values, get, base, now, errors)
    if errors:
        raise ValidationError(errors)
    if base is not None and job is not None:
        return _unmask(job, base)
    return Job(**values)


def _merge_schedules(payload: dict[str, Any], values: dict[str, Any], errors: dict[str, str]) -> None:
    """``schedules`` is every expression (the first becomes ``schedule``); ``schedule`` alone is the only one."""
    if "schedules" in payload:
        if "schedules" in errors:
            return
        listed = values.pop("more_schedules", ())
        if not listed:  # null: the one expression of ``schedule``
            values["more_schedules"] = ()
            return
        if "schedule" in payload and "schedule" not in errors and values.get("schedule") != listed[0]:
            errors["schedule"] = errors["schedules"] = "schedule must be the first of schedules (or give only one of them)"
            return
        values["schedule"] = listed[0]
        values["more_schedules"] = tuple(e for e in dict.fromkeys(listed[1:]) if e != listed[0])
    elif "schedule" in payload:
        values["more_schedules"] = ()


def _check_timing(parsed: list[sched.Schedule], values: dict[str, Any], get: Callable[[str, Any], Any],
                  base: Job | None, now: datetime, errors: dict[str, str]) -> None:
    """The rules between the scheduling fields: each refusal names both fields."""
    start_at, end_at = get("start_at", None), get("end_at", None)
    if start_at is not None and end_at is not None and end_at <= start_at:
        errors["startAt"] = errors["endAt"] = "endAt must be later than startAt"
    one_off = [s for s in parsed if s.at is not None]
    if one_off and len(parsed) > 1:
        errors["schedule"] = errors["schedules"] = "an @at schedule fires once: it cannot be one of several schedules"
    changed = base is None or "schedule" in values or "time_zone" in values
    if one_off and changed and one_off[0].at is not None and one_off[0].at <= now:
        errors["schedule"] = f"@at {rfc3339(one_off[0].at)} is in the past"
    jitter = get("jitter_seconds", 0)
    if jitter and ("jitter_seconds" in values or "schedule" in values or "more_schedules" in values):
        try:
            gap = shortest_interval(Timetable(schedules=tuple(parsed)), now)
        except sched.ScheduleError:
            gap = None
        if gap is not None and timedelta(seconds=jitter) >= gap:
            msg = (f"jitterSeconds ({jitter}) must be shorter than the schedule's shortest interval "
                   f"({gap.total_seconds():g} s)")
            errors["jitterSeconds"] = msg
            errors.setdefault("schedule", msg)


def warnings(job: Job) -> list[str]:
    """What a valid definition does not do as its fields might suggest (answered, not refused)."""
    out = []
    if job.dst_policy != DEFAULT_DST:
        interval = [e for e, s in zip(job.schedules, job.parsed_schedules(), strict=True) if s.interval]
        if interval:
            out.append(f"dstPolicy does not apply to {', '.join(repr(e) for e in interval)}: an interval schedule "
                       "follows real elapsed time")
    return out


@dataclass(frozen=True, slots=True)
class JobVersion:
    """One version of a job: the definition then in force, from ``at`` (``job_history``)."""

    version: int
    at: datetime
    job: Job
    deleted: bool = False
    completed: bool = False
    spec_kept: bool = True  # False: written before release 3, which kept the schedule, zone and pause alone

    def to_api(self) -> dict[str, Any]:
        view = self.job.to_api()
        for key in ("owner", "createdAt", "updatedAt", "remainingRuns", "completedAt", "failStreak", "failingSince"):
            view.pop(key, None)
        view["version"] = self.version
        return {"version": self.version, "at": rfc3339(self.at), "deleted": self.deleted, "completed": self.completed,
                "complete": self.spec_kept, "job": view}
