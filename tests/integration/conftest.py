from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiomysql
import pytest

from node.store import DatabaseURL, Store
from tests.harness import DATABASE_URL, db_url


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """A Store on a database of its own, dropped afterwards."""
    name = f"cronring_it_{secrets.token_hex(4)}"
    s = Store(DatabaseURL.parse(db_url(name)), pool_size=20)
    await s.start()
    yield s
    await s.close()
    u = DatabaseURL.parse(DATABASE_URL)
    conn = await aiomysql.connect(host=u.host, port=u.port, user=u.user, password=u.password, autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()
