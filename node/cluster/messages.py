"""Versioned msgpack records that travel between nodes (pub/sub and Redis values)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import msgpack

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


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent(Record):
    kind: ClassVar[str] = "job"
    op: str  # created | updated | deleted | paused | resumed
    id: str
    version: int
    paused: bool = False
    origin: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionEvent(Record):
    kind: ClassVar[str] = "execution"
    id: str
    job_id: str
    scheduled_at: str  # RFC 3339 UTC, ms
    state: str
    node: str
    fence: int
    attempt: int = 0
    status_code: int | None = None
    duration_ms: int | None = None
    lateness_ms: int | None = None
    error: str | None = None
    at: str = ""


def execution_event(id: str, job_id: str, scheduled_at: str, state: str, node: str, fence: int, attempt: int,
                    status_code: int | None, duration_ms: int | None, lateness_ms: int | None, error: str | None,
                    at: str) -> dict[str, Any]:
    """ExecutionEvent(...).to_dict() without the dataclass: built twice per fire."""
    return {"id": id, "job_id": job_id, "scheduled_at": scheduled_at, "state": state, "node": node, "fence": fence,
            "attempt": attempt, "status_code": status_code, "duration_ms": duration_ms, "lateness_ms": lateness_ms,
            "error": error, "at": at}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionBatch(Record):
    kind: ClassVar[str] = "executions"
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipEvent(Record):
    kind: ClassVar[str] = "node"
    op: str  # join | leave | lapsed | handover
    node_id: str
    epoch: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


_KINDS: dict[str, type[Record]] = {
    c.kind: c for c in (NodeInfo, JobEvent, ExecutionEvent, ExecutionBatch, MembershipEvent)
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
