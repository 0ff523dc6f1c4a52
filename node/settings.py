"""The one Settings object, built from environment variables and CLI flags at start.

Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from .cluster.redisconn import RedisURLError, check_url
from .model.audit import ACTOR_NAME
from .model.labels import LabelError, Selector, parse_selector
from .store.connection import DatabaseURL, DatabaseURLError


class SettingsError(ValueError):
    """A malformed setting; the node refuses to start."""


def _float(name: str, value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not v > 0:
        raise SettingsError(f"{name} must be positive, got {value!r}")
    return v


def _seconds(name: str, value: str) -> float:
    """A number of seconds, zero allowed."""
    try:
        v = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not 0 <= v <= 30:
        raise SettingsError(f"{name} must be between 0 and 30 seconds, got {value!r}")
    return v


def _int(name: str, value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from None
    if v < 0:
        raise SettingsError(f"{name} must not be negative, got {value!r}")
    return v


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


_TOKEN_NAME = ACTOR_NAME


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One configured bearer token: its name (the actor of the writes it makes) and its scope."""

    name: str
    scope: str  # read | admin
    selector: Selector | None = None  # it sees and changes only the jobs this matches


def _token_entries(value: str) -> list[str]:
    """The entries: separated by ``;`` or newlines when the value has either (then a selector may hold commas:
    ``billing=tok:admin:team=billing,env!=dev; ops=tok2:read``), else by commas outside parentheses (a selector
    of one requirement, or ``key in (a,b)``)."""
    if ";" in value or "\n" in value:
        return [p.strip() for p in value.replace("\n", ";").split(";") if p.strip()]
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in value:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth <= 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _tokens(name: str, value: str) -> dict[str, ApiToken]:
    """``name=token[:read|:admin[:selector]]`` or ``token[:read|:admin]`` (named ``token-<its place>``), comma-
    separated; admin when no scope is given. A token holding ``=`` must be written with a name."""
    out: dict[str, ApiToken] = {}
    names: set[str] = set()
    entries = _token_entries(value)
    if len(entries) > 1 and not (";" in value or "\n" in value) and any(e.count(":") >= 2 for e in entries):
        # a,b with a selector: "t=tok:admin:team=billing,env=prod" would read as a second token named env
        # (secret "prod"), an unscoped admin; never guess: ask for ';' between the entries
        raise SettingsError(f"{name}: a token limited to a selector must be separated from the others by ';' "
                            "(name=token:admin:team=billing,env!=dev; other=token2:read)")
    for position, part in enumerate(entries, start=1):
        label, eq, rest = part.partition("=")
        named = bool(eq) and bool(rest) and _TOKEN_NAME.fullmatch(label) is not None
        body = rest if named else part
        tok, _, scope = body.partition(":")
        scope, _, selector_text = scope.partition(":")
        scope = scope or "admin"
        selector = None
        if selector_text:
            if not named:
                raise SettingsError(f"{name}: a token limited to a selector needs a name (name=token:admin:selector)")
            try:
                selector = parse_selector(selector_text)
            except LabelError as e:
                raise SettingsError(f"{name}: token {label!r}: {e}") from None
        if scope not in ("read", "admin"):
            raise SettingsError(f"{name}: scope must be read or admin, got {scope!r}")
        if len(tok) < 8:
            raise SettingsError(f"{name}: tokens must be at least 8 characters")
        # unnamed: by its place in the list (a digest of the token, shown to readers, would test guesses offline)
        token_name = label if named else f"token-{position}"
        if token_name in names:
            raise SettingsError(f"{name}: two tokens are named {token_name!r}")
        if tok in out:
            raise SettingsError(f"{name}: the token named {token_name!r} is listed twice")
        names.add(token_name)
        out[tok] = ApiToken(token_name, scope, selector)
    return out


