"""``cronring jobs ...`` and ``cronring cluster``: a small client for any node's API.

Talks to ``--url`` (env CRONRING_URL, default http://127.0.0.1:8081) with ``--token``
(env CRONRING_TOKEN). ``jobs apply -f jobs.yaml`` makes the cluster match a file:
jobs are matched by ``name`` (unique in the file); missing ones are created,
differing ones updated, equal ones left alone; ``--prune`` deletes named jobs the
file no longer has; ``--dry-run`` only prints the plan, ``--diff`` a field diff; ``--exit-code``
exits 2 when there are changes. Secrets are compared and printed masked, as the API shows them.
The changes go through the bulk apply route, a thousand jobs a request (``send_plan``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import quote

import yaml

from . import __version__
from .client import APPLY_BATCH, ApiError, Client
from .model.jobs import FIELDS, MASK, SENSITIVE_HEADER, masked_headers, masked_uri
from .model.labels import LabelError, parse_selector

DEFAULT_URL = "http://127.0.0.1:8081"
# What would make a terminal show something other than what is there: C0 and C1 controls (ESC, CSI) but
# newline and tab, DEL, bidi marks, overrides and isolates, line and paragraph separators.
# Also the invisible format characters (zero-width space, word joiners, the BOM, the Arabic letter mark).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\u2066-\u2069\u2028\u2029\ufeff]")


def printable(text: str) -> str:
    """``text`` with every character that could deceive a terminal written as its escape (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _print(*parts: object, **kw: Any) -> None:
    """Every line the CLI writes: names and errors come from the cluster and may hold anything."""
    print(*(printable(str(p)) for p in parts), **kw)


class CliError(Exception):
    pass


def _editable(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in FIELDS if k in job}


def _shown(field: str, value: Any) -> Any:
    """A field as the API shows it: secret header values and a target's credentials masked. The file
    is compared in this form (the API never returns secrets), and plans and diffs print it."""
    if field == "headers" and isinstance(value, dict):
        return masked_headers({str(k): str(v) for k, v in value.items()})
    if field in URI_FIELDS and isinstance(value, str):
        return masked_uri(value)
    return value


URI_FIELDS = ("uri", "alertUri")  # URLs whose credentials the API masks
SECRET_FIELDS = ("headers", *URI_FIELDS)


def has_secrets(want: dict[str, Any]) -> bool:
    return any(_shown(k, want[k]) != want[k] for k in SECRET_FIELDS if k in want)


def plan_apply(current: list[dict[str, Any]], wanted: list[dict[str, Any]], prune: bool, *,
               rotate_secrets: bool = False) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """[(action, existing, desired)] with action create|update|unchanged|delete. Secrets are compared
    in the API's masked form: a changed secret value is not seen unless ``rotate_secrets`` (then every
    job whose file entry carries secrets sends them again)."""
    names = [str(w.get("name") or "") for w in wanted]
    if any(not n for n in names):
        raise CliError("every job in the file needs a name (apply matches jobs by name)")
    dupes = {n for n, k in Counter(names).items() if k > 1}
    if dupes:
        raise CliError(f"names must be unique in the file: {sorted(dupes)}")
    by_name: dict[str, dict[str, Any]] = {}
    for j in current:
        if j.get("name"):
            by_name.setdefault(j["name"], j)
    plan: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for w in wanted:
        unknown = set(w) - set(FIELDS)
        if unknown:
            raise CliError(f"job {w['name']!r}: unknown fields {sorted(unknown)}")
        have = by_name.get(w["name"])
        if have is None:
            plan.append(("create", {}, w))
            continue
        cur = _editable(have)
        diff = {k: v for k, v in w.items() if cur.get(k) != _shown(k, v)}
        if rotate_secrets and has_secrets(w):
            diff.update({k: w[k] for k in SECRET_FIELDS if k in w})
        if diff.keys() & {"headers", "uri"}:
            # the target and its secrets travel together (a new origin needs its secrets again)
            diff.update({k: w[k] for k in ("headers", "uri") if k in w})
        plan.append(("update" if diff else "unchanged", have, diff))
    if prune:
        keep = set(names)
        plan += [("delete", j, {}) for j in current if j.get("name") and j["name"] not in keep]
    return plan


# libyaml's parser where PyYAML has it (a 10,000-job file: 1.5 s against 4.5 s), the same safe constructor
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_LOADER)  # noqa: S506 - a safe loader (SafeConstructor), C or Python
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise CliError(f"{path} is not valid YAML: {e}") from None


_UNREAD = object()


def load_file(path: str, env: Mapping[str, str] | None = None, allow: tuple[str, ...] = (), *,
              doc: Any = _UNREAD) -> list[dict[str, Any]]:
    """The file's jobs, placeholders expanded (``doc``: the file as read already)."""
    doc = read_yaml(path) if doc is _UNREAD else doc
    jobs = doc.get("jobs", []) if isinstance(doc, dict) else doc
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise CliError(f"{path}: expected a list of jobs (or a mapping with a 'jobs' list)")
    env = env if env is not None else os.environ
    return [_expand_job(j, env, allow, f"{path}: job {j.get('name')!r}") for j in jobs]


CALENDAR_FIELDS = ("timeZone", "description", "dates", "ranges", "weekdays")


def load_calendars(path: str, *, doc: Any = _UNREAD) -> list[dict[str, Any]] | None:
    """The file's ``calendars`` (None: the file has no such key, and apply leaves the cluster's alone)."""
    doc = read_yaml(path) if doc is _UNREAD else doc
    if not isinstance(doc, dict) or "calendars" not in doc:
        return None
    cals = doc["calendars"] or []
    if not isinstance(cals, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cals):
        raise CliError(f"{path}: calendars must be a list of mappings, each with a name")
    names = [c["name"] for c in cals]
    if len(set(names)) != len(names):
        raise CliError(f"{path}: calendar names must be unique")
    for c in cals:
        unknown = set(c) - {"name", *CALENDAR_FIELDS}
        if unknown:
            raise CliError(f"{path}: calendar {c['name']!r}: unknown fields {sorted(unknown)}")
    return cals


