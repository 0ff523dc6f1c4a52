"""The node's live parts, built in start order and kept on the aiohttp app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from node.audit import Auditor
from node.bus import Bus
from node.catalogue import Catalogue
from node.fencing import Locks
from node.firing import Firer
from node.keys import Keys
from node.membership import Membership
from node.scheduler import Scheduler
from node.settings import Settings
from node.store import Store


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
