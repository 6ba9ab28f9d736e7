"""A real PgBouncer in transaction mode in front of the test server, for the pooler tests.

    with PgBouncer(pg_server.dsn, folder) as bouncer:
        dsn = bouncer.dsn_for("mydb")    # through the pooler, to any database (wildcard)
        bouncer.restart()                # every client and server connection is cut

Debian's ``pgbouncer`` package runs here with trust auth, a wildcard database entry (so
the tests' per-test databases need no entry of their own) and a small pool, so that
client connections really share server connections and a statement prepared on one
server connection is missing on the next. PgBouncer refuses to run as root, so under
root it runs as ``postgres`` through ``runuser``, like the throwaway cluster.

Fixtures: ``pgbouncer`` (session) and ``pooler_dsn`` (the test's database through it).
Without PgBouncer the fixtures fail, saying what to install: they never skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue_py.testing import PgServer, dbname_of

BINARY_ENV = "PGQ_PGBOUNCER"
"""Path of the pgbouncer binary, when it is not on PATH nor in /usr/sbin."""

StopMode = Literal["immediate", "kill"]


class PgBouncerMissing(RuntimeError):
    """No pgbouncer binary on this machine."""


def find_pgbouncer(candidates: Sequence[str | None] | None = None) -> str:
    """The pgbouncer binary: $PGQ_PGBOUNCER, else on PATH, else Debian's /usr/sbin one."""
    if candidates is None:
        candidates = [os.environ.get(BINARY_ENV), shutil.which("pgbouncer"),
                      "/usr/sbin/pgbouncer"]  # fmt: skip
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PgBouncerMissing(
        "pgbouncer is not installed: the transaction-pooler tests run behind a real"
        f" PgBouncer (Debian/Ubuntu: apt-get install pgbouncer; or set ${BINARY_ENV})"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgBouncer:
    """One pgbouncer process in transaction pool mode; a context manager."""

    def __init__(
        self,
        server_dsn: str,
        folder: Path,
        *,
        pool_size: int = 2,
        run_as: str = "postgres",
    ) -> None:
        self.binary = find_pgbouncer()
        self.folder = folder
        self.pool_size = pool_size
        server = conninfo_to_dict(server_dsn)
        self.user = str(server.get("user") or "postgres")
        self._server = server
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._as = run_as if os.geteuid() == 0 else None

    # -- where things are ------------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.folder / "pgbouncer.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pgbouncer.pid"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def dsn_for(self, dbname: str) -> str:
        """A DSN for ``dbname`` through the pooler."""
        return make_conninfo(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname,
                             connect_timeout=5)  # fmt: skip

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.is_file():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop(mode="kill")
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(mode="kill")

    def start(self) -> None:
        """Start pgbouncer and wait until it accepts connections; the first start picks a
        free port, later ones reuse it."""
        if self.running:
            return
        attempts = 1 if self.port else 5
        for attempt in range(attempts):
            if attempts > 1:
                self.port = _free_port()
            self._write_config()
            self.pid_file.unlink(missing_ok=True)
            command = [self.binary, str(self.folder / "pgbouncer.ini")]
            if self._as is not None:
                command = ["runuser", "-u", self._as, "--", *command]
            self._proc = subprocess.Popen(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(timeout=20):
                return
            self.stop(mode="kill")
            if attempt == attempts - 1:
                raise RuntimeError(f"pgbouncer did not start on port {self.port}:\n"
                                   f"{self.log_tail()}")  # fmt: skip

    def stop(self, *, mode: StopMode = "immediate") -> None:
        """Stop pgbouncer: ``immediate`` (SIGTERM) closes every connection at once,
        ``kill`` (SIGKILL) is a crash. Either way clients see their connections cut."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            sig = signal.SIGKILL if mode == "kill" else signal.SIGTERM
            pid = self._bouncer_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            else:
                proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # runuser may return before pgbouncer is gone; the next start needs its port.
        self._wait_port_free(timeout=10)

    def restart(self, *, mode: StopMode = "immediate") -> None:
        """Stop and start again on the same port; every connection through it is cut."""
        self.stop(mode=mode)
        self.start()

    # -- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = [f"host={self._server.get('host') or '127.0.0.1'}",
                  f"port={self._server.get('port') or 5432}"]  # fmt: skip
        if password := self._server.get("password"):
            target.append(f"password={password}")
        config = f"""\
[databases]
* = {" ".join(target)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder / "userlist.txt"}
admin_users = {self.user}
pool_mode = transaction
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
logfile = {self.log_file}
pidfile = {self.pid_file}
"""
        (self.folder / "pgbouncer.ini").write_text(config, encoding="utf-8")
        (self.folder / "userlist.txt").write_text(f'"{self.user}" ""\n', encoding="utf-8")
        if self._as is not None:
            entry = pwd.getpwnam(self._as)
            for path in [self.folder, *self.folder.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _bouncer_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False  # it exited: a taken port, a bad config (see the log)
            try:
                # The admin console answers without a server connection.
                with psycopg.connect(self.dsn_for("pgbouncer"), autocommit=True):
                    return True
            except psycopg.OperationalError:
                pause.wait(0.02)
        return False

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            pause.wait(0.02)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode) in front of the test server, for the whole session."""
    try:
        bouncer = PgBouncer(pg_server.dsn, Path(tempfile.mkdtemp(prefix="pgq-bouncer-",
                                                                 dir="/tmp")))  # fmt: skip
    except PgBouncerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        with bouncer:
            yield bouncer
    finally:
        shutil.rmtree(bouncer.folder, ignore_errors=True)


@pytest.fixture
def pooler_dsn(pgbouncer: PgBouncer, dsn: str) -> str:
    """The test's fresh migrated database, through PgBouncer."""
    pgbouncer.start()  # an earlier test may have stopped it and failed
    return pgbouncer.dsn_for(dbname_of(dsn))
