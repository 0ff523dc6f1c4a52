"""`scripts/run` as a new user meets it: it says "running" only once every node answers /readyz, and
Ctrl-C stops everything it started, gracefully, with status 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import aiohttp
import pytest

from tests.harness import ROOT, Cluster, free_port, wait_for

pytestmark = [pytest.mark.slow]


async def test_run_waits_for_ready_nodes_and_ctrl_c_stops_everything() -> None:
    c = Cluster("runscript")  # its own database and namespace; the script's nodes use them
    base, receiver = free_port(2), free_port()  # --nodes 2 listen on base and base+1
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONRING_")}
    env.update({"CRONRING_REDIS_URL": c.redis_url, "CRONRING_DATABASE_URL": c.env_for("x", 1)["CRONRING_DATABASE_URL"],
                "CRONRING_NAMESPACE": c.namespace, "RECEIVER_PORT": str(receiver),
                "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"})
    # Ctrl-C as a terminal sends it: SIGINT at its default disposition (a test runner started in the
    # background inherits SIGINT ignored, and bash cannot trap a signal ignored on entry), in its own
    # process group so nothing it started can outlive a failure.
    proc = await asyncio.create_subprocess_exec("bash", str(ROOT / "scripts" / "run"), "--nodes", "2", "--base-port",
                                                str(base), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = b""
    try:
        async def running() -> bool:
            nonlocal out
            try:
                async with asyncio.timeout(0.5):
                    out += await proc.stdout.read(4096)
            except TimeoutError:
                pass
            assert proc.returncode is None, out.decode()
            return b"cronring is running" in out

        await wait_for(running, 180, "scripts/run to say it is running")
        # "running" means ready: every node already answers /readyz
        async with aiohttp.ClientSession() as s:
            for port in (base, base + 1):
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    assert r.status == 200, await r.text()
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        out += rest
        text = out.decode()
        assert proc.returncode == 0, text
        assert "stopping" in text and "stopped" in text, text
        for port in (base, base + 1, receiver):  # nothing it started is left listening
            with pytest.raises(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # on a failure: the script and every node it started
        if proc.returncode is None:
            await proc.wait()
        await c.close()

