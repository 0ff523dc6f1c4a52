"""python -m node: settings → logging → run the app (also the ``cronring`` console script)."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from .settings import Settings, SettingsError

CLIENT_GROUPS = ("jobs", "calendars", "cluster", "audit", "alerts", "forecast")


def _client_command(args: list[str]) -> bool:
    """The first word that is not a client option (``--url U``, ``--token T``) names a client group."""
    i = 0
    while i < len(args) and args[i].startswith(("--url", "--token")):
        i += 1 if "=" in args[i] else 2
    return i < len(args) and args[i] in CLIENT_GROUPS


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if _client_command(args):  # the client: cronring [--url U] [--token T] jobs|calendars|cluster ...
        from .cli import main as cli_main

        sys.exit(cli_main(args))
    if args in (["-h"], ["--help"], ["help"]):  # the commands; `cronring node --help` lists the settings
        from .cli import parser

        parser().print_help()
        sys.exit(0)
    if args and args[0] in ("node", "serve"):  # `cronring node`; no command at all starts a node too
        args = args[1:]
    try:
        settings = Settings.load(args)
    except SettingsError as e:
        print(f"cronring: configuration error: {e}", file=sys.stderr)
        sys.exit(2)
    from . import logs

    logs.configure(settings.log_level, settings.log_format)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(serve(settings))


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully.

    Not ``web.run_app``: it cleans up inside its main task *after cancelling it*, and aiohttp's request
    drain re-raises its timeout in a cancelled task, which skips the app's cleanup (the node's stop) and
    leaves every task to a blanket cancel. Here the cleanup runs in a task nobody cancelled, so the
    node's stop always runs, and a slow request only waits out ``shutdown_timeout``.
    """
    from .web.app import create_app

    app = create_app(settings)
    # shutdown_timeout: how long API requests in flight get at SIGTERM; the node's own stop
    # (node.app.Stop) runs beside them from the first moment.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
    finally:
        await runner.cleanup()

if __name__ == "__main__":
    main()
