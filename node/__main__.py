"""python -m node: settings → logging → run the app (also the ``cronring`` console script)."""

from __future__ import annotations

import sys

from aiohttp import web

from node.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("jobs", "cluster") for a in args):  # the client: cronring [--url U] jobs|cluster ...
        from node.cli import main as cli_main

        sys.exit(cli_main(args))
    if args and args[0] == "serve":
        args = args[1:]
    try:
        settings = Settings.load(args)
    except SettingsError as e:
        print(f"cronring: configuration error: {e}", file=sys.stderr)
        sys.exit(2)
    from node import logs

    logs.configure(settings.log_level, settings.log_format)
    try:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    from node.app import create_app

    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None,
                shutdown_timeout=settings.shutdown_grace + 5, access_log=None)


if __name__ == "__main__":
    main()
