"""What a target checks before it acts on a cronring request: ``cronring.verify`` (``node.verify`` from a checkout).

Every request a node sends for a tick carries, besides the job's own headers and body::

    X-Cron-Job-Id, X-Cron-Execution-Id, Idempotency-Key (= the execution id, the same on every
    retry and redelivery of one execution), X-Cron-Scheduled-At, X-Cron-Fence (rises each time the
    job changes owner), X-Cron-Attempt, X-Cron-Node, and, with a signing secret,
    X-Cron-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body bytes>")>

A target that acts once per execution checks, in this order (cheapest and state-free first):

1. the **signature** (401): present, well formed, signed less than ``tolerance`` seconds from now
   (either way: clock skew), with the current secret or a previous one (rotation);
2. the **fence** (409): not lower than the highest this job's requests have carried (equal is fine: one
   owner sends many ticks); a lower one comes from a deposed owner. The highest is raised atomically;
3. the **idempotency key** (deduplication): the first delivery of an execution runs the handler; a
   later one does not, and is answered with the status the first one got (200 for a handled one), so
   cronring records it as delivered and does not retry. While the first is still running, a
   duplicate gets 425 (which cronring retries after a backoff). A handler that raised, or answered a
   status cronring retries (408, 425, 429, 5xx), releases the key: the retry runs the handler again.

The signature covers ``t`` and the body, not the headers: the fence and the key are trusted as far
as the transport is (TLS). To bind the execution to the signature, put ``{{executionId}}`` in the
job's body.

Three ways in, one logic: ``verify_signature`` and ``fence_is_stale`` (pure, synchronous);
``Verifier.check`` / ``check`` (async, with stores), which returns a ``Delivery`` to ``finish`` with
the handler's status or raises ``Rejected``; and the middlewares ``aiohttp_middleware`` and
``VerifyMiddleware`` (raw ASGI: Starlette, FastAPI, Litestar, Quart…). Stores: in memory (one
process), Redis (``redis.asyncio``), MariaDB/MySQL (an ``aiomysql`` pool). Only the standard library
is imported here; aiohttp, Redis and aiomysql are used through the objects handed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets as _random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "FENCE_TABLE_DDL", "IDEMPOTENCY_TABLE_DDL", "Delivery", "FenceStore", "IdempotencyStore", "MemoryFenceStore",
    "MemoryIdempotencyStore", "MySQLFenceStore", "MySQLIdempotencyStore", "Prior", "Reason", "RedisFenceStore",
    "RedisIdempotencyStore", "Rejected", "Signed", "Verifier", "VerifyMiddleware", "aiohttp_middleware", "check",
    "delivery_of", "fence_is_stale", "retried", "sign", "verify_signature",
]

TOLERANCE_S = 300  # how far a signature's t may be from the receiver's clock, either way
MAX_KEY_LENGTH = 255  # bytes of Idempotency-Key and X-Cron-Job-Id (cronring's are far shorter)
MAX_SIGNATURE_HEADER = 4096
DONE_TTL_S = 7 * 24 * 3600  # a handled execution's key is remembered this long
IN_FLIGHT_TTL_S = 15 * 60  # a key whose handler never finished (a crash) blocks duplicates this long
MAX_BODY_BYTES = 4 * 1024 * 1024  # what VerifyMiddleware buffers at most (the receiver's limit too)


class Reason(StrEnum):
    """Why a request was not handed to the handler; ``Rejected.status`` is the answer."""

    MISSING = "missing"  # 401: no X-Cron-Signature
    MALFORMED = "malformed"  # 401: X-Cron-Signature is not t=<unix seconds>,v1=<64 hex>
    EXPIRED = "expired"  # 401: signed further than the tolerance from now (a replay, or clocks apart)
    BAD_SIGNATURE = "bad-signature"  # 401: no secret gives this HMAC (wrong secret, or body or t altered)
    BAD_HEADERS = "bad-headers"  # 400: X-Cron-Job-Id, X-Cron-Fence or Idempotency-Key missing or malformed
    STALE_FENCE = "stale-fence"  # 409: a lower fence than the job's highest: from a deposed owner
    IN_FLIGHT = "in-flight"  # 425: the same execution is being handled now; cronring retries later
    REPLAYED = "replayed"  # the first delivery's status (200): already handled, not run again
    TOO_LARGE = "too-large"  # 413: a body over VerifyMiddleware's max_body


_STATUS = {Reason.MISSING: 401, Reason.MALFORMED: 401, Reason.EXPIRED: 401, Reason.BAD_SIGNATURE: 401,
           Reason.BAD_HEADERS: 400, Reason.STALE_FENCE: 409, Reason.IN_FLIGHT: 425, Reason.REPLAYED: 200,
           Reason.TOO_LARGE: 413}


class Rejected(Exception):
    """The request must not reach the handler. ``status`` is what to answer, ``payload()`` a JSON body,
    ``headers`` any headers to add. For ``Reason.REPLAYED`` the status is the one the first delivery
    got (a 2xx for a handled one): the work was done, the handler is not run again."""

    def __init__(self, reason: Reason, detail: str = "", *, status: int | None = None,
                 headers: Mapping[str, str] | None = None, key: str | None = None) -> None:
        self.reason = reason
        self.detail = detail or reason.value
        self.status = status if status is not None else _STATUS[reason]
        self.headers: dict[str, str] = dict(headers or {})
        self.key = key
        super().__init__(f"{reason.value}: {self.detail}" if detail else reason.value)

    def payload(self) -> dict[str, Any]:
        if self.reason is Reason.REPLAYED:
            return {"replayed": True, "idempotencyKey": self.key, "details": self.detail}
        return {"error": self.reason.value, "details": self.detail}

    def body(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":")).encode()


# -- the signature: pure functions -----------------------------------------------------------------

Secrets = str | bytes | Sequence[str | bytes]


def _secret_bytes(secrets: Secrets) -> tuple[bytes, ...]:
    """One secret, or several (current first, then the previous ones); empty ones are dropped."""
    many: Sequence[str | bytes] = (secrets,) if isinstance(secrets, str | bytes) else secrets
    out = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in many if s)
    if not out:
        raise ValueError("no signing secret: a verifier without one would accept anybody's request")
    return out


def _mac(secret: bytes, timestamp: int | str, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """An ``X-Cron-Signature`` value as a node makes it: for a target's own tests."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret.encode() if isinstance(secret, str) else secret, t, body)}"


