"""The ``pgqueue`` command line: migrate, run workers, enqueue, inspect and operate queues.

Every command reads the database from ``--dsn`` or ``DATABASE_URL``. Failures are one
line on stderr, ``pgqueue: error: <message>``; :data:`EXIT_CODES` is the one place that
says which exit code each kind of failure gets.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgqueue_py.cli import demo, logs
from pgqueue_py.cli.demo import DemoFailed
from pgqueue_py.cli.logs import LogFormat
from pgqueue_py.cli.progress import run_batches
from pgqueue_py.cli.tables import (
    attempt_text,
    dead_table,
    echo_json,
    job_text,
    schedules_table,
    stats_table,
)
from pgqueue_py.client.errors import ConfigurationError, JobNotFound, PgqError
from pgqueue_py.client.jobs import JobType
from pgqueue_py.client.queue import DSN_ENV, Queue
from pgqueue_py.migrate import MigrateError, migrate
from pgqueue_py.testing.throwaway import PostgresBinariesNotFound, ThrowawayPostgresError
from pgqueue_py.worker import Handler, Worker, WorkerThreadDied

if TYPE_CHECKING:
    from pgqueue_py.metrics import MetricsServer, WorkerMetrics

F = TypeVar("F", bound=Callable[..., Any])


EXIT_REFUSED = 1
"""The engine refused (unknown job, wrong state, bad argument...) or the database failed."""
EXIT_USAGE = 2
"""A bad option or argument, no DSN, a MODULE:ATTR that does not load."""
EXIT_INTERRUPTED = 130
"""A batched command (prune, retry --all-dead) stopped by Ctrl-C; its done batches stay."""

RETRY_BATCH = 5000
"""Dead jobs ``retry --all-dead`` requeues per transaction."""


class OneLineError(click.ClickException):
    """A failure shown as ``pgqueue: error: <message>``, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) or "unknown error")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"pgqueue: error: {self.format_message()}", err=True, file=file)


class Refused(OneLineError):
    """The engine refused or the database failed."""

    exit_code = EXIT_REFUSED


class Misconfigured(OneLineError):
    """No DSN, a MODULE:ATTR that does not load, no PostgreSQL for the demo..."""

    exit_code = EXIT_USAGE


# The one place that maps failures to exit codes: the first matching class wins. click's
# own usage errors (bad options and arguments) keep click's message and exit 2 too.
EXIT_CODES: tuple[tuple[type[BaseException], type[OneLineError]], ...] = (
    (ConfigurationError, Misconfigured),
    (PostgresBinariesNotFound, Misconfigured),
    (PgqError, Refused),
    (psycopg.Error, Refused),
    (MigrateError, Refused),
    (WorkerThreadDied, Refused),
    (ThrowawayPostgresError, Refused),
    (DemoFailed, Refused),
)


class PgqueueGroup(click.Group):
    """Runs a command and turns the failures in :data:`EXIT_CODES` into one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            for kind, error in EXIT_CODES:
                if isinstance(exc, kind):
                    raise error(str(exc)) from exc
            raise


@click.group(cls=PgqueueGroup)
def main() -> None:
    """pgqueue: a job queue engine that lives inside PostgreSQL.

    Every command takes --dsn (a libpq URL or key=value string), defaulting to
    $DATABASE_URL.

    \b
    Exit codes:
      0  success
      1  the engine refused (unknown job, wrong state, bad argument, ...) or the
         database failed; one line "pgqueue: error: <message>" on stderr
      2  usage or configuration error: bad option, no DSN, a MODULE:ATTR that
         does not load
      130  prune or retry --all-dead stopped by Ctrl-C; the batches done stay done
    """


def dsn_option(command: F) -> F:
    """The ``--dsn`` option every command takes."""
    return click.option(
        "--dsn",
        envvar=DSN_ENV,
        show_envvar=True,
        metavar="DSN",
        help="PostgreSQL connection string (URL or key=value).",
    )(command)


POOLER_ENV = "PGQUEUE_TRANSACTION_POOLER"
_POOLER_KEY = "pgqueue.transaction_pooler"


def pooler_option(command: F) -> F:
    """The ``--transaction-pooler`` option of the commands that talk to the queue; read
    with :func:`transaction_pooler`."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        ctx.meta[_POOLER_KEY] = value
        return value

    return click.option(
        "--transaction-pooler",
        is_flag=True,
        envvar=POOLER_ENV,
        show_envvar=True,
        expose_value=False,
        callback=remember,
        help="The DSN goes through a transaction-mode pooler (PgBouncer, Supavisor):"
        " no prepared statements, no LISTEN (workers poll).",
    )(command)


