"""A disposable PostgreSQL cluster started from the local binaries, for tests and the demo.

    with ThrowawayPostgres() as pg:
        migrate(pg.dsn)
        pg.restart()          # the same port and data: clients must reconnect

The cluster lives in a temporary folder and is thrown away on exit. Its settings trade
durability for speed (no fsync), which is right for data nobody keeps.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]

# No fsync: only an OS crash could lose data, and fsync dominates test time. Not
# synchronous_commit=off: with it an immediate stop (a server crash, as restart() does)
# loses the last commits, and the tests prove that committed jobs survive a crash.
# Without fsync a commit costs only a write to the OS cache anyway.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
}

BINDIR_ENV = "PGQ_PG_BINDIR"


class PostgresBinariesNotFound(RuntimeError):
    """No initdb/pg_ctl on this machine."""


class ThrowawayPostgresError(RuntimeError):
    """initdb or pg_ctl failed; the message carries their output."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``.

    Tried in order: $PGQ_PG_BINDIR, ``pg_config --bindir``, ``initdb`` on PATH, and as a
    last resort Debian's ``/usr/lib/postgresql/<version>/bin``, highest version first.
    """
    candidates: list[Path] = []
    if env := os.environ.get(BINDIR_ENV):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: [int(x) for x in p.name.split(".")], reverse=True)
        candidates.extend(p / "bin" for p in versions)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresBinariesNotFound(
        "no PostgreSQL server binaries (initdb, pg_ctl) found via $PGQ_PG_BINDIR, "
        "pg_config, PATH or /usr/lib/postgresql/*/bin; install the PostgreSQL server "
        "(Debian/Ubuntu: apt-get install postgresql)"
    )


def _free_port() -> int:
    # The port may be taken between here and the server's bind; start() retries then.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _traversable_by_others(path: Path) -> bool:
    """Whether another OS user can reach files under ``path`` (every parent has o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in [path, *path.parents])


class ThrowawayPostgres:
    """A fresh PostgreSQL cluster in a temporary folder; a context manager.

    PostgreSQL refuses to run as root, so under root the cluster is owned by and run as
    ``run_as`` (default ``postgres``) through ``runuser``.
    """

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        run_as: str = "postgres",
    ) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.port = 0
        self.running = False
        self._user = run_as if os.geteuid() == 0 else None
        if self._user is not None:
            try:
                pwd.getpwnam(self._user)
            except KeyError:
                raise ThrowawayPostgresError(
                    f"PostgreSQL will not run as root and there is no OS user {self._user!r} "
                    "to run it as; create one (useradd --system postgres) or run as non-root"
                ) from None
        self._base: Path | None = None

    # -- where things are ------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise ThrowawayPostgresError("the cluster was not created yet (use it as `with`)")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def user(self) -> str:
        return "postgres"

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database as superuser ``postgres`` (trust auth)."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.create()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        """Make the temporary folder and run initdb in it."""
        parent = Path(tempfile.gettempdir())
        if self._user is not None and not _traversable_by_others(parent):
            parent = Path("/tmp")  # the unprivileged user must reach the folder
        self._base = Path(tempfile.mkdtemp(prefix="pgq-pg-", dir=parent))
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self._base, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", self.user,
                "-E", "UTF8",
                "--no-locale",  # the host's locales vary; C keeps sorting the same everywhere
                "--no-sync",
            ]
        )  # fmt: skip
        settings = {
            **self.settings,
            "listen_addresses": f"'{self.host}'",
            # The socket in our own folder: the system's /var/run/postgresql may be taken
            # or not writable, and the socket path must stay under ~100 bytes.
            "unix_socket_directories": f"'{self.base_dir}'",
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# pgqueue throwaway cluster\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        """Start the server; the first start picks a free port, later starts reuse it."""
        if self.running:
            return
        attempts = 1 if self.port else 5
        for attempt in range(attempts):
            if attempts > 1:
                self.port = _free_port()
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file),
                             "-o", f"-p {self.port}")  # fmt: skip
            except ThrowawayPostgresError:
                if attempt == attempts - 1:
                    raise
                continue
            self.running = True
            return

    def stop(self, *, mode: StopMode = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash as far as clients can tell."""
        if not self.running:
            return
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        self.running = False

    def restart(self, *, mode: StopMode = "immediate") -> None:
        """Stop and start again on the same port; every client connection is cut."""
        self.stop(mode=mode)
        self.start()

    def close(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            if self.running:
                self.stop(mode="immediate")
        finally:
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None

    # -- running the binaries ---------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _run(self, argv: Sequence[str]) -> None:
        command = list(argv)
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.base_dir,  # the unprivileged user may not be able to read our cwd
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            log = ""
            if self.log_file.is_file():
                log = "\n--- server log (tail) ---\n" + "\n".join(
                    self.log_file.read_text(errors="replace").splitlines()[-20:]
                )
            raise ThrowawayPostgresError(
                f"{' '.join(command)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}{log}"
            )
