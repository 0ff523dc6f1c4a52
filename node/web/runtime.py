"""The node's live parts, built in start order and kept on the aiohttp app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from ..cluster.bus import Bus
from ..cluster.catalogue import Catalogue
from ..cluster.fencing import Locks
from ..cluster.keys import Keys
from ..cluster.membership import Membership
from ..scheduling.audit import Auditor
from ..scheduling.firing import Firer
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
    scheduler: Scheduler
    auditor: Auditor


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