def transaction_pooler() -> bool:
    """Whether this command was given ``--transaction-pooler``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_POOLER_KEY, False))


def require_dsn(dsn: str | None) -> str:
    """The DSN, checked for shape; ConfigurationError when missing or unreadable."""
    if not dsn:
        raise ConfigurationError(f"no database given: pass --dsn or set {DSN_ENV}")
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid DSN: {exc}") from exc
    return dsn


@dataclass(frozen=True)
class Session:
    """One command's database: a ``Queue`` and the connection its calls use."""

    queue: Queue
    conn: psycopg.Connection[Any]


@contextmanager
def session(dsn: str | None) -> Iterator[Session]:
    """Connect once, failing fast when the database is unreachable (a pool would wait
    for its timeout), and hand that connection to every ``Queue`` call. Behind a
    transaction-mode pooler it prepares nothing."""
    resolved = require_dsn(dsn)
    pooler = transaction_pooler()
    with (
        psycopg.connect(resolved, autocommit=True, connect_timeout=10,
                        prepare_threshold=None if pooler else 5) as conn,
        Queue(resolved, min_connections=0, max_connections=1,
              transaction_pooler=pooler) as queue,
    ):  # fmt: skip
        yield Session(queue, conn)


# click.ParamType is generic since click 8.4; the project supports click 8.1 too.
class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration: ``30s``, ``15m``, ``2h``, ``7d``, ``500ms``, ``1h30m``; a bare number
    is seconds."""

    name = "duration"
    _UNITS: ClassVar[dict[str, float]] = {
        "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
    }  # fmt: skip
    _PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        try:
            return timedelta(seconds=float(text))
        except ValueError:
            pass
        if not text or self._PART.sub("", text):
            self.fail(f"{value!r} is not a duration (like 30s, 15m, 2h, 7d)", param, ctx)
        seconds = sum(float(n) * self._UNITS[unit] for n, unit in self._PART.findall(text))
        return timedelta(seconds=seconds)


DURATION = Duration()

PORT = click.IntRange(min=0, max=65535)
"""A TCP port; 0 lets the system choose a free one."""


# -- migrate -------------------------------------------------------------------------------


@main.command("migrate")
@dsn_option
@pooler_option
def migrate_command(dsn: str | None) -> None:
    """Apply pending migrations, then (re)create every pgq function."""
    result = migrate(require_dsn(dsn), transaction_pooler=transaction_pooler())
    if result.applied_migrations:
        click.echo("applied migrations: " + ", ".join(result.applied_migrations))
    else:
        click.echo("no pending migrations")
    click.echo(f"applied {result.functions_applied} function files")


# -- worker --------------------------------------------------------------------------------


@main.command("worker")
@click.argument("app", metavar="MODULE:ATTR")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Handlers at once: threads for plain ones, tasks for async.")  # fmt: skip
@click.option("--prefetch", type=click.IntRange(min=0), default=None,
              help="Most jobs claimed ahead of free slots [max(100, concurrency)].")  # fmt: skip
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Queue to claim from (repeatable); default: the job types' queues.")  # fmt: skip
@click.option("--lease", type=DURATION, default=None, metavar="SECONDS",
              help="Lease per claim, at least 1s; default: the queue's lease.")  # fmt: skip
@click.option("--no-listen", is_flag=True, help="Poll only; do not LISTEN for new jobs.")
@click.option("--worker-id", default=None, metavar="ID",
              help="Name recorded with each claim; default: host:pid:random.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)  # fmt: skip
@click.option("--metrics-port", type=PORT, default=None, metavar="PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)."
              " Needs pgqueue[metrics].")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="The address --metrics-port binds.")  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line on stderr.")  # fmt: skip
@dsn_option
@pooler_option
def worker_command(
    app: str,
    concurrency: int,
    prefetch: int | None,
    queues: tuple[str, ...],
    lease: timedelta | None,
    no_listen: bool,
    worker_id: str | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
    log_format: LogFormat,
    dsn: str | None,
) -> None:
    """Run the handlers in MODULE:ATTR until SIGTERM/SIGINT.

    ATTR is a mapping {JobType: handler} or a function without arguments that returns
    one. The first SIGTERM/SIGINT stops claiming and lets running jobs finish; a second
    one stops at once (unfinished jobs are retried when their leases expire).
    """
    handlers = load_handlers(app)
    resolved = require_dsn(dsn)
    with psycopg.connect(resolved, connect_timeout=10):
        pass  # an unreachable database is an error now, not a worker retrying forever
    pooler = transaction_pooler()
    # The worker opens connections of its own; this queue only names the database.
    with (
        logs.logging_to(log_level, log_format) as log_handler,
        Queue(resolved, min_connections=0, max_connections=1, transaction_pooler=pooler) as queue,
        ExitStack() as stack,
    ):
        endpoint = None
        if metrics_port is not None:
            endpoint = stack.enter_context(
                metrics_endpoint(resolved, host=metrics_host, port=metrics_port, worker=True)
            )
        try:
            worker = Worker(
                queue,
                handlers,
                concurrency=concurrency,
                prefetch=prefetch,
                queues=list(queues) or None,
                lease=lease,
                worker_id=worker_id,
                listen=not (no_listen or pooler),  # no LISTEN through a pooler
                observer=endpoint.worker_metrics if endpoint is not None else None,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        if endpoint is not None and endpoint.worker_metrics is not None:
            endpoint.worker_metrics.track_running(worker)
        if log_handler is not None:
            log_handler.addFilter(logs.WorkerIdFilter(worker.worker_id))
        worker.run()


def load_handlers(spec: str) -> Mapping[JobType[Any], Handler[Any]]:
    """The handlers named by ``module:attr``; ConfigurationError, in one line, otherwise."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR, got {spec!r}")
    # As `python -m` does: modules of the current folder are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        found: object = module
        for name in attr.split("."):
            found = getattr(found, name)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(found) and not isinstance(found, Mapping):
        if _required_parameters(found):
            raise ConfigurationError(
                f"{spec} is a function that takes arguments; it must take none and "
                "return a mapping {JobType: handler}"
            )
        found = found()
    if not isinstance(found, Mapping) or not found:
        raise ConfigurationError(
            f"{spec} must be a non-empty mapping {{JobType: handler}} or a function "
            f"returning one, not {type(found).__name__}"
        )
    for job_type, handler in found.items():
        if not isinstance(job_type, JobType) or not callable(handler):
            raise ConfigurationError(
                f"{spec} must map JobType to handler; found {job_type!r}: {handler!r}"
            )
    return found


