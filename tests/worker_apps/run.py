"""Run a worker in this process: ``python -m tests.worker_apps.run module:attr --dsn DSN``.

``module:attr`` names a mapping of job types to handlers. The worker logs to stderr and
handles SIGTERM/SIGINT as ``Worker.run`` does in the main thread; the exit status is 0
after a clean stop.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from pgqueue_py import Handler, JobType
from pgqueue_py.client import Queue
from pgqueue_py.worker import Worker


def load(spec: str) -> Mapping[JobType[Any], Handler[Any]]:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"expected module:attr, got {spec!r}")
    handlers = getattr(importlib.import_module(module_name), attr)
    return cast("Mapping[JobType[Any], Handler[Any]]", handlers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=None, help="seconds")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--no-listen", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    with Queue(args.dsn, max_connections=args.concurrency + 4) as queue:
        worker = Worker(
            queue,
            load(args.app),
            concurrency=args.concurrency,
            lease=timedelta(seconds=args.lease) if args.lease is not None else None,
            poll_interval=timedelta(seconds=args.poll),
            shutdown_timeout=timedelta(seconds=args.shutdown_timeout),
            worker_id=args.worker_id,
            listen=not args.no_listen,
        )
        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
