"""Versioned msgpack records that travel between nodes (pub/sub and Redis values)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import msgpack

from ..model.executions import Execution
from ..model.times import tick_iso

SCHEMA_VERSION = 1


class MessageError(ValueError):
    """A payload that is not a record this version understands."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies, and this runs per event.
        return {name: getattr(self, name) for name in _names(type(self))}

    def pack(self) -> bytes:
        d = self.to_dict()
        d["v"] = SCHEMA_VERSION
        d["kind"] = self.kind
        packed: bytes = msgpack.packb(d, use_bin_type=True)
        return packed

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = _names(cls)
        return cls(**{k: v for k, v in d.items() if k in names})


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """A record class's field names, computed once per class."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo(Record):
    kind: ClassVar[str] = "node-info"
    id: str
    url: str
    version: str
    started_at: float
    owned: int = 0
    epoch: int = 0
    # The claimer id this process writes into the executions it claims: new at every start and after every
    # lapse, so an open row is "in flight on a live node" only while its claimer is in a live member's info.
    claimer: str = ""
    # 1: hands a job over with runs still in flight (they stay open rows of a live claimer, which a new owner
    # leaves alone and sees). A release-2 node (0) would abandon or re-send them: with one in the ring, the
    # old owner waits for its runs, as release 2 did.
    handover: int = 0
    # The release this node runs (3 for this one; a release-2 node sends none: 0). A definition using release 3's
    # scheduling (several schedules, bounds, calendars, buffering...) is refused while a member is older: that
    # node would fire it as plain cron.
    release: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent(Record):
    kind: ClassVar[str] = "job"
    op: str  # created | updated | deleted | paused | resumed | completed | skipped
    id: str
    version: int
    paused: bool = False
    origin: str = ""
    name: str = ""
    completed: bool = False  # it can never fire again (release 3; a release-2 node reads it as absent)


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarEvent(Record):
    """An exclusion calendar was created, changed or deleted: every node reads the calendars again."""

    kind: ClassVar[str] = "calendar"
    op: str  # put | deleted
    name: str
    version: int = 0
    origin: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelEvent(Record):
    """Abort these runs (concurrencyPolicy replace: a later tick of their job is going): the node sending them
    records them cancelled."""

    kind: ClassVar[str] = "cancel"
    execution_ids: list[str] = field(default_factory=list)
    reason: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillEvent(Record):
    """How far a backfill is (its API view, ``Backfill.to_api()``): on the events stream, for live progress."""

    kind: ClassVar[str] = "backfill"
    backfill: dict[str, Any] = field(default_factory=dict)


def execution_event(e: Execution, at: str) -> dict[str, Any]:
    """An execution as the events stream carries it (inside an ``ExecutionBatch``): the record's fields a
    live view needs, ``at`` when it was told. Built as a plain dict, twice per fire."""
    return {"id": e.id, "job_id": e.job_id, "scheduled_at": tick_iso(e.scheduled_at), "state": str(e.state),
            "kind": str(e.kind), "node": e.node, "fence": e.fence, "attempt": e.attempts, "status_code": e.status_code,
            "duration_ms": e.duration_ms, "lateness_ms": e.lateness_ms, "error": e.error, "at": at}


EXECUTION_EVENT_FIELDS = ("id", "job_id", "scheduled_at", "state", "kind", "node", "fence", "attempt", "status_code",
                          "duration_ms", "lateness_ms", "error", "at")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionBatch(Record):
    kind: ClassVar[str] = "executions"
    events: list[dict[str, Any]] = field(default_factory=list)  # execution_event() dicts


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipEvent(Record):
    kind: ClassVar[str] = "node"
    op: str  # join | leave | lapsed | handover
    node_id: str
    epoch: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PulseEvent(Record):
    """What one node sent in one slot of ``seconds`` from ``at`` (epoch seconds): runs ended by state, and the
    lateness of the runs sent (p50, p99, max; ms). Every node says it every slot, zeros included, so a chart shows
    a node that went quiet apart from one that died (no point at all). The cluster page's charts."""

    kind: ClassVar[str] = "pulse"
    node_id: str
    at: int
    seconds: int
    states: dict[str, int] = field(default_factory=dict)
    p50_ms: int | None = None
    p99_ms: int | None = None
    max_ms: int | None = None


_KINDS: dict[str, type[Record]] = {
    c.kind: c for c in (NodeInfo, JobEvent, CalendarEvent, CancelEvent, BackfillEvent, ExecutionBatch, MembershipEvent,
                        PulseEvent)
}


def unpack(payload: bytes) -> Record:
    try:
        d = msgpack.unpackb(payload, raw=False)
    except Exception as e:  # msgpack raises several error types
        raise MessageError(f"not msgpack: {e}") from None
    if not isinstance(d, dict):
        raise MessageError("not a record")
    if d.get("v") != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema version {d.get('v')!r}")
    cls = _KINDS.get(d.get("kind", ""))
    if cls is None:
        raise MessageError(f"unknown kind {d.get('kind')!r}")
    try:
        return cls.from_dict(d)
    except TypeError as e:
        raise MessageError(str(e)) from None