def _list(_name: str, value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _str(_name: str, value: str) -> str:
    return value


def _networks(name: str, value: str) -> tuple[str, ...]:
    """Addresses or CIDRs (``10.0.0.0/8,127.0.0.1``), checked now, kept as written."""
    out = _list(name, value)
    for n in out:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {n!r} is not an address or a CIDR") from None
    return out


# name -> (env var, parser, help). Field defaults live on the dataclass.
_ENV: dict[str, tuple[str, Callable[[str, str], object], str]] = {
    "redis_url": ("CRONRING_REDIS_URL", _str, "Redis URL: redis://, rediss://, or Sentinel: redis+sentinel://h1:26379,h2:26379/<service>/<db>"),
    "database_url": ("CRONRING_DATABASE_URL", _str, "MariaDB URL mysql://user:pass@host:port/db"),
    "node_id": ("CRONRING_NODE_ID", _str, "stable node id (default hostname:port)"),
    "host": ("CRONRING_HOST", _str, "address to listen on"),
    "port": ("CRONRING_PORT", _int, "port to listen on"),
    "advertise_url": ("CRONRING_ADVERTISE_URL", _str, "URL peers and the dashboard use for this node"),
    "namespace": ("CRONRING_NAMESPACE", _str, "prefix of every Redis key and channel"),
    "api_tokens": ("CRONRING_API_TOKENS", _tokens, "bearer tokens: name=token[:read|:admin],... (or token[:scope], named token-<n> by its place)"),
    "public_health": ("CRONRING_PUBLIC_HEALTH", _bool, "health and metrics readable without a token"),
    "signing_secret": ("CRONRING_SIGNING_SECRET", _str, "HMAC secret for X-Cron-Signature"),
    "heartbeat_interval": ("CRONRING_HEARTBEAT_INTERVAL", _float, "seconds between heartbeats"),
    "member_ttl": ("CRONRING_MEMBER_TTL", _float, "seconds after which a silent member is dead"),
    "resync_interval": ("CRONRING_RESYNC_INTERVAL", _float, "seconds between catalogue re-syncs from MariaDB"),
    "claim_ahead": ("CRONRING_CLAIM_AHEAD", _float, "seconds before a tick at which it is claimed"),
    "shutdown_grace": ("CRONRING_SHUTDOWN_GRACE", _float, "seconds in-flight requests get on shutdown"),
    "history_per_job": ("CRONRING_HISTORY_PER_JOB", _int, "executions kept per job"),
    "max_jobs": ("CRONRING_MAX_JOBS", _int, "jobs per cluster"),
    "max_body_bytes": ("CRONRING_MAX_BODY_BYTES", _int, "largest API request body"),
    "max_job_body_bytes": ("CRONRING_MAX_JOB_BODY_BYTES", _int, "largest job request body"),
    "max_apply_body_bytes": ("CRONRING_MAX_APPLY_BODY_BYTES", _int,
                             "largest body of a bulk apply (POST /api/crons/apply, up to 1,000 jobs)"),
    "max_headers": ("CRONRING_MAX_HEADERS", _int, "most headers in an API request"),
    "max_header_bytes": ("CRONRING_MAX_HEADER_BYTES", _int, "largest header line of an API request"),
    "run_now_per_minute": ("CRONRING_RUN_NOW_PER_MINUTE", _int, "run-now calls per job per minute"),
    "run_now_per_token_per_minute": ("CRONRING_RUN_NOW_PER_TOKEN_PER_MINUTE", _int,
                                     "run-now calls per API token per minute, across the cluster"),
    "trusted_proxies": ("CRONRING_TRUSTED_PROXIES", _networks,
                        "proxies (addresses or CIDRs) whose X-Forwarded-For names the client"),
    "stream_max_clients": ("CRONRING_STREAM_MAX_CLIENTS", _int, "live-stream clients per node (429 beyond)"),
    "search_budget": ("CRONRING_SEARCH_BUDGET", _seconds,
                      "seconds a search (?q=) reads before it answers with what it found and where to go on"),
    "stream_max_per_token": ("CRONRING_STREAM_MAX_PER_TOKEN", _int, "live-stream clients per token per node"),
    "forecasts_per_caller_per_minute": ("CRONRING_FORECASTS_PER_CALLER_PER_MINUTE", _int,
                                        "forecasts a node computes for one token, login or address in any 60 s "
                                        "(429 beyond; a kept one costs nothing)"),
    "http_pool_size": ("CRONRING_HTTP_POOL_SIZE", _int, "outbound connection pool size"),
    "outbound_allow": ("CRONRING_OUTBOUND_ALLOW", _list, "CIDRs/hosts always allowed as targets"),
    "outbound_deny": ("CRONRING_OUTBOUND_DENY", _list, "CIDRs/hosts denied as targets (besides link-local)"),
    "alert_url": ("CRONRING_ALERT_URL", _str, "where failure alerts are POSTed (a job's alertUri overrides it)"),
    "alert_format": ("CRONRING_ALERT_FORMAT", _str, "json, or slack ({\"text\": ...} for incoming webhooks)"),
    "audit_days": ("CRONRING_AUDIT_DAYS", _int, "days the audit log and alerts are kept"),
    "log_level": ("CRONRING_LOG_LEVEL", _str, "debug, info, warning, error"),
    "log_format": ("CRONRING_LOG_FORMAT", _str, "json, console or auto"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "mysql://root@127.0.0.1:3306/cronring"
    node_id: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    advertise_url: str = ""
    namespace: str = "cronring"
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)
    public_health: bool = True
    signing_secret: str = ""
    heartbeat_interval: float = 1.0
    member_ttl: float = 3.0
    resync_interval: float = 10.0
    claim_ahead: float = 0.5
    shutdown_grace: float = 10.0
    history_per_job: int = 200
    max_jobs: int = 200_000
    max_body_bytes: int = 256 * 1024
    max_job_body_bytes: int = 64 * 1024
    max_apply_body_bytes: int = 8 * 1024 * 1024
    max_headers: int = 100
    max_header_bytes: int = 8190
    run_now_per_minute: int = 30
    run_now_per_token_per_minute: int = 120
    trusted_proxies: tuple[str, ...] = ()
    stream_max_clients: int = 500
    search_budget: float = 0.1
    stream_max_per_token: int = 100
    forecasts_per_caller_per_minute: int = 6
    http_pool_size: int = 512
    outbound_allow: tuple[str, ...] = ()
    outbound_deny: tuple[str, ...] = ()
    alert_url: str = ""
    alert_format: str = "json"
    audit_days: int = 90
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def database(self) -> DatabaseURL:
        try:
            return DatabaseURL.parse(self.database_url)
        except DatabaseURLError as e:
            raise SettingsError(str(e)) from None

    @classmethod
    def load(cls, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (var, convert, _help) in _ENV.items():
            if var in env:
                values[name] = convert(var, env[var])
        cli = argparse.ArgumentParser(prog="cronring", description="a cronring node")
        for name, (var, _p, help_) in _ENV.items():
            cli.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{help_} (env {var})")
        args = cli.parse_args(argv or [])
        for name, (_var, p, _help) in _ENV.items():
            raw = getattr(args, name)
            if raw is not None:
                values[name] = p("--" + name.replace("_", "-"), raw)
        s = cls(**values)  # type: ignore[arg-type]  # each value converted by its field's parser
        return s.checked()

    def checked(self) -> Settings:
        self.database  # noqa: B018 - parses, raising SettingsError when malformed
        try:
            check_url(self.redis_url)
        except RedisURLError as e:
            raise SettingsError(f"CRONRING_REDIS_URL {e}") from None
        if not self.namespace or any(c in self.namespace for c in " {}*?"):
            raise SettingsError(f"CRONRING_NAMESPACE must be non-empty without spaces or glob characters: {self.namespace!r}")
        if self.member_ttl < 2 * self.heartbeat_interval:
            raise SettingsError("CRONRING_MEMBER_TTL must be at least twice CRONRING_HEARTBEAT_INTERVAL")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"CRONRING_LOG_LEVEL must be debug, info, warning or error: {self.log_level!r}")
        if self.log_format not in ("json", "console", "auto"):
            raise SettingsError(f"CRONRING_LOG_FORMAT must be json, console or auto: {self.log_format!r}")
        if self.alert_format not in ("json", "slack"):
            raise SettingsError(f"CRONRING_ALERT_FORMAT must be json or slack: {self.alert_format!r}")
        if self.alert_url and not self.alert_url.lower().startswith(("http://", "https://")):
            raise SettingsError("CRONRING_ALERT_URL must be an http:// or https:// URL")
        if self.audit_days < 1:
            raise SettingsError("CRONRING_AUDIT_DAYS must be at least 1")
        if not 0 < self.port < 65536:
            raise SettingsError(f"CRONRING_PORT out of range: {self.port}")
        changes: dict[str, object] = {}
        if not self.node_id:
            changes["node_id"] = f"{socket.gethostname()}:{self.port}"
        if not self.advertise_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 (a comparison)
            changes["advertise_url"] = f"http://{host}:{self.port}"
        if changes:
            values = {f.name: getattr(self, f.name) for f in fields(self)}
            values.update(changes)
            return Settings(**values)
        return self


def settings_table() -> list[tuple[str, str, str]]:
    """(env var, default, meaning) for every setting: the README's configuration table."""
    d = Settings()
    return [(var, repr(getattr(d, name)), help_) for name, (var, _p, help_) in _ENV.items()]
