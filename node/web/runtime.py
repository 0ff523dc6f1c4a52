"""The node's live parts, built in start order and kept on the aiohttp app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from ..aio import Tasks
from ..cluster.bus import Bus
from ..cluster.catalogue import Catalogue
from ..cluster.fencing import Locks
from ..cluster.keys import Keys
from ..cluster.membership import Membership
from ..scheduling.alerting import AlertSender
from ..scheduling.audit import Auditor
from ..scheduling.backfill import BackfillRunner
from ..scheduling.firing import Firer
from ..scheduling.ownership import Ownership
from ..scheduling.retention import Retention
from ..scheduling.scheduler import Scheduler
from ..settings import Settings
from ..store import Store


@dataclass(slots=True)
class Runtime:
    settings: Settings
    version: str
    keys: Keys
    redis: aioredis.Redis
    store: Store
    bus: Bus
    catalogue: Catalogue
    membership: Membership
    locks: Locks
    firer: Firer
    tasks: Tasks
    ownership: Ownership
    scheduler: Scheduler
    backfills: BackfillRunner
    auditor: Auditor
    retention: Retention
    alerts: AlertSender


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
