"""Serving the dashboard with uvicorn: in the foreground (``pgqueue web``) or, for tests
and scripts, in a background thread on a port the operating system picks."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from pgqueue_py.client.queue import Queue
from pgqueue_py.web.app import WebConfig, check_binding, create_app

if TYPE_CHECKING:
    from typing_extensions import Self


def serve(dsn: str, config: WebConfig, *, port: int = 8080) -> None:
    """Serve the dashboard until interrupted; BindingRefused before anything starts
    when the address is not loopback and no credentials were given."""
    check_binding(config)
    with Queue(dsn, min_connections=1, max_connections=4) as queue:
        uvicorn.run(create_app(queue, config), host=config.host, port=port, log_level="info")


class BackgroundServer:
    """The dashboard served from a thread on ``config.host`` and a free port.

    ``with BackgroundServer(queue, config) as server: ... server.url`` starts it, waits
    until it accepts requests, and stops it on exit.
    """

    def __init__(self, queue: Queue, config: WebConfig, *, start_timeout: float = 15.0) -> None:
        check_binding(config)
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((config.host, 0))
        self.port: int = self._socket.getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.url = f"http://{host}:{self.port}"
        uv_config = uvicorn.Config(
            create_app(queue, config), log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]},
            name="pgqueue-web", daemon=True,
        )  # fmt: skip
        self._start_timeout = start_timeout

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