def _required_parameters(fn: Callable[..., object]) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []  # no signature to read: calling it will tell
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in parameters if p.default is p.empty and p.kind not in variadic]


# -- producing -----------------------------------------------------------------------------


class LocalDatetime(click.ParamType):  # type: ignore[type-arg]  # as Duration
    """An ISO 8601 date and time; without an offset it is the local time."""

    name = "iso-datetime"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date and time", param, ctx)
        return parsed if parsed.utcoffset() is not None else parsed.astimezone()


@main.command("enqueue")
@click.argument("job_name")
@click.argument("payload", metavar="[PAYLOAD_JSON]", required=False, default="{}")
@click.option("--queue", default="default", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True, help="Lower runs first.")
@click.option("--delay", type=DURATION, default=None, metavar="SECONDS",
              help="Run this long from now (30, 30s, 15m...).")  # fmt: skip
@click.option("--run-at", type=LocalDatetime(), default=None, metavar="ISO",
              help="Run at this time (ISO 8601; local time without an offset).")  # fmt: skip
@click.option("--max-retries", type=int, default=None, help="Default: the queue's.")
@click.option("--concurrency-key", default=None, metavar="KEY",
              help="The group the queue's per-key limit counts this job in.")  # fmt: skip
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="If a job has this key, print its id and add nothing.")  # fmt: skip
@dsn_option
@pooler_option
def enqueue_command(
    job_name: str,
    payload: str,
    queue: str,
    priority: int,
    delay: timedelta | None,
    run_at: datetime | None,
    max_retries: int | None,
    concurrency_key: str | None,
    idempotency_key: str | None,
    dsn: str | None,
) -> None:
    """Add a job JOB_NAME with a JSON object as payload; print its id."""
    data = json_object(payload)
    if delay is not None and run_at is not None:
        raise click.UsageError("--delay and --run-at are exclusive")
    # The command line cannot know the payload's type: a job type made on the spot,
    # whose payload is the plain JSON object.
    job: JobType[dict[str, Any]] = JobType(job_name, dict)
    with session(dsn) as s:
        job_id = s.queue.add(
            job, data, queue=queue, priority=priority, delay=delay, run_at=run_at,
            max_retries=max_retries, idempotency_key=idempotency_key,
            concurrency_key=concurrency_key, conn=s.conn,
        )  # fmt: skip
    click.echo(job_id)