_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Signed:
    """A good signature: when it was made, and with which secret (0: the current one; more: an older one
    still accepted during a rotation — once none comes with it, drop it)."""

    timestamp: int
    secret_index: int

    @property
    def rotated(self) -> bool:
        return self.secret_index > 0


def verify_signature(secrets: Secrets, header: str | None, body: bytes, *, now: float | None = None,
                     tolerance: float = TOLERANCE_S) -> Signed:
    """Check ``X-Cron-Signature`` against the body: return ``Signed``, or raise ``Rejected`` with
    ``missing``, ``malformed``, ``expired`` or ``bad-signature``. ``secrets``: one, or a sequence with
    the current one first; every one is tried. Several ``v1=`` entries are accepted (any may match)."""
    keys = _secret_bytes(secrets)
    if not header:
        raise Rejected(Reason.MISSING, "no X-Cron-Signature header")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise Rejected(Reason.MALFORMED, "X-Cron-Signature is too long")
    t = ""
    macs: list[str] = []
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise Rejected(Reason.MALFORMED, "X-Cron-Signature is not t=<seconds>,v1=<hex>")
        if k == "t":
            t = v
        elif k == "v1":
            macs.append(v.lower())
    if not (t.isascii() and t.isdigit() and len(t) <= 12) or not macs or not all(_HEX64.fullmatch(m) for m in macs):
        raise Rejected(Reason.MALFORMED, "X-Cron-Signature is not t=<seconds>,v1=<hex>")
    timestamp = int(t)
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance:
        raise Rejected(Reason.EXPIRED, f"signed {int(skew)} s {'ago' if skew > 0 else 'ahead'}; "
                                       f"{int(tolerance)} s are accepted either way")
    for i, secret in enumerate(keys):
        mac = _mac(secret, t, bytes(body))
        if any(hmac.compare_digest(mac, m) for m in macs):
            return Signed(timestamp=timestamp, secret_index=i)
    raise Rejected(Reason.BAD_SIGNATURE, "the signature matches no secret (wrong secret, or an altered body)")


def fence_is_stale(fence: int, highest: int | None) -> bool:
    """A fence lower than the highest seen for its job comes from a deposed owner; an equal one does not."""
    return highest is not None and fence < highest


