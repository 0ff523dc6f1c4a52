"""The node's live parts, built in start order and kept on the aiohttp app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from .audit import Auditor
from .bus import Bus
from .catalogue import Catalogue
from .fencing import Locks
from .firing import Firer
from .keys import Keys
from .membership import Membership
from .scheduler import Scheduler
from .settings import Settings
from .store import Store


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
