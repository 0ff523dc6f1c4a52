"""MariaDB, the durable truth: a package with one reason to change per module.

* ``connection`` — the pool, the search for the writable host, failover, attempts (no query);
* ``schema`` — the migrations;
* ``codec`` — how records are spelled in rows (columns, instants, the vocabulary as SQL literals);
* ``jobs`` — definitions and versions, the catalogue's change feed;
* ``bulk`` — bulk apply: a batch of creates and edits in one transaction;
* ``calendars`` — exclusion calendars;
* ``backfills`` — backfills and how far each is;
* ``executions`` — fenced claims, outcomes, takeovers, missed rows (the two rules of "never twice");
* ``history`` — executions read back, the ledger's inputs, a job's versions, retention;
* ``audit`` — the audit log (rows written by the others inside their changes' transactions);
* ``alerts`` — the alerts outbox.

The repositories depend on the connection layer, the codec and the model only, never on each other.
``Store`` puts them together; the composition root (``web/app.py``) hands each consumer the repository
it needs, behind the consumer's own Protocol.
"""

from __future__ import annotations

from functools import partial

from .alerts import Alerts
from .audit import AuditLog
from .backfills import Backfills
from .bulk import BulkJobs
from .calendars import Calendars
from .connection import Database, DatabaseURL, DatabaseURLError
from .executions import Executions
from .health import Health
from .history import Histories
from .jobs import Jobs
from .schema import MIGRATIONS, migrate

__all__ = ["MIGRATIONS", "Database", "DatabaseURL", "DatabaseURLError", "Store"]


class Store:
    """The database and its repositories: ``store.jobs``, ``store.bulk``, ``store.calendars``,
    ``store.executions``, ``store.history``."""

    def __init__(self, url: DatabaseURL, *, pool_size: int = 10, connect_timeout: float = 3.0,
                 keep_per_job: int = 200) -> None:
        self.db = Database(url, pool_size=pool_size, connect_timeout=connect_timeout,
                           on_connect=partial(migrate, database=url.database))
        self.jobs = Jobs(self.db)
        self.bulk = BulkJobs(self.db)
        self.calendars = Calendars(self.db)
        self.backfills = Backfills(self.db)
        self.executions = Executions(self.db)
        self.history = Histories(self.db, keep_per_job=keep_per_job)
        self.audit = AuditLog(self.db)
        self.alerts = Alerts(self.db)
        self.health = Health(self.db)

    async def start(self) -> None:
        """Connect and migrate; raises StoreUnavailable when MariaDB is down (the node still starts)."""
        await self.db.start()

    async def close(self, timeout: float = 3.0) -> None:
        await self.db.close(timeout)

    async def ping(self) -> bool:
        return await self.db.ping()
