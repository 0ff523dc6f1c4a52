"""Every Redis key and channel cronring uses, under one namespace prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    # membership
    @property
    def members(self) -> str:
        """ZSET node_id -> Redis server time (ms) of its last heartbeat."""
        return f"{self.namespace}:members"

    @property
    def member_info(self) -> str:
        """HASH node_id -> msgpack NodeInfo."""
        return f"{self.namespace}:member-info"

    @property
    def draining(self) -> str:
        """ZSET node_id -> Redis server time (ms) of its last heartbeat while it drains its last runs, out
        of the ring (its claimer id stays live in the member info meanwhile)."""
        return f"{self.namespace}:draining"

    @property
    def epoch(self) -> str:
        """Counter bumped on every membership change."""
        return f"{self.namespace}:epoch"

    def lock(self, job_id: str) -> str:
        """Fencing lock of a job: ``node_id:fence``. No TTL: the holder's heartbeat is the lease."""
        return f"{self.namespace}:lock:{job_id}"

    @property
    def lock_prefix(self) -> str:
        return f"{self.namespace}:lock:"

    @property
    def handovers(self) -> str:
        """Capped LIST of recent hand-over records (msgpack), for the cluster page."""
        return f"{self.namespace}:handovers"

    @property
    def pulse(self) -> str:
        """ZSET of every node's PulseEvents (msgpack) of the last PULSE_KEPT seconds, by slot: the cluster charts."""
        return f"{self.namespace}:pulse"

    @property
    def run_now_prefix(self) -> str:
        """ZSET per job of its recent run-now calls (a sliding minute on Redis server time)."""
        return f"{self.namespace}:runnow:"

    def run_now_by(self, caller: str) -> str:
        """ZSET of one caller's recent run-now calls (``caller`` is a digest, never a token)."""
        return f"{self.namespace}:runnow-by:{caller}"

    @property
    def events_stream(self) -> str:
        """Redis STREAM of job/execution/node events for live views: its entry ids are
        cluster-wide, so a browser can resume with Last-Event-ID on any node."""
        return f"{self.namespace}:events"

    # pub/sub channels
    @property
    def jobs_channel(self) -> str:
        return f"{self.namespace}:events:job"

    @property
    def executions_channel(self) -> str:
        return f"{self.namespace}:events:execution"

    @property
    def membership_channel(self) -> str:
        return f"{self.namespace}:events:membership"

    @property
    def channels(self) -> tuple[str, str, str]:
        return (self.jobs_channel, self.executions_channel, self.membership_channel)


HANDOVER_LOG_LENGTH = 200
EVENTS_STREAM_LENGTH = 20_000