def retried(status: int) -> bool:
    """A status cronring retries the execution after (the handler did not do the work): its key is released."""
    return status >= 500 or status in (408, 425, 429)


# -- stores ----------------------------------------------------------------------------------------


class FenceStore(Protocol):
    async def advance(self, job_id: str, fence: int) -> bool:
        """Atomically: False when ``fence`` is lower than the highest seen for the job; else raise the
        highest to ``fence`` (when higher) and return True."""
        ...


@dataclass(frozen=True, slots=True)
class Prior:
    """An earlier delivery of the same key: ``status`` None while its handler runs, else what it answered."""

    status: int | None


class IdempotencyStore(Protocol):
    async def claim(self, key: str, token: str) -> Prior | None:
        """Atomically: None when ``key`` is new (now held, in flight, under ``token``); else the earlier one."""
        ...

    async def complete(self, key: str, token: str, status: int) -> None:
        """The handler answered ``status``: remember it (if ``token`` still holds the key)."""
        ...

    async def release(self, key: str, token: str) -> None:
        """The handler failed: forget the key (if ``token`` still holds it), so a retry runs it again."""
        ...


class MemoryFenceStore:
    """One process's fences: a dict of job id -> highest fence (one entry per job ever seen; only
    requests with a good signature reach it)."""

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}

    def advance_now(self, job_id: str, fence: int) -> bool:
        highest = self.highest.get(job_id)
        if fence_is_stale(fence, highest):
            return False
        if highest is None or fence > highest:
            self.highest[job_id] = fence
        return True

    async def advance(self, job_id: str, fence: int) -> bool:
        return self.advance_now(job_id, fence)  # no await between read and write: atomic on its loop


