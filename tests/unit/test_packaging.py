"""The installed distribution: one `cronring` package (node/ as its root, dashboard/ and receiver/
inside it), no generic top-level module, every file it needs at run time, importable on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the checkout's build/ and never removes a file from it: a module an earlier
    # layout had would ride along in the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    (built,) = out.glob("cronring-*.whl")
    return built


def test_wheel_claims_only_the_cronring_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cronring"}, tops
    for needed in ("cronring/__main__.py", "cronring/client.py", "cronring/web/app.py", "cronring/store/schema.py",
                   "cronring/model/executions.py", "cronring/dashboard/views.py",
                   "cronring/dashboard/templates/base.html", "cronring/dashboard/static/app.js",
                   "cronring/receiver/app.py"):
        assert needed in names, needed
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry = zipfile.ZipFile(wheel).read(meta).decode()
    assert "cronring = cronring.__main__:main" in entry and "cronring-receiver = cronring.receiver.__main__:main" in entry


def test_installed_package_imports_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    probe = ("import sys\n"
             f"sys.path.insert(0, {str(target)!r})\n"
             "import cronring, cronring.web.app, cronring.client, cronring.dashboard.views, cronring.receiver.app\n"
             "assert cronring.__file__.startswith(sys.path[0]), cronring.__file__\n"
             "assert not {'node', 'dashboard', 'receiver'} & set(sys.modules), sorted(sys.modules)\n"
             "from cronring.__main__ import main\n"
             "print(cronring.__version__)\n")
    # run from an empty folder, so the checkout's node/ cannot be found by accident
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __import__("node").__version__