def json_object(payload: str) -> dict[str, Any]:
    """The PAYLOAD_JSON argument: a JSON object, else a usage error."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD_JSON") from exc
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="PAYLOAD_JSON")
    return data


# -- schedules -----------------------------------------------------------------------------


@main.group("schedule")
def schedule_group() -> None:
    """Periodic schedules: add (or replace), list, remove. Workers enqueue each slot's
    job as they poll (pgq.tick), exactly once per slot, with no leader."""


@schedule_group.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("job_name")
@click.argument("payload", metavar="[PAYLOAD_JSON]", required=False, default="{}")
@click.option("--queue", default="default", show_default=True)
@click.option("--timezone", default="UTC", show_default=True,
              help="A PostgreSQL time zone name; slots follow its DST changes.")
@click.option("--priority", type=int, default=0, show_default=True, help="Lower runs first.")
@click.option("--max-retries", type=int, default=None, help="Default: the queue's.")
@dsn_option
@pooler_option
def schedule_add_command(
    name: str,
    cron: str,
    job_name: str,
    payload: str,
    queue: str,
    timezone: str,
    priority: int,
    max_retries: int | None,
    dsn: str | None,
) -> None:
    """Create or replace schedule NAME: a JOB_NAME job at every slot of CRON (5 fields,
    or @hourly, @daily, @weekly, @monthly, @yearly); print its next slot."""
    data = json_object(payload)
    job: JobType[dict[str, Any]] = JobType(job_name, dict)
    with session(dsn) as s:
        next_run_at = s.queue.schedule(name, job, cron, data, timezone=timezone, queue=queue,
                                       priority=priority, max_retries=max_retries,
                                       conn=s.conn)  # fmt: skip
    click.echo(f"schedule {name}: next run at {next_run_at.isoformat()}")


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@dsn_option
@pooler_option
def schedule_list_command(as_json: bool, dsn: str | None) -> None:
    """Every schedule with its next slot and the last job it enqueued (pgq.schedules)."""
    with session(dsn) as s:
        rows = s.queue.schedules(conn=s.conn)
    if as_json:
        echo_json(rows)
    elif rows:
        click.echo(schedules_table(rows))
    else:
        click.echo("no schedules")


@schedule_group.command("remove")
@click.argument("name")
@dsn_option
@pooler_option
def schedule_remove_command(name: str, dsn: str | None) -> None:
    """Remove schedule NAME; jobs it already enqueued stay."""
    with session(dsn) as s:
        s.queue.unschedule(name, conn=s.conn)
    click.echo(f"schedule {name} removed")


# -- inspecting ----------------------------------------------------------------------------


@main.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@dsn_option
@pooler_option
def stats_command(as_json: bool, dsn: str | None) -> None:
    """Every queue's job counts (pgq.queue_stats)."""
    with session(dsn) as s:
        rows = s.queue.stats(conn=s.conn)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no queues yet")
    else:
        click.echo(stats_table(rows))


