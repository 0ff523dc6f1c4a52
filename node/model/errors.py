"""The domain's errors: what the store, the cluster and scheduling raise and the web face maps to a status
(``web/errors.py``). No I/O."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """MariaDB cannot be reached right now; callers answer 503 and retry later."""


class NotFound(Exception):
    """No such job (or it was deleted)."""


class VersionConflict(Exception):
    """A write that named a version the job (or calendar) is no longer at (If-Match)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"at version {current}")
        self.current = current


class Conflict(Exception):
    """A write the current state refuses (409), with what is in the way."""

    def __init__(self, message: str, details: object = None) -> None:
        super().__init__(message)
        self.details = details


class CalendarInUse(Conflict):
    """A calendar that jobs name cannot be deleted."""

    def __init__(self, name: str, jobs: list[dict[str, str]]) -> None:
        super().__init__(f"calendar {name!r} is named by {len(jobs)}{'+' if len(jobs) >= 20 else ''} job(s) in "
                         "excludeCalendars: change them first", {"jobs": jobs})


class UnknownCalendars(Exception):
    """A job names calendars that do not exist (a 400 on excludeCalendars)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class TooManyJobs(Exception):
    """The cluster already holds CRONRING_MAX_JOBS jobs."""


class RunInFlight(Exception):
    """A run-now refused by the job's concurrency policy."""


class LeaseNotFresh(Exception):
    """This node may not send now (its heartbeat lease is not surely valid)."""
