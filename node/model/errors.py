"""The domain's errors: what the store, the cluster and scheduling raise and the web face maps to a status
(``web/errors.py``). No I/O."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """MariaDB cannot be reached right now; callers answer 503 and retry later."""


class NotFound(Exception):
    """No such job (or it was deleted)."""


class VersionConflict(Exception):
    """A write that named a version the job is no longer at (If-Match)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"job is at version {current}")
        self.current = current


class TooManyJobs(Exception):
    """The cluster already holds CRONRING_MAX_JOBS jobs."""


class RunInFlight(Exception):
    """A run-now refused by the job's concurrency policy."""


class LeaseNotFresh(Exception):
    """This node may not send now (its heartbeat lease is not surely valid)."""