@main.command("dead")
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the whole errors).")
@dsn_option
@pooler_option
def dead_command(queue: str | None, limit: int, as_json: bool, dsn: str | None) -> None:
    """Dead jobs, latest first, with their last error (pgq.dead_letter)."""
    with session(dsn) as s:
        rows = s.queue.dead_letter(queue=queue, limit=limit, conn=s.conn)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no dead jobs")
    else:
        click.echo(dead_table(rows))


@main.command("errors")
@click.argument("job_id", type=int)
@dsn_option
@pooler_option
def errors_command(job_id: int, dsn: str | None) -> None:
    """Every failed attempt's error for one job (pgq.job_errors)."""
    with session(dsn) as s:
        errors = s.queue.job_errors(job_id, conn=s.conn)
        if not errors and s.queue.job(job_id, conn=s.conn) is None:
            raise JobNotFound(f"job {job_id} not found")
    if not errors:
        click.echo(f"job {job_id} has no failed attempts")
    for error in errors:
        click.echo(attempt_text(error))


@main.command("job")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@dsn_option
@pooler_option
def job_command(job_id: int, as_json: bool, dsn: str | None) -> None:
    """One job, whatever its state (pgq.job_details)."""
    with session(dsn) as s:
        job = s.queue.job(job_id, conn=s.conn)
    if job is None:
        raise JobNotFound(f"job {job_id} not found")
    if as_json:
        echo_json(job)
    else:
        click.echo(job_text(job))


# -- operating -----------------------------------------------------------------------------


@main.command("retry")
@click.argument("job_id", type=int, required=False)
@click.option("--all-dead", is_flag=True, help="Retry every dead job (of --queue, or all).")
@click.option("--queue", default=None, help="With --all-dead: only this queue.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=RETRY_BATCH,
              show_default=True, help="With --all-dead: jobs per transaction.")  # fmt: skip
@dsn_option
@pooler_option
def retry_command(job_id: int | None, all_dead: bool, queue: str | None, batch_size: int,
                  dsn: str | None) -> None:  # fmt: skip
    """Retry a dead or cancelled job now, with fresh attempts; or --all-dead, in batches
    of --batch-size jobs, each its own transaction (a progress bar on a terminal)."""
    if (job_id is None) == (not all_dead):
        raise click.UsageError("give either JOB_ID or --all-dead")
    if queue is not None and not all_dead:
        raise click.UsageError("--queue goes with --all-dead")
    with session(dsn) as s:
        if job_id is not None:
            s.queue.retry(job_id, conn=s.conn)
            click.echo(f"job {job_id} is available again")
            return
        dead = sum(r.dead for r in s.queue.stats(conn=s.conn) if queue in (None, r.queue))
        run = run_batches(
            lambda: s.queue.retry_dead(queue, batch=batch_size, conn=s.conn),
            label="retrying", expected=dead,
        )  # fmt: skip
    click.echo(f"retried {run.total} dead job{'' if run.total == 1 else 's'}"
               + (" (interrupted)" if run.interrupted else ""))  # fmt: skip
    if run.interrupted:
        sys.exit(EXIT_INTERRUPTED)


@main.command("cancel")
@click.argument("job_id", type=int)
@dsn_option
@pooler_option
def cancel_command(job_id: int, dsn: str | None) -> None:
    """Cancel an available or running job."""
    with session(dsn) as s:
        state = s.queue.cancel(job_id, conn=s.conn)
    click.echo(f"job {job_id} {state}")


@main.command("configure")
@click.argument("queue")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries after the first run.")
@click.option("--backoff-base", type=DURATION, metavar="DURATION",
              help="Delay before the first retry; it doubles for each retry after.")
