"""The schema: versioned migrations, applied once under a MariaDB named lock (``GET_LOCK``) when a pool
is made, so N nodes starting at once migrate once. A migration is never edited once released: a change is
a new version. Old releases ignore versions they do not know (``MAX(version)`` covers them), which is what
lets release N-1 and N run side by side during a rolling upgrade (README, "Upgrading")."""

from __future__ import annotations

import structlog
from asyncmy.pool import Pool

from ..model.errors import StoreUnavailable
from ..model.executions import ExecutionKind

log = structlog.get_logger("store")

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE IF NOT EXISTS jobs (
              id VARCHAR(32) NOT NULL PRIMARY KEY,
              seq BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
              name VARCHAR(200) NOT NULL DEFAULT '',
              schedule VARCHAR(200) NOT NULL,
              time_zone VARCHAR(64) NOT NULL,
              paused TINYINT(1) NOT NULL DEFAULT 0,
              spec LONGTEXT NOT NULL,
              version INT NOT NULL DEFAULT 1,
              fence BIGINT NOT NULL DEFAULT 0,
              owner VARCHAR(200) NULL,
              active_since DATETIME(3) NOT NULL,
              created_at DATETIME(3) NOT NULL,
              updated_at DATETIME(3) NOT NULL,
              deleted_at DATETIME(3) NULL,
              KEY ix_jobs_updated (updated_at),
              KEY ix_jobs_live (deleted_at, seq)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
            """,
            f"""
            CREATE TABLE IF NOT EXISTS executions (
              id CHAR(32) NOT NULL PRIMARY KEY,
              job_id VARCHAR(32) NOT NULL,
              scheduled_at DATETIME(3) NOT NULL,
              kind VARCHAR(16) NOT NULL DEFAULT '{ExecutionKind.TICK}',
              state VARCHAR(16) NOT NULL,
              fence BIGINT NOT NULL,
              node VARCHAR(200) NOT NULL,
              attempts INT NOT NULL DEFAULT 0,
              status_code INT NULL,
              duration_ms INT NULL,
              lateness_ms INT NULL,
              error VARCHAR(1000) NULL,
              response_excerpt TEXT NULL,
              missed_count INT NOT NULL DEFAULT 0,
              missed_from DATETIME(3) NULL,
              claimed_at DATETIME(3) NOT NULL,
              started_at DATETIME(3) NULL,
              finished_at DATETIME(3) NULL,
              UNIQUE KEY uq_executions_tick (job_id, scheduled_at),
              KEY ix_executions_open (state, job_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
            """,
        ],
    ),
]

# What `?q=` searches besides name, id and schedule: the target without userinfo, query or
# fragment, computed by MariaDB from the stored spec. Never the spec itself: a LIKE over header
# values or a URL's password is an oracle for secrets (a reader recovered a key in 121 requests).
MIGRATIONS.append((
    2,
    [
        r"""
        ALTER TABLE jobs ADD COLUMN IF NOT EXISTS search_target VARCHAR(2048) AS (
          REGEXP_REPLACE(REGEXP_REPLACE(JSON_VALUE(spec, '$.uri'), '[?#].*$', ''),
                         '^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@', '\\1')
        ) VIRTUAL
        """,
    ],
))

# Every definition a job has had, from the instant it took force: the tick ledger lists each
# scheduled instant under the definition in force then (an edit, a pause, a delete start a row).
MIGRATIONS.append((
    3,
    [
        """
        CREATE TABLE IF NOT EXISTS job_history (
          job_id VARCHAR(32) NOT NULL,
          version INT NOT NULL,
          valid_from DATETIME(3) NOT NULL,
          schedule VARCHAR(200) NOT NULL,
          time_zone VARCHAR(64) NOT NULL,
          paused TINYINT(1) NOT NULL,
          deleted TINYINT(1) NOT NULL,
          PRIMARY KEY (job_id, version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
        """
        INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone, paused, deleted)
        SELECT id, version, created_at, schedule, time_zone, paused, 0 FROM jobs WHERE deleted_at IS NULL
        """,
        # at_least_once: an execution re-sent by a new owner after its first owner was lost
        "ALTER TABLE executions ADD COLUMN IF NOT EXISTS redelivered TINYINT(1) NOT NULL DEFAULT 0",
    ],
))

# Who claimed an execution: the claiming process's claimer id (cluster.membership.Membership.claimer, new at every
# start and lapse). An open row whose claimer is a live member's is in flight there: a new owner leaves it
# alone (a hand-over no longer waits for it) and a forbid tick sees it. NULL: claimed by a release-2 node.
MIGRATIONS.append((
    4,
    ["ALTER TABLE executions ADD COLUMN IF NOT EXISTS claimer CHAR(16) NULL"],
))

# Release 3's scheduling: a job counts its scheduled runs (maxRuns) and is completed when it can never fire again;
# each history row keeps the whole definition then in force (the ledger's instants depend on its schedules,
# bounds and calendars; versions are read back from it); exclusion calendars by name.
MIGRATIONS.append((
    5,
    [
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS runs BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS completed_at DATETIME(3) NULL",
        "ALTER TABLE job_history ADD COLUMN IF NOT EXISTS name VARCHAR(200) NULL",
        "ALTER TABLE job_history ADD COLUMN IF NOT EXISTS spec LONGTEXT NULL",
        "ALTER TABLE job_history ADD COLUMN IF NOT EXISTS completed TINYINT(1) NOT NULL DEFAULT 0",
        """
        UPDATE job_history h JOIN jobs j ON j.id = h.job_id AND j.version = h.version
        SET h.name = j.name, h.spec = j.spec WHERE h.spec IS NULL
        """,
        """
        CREATE TABLE IF NOT EXISTS calendars (
          name VARCHAR(63) NOT NULL PRIMARY KEY,
          spec LONGTEXT NOT NULL,
          version INT NOT NULL DEFAULT 1,
          updated_at DATETIME(3) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
    ],
))

# Backfills: one row each (what was asked, how far it is), and the executions they send name it and the instant
# they stand for (a backfill row's scheduled_at is when it was claimed, as a run-now's is: the instant's own tick
# row may exist already).
MIGRATIONS.append((
    6,
    [
        """
        CREATE TABLE IF NOT EXISTS backfills (
          id CHAR(16) NOT NULL PRIMARY KEY,
          job_id VARCHAR(32) NOT NULL,
          from_at DATETIME(3) NOT NULL,
          to_at DATETIME(3) NOT NULL,
          policy VARCHAR(16) NOT NULL,
          max_per_second INT NOT NULL,
          total INT NOT NULL,
          sent INT NOT NULL DEFAULT 0,
          already_done INT NOT NULL DEFAULT 0,
          failed INT NOT NULL DEFAULT 0,
          state VARCHAR(16) NOT NULL,
          cursor_at DATETIME(3) NULL,
          node VARCHAR(200) NULL,
          error VARCHAR(1000) NULL,
          created_at DATETIME(3) NOT NULL,
          updated_at DATETIME(3) NOT NULL,
          KEY ix_backfills_job (job_id, created_at),
          KEY ix_backfills_state (state)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
        "ALTER TABLE executions ADD COLUMN IF NOT EXISTS instant DATETIME(3) NULL",
        "ALTER TABLE executions ADD COLUMN IF NOT EXISTS backfill CHAR(16) NULL",
        "ALTER TABLE executions ADD INDEX IF NOT EXISTS ix_executions_instant (job_id, instant)",
    ],
))

# A backfill's executions are read by their backfill (progress every second, a resume's lost rows).
MIGRATIONS.append((
    7,
    ["ALTER TABLE executions ADD INDEX IF NOT EXISTS ix_executions_backfill (backfill, state)"],
))


# Operations (release 3): the audit log (a row per change, written in the change's transaction); alerts, an outbox
# every node sends from under a lease (exactly one row per event: its id is the event's key); a job's failure streak
# (failed scheduled runs in a row, counted once per outcome in instant order) and when a pause ends by itself.
MIGRATIONS.append((
    8,
    [
        """
        CREATE TABLE IF NOT EXISTS audit_log (
          id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
          at DATETIME(3) NOT NULL,
          actor VARCHAR(64) NOT NULL,
          via VARCHAR(16) NOT NULL,
          node VARCHAR(200) NOT NULL,
          action VARCHAR(32) NOT NULL,
          job_id VARCHAR(32) NULL,
          subject VARCHAR(64) NULL,
          from_version INT NULL,
          to_version INT NULL,
          changes LONGTEXT NULL,
          note VARCHAR(1000) NULL,
          KEY ix_audit_at (at),
          KEY ix_audit_job (job_id, id),
          KEY ix_audit_actor (actor, id),
          KEY ix_audit_action (action, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
        """
        CREATE TABLE IF NOT EXISTS alerts (
          id CHAR(32) NOT NULL PRIMARY KEY,
          type VARCHAR(32) NOT NULL,
          job_id VARCHAR(32) NULL,
          at DATETIME(3) NOT NULL,
          payload LONGTEXT NOT NULL,
          state VARCHAR(16) NOT NULL,
          attempts INT NOT NULL DEFAULT 0,
          claimer VARCHAR(64) NULL,
          lease_until DATETIME(3) NULL,
          next_at DATETIME(3) NOT NULL,
          sent_at DATETIME(3) NULL,
          node VARCHAR(200) NULL,
          status_code INT NULL,
          error VARCHAR(1000) NULL,
          KEY ix_alerts_due (state, next_at),
          KEY ix_alerts_at (at),
          KEY ix_alerts_job (job_id, at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS fail_streak INT NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS failing_since DATETIME(3) NULL",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS health_at DATETIME(3) NULL",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pause_base INT NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS paused_until DATETIME(3) NULL",
        "ALTER TABLE jobs ADD INDEX IF NOT EXISTS ix_jobs_paused_until (paused_until)",
        "ALTER TABLE jobs ADD INDEX IF NOT EXISTS ix_jobs_failing (fail_streak)",
    ],
))


# Scale (release 3): a job's place on the ring, so a node reads only its own share of the jobs (cluster/ring.py:
# the md5 of the id, as uhashring hashes keys), through a covering index (a range scan, never the whole table).
MIGRATIONS.append((
    9,
    [
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS ring_point BINARY(16) AS (UNHEX(MD5(id))) PERSISTENT",
        "ALTER TABLE jobs ADD INDEX IF NOT EXISTS ix_jobs_ring (ring_point, deleted_at, version, paused, completed_at)",
    ],
))


# Scale (release 3): fences are epochs drawn from one counter, written to a job by its owner's first write for it
# (store/executions.py), so a takeover writes no job row. The counter starts above every fence already issued.
MIGRATIONS.append((
    10,
    [
        "CREATE TABLE IF NOT EXISTS fence_epochs (id TINYINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL)"
        " ENGINE=InnoDB",
        "INSERT IGNORE INTO fence_epochs (id, n) SELECT 1, COALESCE(MAX(fence), 0) FROM jobs",
    ],
))


# The dashboard (release 3): the cluster page counts the unaccounted-tick alerts of the last day every 10 s by type.
MIGRATIONS.append((
    11,
    ["ALTER TABLE alerts ADD INDEX IF NOT EXISTS ix_alerts_type_at (type, at)"],
))


async def migrate(pool: Pool, database: str) -> None:
    """Apply the migrations this release knows and the database lacks, in order, under a named lock."""
    lock = f"cronring-migrate-{database}"
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT GET_LOCK(%s, 60)", (lock,))
        (got,) = await cur.fetchone()
        if got != 1:  # another node has been migrating for a minute (an index on a big table): not twice at once
            raise StoreUnavailable("another node is still migrating the schema; will retry")
        try:
            await cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY,"
                              " applied_at DATETIME(3) NOT NULL)")
            await cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            (current,) = await cur.fetchone()
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for sql in statements:
                    await cur.execute(sql)
                await cur.execute("INSERT INTO schema_migrations VALUES (%s, NOW(3))", (version,))
                log.info("migration applied", version=version)
        finally:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
