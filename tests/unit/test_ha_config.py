"""Highly available backends, the parts without servers: Sentinel URLs, several MariaDB hosts, and
which database errors move the store to another host (tests/chaos/test_ha.py runs the real thing)."""

from __future__ import annotations

import asyncio

import pytest

from node.cluster.redisconn import RedisURLError, SentinelURL, check_url, connect
from node.settings import Settings, SettingsError
from node.store import DatabaseURL, DatabaseURLError
from node.store.connection import OperationalError, _moves_primary
from node.web.app import REDIS_RETRY


def test_sentinel_url_forms() -> None:
    s = SentinelURL.parse("redis+sentinel://:pw@10.0.0.1:26379,sentinel-2:26380/cronring/2?sentinel_password=sp")
    assert s.sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26380)) and s.service == "cronring" and s.db == 2
    assert (s.password, s.sentinel_password, s.ssl) == ("pw", "sp", False)
    t = SentinelURL.parse("rediss+sentinel://user:p%40ss@h1/mymaster")
    assert t.sentinels == (("h1", 26379),) and t.db == 0 and t.ssl and (t.username, t.password) == ("user", "p@ss")
    assert SentinelURL.parse("redis+sentinel://h1/s?ssl=true").ssl
    assert SentinelURL.parse("redis+sentinel://h1/s?sentinel_password=a+b%2Bc").sentinel_password == "a+b+c"


@pytest.mark.parametrize("url", ["redis+sentinel://h1:26379", "redis+sentinel://h1/s/x", "redis+sentinel://h1/s/0/1",
                                 "redis+sentinel://h1/s?password=x", "redis+sentinel:///s", "redis+sentinel://h1:99999/s",
                                 "http://h1/", "sentinel://h1/s"])
def test_unusable_redis_urls_are_refused_at_start(url: str) -> None:
    with pytest.raises(RedisURLError):
        check_url(url)
    with pytest.raises(SettingsError, match="CRONRING_REDIS_URL"):
        Settings.load([], {"CRONRING_REDIS_URL": url})


async def test_a_sentinel_client_is_built_without_connecting() -> None:
    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc/3", socket_timeout=0.2, socket_connect_timeout=0.2,
                     retry=REDIS_RETRY)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["db"] == 3 and client.connection_pool.service_name == "svc"
    with pytest.raises(Exception, match="svc"):  # no Sentinel answers: MasterNotFoundError names the service
        await asyncio.wait_for(client.ping(), 5)
    from node.cluster.redisconn import close

    await close(client)


def test_database_url_with_several_hosts() -> None:
    u = DatabaseURL.parse("mysql://app:s%3Acret@db-a:3306,db-b:3307,[::1]/cronring?ssl=true")
    assert u.hosts == (("db-a", 3306), ("db-b", 3307), ("::1", 3306)) and (u.host, u.port) == ("db-a", 3306)
    assert (u.user, u.password, u.database, u.ssl) == ("app", "s:cret", "cronring", True)
    assert u.redacted() == "mysql://app:***@db-a:3306,db-b:3307,::1:3306/cronring"
    single = DatabaseURL.parse("mysql://root@127.0.0.1:3306/cronring")
    assert single.hosts == (("127.0.0.1", 3306),)
    for bad in ("mysql://a,a/db", "mysql://a,/db", "mysql://a:70000/db"):
        with pytest.raises(DatabaseURLError):
            DatabaseURL.parse(bad)
        with pytest.raises(SettingsError, match="CRONRING_DATABASE_URL"):  # as the node's settings say it
            Settings.load([], env={"CRONRING_DATABASE_URL": bad})


def test_which_errors_move_to_another_host() -> None:
    op = OperationalError
    assert _moves_primary(op(1290, "The MariaDB server is running with the --read-only option"))
    assert _moves_primary(op(2013, "Lost connection")) and _moves_primary(op(2003, "Can't connect"))
    assert _moves_primary(ConnectionResetError()) and _moves_primary(TimeoutError())
    assert not _moves_primary(op(1213, "Deadlock found")) and not _moves_primary(op(1205, "Lock wait timeout"))