@click.option("--backoff-max", type=DURATION, metavar="DURATION",
              help="Longest delay between retries.")
@click.option("--lease", type=DURATION, metavar="DURATION",
              help="How long a claim or heartbeat holds a job.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=0),
              help="Most running jobs in QUEUE, fleet-wide; 0: no limit.")  # fmt: skip
@click.option("--rate-limit", type=click.IntRange(min=0),
              help="Most job starts per --rate-period; 0: no limit.")  # fmt: skip
@click.option("--rate-period", type=DURATION, metavar="DURATION",
              help="The sliding window of --rate-limit.")  # fmt: skip
@click.option("--key-concurrency", type=click.IntRange(min=0),
              help="Most running jobs per concurrency key; 0: no limit.")  # fmt: skip
@dsn_option
@pooler_option
def configure_command(queue: str, max_retries: int | None, backoff_base: timedelta | None,
                      backoff_max: timedelta | None, lease: timedelta | None,
                      concurrency: int | None, rate_limit: int | None,
                      rate_period: timedelta | None, key_concurrency: int | None,
                      dsn: str | None) -> None:  # fmt: skip
    """Create QUEUE or change its settings; options left out keep their value."""
    with session(dsn) as s:
        s.queue.configure_queue(queue, max_retries=max_retries, backoff_base=backoff_base,
                                backoff_max=backoff_max, lease=lease, concurrency=concurrency,
                                rate_limit=rate_limit, rate_period=rate_period,
                                key_concurrency=key_concurrency, conn=s.conn)  # fmt: skip
    click.echo(f"queue {queue} configured")


@main.command("pause")
@click.argument("queue")
@dsn_option
@pooler_option
def pause_command(queue: str, dsn: str | None) -> None:
    """Stop workers claiming from QUEUE (running jobs go on)."""
    with session(dsn) as s:
        s.queue.pause(queue, conn=s.conn)
    click.echo(f"queue {queue} paused")


@main.command("resume")
@click.argument("queue")
@dsn_option
@pooler_option
def resume_command(queue: str, dsn: str | None) -> None:
    """Let workers claim from a paused QUEUE again."""
    with session(dsn) as s:
        s.queue.resume(queue, conn=s.conn)
    click.echo(f"queue {queue} resumed")


@main.command("prune")
@click.option("--older-than", type=DURATION, required=True, metavar="DURATION",
              help="Finished longer ago than this: 30s, 15m, 2h, 7d.")  # fmt: skip
@click.option("--include-dead", is_flag=True, help="Delete dead jobs too.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Jobs per transaction; default: the engine's (5000).")  # fmt: skip
@dsn_option
@pooler_option
def prune_command(older_than: timedelta, include_dead: bool, batch_size: int | None,
                  dsn: str | None) -> None:  # fmt: skip
    """Delete succeeded and cancelled jobs (and with --include-dead, dead ones) that
    finished longer ago than --older-than, in batches, each its own transaction (a
    progress bar on a terminal); print how many."""
    with session(dsn) as s:
        run = run_batches(
            lambda: s.queue.prune(older_than, include_dead=include_dead, batch=batch_size,
                                  conn=s.conn),
            label="pruning",
        )  # fmt: skip
    click.echo(f"pruned {run.total} job{'' if run.total == 1 else 's'}"
               + (" (interrupted)" if run.interrupted else ""))  # fmt: skip
    if run.interrupted:
        sys.exit(EXIT_INTERRUPTED)


# -- web ------------------------------------------------------------------------------------


@main.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token or --basic-auth.")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8080, show_default=True)
@click.option("--read-only", is_flag=True,
              help="Hide and refuse every action; works with a pgq_viewer role.")
@click.option("--token", envvar="PGQUEUE_WEB_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Require this token (Authorization: Bearer, or open ?token= once).")
@click.option("--basic-auth", metavar="USER:PASS", envvar="PGQUEUE_WEB_BASIC_AUTH",
              show_envvar=True, help="Require these HTTP basic credentials.")
