"""python -m receiver --host --port --log-file (env RECEIVER_HOST, RECEIVER_PORT, RECEIVER_LOG_FILE)."""

from __future__ import annotations

import argparse
import os
import sys

from aiohttp import web


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="cronring-receiver", description="cronring webhook receiver")
    p.add_argument("--host", default=os.environ.get("RECEIVER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("RECEIVER_PORT", "3002")))
    p.add_argument("--log-file", default=os.environ.get("RECEIVER_LOG_FILE", "logs/cron-notifications.log"))
    p.add_argument("--signing-secret", default=os.environ.get("RECEIVER_SIGNING_SECRET", ""),
                   help="one secret, or two separated by a comma during rotation")
    p.add_argument("--token", default=os.environ.get("RECEIVER_TOKEN", ""),
                   help="required by POST /reset (without it, /reset is allowed from this machine only)")
    args = p.parse_args(argv)
    from .app import create_app

    try:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    secrets = tuple(s for s in args.signing_secret.split(",") if s)
    print(f"receiver listening on http://{args.host}:{args.port}/webhook, logging to {args.log_file}", file=sys.stderr)
    web.run_app(create_app(log_file=args.log_file, secrets=secrets, token=args.token), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
