"""``cronring jobs ...`` and ``cronring cluster``: a small client for any node's API.

Talks to ``--url`` (env CRONRING_URL, default http://127.0.0.1:8081) with ``--token``
(env CRONRING_TOKEN). ``jobs apply -f jobs.yaml`` makes the cluster match a file:
jobs are matched by ``name`` (unique in the file); missing ones are created,
differing ones updated, equal ones left alone; ``--prune`` deletes named jobs the
file no longer has; ``--dry-run`` only prints the plan, ``--diff`` a field diff; ``--exit-code``
exits 2 when there are changes. Secrets are compared and printed masked, as the API shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import yaml

from node.jobs import FIELDS, masked_headers, masked_uri

DEFAULT_URL = "http://127.0.0.1:8081"


class CliError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read() or b"{}")
            except ValueError:
                err = {}
            detail = err.get("details")
            raise CliError(f"{method} {path}: {e.code} {err.get('error', e.reason)}" + (f" {json.dumps(detail)}" if detail else "")) from None
        except urllib.error.URLError as e:
            raise CliError(f"cannot reach {self.url}: {e.reason}") from None
        return json.loads(raw) if raw else None

    def all_jobs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = ""
        while True:
            req = urllib.request.Request(f"{self.url}/api/crons?limit=500{cursor}")
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    out += json.loads(resp.read())
                    nxt = resp.headers.get("X-Next-Cursor")
            except urllib.error.URLError as e:
                raise CliError(f"cannot list jobs: {e}") from None
            if not nxt:
                return out
            cursor = f"&cursor={nxt}"


def _editable(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in FIELDS if k in job}


def _shown(field: str, value: Any) -> Any:
    """A field as the API shows it: secret header values and a target's credentials masked. The file
    is compared in this form (the API never returns secrets), and plans and diffs print it."""
    if field == "headers" and isinstance(value, dict):
        return masked_headers({str(k): str(v) for k, v in value.items()})
    if field == "uri" and isinstance(value, str):
        return masked_uri(value)
    return value


def has_secrets(want: dict[str, Any]) -> bool:
    return any(_shown(k, want[k]) != want[k] for k in ("headers", "uri") if k in want)


def plan_apply(current: list[dict[str, Any]], wanted: list[dict[str, Any]], prune: bool, *,
               rotate_secrets: bool = False) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """[(action, existing, desired)] with action create|update|unchanged|delete. Secrets are compared
    in the API's masked form: a changed secret value is not seen unless ``rotate_secrets`` (then every
    job whose file entry carries secrets sends them again)."""
    names = [w.get("name") for w in wanted]
    if any(not n for n in names):
        raise CliError("every job in the file needs a name (apply matches jobs by name)")
    dupes = {n for n in names if names.count(n) > 1}
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
            diff.update({k: w[k] for k in ("headers", "uri") if k in w})
        if diff.keys() & {"headers", "uri"}:
            # the target and its secrets travel together (a new origin needs its secrets again)
            diff.update({k: w[k] for k in ("headers", "uri") if k in w})
        plan.append(("update" if diff else "unchanged", have, diff))
    if prune:
        keep = set(names)
        plan += [("delete", j, {}) for j in current if j.get("name") and j["name"] not in keep]
    return plan


def load_file(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise CliError(f"{path} is not valid YAML: {e}") from None
    jobs = doc.get("jobs") if isinstance(doc, dict) else doc
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise CliError(f"{path}: expected a list of jobs (or a mapping with a 'jobs' list)")
    return jobs


def cmd_apply(c: Client, args: argparse.Namespace) -> int:
    plan = plan_apply(c.all_jobs(), load_file(args.file), args.prune, rotate_secrets=args.rotate_secrets)
    write = not (args.dry_run or args.diff)
    changes = 0
    for action, have, want in plan:
        name = want.get("name") or have.get("name")
        if action == "unchanged":
            if not args.diff:
                print(f"  unchanged  {name}")
            continue
        changes += 1
        shown = {k: _shown(k, v) for k, v in want.items()}
        if args.diff:
            print(f"{action} {name}")
            before = _editable(have)
            for k in sorted(shown) if action != "delete" else []:
                if action == "update":
                    print(f"  {k}: {json.dumps(before.get(k), sort_keys=True)} -> {json.dumps(shown[k], sort_keys=True)}")
                else:
                    print(f"  {k}: {json.dumps(shown[k], sort_keys=True)}")
        else:
            detail = " " + json.dumps(shown, sort_keys=True) if action == "update" else ""
            print(f"  {action:<9}  {name}{detail}")
        if not write:
            continue
        if action == "create":
            c.call("POST", "/api/crons", want)
        elif action == "update":
            c.call("PUT", f"/api/crons/{have['id']}", want)
        elif action == "delete":
            c.call("DELETE", f"/api/crons/{have['id']}")
    print(f"{changes} change(s){'' if write else ' (dry run: nothing changed)'}")
    return 2 if args.exit_code and changes else 0


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    print(f"{'ID':<17} {'NAME':<24} {'SCHEDULE':<18} {'ZONE':<18} {'STATE':<8} {'OWNER':<16} NEXT RUN")
    for j in jobs:
        print(f"{j['id']:<17} {(j.get('name') or '')[:24]:<24} {j['schedule'][:18]:<18} {j['timeZone'][:18]:<18} "
              f"{j.get('state', ''):<8} {(j.get('owner') or '-')[:16]:<16} {j.get('nextRunAt') or '-'}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cronring", description="cronring command-line client")
    p.add_argument("--url", default=os.environ.get("CRONRING_URL", DEFAULT_URL), help="any node (env CRONRING_URL)")
    p.add_argument("--token", default=os.environ.get("CRONRING_TOKEN"), help="API token (env CRONRING_TOKEN)")
    sub = p.add_subparsers(dest="group", required=True)
    jobs = sub.add_parser("jobs").add_subparsers(dest="cmd", required=True)
    ls = jobs.add_parser("list")
    ls.add_argument("-q", "--query")
    ls.add_argument("--json", action="store_true")
    for name in ("get", "delete", "run", "pause", "resume"):
        jobs.add_parser(name).add_argument("id")
    tk = jobs.add_parser("ticks", help="why did or didn't it run: every scheduled instant and its fate")
    tk.add_argument("id")
    tk.add_argument("--from", dest="start", help="RFC 3339 (default: an hour before --to)")
    tk.add_argument("--to", dest="end", help="RFC 3339 (default: now)")
    tk.add_argument("--json", action="store_true")
    cr = jobs.add_parser("create")
    cr.add_argument("json", help="the job as JSON, or @file.json")
    ap = jobs.add_parser("apply")
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("--prune", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    ap.add_argument("--diff", action="store_true", help="print a field-by-field diff (secrets masked), change nothing")
    ap.add_argument("--exit-code", action="store_true", help="exit 2 when there are changes (drift checks in CI)")
    ap.add_argument("--rotate-secrets", action="store_true",
                    help="send the file's secrets again (secret values cannot be compared: the API masks them)")
    sub.add_parser("cluster")
    args = p.parse_args(argv)
    c = Client(args.url, args.token)
    try:
        if args.group == "cluster":
            view = c.call("GET", "/api/cluster")
            print(f"epoch {view['epoch']} · {len(view['members'])} member(s) · asked {view['nodeId']}")
            for m in view["members"]:
                print(f"  {m['id']:<24} {m.get('url') or '':<28} owned {m.get('owned')!s:<6} heartbeat {m['heartbeatAgeMs']} ms ago")
            return 0
        if args.cmd == "list":
            found = c.all_jobs()
            if args.query:
                found = [j for j in found if args.query.lower() in json.dumps(j).lower()]
            if args.json:
                print(json.dumps(found, indent=2))
            else:
                _print_jobs(found)
        elif args.cmd == "get":
            print(json.dumps(c.call("GET", f"/api/crons/{args.id}"), indent=2))
        elif args.cmd == "ticks":
            query = "&".join(f"{k}={quote(v)}" for k, v in (("from", args.start), ("to", args.end)) if v)
            led = c.call("GET", f"/api/crons/{args.id}/ticks" + (f"?{query}" if query else ""))
            if args.json:
                print(json.dumps(led, indent=2))
            else:
                for t in led["ticks"]:
                    print(f"{t['scheduledAt']}  {t['fate']:<11} {t['detail']}")
                print("  ".join(f"{k} {v}" for k, v in led["counts"].items() if v) or "no scheduled instants")
                if led["truncated"]:
                    print(f"(more: --from {led['nextFrom']})")
        elif args.cmd == "create":
            raw = args.json
            if raw.startswith("@"):
                with open(raw[1:], encoding="utf-8") as fh:
                    raw = fh.read()
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise CliError(f"not valid JSON: {e}") from None
            print(json.dumps(c.call("POST", "/api/crons", body), indent=2))
        elif args.cmd == "delete":
            c.call("DELETE", f"/api/crons/{args.id}")
            print(f"deleted {args.id}")
        elif args.cmd == "run":
            print(json.dumps(c.call("POST", f"/api/crons/{args.id}/run")))
        elif args.cmd in ("pause", "resume"):
            j = c.call("POST", f"/api/crons/{args.id}/{args.cmd}")
            print(f"{j['id']} {'paused' if j['paused'] else 'active'}")
        elif args.cmd == "apply":
            return cmd_apply(c, args)
    except CliError as e:
        print(f"cronring: {e}", file=sys.stderr)
        return 1
    return 0