class MemoryIdempotencyStore:
    """One process's keys, bounded: at most ``max_keys`` (the oldest written forgotten first), each for
    ``ttl`` seconds once handled, ``in_flight_ttl`` while its handler runs."""

    def __init__(self, *, max_keys: int = 100_000, ttl: float = DONE_TTL_S, in_flight_ttl: float = IN_FLIGHT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.ttl = ttl
        self.in_flight_ttl = in_flight_ttl
        self.clock = clock
        self._keys: OrderedDict[str, tuple[str, int | None, float]] = OrderedDict()  # key -> token, status, expiry

    def __len__(self) -> int:
        return len(self._keys)

    def _put(self, key: str, token: str, status: int | None, ttl: float) -> None:
        self._keys[key] = (token, status, self.clock() + ttl)
        self._keys.move_to_end(key)

    async def claim(self, key: str, token: str) -> Prior | None:
        now = self.clock()
        while self._keys:  # oldest written first: expired ones, then any over the bound
            first = next(iter(self._keys.values()))
            if first[2] > now and len(self._keys) < self.max_keys:
                break
            self._keys.popitem(last=False)
        held = self._keys.get(key)
        if held is not None and held[2] > now:
            return Prior(held[1])
        self._put(key, token, None, self.in_flight_ttl)
        return None

    async def complete(self, key: str, token: str, status: int) -> None:
        held = self._keys.get(key)
        if held is not None and held[0] == token:
            self._put(key, token, status, self.ttl)

    async def release(self, key: str, token: str) -> None:
        held = self._keys.get(key)
        if held is not None and held[0] == token and held[1] is None:
            del self._keys[key]


_REDIS_ADVANCE = """
local highest = tonumber(redis.call('GET', KEYS[1]))
local fence = tonumber(ARGV[1])
if highest and fence < highest then return 0 end
if not highest or fence > highest then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
_REDIS_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 0
"""
_REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisFenceStore:
    """Fences in Redis (a ``redis.asyncio.Redis``), one key per job: ``<prefix><job id>``, kept for good."""

    def __init__(self, redis: Any, *, prefix: str = "cronring-verify:fence:") -> None:
        self.redis = redis
        self.prefix = prefix

    async def advance(self, job_id: str, fence: int) -> bool:
        return bool(await self.redis.eval(_REDIS_ADVANCE, 1, self.prefix + job_id, str(fence)))


class RedisIdempotencyStore:
    """Keys in Redis (a ``redis.asyncio.Redis``): ``SET <prefix><key> p:<token> NX EX in_flight_ttl`` claims a
    key; a handled one holds ``d:<status>`` for ``ttl`` seconds. Completing and releasing compare the
    token first (a script), so a delivery whose claim lapsed never undoes a later one's."""

    def __init__(self, redis: Any, *, prefix: str = "cronring-verify:idem:", ttl: int = DONE_TTL_S,
                 in_flight_ttl: int = IN_FLIGHT_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = int(ttl)
        self.in_flight_ttl = int(in_flight_ttl)

    async def claim(self, key: str, token: str) -> Prior | None:
        name = self.prefix + key
        for _ in range(5):
            if await self.redis.set(name, f"p:{token}", nx=True, ex=self.in_flight_ttl):
                return None
            held = await self.redis.get(name)
            if held is None:
                continue  # released or expired between the two: claim again
            value = held.decode() if isinstance(held, bytes) else str(held)
            return Prior(int(value[2:]) if value.startswith("d:") else None)
        return Prior(None)  # claimed and released over and over meanwhile: someone is on it

    async def complete(self, key: str, token: str, status: int) -> None:
        await self.redis.eval(_REDIS_COMPLETE, 1, self.prefix + key, f"p:{token}", f"d:{int(status)}", str(self.ttl))

    async def release(self, key: str, token: str) -> None:
        await self.redis.eval(_REDIS_RELEASE, 1, self.prefix + key, f"p:{token}")


# The two tables, for MariaDB or MySQL (utf8mb4 or not: keys are compared as bytes, never case-folded).
IDEMPOTENCY_TABLE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
  idem_key   VARBINARY(255) NOT NULL PRIMARY KEY,  -- the Idempotency-Key header (cronring's execution id)
  token      CHAR(32) CHARACTER SET ascii NOT NULL, -- which delivery holds it
  status     SMALLINT NULL,                        -- NULL while the handler runs, then what it answered
  expires_at DATETIME(6) NOT NULL,                 -- UTC; a row past it counts as absent
  KEY by_expiry (expires_at)
)"""
FENCE_TABLE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
  job_id VARBINARY(255) NOT NULL PRIMARY KEY,      -- the X-Cron-Job-Id header
  fence  BIGINT NOT NULL                           -- the highest X-Cron-Fence seen for the job
)"""

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PURGE_EVERY = 1000  # claims between two deletions of expired rows (1000 at most each)


def _table(name: str) -> str:
    if not _IDENT.fullmatch(name):
        raise ValueError(f"not a plain table name: {name!r}")
    return f"`{name}`"


def _hex(text: str) -> str:
    """A key as parameter: its UTF-8 bytes in hex, for UNHEX() (exact whatever the connection's charset)."""
    return text.encode().hex()


def _duplicate_key(e: Exception) -> bool:
    """MySQL's ER_DUP_ENTRY, from any DB-API driver (aiomysql, asyncmy, PyMySQL…)."""
    return bool(e.args) and e.args[0] == 1062


class _MySQL:
    """One statement or a few, on a connection from an ``aiomysql`` pool, committed at once (whatever the
    pool's autocommit)."""

    def __init__(self, pool: Any, table: str) -> None:
        self.pool = pool
        self.name = table
        self.table = _table(table)

    async def run(self, *statements: tuple[str, tuple[Any, ...]]) -> list[tuple[int, Any]]:
        """Each statement's (affected rows, first row), each committed before the next."""
        out: list[tuple[int, Any]] = []
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            try:
                for sql, args in statements:
                    await cur.execute(sql.replace("{table}", self.table), args)
                    out.append((cur.rowcount, await cur.fetchone() if cur.description else None))
                    await conn.commit()
            except Exception:
                with contextlib.suppress(Exception):  # back to the pool clean (a pool drops one mid-transaction)
                    await conn.rollback()
                raise
        return out

    async def create_table(self, ddl: str) -> None:
        """Once (a CREATE TABLE IF NOT EXISTS of a table that exists still leaves a warning to show)."""
        (_, found), = await self.run(("SELECT COUNT(*) FROM information_schema.tables "
                                      "WHERE table_schema = DATABASE() AND table_name = %s", (self.name,)))
        if not found[0]:
            await self.run((ddl, ()))


class MySQLFenceStore:
    """Fences in MariaDB/MySQL through an ``aiomysql`` pool: one row per job (``FENCE_TABLE_DDL``)."""

    def __init__(self, pool: Any, *, table: str = "cronring_fences") -> None:
        self._db = _MySQL(pool, table)

    async def create_table(self) -> None:
        await self._db.create_table(FENCE_TABLE_DDL)

    async def advance(self, job_id: str, fence: int) -> bool:
        # raise it, then read it: higher than ours means a newer owner's request came first (or meanwhile)
        _, (_, row) = await self._db.run(
            ("INSERT INTO {table} (job_id, fence) VALUES (UNHEX(%s), %s) "
             "ON DUPLICATE KEY UPDATE fence = GREATEST(fence, %s)", (_hex(job_id), fence, fence)),
            ("SELECT fence FROM {table} WHERE job_id = UNHEX(%s)", (_hex(job_id),)),
        )
        return row is not None and not fence_is_stale(fence, int(row[0]))


class MySQLIdempotencyStore:
    """Keys in MariaDB/MySQL through an ``aiomysql`` pool (``IDEMPOTENCY_TABLE_DDL``): an ``INSERT`` on the
    primary key claims one (a duplicate-key error: seen before). Expired rows are taken over as they are
    met, and deleted a thousand at a time every ``PURGE_EVERY`` claims (or call ``purge()``)."""

    def __init__(self, pool: Any, *, table: str = "cronring_idempotency", ttl: int = DONE_TTL_S,
                 in_flight_ttl: int = IN_FLIGHT_TTL_S) -> None:
        self._db = _MySQL(pool, table)
        self.ttl = int(ttl)
        self.in_flight_ttl = int(in_flight_ttl)
        self._claims = 0

    async def create_table(self) -> None:
        await self._db.create_table(IDEMPOTENCY_TABLE_DDL)

    async def purge(self, limit: int = 1000) -> int:
        (deleted, _), = await self._db.run(
            ("DELETE FROM {table} WHERE expires_at < UTC_TIMESTAMP(6) LIMIT %s", (int(limit),)))
        return deleted

    async def claim(self, key: str, token: str) -> Prior | None:
        self._claims += 1
        if self._claims % PURGE_EVERY == 0:
            await self.purge()
        k = _hex(key)
        for _ in range(5):
            try:  # the primary key decides, atomically (a plain INSERT: aiomysql turns every duplicate an
                # INSERT IGNORE skips into a Python warning, after one more round trip to read it)
                await self._db.run(("INSERT INTO {table} (idem_key, token, status, expires_at) "
                                    "VALUES (UNHEX(%s), %s, NULL, UTC_TIMESTAMP(6) + INTERVAL %s SECOND)",
                                    (k, token, self.in_flight_ttl)))
                return None
            except Exception as e:
                if not _duplicate_key(e):
                    raise
            (_, row), = await self._db.run(("SELECT status, token, expires_at < UTC_TIMESTAMP(6) FROM {table} "
                                            "WHERE idem_key = UNHEX(%s)", (k,)))
            if row is None:
                continue  # released meanwhile: claim again
            status, holder, expired = row
            if not expired:
                return Prior(None if status is None else int(status))
            # past its time (a handler that died, or a key long handled): take it over, unless another did
            await self._db.run(("DELETE FROM {table} WHERE idem_key = UNHEX(%s) AND token = %s "
                                "AND expires_at < UTC_TIMESTAMP(6)", (k, holder)))
        return Prior(None)

    async def complete(self, key: str, token: str, status: int) -> None:
        await self._db.run(("UPDATE {table} SET status = %s, expires_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND "
                            "WHERE idem_key = UNHEX(%s) AND token = %s", (int(status), self.ttl, _hex(key), token)))

    async def release(self, key: str, token: str) -> None:
        await self._db.run(("DELETE FROM {table} WHERE idem_key = UNHEX(%s) AND token = %s AND status IS NULL",
                            (_hex(key), token)))


# -- the checks together -----------------------------------------------------------------------------

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]


def _lowered(headers: Headers | Any) -> dict[str, str]:
    """Header names in lower case, the first of repeated ones: from any mapping-like object (aiohttp's,
    Werkzeug's, Django's, a dict) or ASGI's list of byte pairs."""
    source: Any = headers
    pairs: Iterable[tuple[Any, Any]] = source.items() if hasattr(source, "items") else source
    out: dict[str, str] = {}
    for k, v in pairs:
        name = k.decode("latin-1") if isinstance(k, bytes) else str(k)
        out.setdefault(name.lower(), v.decode("latin-1") if isinstance(v, bytes) else str(v))
    return out


def _whole(value: str | None) -> int | None:
    """A header's whole number (at most 18 digits), or None when it is absent or is not one."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A request that passed: what it says, and its key's claim. Call ``finish(status)`` once the handler
    has answered (or ``finish(500)`` when it raised), so a duplicate is answered right."""

    job_id: str | None
    execution_id: str | None
    idempotency_key: str | None
    fence: int | None
    attempt: int | None
    scheduled_at: str | None
    node: str | None
    signed: Signed
    _store: IdempotencyStore | None = field(default=None, repr=False, compare=False)
    _token: str = field(default="", repr=False, compare=False)

    async def finish(self, status: int) -> None:
        """Remember the handler's answer for duplicates, or release the key when cronring will retry
        (``retried(status)``): the retry then runs the handler. Does nothing without an idempotency store."""
        if self._store is None or self.idempotency_key is None:
            return
        if retried(status):
            await self._store.release(self.idempotency_key, self._token)
        else:
            await self._store.complete(self.idempotency_key, self._token, status)


class Verifier:
    """The signing secrets (current first, then previous ones during a rotation) and the stores. Without a
    ``fences`` store no fence is checked; without ``idempotency`` no request is deduplicated."""

    def __init__(self, secrets: Secrets, *, fences: FenceStore | None = None,
                 idempotency: IdempotencyStore | None = None, tolerance: float = TOLERANCE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.secrets = _secret_bytes(secrets)
        self.fences = fences
        self.idempotency = idempotency
        self.tolerance = tolerance
        self.clock = clock

    async def check(self, headers: Headers | Any, body: bytes, *, now: float | None = None) -> Delivery:
        """The signature, then the fence, then the key: a ``Delivery`` to run the handler for (and then
        ``finish``), or ``Rejected`` (whose ``status`` to answer without running it)."""
        h = _lowered(headers)
        signed = verify_signature(self.secrets, h.get("x-cron-signature"), body,
                                  now=self.clock() if now is None else now, tolerance=self.tolerance)
        job_id = h.get("x-cron-job-id") or None
        key = h.get("idempotency-key") or None
        fence = _whole(h.get("x-cron-fence"))
        for name, value in (("X-Cron-Job-Id", job_id), ("Idempotency-Key", key)):
            if value is not None and len(value.encode()) > MAX_KEY_LENGTH:
                raise Rejected(Reason.BAD_HEADERS, f"{name} is longer than {MAX_KEY_LENGTH} bytes")
        if self.fences is not None:
            if job_id is None or fence is None:
                raise Rejected(Reason.BAD_HEADERS, "X-Cron-Job-Id and X-Cron-Fence (a whole number) are required")
            if not await self.fences.advance(job_id, fence):
                raise Rejected(Reason.STALE_FENCE, f"fence {fence} is lower than one already seen for job {job_id}: "
                                                   "sent by a deposed owner")
        token = ""
        if self.idempotency is not None:
            if key is None:
                raise Rejected(Reason.BAD_HEADERS, "Idempotency-Key is required")
            token = _random.token_hex(16)
            prior = await self.idempotency.claim(key, token)
            if prior is not None and prior.status is None:
                raise Rejected(Reason.IN_FLIGHT, "this execution is being handled now", key=key,
                               headers={"Retry-After": "1"})
            if prior is not None and prior.status is not None:
                raise Rejected(Reason.REPLAYED, "already handled; not run again", status=prior.status, key=key,
                               headers={"Idempotent-Replayed": "true"})
        return Delivery(job_id=job_id, execution_id=h.get("x-cron-execution-id") or None, idempotency_key=key,
                        fence=fence, attempt=_whole(h.get("x-cron-attempt")), scheduled_at=h.get("x-cron-scheduled-at") or None,
                        node=h.get("x-cron-node") or None, signed=signed,
                        _store=self.idempotency if token else None, _token=token)


async def check(headers: Headers | Any, body: bytes, *, secrets: Secrets, fences: FenceStore | None = None,
                idempotency: IdempotencyStore | None = None, now: float | None = None,
                tolerance: float = TOLERANCE_S) -> Delivery:
    """``Verifier(secrets, fences=…, idempotency=…).check(headers, body)`` in one call."""
    return await Verifier(secrets, fences=fences, idempotency=idempotency, tolerance=tolerance).check(
        headers, body, now=now)


# -- middlewares ------------------------------------------------------------------------------------


def _path_matcher(paths: str | Iterable[str] | None) -> Callable[[str], bool]:
    """None: every path; else the paths given and everything under them (``/hooks`` covers ``/hooks/x``)."""
    if paths is None:
        return lambda _path: True
    prefixes = tuple(p.rstrip("/") for p in ([paths] if isinstance(paths, str) else paths))
    return lambda path: any(not p or path == p or path.startswith(p + "/") for p in prefixes)


DELIVERY_KEY = "cronring.delivery"  # where VerifyMiddleware leaves the Delivery: scope["cronring.delivery"]
_aiohttp_key: Any = None


def _request_key() -> Any:
    """aiohttp's key for the Delivery on a request (made once aiohttp is in use: not imported before)."""
    global _aiohttp_key
    if _aiohttp_key is None:
        from aiohttp import web

        _aiohttp_key = web.RequestKey(DELIVERY_KEY, Delivery) if hasattr(web, "RequestKey") else DELIVERY_KEY
    return _aiohttp_key


def delivery_of(request: Any) -> Delivery:
    """The ``Delivery`` a middleware passed on: from an aiohttp request, a Starlette/FastAPI request (its
    ``scope``) or an ASGI scope. ``LookupError`` when no middleware of this module handled the request."""
    scope = getattr(request, "scope", request)
    if isinstance(scope, Mapping) and isinstance(scope.get(DELIVERY_KEY), Delivery):
        found: Delivery = scope[DELIVERY_KEY]
        return found
    if _aiohttp_key is not None and isinstance(request, Mapping) and isinstance(request.get(_aiohttp_key), Delivery):
        got: Delivery = request[_aiohttp_key]
        return got
    raise LookupError("no cronring.verify middleware passed this request on")


def aiohttp_middleware(verifier: Verifier, *, paths: str | Iterable[str] | None = None) -> Any:
    """An aiohttp middleware: requests to ``paths`` (default: all) are verified before their handler runs,
    which finds the ``Delivery`` with ``delivery_of(request)``; ``Rejected`` ones are answered
    with its status and a JSON body. ``web.Application(middlewares=[aiohttp_middleware(verifier)])``."""
    from aiohttp import web

    matches = _path_matcher(paths)
    key = _request_key()

    @web.middleware
    async def verify(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if not matches(request.path):
            return await handler(request)
        body = await request.read()  # kept by aiohttp: the handler reads it again
        try:
            delivery = await verifier.check(request.headers, body)
        except Rejected as e:
            return web.Response(body=e.body(), status=e.status, headers=e.headers, content_type="application/json")
        request[key] = delivery
        try:
            response = await handler(request)
        except web.HTTPException as e:
            await delivery.finish(e.status)
            raise
        except BaseException:
            await delivery.finish(500)
            raise
        await delivery.finish(response.status)
        return response

    return verify


AsgiScope = MutableMapping[str, Any]
AsgiReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
AsgiSend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]


class VerifyMiddleware:
    """ASGI middleware for any ASGI app (Starlette, FastAPI: ``app.add_middleware(VerifyMiddleware,
    verifier=v)``; or ``VerifyMiddleware(app, v)``). It reads the whole body (up to ``max_body``),
    verifies, and replays the body to the app through ``receive``; the app finds the ``Delivery`` with
    ``delivery_of(request)`` (or in ``scope["cronring.delivery"]``). Other scopes pass untouched."""

    def __init__(self, app: AsgiApp, verifier: Verifier, *, paths: str | Iterable[str] | None = None,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.verifier = verifier
        self.matches = _path_matcher(paths)
        self.max_body = max_body

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] != "http" or not self.matches(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer, nothing ran
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._answer(send, Rejected(Reason.TOO_LARGE, f"a body over {self.max_body} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            delivery = await self.verifier.check(scope.get("headers", []), body)
        except Rejected as e:
            await self._answer(send, e)
            return
        scope[DELIVERY_KEY] = delivery
        replayed = False
        status: int | None = None

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, when it comes

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, replay, watch)
        except BaseException:
            await delivery.finish(500)
            raise
        await delivery.finish(500 if status is None else status)

    @staticmethod
    async def _answer(send: AsgiSend, rejected: Rejected) -> None:
        body = rejected.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rejected.headers.items()]
        await send({"type": "http.response.start", "status": rejected.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