@dsn_option
def web_command(host: str, port: int, read_only: bool, token: str | None,
                basic_auth: str | None, dsn: str | None) -> None:
    """Serve the dashboard: queues, dead letter, jobs, run-once outcomes, with the
    operator actions (needs the web extra: pip install 'pgqueue[web]')."""
    resolved = require_dsn(dsn)
    try:
        from pgqueue_py.web import BindingRefused, WebConfig, parse_basic_auth
        from pgqueue_py.web.server import serve
    except ImportError as exc:
        raise Misconfigured(
            f"the dashboard needs the web extra ({exc.name} is missing):"
            " pip install 'pgqueue[web]'"
        ) from exc
    if token is not None and not token:
        raise click.BadParameter("must not be empty", param_hint="--token")
    try:
        credentials = parse_basic_auth(basic_auth) if basic_auth is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--basic-auth") from exc
    config = WebConfig(host=host, read_only=read_only, token=token, basic_auth=credentials)
    try:
        serve(resolved, config, port=port)
    except BindingRefused as exc:
        raise Misconfigured(str(exc)) from exc


# -- demo ----------------------------------------------------------------------------------


@main.command("demo")
@click.option("--jobs", type=click.IntRange(min=20), default=3000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1, max=16), default=2, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option("--crash/--no-crash", default=True, show_default=True,
              help="SIGKILL a worker mid-run and show its jobs reclaimed.")  # fmt: skip
@dsn_option
def demo_command(jobs: int, workers: int, crash: bool, dsn: str | None) -> None:
    """See the engine work: thousands of jobs, retries, a dead letter, run-once effects
    and a worker killed mid-run. Without --dsn/DATABASE_URL it starts a throwaway
    PostgreSQL cluster of its own (and deletes it at the end)."""
    demo.run(dsn=require_dsn(dsn) if dsn else None, jobs=jobs, workers=workers, crash=crash)


# -- metrics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsEndpoint:
    """A running ``/metrics`` server, and the worker observer feeding it, if any."""

    server: MetricsServer
    worker_metrics: WorkerMetrics | None


@contextmanager
def metrics_endpoint(dsn: str, *, host: str, port: int, worker: bool) -> Iterator[MetricsEndpoint]:
    """Serve the queue gauges (and with ``worker``, a worker's series) at
    ``http://host:port/metrics`` until the block ends. The gauges read through a pool of
    their own, one connection, so a busy worker never delays a scrape."""
    try:
        from prometheus_client import CollectorRegistry

        from pgqueue_py import metrics
    except ImportError as exc:
        raise ConfigurationError(
            f"metrics need prometheus_client ({exc}): pip install 'pgqueue[metrics]'"
        ) from exc
    registry = CollectorRegistry()
    worker_metrics = metrics.WorkerMetrics(registry) if worker else None
    with Queue(dsn, min_connections=1, max_connections=1, pool_timeout=METRICS_READ_TIMEOUT,
               transaction_pooler=transaction_pooler()) as stats_queue:  # fmt: skip
        registry.register(metrics.QueueStatsCollector(stats_queue))
        try:
            server = metrics.serve(registry, host=host, port=port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        with server:
            logging.getLogger("pgqueue_py.metrics").info("serving metrics at %s", server.url)
            yield MetricsEndpoint(server, worker_metrics)


METRICS_READ_TIMEOUT = timedelta(seconds=5)
"""How long a scrape waits for the gauges' connection before reporting them down."""


@main.command("metrics")
@click.option("--port", type=PORT, required=True,
              help="Serve at http://HOST:PORT/metrics (0: any free port).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)  # fmt: skip
@dsn_option
@pooler_option
def metrics_command(port: int, host: str, log_level: str, dsn: str | None) -> None:
    """Export the queue gauges (pgq.queue_stats, read at most once a second) for
    Prometheus until SIGTERM/SIGINT, for fleets whose workers do not serve metrics.
    Needs pgqueue[metrics]."""
    resolved = require_dsn(dsn)
    with psycopg.connect(resolved, connect_timeout=10):
        pass  # an unreachable database is an error now
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        with metrics_endpoint(resolved, host=host, port=port, worker=False):
            stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
