"""One HTTP request for one execution: templates, identity headers, signing, retries.

Knows nothing of claims or ownership: the scheduler hands it a claimed
execution and gets back an outcome. Retries of one execution are one execution
and carry the same execution id.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
from yarl import URL

from ..model.assertions import ASSERT_BYTES, check_body, is_regex, too_slow
from ..model.executions import ExecutionState
from ..model.jobs import RETRY_FLOOR_MS, SENSITIVE_HEADER, Job, secret_values
from ..model.times import now_iso, tick_iso
from .outbound import OutboundDenied, OutboundPolicy, PolicyResolver

RESPONSE_EXCERPT_BYTES = 4096
MAX_REDIRECTS = 5
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
CHECKED_URLS = 20_000  # targets remembered as checked (then forgotten at once, and checked again)


async def _read_upto(content: aiohttp.StreamReader, n: int) -> bytes:
    """Up to ``n`` bytes of a response (fewer only at its end)."""
    out = bytearray()
    while len(out) < n:
        chunk = await content.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


_REGEX_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="expect-body")  # not the resolver's pool


async def _check_body(job: Job, body: str, truncated: bool) -> str | None:
    """The body assertions (the job's secrets masked in what they quote); a /regex/ is matched off the loop, in a
    pool of its own (its time is bounded, but not zero: slow patterns must not hold up DNS)."""
    secrets = secret_values(job)
    if job.expect_body is not None and is_regex(job.expect_body):
        return await asyncio.get_running_loop().run_in_executor(
            _REGEX_POOL, partial(check_body, job.expect_body, job.expect_json, body, truncated, secrets=secrets))
    return check_body(job.expect_body, job.expect_json, body, truncated, secrets=secrets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    status_code: int | None
    error: str | None
    timed_out: bool
    retry_after: float | None
    excerpt: str | None
    not_sent: bool = False  # the lease lapsed before the request could leave
    body: str | None = None  # for the body assertions: the response's first ASSERT_BYTES
    truncated: bool = False  # the response was longer than that


# Never carried to another origin by a followed redirect (as browsers and curl do): credentials and
# every header named like one.
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_BODY_HEADERS = {"content-type", "content-length", "content-encoding", "transfer-encoding"}


def redirected(status: int, method: str, body: bytes | None, headers: dict[str, str], *,
               same_origin: bool) -> tuple[str, bytes | None, dict[str, str]]:
    """The next hop's request (RFC 9110 15.4): 303 becomes GET (HEAD stays HEAD), so do 301 and 302
    after a POST, all without a body; 307 and 308 keep method and body. Credentials stay with the
    target's origin."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    if not same_origin:
        headers = {k: v for k, v in headers.items()
                   if k.lower() not in _CREDENTIAL_HEADERS and not SENSITIVE_HEADER.search(k)}
    return method, body, headers


class LeaseLapsed(Exception):
    """Raised from a connection hook: the node's lease lapsed while it waited for or opened a connection."""


@dataclass(slots=True)
class _Leased:
    """The request being made in this task: its lease check, and its one timeout, whose deadline is the
    lease's end until a connection is obtained and the job's own timeout after."""

    may_send: Callable[[], bool]
    timeout: asyncio.Timeout
    deadline: float  # the job's timeout, on the loop's clock
    connected: bool = False  # a connection was obtained: from here on, bytes may have left


_LEASED: ContextVar[_Leased | None] = ContextVar("cronring_leased", default=None)


class LeasedConnector(aiohttp.TCPConnector):
    """Once a connection is obtained (new, reused or after waiting for the pool), asks again whether
    this node may send; if not, gives the connection back and sends nothing. Then the request's
    deadline moves from the lease's end to the job's timeout. (A connector override and one timeout
    cost next to nothing per request; aiohttp's trace hooks cost ~5% CPU at 500 fires/s, a per-request
    ClientTimeout ~2%.)"""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        leased = _LEASED.get()
        if leased is not None:
            if not leased.may_send():
                conn.release()
                raise LeaseLapsed("heartbeat lease lapsed while connecting; not sent")
            leased.connected = True
            leased.timeout.reschedule(leased.deadline)
        return conn


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What sending one execution came to (every attempt): the outcomes turn it into the Execution."""

    state: ExecutionState  # succeeded | failed | timed_out | abandoned (the lease lapsed before anything was sent)
    attempts: int
    status_code: int | None
    duration_ms: int
    lateness_ms: int  # when the first attempt left, relative to the tick
    error: str | None
    excerpt: str | None
    started_at: datetime


def render(template: str, values: dict[str, str]) -> str:
    if "{{" not in template:
        return template
    for k, v in values.items():
        template = template.replace("{{" + k + "}}", v)
    return template


def _render_json(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, list):
        return [_render_json(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _render_json(v, values) for k, v in value.items()}
    return value


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_delay(job: Job, attempt: int, retry_after: float | None, rnd: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter (half fixed, half random), at least Retry-After, capped; never under
    RETRY_FLOOR_MS, whatever a job stored before that floor existed (retries at 0 ms through five
    redirect hops made 66 requests of one run-now)."""
    base: float = job.retry_backoff_ms / 1000 * (2 ** (attempt - 1))
    cap = max(job.retry_max_backoff_ms, RETRY_FLOOR_MS) / 1000
    delay = min(cap, base)
    delay = delay / 2 + delay / 2 * rnd()
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return max(delay, RETRY_FLOOR_MS / 1000)


class Firer:
    def __init__(self, *, node_id: str, signing_secret: str, policy: OutboundPolicy, pool_size: int) -> None:
        self.node_id = node_id
        self.signing_secret = signing_secret
        self.policy = policy
        self.pool_size = pool_size
        self.session: aiohttp.ClientSession | None = None
        # target string -> the URL checked: parsed and checked once, not per run (the policy is fixed for
        # the process; resolved addresses are still checked per connection). The URL object also keeps
        # yarl's parsed parts, which aiohttp reads on every request.
        self._checked: dict[str, URL] = {}

    async def start(self) -> None:
        connector = LeasedConnector(
            limit=self.pool_size, limit_per_host=0, resolver=PolicyResolver(self.policy),
            ttl_dns_cache=10, enable_cleanup_closed=True,
        )
        # No aiohttp timeout: each attempt runs under one asyncio.timeout of the job's timeoutMs (and
        # its connect phase under the lease time left).
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False,
                                             timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def check_target(self, uri: str | URL) -> URL:
        """Refuse a target up front, as the HTTP client will see it; return the yarl URL to request.

        The host is checked in yarl's IDNA/UTS-46 form (what aiohttp connects to, so fullwidth
        digits or ideographic dots cannot hide an address), and the caller requests the very
        URL object that was checked. Names are checked again, address by address, after DNS.
        """
        if isinstance(uri, URL):
            return self.policy.check_url(uri)
        url = self._checked.get(uri)
        if url is None:
            url = self.policy.check_url(uri)  # a refused target raises: never remembered
            if len(self._checked) >= CHECKED_URLS:
                self._checked.clear()
            self._checked[uri] = url
        return url

    def _request_parts(
        self, job: Job, *, execution_id: str, scheduled_at: datetime, fence: int, attempt: int
    ) -> tuple[str, dict[str, str], bytes | None]:
        values = {
            "timestamp": now_iso(),
            "scheduledAt": tick_iso(scheduled_at),
            "jobId": job.id,
            "executionId": execution_id,
            "attempt": str(attempt),
        }
        uri = render(job.uri, values)
        headers = {k: render(v, values) for k, v in job.headers.items()}
        body: bytes | None
        if job.body is None:
            body = None
        elif isinstance(job.body, str):
            body = render(job.body, values).encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            body = json.dumps(_render_json(job.body, values), separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json")
        headers.update({
            "User-Agent": "cronring",
            "X-Cron-Job-Id": job.id,
            "X-Cron-Execution-Id": execution_id,
            "Idempotency-Key": execution_id,
            "X-Cron-Scheduled-At": values["scheduledAt"],
            "X-Cron-Fence": str(fence),
            "X-Cron-Attempt": str(attempt),
            "X-Cron-Node": self.node_id,
        })
        if self.signing_secret:
            headers["X-Cron-Signature"] = sign(self.signing_secret, int(time.time()), body or b"")
        return uri, headers, body

    async def _attempt(self, job: Job, uri: str, headers: dict[str, str], body: bytes | None, *,
                       may_send: Callable[[], bool], lease_left: Callable[[], float] | None) -> Attempt:
        if self.session is None:
            raise RuntimeError("Firer.start() was not called")
        method = job.method
        left = lease_left() if lease_left is not None else None
        if left is not None and left <= 0:
            return Attempt(status_code=None, error="heartbeat lease lapsed before send; not sent", timed_out=False,
                           retry_after=None, excerpt=None, not_sent=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.timeout_ms / 1000
        leased: _Leased | None = None
        answered: int | None = None  # the status, once a job with body assertions got it
        try:
            url = self.check_target(uri)  # parsed once: the URL requested is the URL checked
            # waiting for a pooled connection and connecting end while the lease surely holds; the
            # connector moves the deadline to the job's timeout once a connection is obtained
            async with asyncio.timeout_at(min(deadline, loop.time() + left) if left is not None else deadline) as tm:
                leased = _Leased(may_send, tm, deadline)
                _LEASED.set(leased)
                for _hop in range(MAX_REDIRECTS + 1):
                    async with self.session.request(
                        method, url, headers=headers, data=body, allow_redirects=False,
                    ) as resp:
                        if job.follow_redirects and resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                            nxt = self.policy.join_redirect(url, resp.headers["Location"])
                            if nxt.scheme not in ("http", "https"):
                                return Attempt(status_code=resp.status, error="redirect to a non-http URL refused",
                                               timed_out=False, retry_after=None, excerpt=None)
                            nxt = self.check_target(nxt)
                            method, body, headers = redirected(resp.status, method, body, headers,
                                                               same_origin=nxt.origin() == url.origin())
                            url = nxt
                            if lease_left is not None:  # the next hop connects within the lease too
                                leased.connected = False
                                tm.reschedule(min(deadline, loop.time() + lease_left()))
                            continue
                        asserts = job.expect_body is not None or bool(job.expect_json)
                        if asserts:  # the body up to its bound; a body that never ends fails, it is not retried
                            answered = resp.status
                            raw = await _read_upto(resp.content, ASSERT_BYTES + 1)
                        else:  # the first chunk, as always: a target that holds the connection open costs nothing
                            raw = await resp.content.read(RESPONSE_EXCERPT_BYTES)
                        text = raw[:ASSERT_BYTES].decode("utf-8", errors="replace") if asserts else None
                        return Attempt(
                            status_code=resp.status, error=None, timed_out=False,
                            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                            excerpt=raw[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace"), body=text,
                            truncated=len(raw) > ASSERT_BYTES,
                        )
                return Attempt(status_code=None, error=f"more than {MAX_REDIRECTS} redirects", timed_out=False,
                               retry_after=None, excerpt=None)
        except LeaseLapsed as e:
            return Attempt(status_code=None, error=str(e), timed_out=False, retry_after=None, excerpt=None,
                           not_sent=True)
        except TimeoutError:
            if answered is not None:  # it answered, then its body did not end: its assertions cannot hold
                return Attempt(status_code=answered, error=f"the response's body did not end within {job.timeout_ms} "
                               "ms: its assertions were not checked", timed_out=False, retry_after=None, excerpt=None)
            if not may_send():
                return Attempt(status_code=None, error="heartbeat lease lapsed while connecting; not sent",
                               timed_out=False, retry_after=None, excerpt=None, not_sent=True)
            lease_end = None if leased is None or leased.connected else leased.timeout.when()
            if lease_end is not None and lease_end < deadline:
                # the lease's end (not the job's timeout) came first, while connecting
                return Attempt(status_code=None, error="connecting took longer than the heartbeat lease surely lasts",
                               timed_out=False, retry_after=None, excerpt=None)
            return Attempt(status_code=None, error=f"timed out after {job.timeout_ms} ms", timed_out=True,
                           retry_after=None, excerpt=None)
        except OutboundDenied as e:
            return Attempt(status_code=None, error=str(e), timed_out=False, retry_after=None, excerpt=None)
        except aiohttp.ClientError as e:
            if isinstance(e.__cause__, OutboundDenied):
                return Attempt(status_code=None, error=str(e.__cause__), timed_out=False, retry_after=None, excerpt=None)
            return Attempt(status_code=None, error=f"{type(e).__name__}: {e}"[:500], timed_out=False,
                           retry_after=None, excerpt=None)
        except (OSError, ValueError) as e:
            return Attempt(status_code=None, error=f"{type(e).__name__}: {e}"[:500], timed_out=False,
                           retry_after=None, excerpt=None)

    async def post(self, uri: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0
                   ) -> tuple[int | None, str | None]:
        """One signed POST that is not a tick (an alert): (status, error). Under the same outbound policy,
        checked before the request and again per address after DNS (the shared connector)."""
        if self.session is None:
            raise RuntimeError("Firer.start() was not called")
        headers = {"Content-Type": "application/json", "User-Agent": "cronring", "X-Cron-Node": self.node_id,
                   **headers}
        if self.signing_secret:
            headers["X-Cron-Signature"] = sign(self.signing_secret, int(time.time()), body)
        try:
            url = self.check_target(uri)
            async with asyncio.timeout(timeout), self.session.post(url, data=body, headers=headers,
                                                                    allow_redirects=False) as resp:
                await resp.content.read(RESPONSE_EXCERPT_BYTES)
                return resp.status, None
        except TimeoutError:
            return None, f"timed out after {timeout:g} s"
        except OutboundDenied as e:
            return None, str(e)
        except aiohttp.ClientError as e:
            cause = e.__cause__ if isinstance(e.__cause__, OutboundDenied) else e
            return None, f"{type(cause).__name__}: {cause}"[:500]
        except (OSError, ValueError) as e:
            return None, f"{type(e).__name__}: {e}"[:500]

    async def fire(
        self, job: Job, *, execution_id: str, scheduled_at: datetime, fence: int,
        may_send: Callable[[], bool] = lambda: True, lease_left: Callable[[], float] | None = None,
        attempts_before: int = 0, due_at: datetime | None = None,
    ) -> Result:
        """Send one execution (with its retries). ``attempts_before``: attempts an earlier owner made
        of this same execution (a redelivery continues the count in ``X-Cron-Attempt``). ``due_at``: when it
        was due to leave, when not its instant (a jitter's offset): lateness is measured from it."""
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        lateness_ms = int((started - (due_at or scheduled_at)).total_seconds() * 1000)
        attempt_no = attempts_before
        retries_left = job.retries + 1
        last: Attempt | None = None
        ok = False
        while True:
            attempt_no += 1
            uri, headers, body = self._request_parts(
                job, execution_id=execution_id, scheduled_at=scheduled_at, fence=fence, attempt=attempt_no
            )
            last = await self._attempt(job, uri, headers, body, may_send=may_send, lease_left=lease_left)
            if last.not_sent:
                attempt_no -= 1  # nothing left this node
                break
            ok = last.status_code is not None and job.succeeded(last.status_code)
            if ok and last.body is not None:  # the response arrived: its body's assertions (never retried)
                why = await _check_body(job, last.body, last.truncated)
                if why is not None:
                    last = replace(last, error=why)
                    break
            denied = last.error is not None and "outbound policy" in last.error
            retryable = not ok and not denied and (last.status_code is None or last.status_code in RETRY_STATUSES)
            retries_left -= 1
            if ok or not retryable or retries_left <= 0:
                break
            await asyncio.sleep(backoff_delay(job, attempt_no, last.retry_after))
            if not may_send():
                break  # lost our heartbeat meanwhile: a later attempt could be stale
        duration_ms = int((time.perf_counter() - t0) * 1000)
        if ok and (slow := too_slow(job.max_duration_ms, duration_ms)) is not None:
            ok, last = False, replace(last, error=slow)
        if ok and last.error is not None:  # a body assertion failed
            ok = False
        if ok:
            state = ExecutionState.SUCCEEDED
        elif last.not_sent and attempt_no == attempts_before:
            state = ExecutionState.ABANDONED
        elif last.timed_out:
            state = ExecutionState.TIMED_OUT
        else:
            state = ExecutionState.FAILED
        error = last.error
        if error is None and not ok:
            error = f"unexpected status {last.status_code}"
        return Result(state=state, attempts=attempt_no, status_code=last.status_code, duration_ms=duration_ms,
                      lateness_ms=lateness_ms, error=error, excerpt=last.excerpt, started_at=started)
