"""The layers of ``node/`` point one way. Every import of every module is read (``ast``), resolved to the module it
names, and held to the rules below; ``test_the_rules_catch_an_upward_import`` writes a small tree with one bad
arrow of each kind and checks that each is reported, so this test can fail.

From the bottom up::

    support      aio, batching, fastjson, logs, metrics, netloc (and the package's __init__)
    model        records, vocabularies, rules: imports nothing of ours but the model; no I/O at all
    store        MariaDB; cluster: the Redis side       (each: the model and support only, never each other)
    scheduling   the tick's story and its steps: the model, support, the cluster; the store only through its
                 Protocols (never an import of store/)
    web          the API, auth, presentation; ``web/app.py`` is the composition root: it may import anything
    dashboard    pages and the stream: the web's presentation, never its handlers (``web/api.py``)
    settings, cli, client, __main__: the entry points

Within ``store/`` the repositories (jobs, executions, history) use the connection layer, the codec and the model,
never each other. Pure modules (the model, planning, the ledger) import no I/O library.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness import ROOT

SUPPORT = {"aio", "batching", "fastjson", "logs", "metrics", "netloc", ""}
ENTRY = {"settings", "cli", "client", "__main__"}
LIBRARY = {"verify"}  # imported by targets' code (cronring.verify): it pulls in nothing of the node
PURE = ("model.", "scheduling.planning", "scheduling.ledger")
IO = {"aiohttp", "aiomysql", "asyncmy", "pymysql", "redis", "asyncio", "socket", "ssl", "structlog", "prometheus_client",
      "aiohttp_sse", "uvloop", "msgpack", "urllib.request", "subprocess"}
REPOSITORIES = {"store.jobs", "store.executions", "store.history"}

# layer -> the layers it may import (besides itself)
MAY = {
    "support": {"support"},
    "library": set(),
    "model": set(),
    "store": {"model", "support"},
    "cluster": {"model", "support"},
    "scheduling": {"model", "support", "cluster"},
    "web": {"model", "support", "cluster", "scheduling", "store", "entry"},
    "dashboard": {"model", "support", "cluster", "scheduling", "store", "web"},
    "entry": {"model", "support", "cluster", "store", "web", "entry"},
}


def layer(module: str) -> str:
    """'web.api' -> 'web'; '' (the package) and support modules -> 'support'."""
    head = module.split(".", 1)[0]
    if module in SUPPORT or head in SUPPORT:
        return "support"
    if head in ENTRY:
        return "entry"
    if head in LIBRARY:
        return "library"
    return head


def modules(root: Path) -> dict[str, Path]:
    """Module names under the package (``node/`` is '', ``node/web/api.py`` is 'web.api'; ``dashboard/`` is
    'dashboard', mounted inside the package as it is at run time)."""
    out: dict[str, Path] = {}
    for base, prefix in ((root / "node", ""), (root / "dashboard", "dashboard")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(([prefix] if prefix else []) + parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, ours?) for every import of a file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, a.name.split(".")[0] in ("node", "cronring")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target, ours = node.module or "", (node.module or "").split(".")[0] in ("node", "cronring")
            else:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target, ours = ".".join(base + ([node.module] if node.module else [])), True
            # each name may be a module of its own (from ..store import jobs), else an attribute: resolved later
            out += [(node.lineno, ".".join(filter(None, [target, a.name])), ours) for a in node.names]
    return out


def violations(root: Path) -> list[str]:
    found = []
    known = modules(root)
    for module, path in sorted(known.items()):
        here = layer(module)
        for line, target, ours in imports(module, path):
            where = f"{path.relative_to(root)}:{line}"
            if not ours:
                pure = module.startswith(PURE) or module in PURE
                if pure and (target.split(".")[0] in IO or target in IO):
                    found.append(f"{where}: pure module {module} imports {target} (I/O)")
                continue
            if target.startswith(("node.", "cronring.")):
                target = target.split(".", 1)[1]
            while target and target not in known:
                target = target.rpartition(".")[0]  # an attribute of a module (or of the package): the module
            there = layer(target)
            if module == "web.app" or there == here and here != "store":
                continue
            if here == "store" and there == "store":
                a, b = ".".join(module.split(".")[:2]), ".".join(target.split(".")[:2])
                if a in REPOSITORIES and b in REPOSITORIES and a != b:
                    found.append(f"{where}: repository {a} imports repository {b}")
                continue
            if here == "dashboard" and target in ("web.api", "web.app"):
                found.append(f"{where}: dashboard module {module} imports {target} (a handler or the root; use "
                             "web.presentation)")
                continue
            if there not in MAY.get(here, set()):
                found.append(f"{where}: {here} module {module} imports {target} ({there}): an arrow that points up")
    return found


def test_the_layers_point_one_way() -> None:
    assert violations(ROOT) == []


def test_every_module_is_in_a_known_layer() -> None:
    assert {layer(m) for m in modules(ROOT)} <= set(MAY), sorted({layer(m) for m in modules(ROOT)} - set(MAY))


BAD_TREE = {
    "node/__init__.py": "",
    "node/aio.py": "",
    "node/model/__init__.py": "",
    "node/model/jobs.py": "import asyncio\nfrom ..store import jobs\n",  # I/O in the model; the model on the store
    "node/store/__init__.py": "",
    "node/store/connection.py": "",
    "node/store/jobs.py": "from .executions import claim\nfrom ..cluster import ring\n",  # repo on repo; store on cluster
    "node/store/executions.py": "from .connection import Database\n",
    "node/cluster/__init__.py": "",
    "node/cluster/ring.py": "from ..scheduling.scheduler import Scheduler\n",  # the cluster on scheduling
    "node/scheduling/__init__.py": "",
    "node/scheduling/scheduler.py": "from ..store.executions import Executions\nfrom ..model import jobs\n",
    "node/scheduling/planning.py": "import aiomysql\n",
    "node/web/__init__.py": "",
    "node/web/api.py": "from ..scheduling import scheduler\n",
    "node/web/presentation.py": "",
    "node/web/app.py": "from .. import dashboard\nfrom ..store import jobs\n",  # the root may
    "dashboard/__init__.py": "",
    "dashboard/views.py": "from ..web.api import enrich\nfrom ..web import presentation\n",
}


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    for name, text in BAD_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    expected = [
        "dashboard/views.py:1: dashboard module dashboard.views imports web.api",
        "node/cluster/ring.py:1: cluster module cluster.ring imports scheduling.scheduler",
        "node/model/jobs.py:1: pure module model.jobs imports asyncio",
        "node/model/jobs.py:2: model module model.jobs imports store.jobs",
        "node/scheduling/planning.py:1: pure module scheduling.planning imports aiomysql",
        "node/scheduling/scheduler.py:1: scheduling module scheduling.scheduler imports store.executions",
        "node/store/jobs.py:1: repository store.jobs imports repository store.executions",
        "node/store/jobs.py:2: store module store.jobs imports cluster.ring",
    ]
    for e in expected:
        assert any(f.startswith(e) for f in found), (e, found)
    assert len(found) == len(expected), found  # and nothing else (the root and the presentation are allowed)