def _calendar_fields(c: dict[str, Any]) -> dict[str, Any]:
    """A calendar as apply compares it: every field, defaults filled in (the API's read form)."""
    return {"timeZone": c.get("timeZone", "UTC"), "description": c.get("description", ""),
            "dates": sorted(c.get("dates") or []), "ranges": list(c.get("ranges") or []),
            "weekdays": sorted(c.get("weekdays") or [])}


def plan_calendars(current: list[dict[str, Any]], wanted: list[dict[str, Any]], prune: bool
                   ) -> list[tuple[str, str, dict[str, Any]]]:
    """[(action, name, fields)]: create, update, unchanged or delete."""
    have = {c["name"]: c for c in current}
    out: list[tuple[str, str, dict[str, Any]]] = []
    for w in wanted:
        fields = _calendar_fields(w)
        cur = have.get(w["name"])
        if cur is None:
            out.append(("create", w["name"], fields))
        else:
            cur_fields = _calendar_fields(cur)
            cur_fields["ranges"] = [{"from": r["from"], "to": r["to"]} for r in cur_fields["ranges"]]
            norm = dict(fields, ranges=[{"from": _seconds(r.get("from")), "to": _seconds(r.get("to"))}
                                        for r in fields["ranges"]])
            out.append(("unchanged" if norm == cur_fields else "update", w["name"], fields))
    if prune:
        keep = {w["name"] for w in wanted}
        out += [("delete", n, {}) for n in sorted(have) if n not in keep]
    return out


def _seconds(v: Any) -> Any:
    """A local date-time as the API spells it back (to the second): 2026-12-24T18:00 is 2026-12-24T18:00:00."""
    if isinstance(v, str) and len(v) == 16 and v[10] == "T":
        return v + ":00"
    return v


_PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_VARS = "CRONRING_SECRET_"  # noqa: S105 - a prefix of names: what ``export`` writes, expanded unnamed
NEVER_EXPANDED = frozenset({"CRONRING_TOKEN"})  # the CLI's own credential, whatever --env says


def _expand_job(job: dict[str, Any], env: Mapping[str, str], allow: tuple[str, ...], where: str) -> dict[str, Any]:
    """``${VAR}`` placeholders, expanded from the environment, only where they are secrets: a placeholder
    stands for a secret (a file written by someone else must not pull ``$HOME``, a cloud key or the CLI's
    own token into a job), so it is expanded only when its name is one ``export`` writes
    (``CRONRING_SECRET_*``) or one given with ``--env``, never ``CRONRING_TOKEN``, and only where the API
    masks it: a credential-named header's value, the target's password or a credential-named query
    value. Anywhere else a placeholder is an error. ``$${VAR}`` is the text ``${VAR}``, anywhere."""
    out: dict[str, Any] = {}
    own = secret_var(str(job.get("name") or ""))  # a job's CRONRING_SECRET_* are its own: not another job's
    for field_, value in job.items():
        if field_ == "headers" and isinstance(value, dict):
            out[field_] = {k: (_expand(v, env, allow, own, f"{where}: header {k}") if SENSITIVE_HEADER.search(str(k))
                               else _literal(v, f"{where}: header {k} (not a credential header)"))
                           for k, v in value.items()}
        elif field_ in URI_FIELDS and isinstance(value, str):
            out[field_] = _expand_uri(value, env, allow, own, f"{where}: {field_}")
        else:
            out[field_] = _literal(value, f"{where}: {field_}")
    return out


def _expand(value: Any, env: Mapping[str, str], allow: tuple[str, ...], own: str, where: str,
            in_uri: bool = False) -> Any:
    if not isinstance(value, str):
        return _literal(value, where)

    def sub(m: re.Match[str]) -> str:
        escaped, name = m.group(1), m.group(2)
        if escaped:
            return "${" + name + "}"
        if name in NEVER_EXPANDED or not (name.startswith(SECRET_VARS) or name in allow):
            hint = "never expanded" if name in NEVER_EXPANDED else \
                f"not expanded: only {SECRET_VARS}* and names given with --env are"
            raise CliError(f"{where}: ${{{name}}} is {hint}")
        if name not in allow and not name.startswith(own):
            # a file from a PR must not send job A's secret to job B's target
            raise CliError(f"{where}: ${{{name}}} is another job's secret: this job expands only {own}* "
                           "(and names given with --env)")
        if name not in env:
            raise CliError(f"{where}: ${{{name}}} is not set in the environment")
        if in_uri and _URI_STRUCTURE.search(env[name]):
            # raw, it would move the URI's host or parameters, and the secret would show unmasked
            raise CliError(f"{where}: the value of ${{{name}}} holds one of / ? # @ & [ ] or a space: "
                           "percent-encode it (@ is %40)")
        return env[name]

    return _PLACEHOLDER.sub(sub, value)


_URI_STRUCTURE = re.compile(r"[/?#@&\[\]\s\\]")


def _expand_uri(uri: str, env: Mapping[str, str], allow: tuple[str, ...], own: str, where: str) -> str:
    """A placeholder in the target only as its password or a credential-named query value: where
    ``masked_uri`` hides it (held to that by masking the URI with a marker in each placeholder's place)."""
    marks: list[str] = []

    def mark(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)
        marks.append(f"cronringsecret{len(marks)}x")
        return marks[-1]

    marked = masked_uri(_PLACEHOLDER.sub(mark, uri))
    if any(m in marked for m in marks):
        raise CliError(f"{where}: a ${{VAR}} placeholder may stand only for the target's password or a "
                       "credential-named query value (where the API masks it); not in its host or path")
    return str(_expand(uri, env, allow, own, where, in_uri=True))


def _literal(value: Any, where: str) -> Any:
    """A value that must not hold a placeholder (``$${VAR}`` there is the text ``${VAR}``)."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            raise CliError(f"{where}: ${{{m.group(2)}}} is not expanded here: a placeholder stands for a secret, "
                           "and only a credential header's value, the target's password or a credential-named "
                           "query value are masked as secrets")

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [_literal(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v, where) for k, v in value.items()}
    return value


def secret_var(job: str, what: str = "") -> str:
    """The environment variable ``export`` names for a secret of ``job`` (``what``: the header or the uri
    part); without ``what``, the prefix every one of the job's secrets has."""
    base = "CRONRING_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", job).strip("_").upper() + "_"
    return base + re.sub(r"[^A-Za-z0-9]+", "_", what).strip("_").upper() if what else base


def _escape_placeholders(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, list):
        return [_escape_placeholders(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape_placeholders(v) for k, v in value.items()}
    return value


# Release 3's scheduling fields at their defaults are left out of an exported file (it stays as short as the jobs
# it describes, and reads the same to a release-2 cluster); apply reads a field left out as "as it is".
_DEFAULTS: dict[str, Any] = {"startAt": None, "endAt": None, "maxRuns": None, "jitterSeconds": 0,
                             "dstPolicy": {"gap": "shift", "overlap": "first"}, "excludeCalendars": [],
                             "pauseAfterFailures": 0, "alertUri": None, "labels": {}, "expectBody": None,
                             "expectJson": None, "maxDurationMs": None}


def _without_defaults(job: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in job.items() if k not in _DEFAULTS or _DEFAULTS[k] != v}
    if isinstance(out.get("schedules"), list) and len(out["schedules"]) <= 1:
        del out["schedules"]  # one expression: ``schedule`` says it
    return out


def export_jobs(jobs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The apply file of the named jobs, and the environment variables it needs: every masked secret
    becomes a ``${CRONRING_SECRET_<JOB>_<FIELD>}`` placeholder for ``apply`` to expand."""
    out, needed = [], []

    def var(job: str, what: str) -> str:
        name = secret_var(job, what)
        needed.append(name)
        return "${" + name + "}"

    for j in sorted((j for j in jobs if j.get("name")), key=lambda j: j["name"]):
        e = _escape_placeholders(_without_defaults(_editable(j)))  # a stored "${X}" is the text ${X}: written $${X}
        if isinstance(e.get("headers"), dict):
            e["headers"] = {k: (var(j["name"], k) if v == MASK else v) for k, v in e["headers"].items()}
        for key, what in (("uri", "uri"), ("alertUri", "alert_uri")):
            k = 0
            while isinstance(e.get(key), str) and MASK in e[key]:  # the password, then credential-named values
                k += 1
                e[key] = e[key].replace(MASK, var(j["name"], what if k == 1 else f"{what}_{k}"), 1)
        out.append(e)
    return {"jobs": out}, needed


def cmd_apply(c: Client, args: argparse.Namespace) -> int:
    selector = None
    if args.selector:
        try:
            selector = parse_selector(args.selector)
        except LabelError as e:
            raise CliError(f"--selector: {e}") from None
    # The cluster's jobs are listed while the file is read: both take seconds for 10,000 jobs (the node's pages, the
    # YAML), one waits on the node and the other on the CPU.
    with ThreadPoolExecutor(1, thread_name_prefix="list") as pool:
        listing = pool.submit(c.list_jobs, label=args.selector)
        try:
            doc = read_yaml(args.file)
            wanted = load_file(args.file, allow=tuple(args.env or ()), doc=doc)
            calendars = load_calendars(args.file, doc=doc)
        except BaseException:
            listing.cancel()
            raise
        current = listing.result()
    if selector is not None:
        outside = [w.get("name") for w in wanted if not selector.matches(w.get("labels") or {})]
        if outside:
            raise CliError(f"{args.file}: these jobs' labels do not match --selector {selector}: {outside} (a file "
                           "applied with a selector holds only the jobs it matches)")
    plan = plan_apply(cast(list[dict[str, Any]], current), wanted, args.prune, rotate_secrets=args.rotate_secrets)
    write = not (args.dry_run or args.diff)
    changes = 0
    # calendars are the cluster's, not one team's: with a selector, a file's calendars are put, never pruned
    cal_plan = plan_calendars(c.calendars(), calendars, args.prune and not args.selector) if calendars is not None else []
    # calendars first (a job may name a new one), their deletions last (after the jobs that named them)
    for action, cal_name, fields in [x for x in cal_plan if x[0] != "delete"]:
        if action == "unchanged":
            if not args.diff:
                _print(f"  unchanged  calendar {cal_name}")
            continue
        changes += 1
        _print(f"  {action:<9}  calendar {cal_name}" + (" " + json.dumps(fields, sort_keys=True) if args.diff else ""))
        if write:
            c.put_calendar(cal_name, fields)
    for action, have, want in plan:
        name = want.get("name") or have.get("name")
        if action == "unchanged":
            if not args.diff:
                _print(f"  unchanged  {name}")
            continue
        changes += 1
        shown = {k: _shown(k, v) for k, v in want.items()}
        if args.diff:
            _print(f"{action} {name}")
            before = _editable(have)
            for k in sorted(shown) if action != "delete" else []:
                if action == "update":
                    _print(f"  {k}: {json.dumps(before.get(k), sort_keys=True)} -> {json.dumps(shown[k], sort_keys=True)}")
                else:
                    _print(f"  {k}: {json.dumps(shown[k], sort_keys=True)}")
        else:
            detail = " " + json.dumps(shown, sort_keys=True) if action == "update" else ""
            _print(f"  {action:<9}  {name}{detail}")
    if write and not send_plan(c, plan):
        return 1
    for _, cal_name, _ in [x for x in cal_plan if x[0] == "delete"]:
        changes += 1
        _print(f"  delete     calendar {cal_name}")
        if write:
            c.delete_calendar(cal_name)
    _print(f"{changes} change(s){'' if write else ' (dry run: nothing changed)'}")
    return 2 if args.exit_code and changes else 0


def send_plan(c: Client, plan: list[tuple[str, dict[str, Any], dict[str, Any]]], *, batch: int = APPLY_BATCH,
              tty: bool | None = None) -> bool:
    """Send a plan's creates and updates through the bulk apply route, ``batch`` jobs a request (each all or
    nothing; an older node gets one request per job), then its deletes through bulk delete by ids. A progress
    bar on a terminal (standard error), a line per step otherwise. False when the node refused something:
    what it refused, and how far the apply got, are printed."""
    sent = [(k, want if action == "create" else {"id": have["id"], **want})
            for k, (action, have, want) in enumerate(plan) if action in ("create", "update")]
    doomed = [(k, have) for k, (action, have, _) in enumerate(plan) if action == "delete"]
    show = Progress(len(sent) + len(doomed), sys.stderr.isatty() if tty is None else tty, every=batch)
    if sent:
        try:
            done = c.apply_jobs([job for _, job in sent], batch=batch,
                                progress=lambda n, of: show.update(n, last=n == of))
        except ApiError as e:
            show.end()
            _refusal(e, plan, sent)
            return False
        # (not the plan's words: a script counts "create" and "unchanged" lines)
        show.line(f"sent {len(sent)} job(s) in {done['batches'] or len(done['jobs'])} request(s): {done['created']} "
                  f"new, {done['updated']} changed, {done['unchanged']} already so")
    failed = _delete_all(c, doomed, show, len(sent)) if doomed else []
    show.end()
    for k, error in failed:
        _print(f"  job #{k + 1} {plan[k][1].get('name')}: not deleted: {error}", file=sys.stderr)
    return not failed


def _refusal(e: ApiError, plan: list[tuple[str, dict[str, Any], dict[str, Any]]], sent: list[tuple[int, Any]]
             ) -> None:
    """A refused batch (or job): each job it named (its place in the plan, which is its place in the file) and why,
    and how far the apply got before it."""
    _print(f"cronring: refused ({e.status or 'no answer'}): {e.message}", file=sys.stderr)
    for item in e.details if isinstance(e.details, list) else []:
        if isinstance(item, dict) and isinstance(item.get("index"), int) and 0 <= item["index"] < len(sent):
            k = sent[item["index"]][0]
            name = plan[k][2].get("name") or plan[k][1].get("name")
            fields = item.get("fields")
            why = "; ".join(f"{f}: {reason}" for f, reason in fields.items()) if isinstance(fields, dict) else ""
            _print(f"  job #{k + 1} {name}: {item.get('error')}" + (f": {why}" if why else ""), file=sys.stderr)
    applied = e.applied or {}
    done = len(applied.get("jobs") or [])
    # (one request per job on an older node: no batches, only jobs)
    how = f", in {applied['batches']} batch(es)" if applied.get("batches") else ""
    _print(f"cronring: {done} of {len(sent)} job(s) applied before it{how}; the rest was not sent", file=sys.stderr)


def _delete_all(c: Client, doomed: list[tuple[int, dict[str, Any]]], show: Progress, base: int
                ) -> list[tuple[int, str]]:
    """Delete (bulk delete by ids, a thousand a request; an older node: one request each); the ones that failed."""
    failed: list[tuple[int, str]] = []
    bulk, done = True, 0
    for start in range(0, len(doomed), APPLY_BATCH):
        part = doomed[start:start + APPLY_BATCH]
        if bulk:
            try:
                res = c.bulk("delete", ids=[have["id"] for _, have in part])
            except ApiError as e:
                if e.status not in (404, 405):
                    raise
                bulk = False  # an older node: no bulk routes
            else:
                outcome = {j["id"]: j for j in res["jobs"]}
                failed += [(k, str(outcome[have["id"]].get("error"))) for k, have in part
                           if have["id"] in outcome and not outcome[have["id"]].get("ok")]
                done += len(part)
                show.update(base + done, last=True)
                continue
        for k, have in part:
            try:
                c.delete_job(have["id"])
            except ApiError as e:
                if e.status != 404:  # gone already: deleted
                    failed.append((k, e.message))
            done += 1
            show.update(base + done)
    show.line(f"pruned {len(doomed) - len(failed)} job(s)")
    return failed


class Progress:
    """How far an apply is: a bar redrawn in place on a terminal (standard error), summary lines otherwise."""

    def __init__(self, total: int, tty: bool, every: int = APPLY_BATCH) -> None:
        self.total, self.tty, self.every = total, tty, every
        self.drawn = False
        self.shown = 0

    def update(self, done: int, *, last: bool = False) -> None:
        """``done`` of ``total`` jobs: the bar, or a line per ``every`` jobs (a batch) and at the ``last`` of a step."""
        if self.tty:
            print("\r" + progress_bar(done, self.total), end="", file=sys.stderr, flush=True)
            self.drawn = True
        elif last or done // self.every != self.shown // self.every or done == self.total:
            _print(f"  {done}/{self.total} job(s) done")
        self.shown = done

    def line(self, text: str) -> None:
        """A summary line (only without a bar: the bar says it)."""
        if not self.tty:
            _print(text)

    def end(self) -> None:
        if self.drawn:
            print(file=sys.stderr)
            self.drawn = False


def yaml_text(data: Any) -> str:
    """YAML for a terminal or a pipe that reads back as ``data``: with its characters as they are, unless
    one of them could deceive a terminal; then all of non-ASCII as YAML escapes (``printable()`` on
    YAML text would change what a later ``apply`` reads)."""
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if printable(text) != text:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
    return text


def _emit(data: Any, fmt: str, table: Any = None) -> None:
    """-o json | yaml | table (table: the command's own lines; json when it has none)."""
    if fmt == "yaml":
        print(yaml_text(data), end="")
    elif fmt == "json" or table is None:
        _print(json.dumps(data, indent=2))
    else:
        table(data)


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    _print(f"{'ID':<17} {'NAME':<24} {'SCHEDULE':<18} {'ZONE':<18} {'STATE':<8} {'OWNER':<16} NEXT RUN")
    for j in jobs:
        _print(f"{j['id']:<17} {(j.get('name') or '')[:24]:<24} {j['schedule'][:18]:<18} {j['timeZone'][:18]:<18} "
              f"{j.get('state', ''):<8} {(j.get('owner') or '-')[:16]:<16} {j.get('nextRunAt') or '-'}")


def _print_ticks(led: dict[str, Any]) -> None:
    for t in led["ticks"]:
        _print(f"{t['scheduledAt']}  {t['fate']:<11} {t['detail']}")
    _print("  ".join(f"{k} {v}" for k, v in led["counts"].items() if v) or "no scheduled instants")
    if led["truncated"]:
        _print(f"(more: --from {led['nextFrom']})")


def _print_cluster(view: dict[str, Any]) -> None:
    _print(f"epoch {view['epoch']} · {len(view['members'])} member(s) · asked {view['nodeId']}")
    for m in view["members"]:
        _print(f"  {m['id']:<24} {m.get('url') or '':<28} owned {m.get('owned')!s:<6} heartbeat {m['heartbeatAgeMs']} ms ago")
    b = view.get("backends")
    if b:  # where the asked node's Redis and MariaDB are (an older node does not say)
        redis, db = b["redis"], b["database"]
        _print("Redis: " + (f"through Sentinel, service {redis.get('service')}" if redis["mode"] == "sentinel" else "one server"))
        _print("MariaDB: " + (f"one server ({', '.join(db['hosts'])})" if db["mode"] == "single" else
                             f"writes to {db['primary'] or 'no host yet'} of {', '.join(db['hosts'])}; "
                             f"moved {db['switches']} time(s)"))


def _print_history(rows: list[dict[str, Any]]) -> None:
    for e in rows:
        _print(f"{e.get('scheduledAt')}  {e.get('state', ''):<10} {e.get('kind', ''):<8} {e.get('statusCode') or '-'!s:<4} "
              f"{e.get('node') or '-':<16} {e.get('error') or ''}")


def _print_preview(p: dict[str, Any]) -> None:
    _print(f"{', '.join(p.get('schedules') or [p.get('schedule')])} ({p.get('timeZone')})")
    if p.get("resolved"):
        _print(f"  H resolved: {', '.join(p['resolved'])}")
    for f in p.get("fires", []):
        notes = [f"sent {f['sendAt']}"] if f.get("sendAt") else []
        notes += [x for x in (f.get("excluded"), f.get("dst")) if x]
        _print(f"  {f['utc']}  {f['local']}" + (f"  ({'; '.join(notes)})" if notes else ""))
    for t in p.get("transitions", []):
        _print(f"  DST {t['kind']} at {t['at']} ({t['from']} -> {t['to']}): {t['policy']}")


def _print_audit(rows: list[dict[str, Any]]) -> None:
    _print(f"{'ID':>7}  {'AT':24}  {'ACTOR':16} {'VIA':9} {'ACTION':15} {'JOB':17} {'VERSIONS':9} CHANGES")
    for r in rows:
        versions = f"{r['fromVersion'] or '-'}->{r['toVersion']}" if r.get("toVersion") else ""
        what = ", ".join(r.get("changes") or {}) or (r.get("subject") or "")
        if r.get("note"):
            what = f"{what} ({r['note']})" if what else r["note"]
        _print(f"{r['id']:>7}  {r['at']:24}  {r['actor'][:16]:16} {r['via']:9} {r['action']:15} {(r['jobId'] or ''):17} "
               f"{versions:9} {what}")


SPARKS = " ▁▂▃▄▅▆▇█"


def sparkline(counts: list[int], width: int = 72) -> str:
    """Counts as a line of block characters (each the peak of its share of the slots), scaled to the peak."""
    if not counts:
        return ""
    per = max(1, -(-len(counts) // width))
    peaks = [max(counts[k:k + per]) for k in range(0, len(counts), per)]
    top = max(peaks) or 1
    return "".join(SPARKS[0 if n == 0 else max(1, -(-n * (len(SPARKS) - 1) // top))] for n in peaks)


def _print_forecast(f: dict[str, Any]) -> None:
    _print(f"{f['total']:,} requests from {f['jobs']:,} jobs, {f['from']} to {f['to']}, by {f['step']} s;"
           f" the busiest slot {f['peak']:,} ({f['peak'] / f['mean']:.1f}x the mean)" if f["mean"] else
           f"nothing scheduled from {f['from']} to {f['to']}")
    _print(f"|{sparkline(f['counts'])}|")
    for b in f["busiest"]:
        _print(f"  {b['at']:24}  {b['fires']:>9,}  " + "; ".join(
            f"{g['schedule']} ({g['timeZone']}) x{g['jobs']:,}" for g in b["groups"]))
    for g in f["uncounted"]:
        _print(f"  not counted (too many instants to walk): {g['schedule']} ({g['timeZone']}) x{g['jobs']:,}")
    if f.get("uncountedJobs"):
        _print(f"  {f['uncountedJobs']:,} job(s) not counted in all")


def _print_alerts(rows: list[dict[str, Any]]) -> None:
    _print(f"{'AT':24}  {'TYPE':17} {'JOB':17} {'STATE':9} DETAIL")
    for a in rows:
        _print(f"{a['at']:24}  {a['type']:17} {(a['jobId'] or a.get('node') or ''):17} {a['state']:9} {a.get('error') or ''}")


def _print_versions(rows: list[dict[str, Any]]) -> None:
    _print(f"{'VERSION':>7}  {'FROM':24}  {'ACTION':12} {'BY':16} CHANGES")
    for v in rows:
        ch = v.get("change") or {}
        _print(f"{v['version']:>7}  {v['at']:24}  {ch.get('action', ''):12} {ch.get('actor', ''):16} "
               + ", ".join(ch.get("changes") or {}))


def _print_diff(diff: dict[str, list[Any]]) -> None:
    if not diff:
        _print("the two versions are the same")
    for k, (a, b) in diff.items():
        _print(f"{k}: {json.dumps(a)} -> {json.dumps(b)}")


def _print_calendars(cals: list[dict[str, Any]]) -> None:
    _print(f"{'NAME':<24} {'ZONE':<20} {'DATES':>5} {'RANGES':>6} WEEKDAYS  VERSION")
    for c in cals:
        _print(f"{c['name']:<24} {c['timeZone']:<20} {len(c['dates']):>5} {len(c['ranges']):>6} "
               f"{','.join(map(str, c['weekdays'])) or '-':<9} {c['version']}")


def _body(raw: str) -> Any:
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as fh:
                raw = fh.read()
        except OSError as e:
            raise CliError(f"cannot read {raw[1:]}: {e}") from None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise CliError(f"not valid JSON: {e}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cronring", description="cronring: run a node, or talk to any node's API")
    p.add_argument("--url", default=os.environ.get("CRONRING_URL", DEFAULT_URL), help="any node (env CRONRING_URL)")
    p.add_argument("--token", default=os.environ.get("CRONRING_TOKEN"), help="API token (env CRONRING_TOKEN)")
    sub = p.add_subparsers(dest="group", required=True, metavar="{node,jobs,calendars,cluster,audit,alerts}")
    sub.add_parser("node", help="start a node (settings from CRONRING_* variables or --flags; same as python -m node)",
                   add_help=False)
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    jobs = sub.add_parser("jobs", help="list, inspect, change and apply jobs").add_subparsers(dest="cmd", required=True)
    ls = jobs.add_parser("list", parents=[out], help="every job")
    ls.add_argument("-q", "--query", help="only jobs whose name, id, schedule or target contain this text (the "
                    "API's ?q=, as the dashboard's search)")
    ls.add_argument("--json", action="store_true", help="same as -o json")
    ls.add_argument("-l", "--selector", help="only jobs whose labels match (kubectl syntax: team=billing,env!=dev)")
    ls.add_argument("--state", choices=("active", "paused", "failing"),
                    help="failing: the last scheduled run failed (with the streak and since when)")
    for name, what in (("get", "one job"), ("history", "its recent executions")):
        jobs.add_parser(name, parents=[out], help=what).add_argument("id")
    pv = jobs.add_parser("preview", parents=[out], help="its next fire times (DST notes, send times with a jitter)")
    pv.add_argument("id")
    pv.add_argument("--count", type=int, help="how many (1-100, default 10)")
    pv.add_argument("--excluded", action="store_true", help="list the instants a calendar or a bound excludes too")
    bf = jobs.add_parser("backfill", help="send every instant of a range again (idempotent), with a progress bar")
    bf.add_argument("id")
    bf.add_argument("--from", dest="start", required=True, help="RFC 3339")
    bf.add_argument("--to", dest="end", required=True, help="RFC 3339 (not in the future)")
    bf.add_argument("--policy", choices=("forbid", "allow"), help="one instant at a time (forbid, default) or side by side")
    bf.add_argument("--max-per-second", type=int, help="at most this many instants a second (default 10)")
    bf.add_argument("--no-wait", action="store_true", help="start it and print its id; do not follow it")
    sk = jobs.add_parser("skip", help="skip the next N due instants, or every instant up to a time")
    sk.add_argument("id")
    how = sk.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", type=int, help="the next N due instants (0: cancel the skip)")
    how.add_argument("--until", help="every instant up to this RFC 3339 instant")
    how.add_argument("--cancel", action="store_true", help="no skip")
    bulk = argparse.ArgumentParser(add_help=False)
    bulk.add_argument("id", nargs="?", help="one job (or -l for every job a selector matches)")
    bulk.add_argument("-l", "--selector", help="every job whose labels match (kubectl syntax), each audited")
    bulk.add_argument("--dry-run", action="store_true", help="with -l: list the jobs, change nothing")
    for name, what in (("delete", "delete a job"), ("run", "run now")):
        jobs.add_parser(name, parents=[bulk], help=what)
    pa = jobs.add_parser("pause", parents=[bulk], help="pause, with why and until when")
    pa.add_argument("--note", help="why (shown on the job, kept in the audit log)")
    pa.add_argument("--until", help="RFC 3339: the pause ends by itself then")
    re_ = jobs.add_parser("resume", parents=[bulk], help="resume")
    re_.add_argument("--note", help="why")
    vs = jobs.add_parser("versions", parents=[out], help="its versions: who changed what, when, how")
    vs.add_argument("id")
    vs.add_argument("--diff", nargs=2, type=int, metavar=("A", "B"), help="the fields that differ between two versions")
    rs = jobs.add_parser("restore", help="a new version equal to an earlier one")
    rs.add_argument("id")
    rs.add_argument("version", type=int)
    tk = jobs.add_parser("ticks", parents=[out], help="why did or didn't it run: every scheduled instant and its fate")
    tk.add_argument("id")
    tk.add_argument("--from", dest="start", help="RFC 3339 (default: an hour before --to)")
    tk.add_argument("--to", dest="end", help="RFC 3339 (default: now)")
    tk.add_argument("--json", action="store_true", help="same as -o json")
    cr = jobs.add_parser("create", help="create a job from JSON")
    cr.add_argument("json", help="the job as JSON, or @file.json")
    up = jobs.add_parser("update", help="change some fields of a job (JSON)")
    up.add_argument("id")
    up.add_argument("json", help="the fields as JSON, or @file.json")
    ex = jobs.add_parser("export", help="the named jobs as an apply file; secrets as ${ENV} placeholders")
    ex.add_argument("-f", "--file", help="write here (default: standard output)")
    ap = jobs.add_parser("apply", help="make the cluster match a file (jobs matched by name)")
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("--prune", action="store_true", help="delete named jobs the file no longer has")
    ap.add_argument("-l", "--selector", help="only the jobs whose labels match (the diff and --prune leave the others "
                                                "alone; every job in the file must match): one team's file")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    ap.add_argument("--diff", action="store_true", help="print a field-by-field diff (secrets masked), change nothing")
    ap.add_argument("--exit-code", action="store_true", help="exit 2 when there are changes (drift checks in CI)")
    ap.add_argument("--env", action="append", metavar="NAME",
                    help="also expand ${NAME} (as a secret: only where the API masks it); CRONRING_SECRET_* always are")
    ap.add_argument("--rotate-secrets", action="store_true",
                    help="send the file's secrets again (secret values cannot be compared: the API masks them)")
    sub.add_parser("cluster", parents=[out], help="members, epoch, owned jobs, where Redis and MariaDB are")
    fc = sub.add_parser("forecast", parents=[out],
                        help="requests the schedules will send, slot by slot, and the busiest slots (thundering herds)")
    fc.add_argument("--from", dest="start", help="RFC 3339 (default: now)")
    fc.add_argument("--to", dest="end", help="RFC 3339 (default: 24 hours after --from; at most 7 days)")
    fc.add_argument("--step", type=int, help="seconds a slot (default 60)")
    au = sub.add_parser("audit", parents=[out], help="the audit log: who changed what, when, how (newest first)")
    au.add_argument("--job", help="one job's rows")
    au.add_argument("--actor", help="one token's rows (its name; cronring: what it did by itself)")
    au.add_argument("--action", help="create, update, delete, pause, resume, run, restore, auto-pause, ...")
    au.add_argument("--limit", type=int, default=50)
    au.add_argument("--before", help="an older page: a row's id, or an RFC 3339 instant")
    al = sub.add_parser("alerts", parents=[out], help="alerts raised, and whether they were sent")
    al.add_argument("--job", help="one job's alerts")
    al.add_argument("--type", help="job.failing, job.recovered, job.paused, ticks.missed, ...")
    al.add_argument("--limit", type=int, default=50)
    cal = sub.add_parser("calendars", help="exclusion calendars").add_subparsers(dest="cmd", required=True)
    cal.add_parser("list", parents=[out], help="every calendar")
    cal.add_parser("get", parents=[out], help="one calendar").add_argument("name")
    cp = cal.add_parser("put", help="create or replace a calendar from YAML or JSON")
    cp.add_argument("name")
    cp.add_argument("-f", "--file", required=True, help="{timeZone, dates, ranges, weekdays, description}")
    cal.add_parser("delete", help="delete a calendar (refused while a job names it)").add_argument("name")
    return p


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """``[#####.....]  50%  500/1000``"""
    frac = 1.0 if total == 0 else min(1.0, done / total)
    fill = int(round(frac * width))
    return f"[{'#' * fill}{'.' * (width - fill)}] {frac:4.0%}  {done}/{total}"


def cmd_backfill(c: Client, args: argparse.Namespace, *, poll: float = 1.0) -> int:
    b = c.backfill(args.id, args.start, args.end, policy=args.policy, max_per_second=args.max_per_second)
    _print(f"backfill {b['id']}: {b['ticks']} instant(s) of job {args.id}")
    if args.no_wait:
        return 0
    tty = sys.stdout.isatty()
    last = ""
    while True:
        b = c.get_backfill(args.id, b["id"])
        line = (f"{progress_bar(b['sent'] + b['alreadyDone'], b['total'])}  sent {b['sent']}, already done "
                f"{b['alreadyDone']}, failed {b['failed']}  {b['state']}")
        if tty:
            print("\r" + printable(line), end="", flush=True)
        elif line != last:
            _print(line)
        last = line
        if b["state"] in ("done", "cancelled"):
            break
        time.sleep(poll)
    if tty:
        print()
    if b.get("error"):
        _print(f"note: {b['error']}")
    return 0 if b["state"] == "done" and not b["failed"] else 1


def cmd_calendars(c: Client, args: argparse.Namespace, fmt: str) -> int:
    if args.cmd == "list":
        _emit(c.calendars(), fmt, _print_calendars)
    elif args.cmd == "get":
        _emit(c.get_calendar(args.name), fmt)
    elif args.cmd == "put":
        spec = read_yaml(args.file)  # (JSON is YAML)
        if not isinstance(spec, dict):
            raise CliError(f"{args.file}: expected a mapping {{timeZone, dates, ranges, weekdays}}")
        cal = c.put_calendar(args.name, {k: v for k, v in spec.items() if k != "name"})
        _print(f"calendar {cal['name']} at version {cal['version']}")
    elif args.cmd == "delete":
        c.delete_calendar(args.name)
        _print(f"deleted calendar {args.name}")
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    fmt = "json" if getattr(args, "json", False) else getattr(args, "output", "table")
    try:
        c = Client(args.url, args.token, client=f"cli/{__version__}")  # node.client: the one a program would use
        if args.group == "cluster":
            _emit(c.call("GET", "/api/cluster"), fmt, _print_cluster)
        elif args.group == "forecast":
            _emit(c.forecast(args.start, args.end, args.step), fmt, _print_forecast)
        elif args.group == "audit":
            _emit(c.audit(job_id=args.job, actor=args.actor, action=args.action, limit=args.limit, before=args.before),
                  fmt, _print_audit)
        elif args.group == "alerts":
            _emit(c.alerts(job_id=args.job, type_=args.type, limit=args.limit), fmt, _print_alerts)
        elif args.group == "calendars":
            return cmd_calendars(c, args, fmt)
        elif args.cmd in ("pause", "resume", "run", "delete") and (args.selector is not None) == (args.id is not None):
            raise CliError(f"jobs {args.cmd}: give a job id or -l SELECTOR (not both)")
        elif args.cmd in ("pause", "resume", "run", "delete") and args.selector is not None:
            note = getattr(args, "note", None)
            if getattr(args, "until", None):
                raise CliError("--until is for one job's pause")
            res = c.bulk(args.cmd, selector=args.selector, dry_run=args.dry_run, note=note)
            for j in res["jobs"]:
                state = "would " + args.cmd if res["dryRun"] else ("ok" if j.get("ok") else f"failed: {j.get('error')}")
                _print(f"  {j['id']}  {j.get('name') or '':30}  {state}")
            _print(f"{res['matched']} job(s) match {res['selector']}" + (" (dry run: nothing changed)" if res["dryRun"] else ""))
            return 0 if all(j.get("ok", True) for j in res["jobs"]) else 1
        elif args.cmd == "list":
            # (the server's search, followed through its steps: a million jobs are never downloaded to filter)
            _emit(c.list_jobs(q=args.query, state=args.state, label=args.selector), fmt, _print_jobs)
        elif args.cmd == "get":
            _emit(c.call("GET", f"/api/crons/{args.id}"), fmt)
        elif args.cmd == "history":
            _emit(c.call("GET", f"/api/crons/{args.id}/executions"), fmt, _print_history)
        elif args.cmd == "preview":
            _emit(c.preview(args.id, args.count, args.excluded), fmt, _print_preview)
        elif args.cmd == "backfill":
            return cmd_backfill(c, args)
        elif args.cmd == "skip":
            j = c.skip(args.id, None if args.until else (0 if args.cancel else args.count), args.until)
            _print(f"{j['id']} skips every instant up to {j['skipUntil']}" if j.get("skipUntil") else f"{j['id']}: no skip")
        elif args.cmd == "ticks":
            query = "&".join(f"{k}={quote(v)}" for k, v in (("from", args.start), ("to", args.end)) if v)
            _emit(c.call("GET", f"/api/crons/{args.id}/ticks" + (f"?{query}" if query else "")), fmt, _print_ticks)
        elif args.cmd == "create":
            _print(json.dumps(c.call("POST", "/api/crons", _body(args.json)), indent=2))
        elif args.cmd == "update":
            _print(json.dumps(c.call("PATCH", f"/api/crons/{args.id}", _body(args.json)), indent=2))
        elif args.cmd == "delete":
            c.delete_job(args.id)
            _print(f"deleted {args.id}")
        elif args.cmd == "run":
            _print(json.dumps(c.call("POST", f"/api/crons/{args.id}/run")))
        elif args.cmd == "pause":
            j = c.pause(args.id, args.note, args.until)
            _print(f"{j['id']} paused" + (f" until {j['pausedUntil']}" if j.get("pausedUntil") else "")
                   + (f": {j['pausedReason']}" if j.get("pausedReason") else ""))
        elif args.cmd == "resume":
            j = c.resume(args.id, args.note)
            _print(f"{j['id']} {'paused' if j['paused'] else 'active'}")
        elif args.cmd == "versions":
            if args.diff:
                a, b = (c.version(args.id, v)["job"] for v in args.diff)
                _emit({k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
                       if a.get(k) != b.get(k) and k not in ("version", "updatedAt", "createdAt", "owner")},
                      fmt, _print_diff)
            else:
                _emit(c.versions(args.id), fmt, _print_versions)
        elif args.cmd == "restore":
            j = c.restore(args.id, args.version)
            _print(f"{j['id']} restored version {args.version} as version {j['version']}")
        elif args.cmd == "export":
            doc, needed = export_jobs(cast(list[dict[str, Any]], c.list_jobs()))
            cals = c.calendars()
            if cals:
                doc["calendars"] = [{"name": x["name"], **{k: x[k] for k in CALENDAR_FIELDS if x.get(k)}}
                                    for x in cals]
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) if args.file else yaml_text(doc)
            if needed:
                text = "# secrets: set " + ", ".join(needed) + " before apply\n" + text
            if args.file:
                with open(args.file, "w", encoding="utf-8") as fh:
                    fh.write(text)
                _print(f"{len(doc['jobs'])} job(s) written to {args.file}" + (f"; set {len(needed)} secret(s)" if needed else ""))
            else:
                print(text, end="")  # (yaml_text: safe for a terminal, and reads back as it was)
        elif args.cmd == "apply":
            return cmd_apply(c, args)
    except (CliError, ApiError) as e:
        _print(f"cronring: {e}", file=sys.stderr)
        return 1
    return 0
