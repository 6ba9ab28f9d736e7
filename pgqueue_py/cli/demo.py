"""``pgqueue demo``: the whole engine at work, on its own, in a few seconds.

What it does, in order:

1. uses ``--dsn``/``DATABASE_URL``, or starts a throwaway PostgreSQL cluster;
2. migrates, and configures a queue with a short retry backoff and a 2 s lease;
3. adds a few thousand jobs of four typed job types, one ``add_many`` per type:
   ``make_thumbnail`` succeeds; ``sync_inventory`` fails its first attempts, then
   succeeds; ``import_csv`` always fails and ends in the dead letter; ``charge_card``
   writes to a ledger table inside ``ctx.run_once``, so that no retry, crash or second
   worker can charge twice;
4. runs worker processes (``pgqueue worker pgqueue_py.cli.demo:handlers``), SIGKILLs one
   mid-run and starts a replacement: the killed worker's jobs come back when their
   leases expire;
5. prints the queue statistics, some dead jobs with their last error, the killed
   worker's jobs as the engine recorded them, and checks that the ledger has exactly one
   entry per charge.

The first part of this file is what an application writes: payload types, job types and
handlers. The rest runs the show.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click
import psycopg
from psycopg_pool import ConnectionPool

from pgqueue_py.cli.tables import dead_table, one_line, stats_table, table
from pgqueue_py.client.errors import MarkerNotFound
from pgqueue_py.client.jobs import JobType
from pgqueue_py.client.queue import DSN_ENV, Queue, QueueStats
from pgqueue_py.migrate import migrate
from pgqueue_py.testing.throwaway import ThrowawayPostgres
from pgqueue_py.worker import Handler, JobContext


class DemoFailed(RuntimeError):
    """The demo's own checks failed (a duplicate effect, a job left behind...)."""


# -- the application: payloads, job types, handlers ----------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    image: str
    work_ms: int


@dataclass(frozen=True)
class InventorySync:
    sku: str
    failures: int
    """How many attempts fail before one succeeds (the demo's stand-in for a flaky API)."""


@dataclass(frozen=True)
class CsvImport:
    file: str


@dataclass(frozen=True)
class Charge:
    order_id: int
    cents: int


make_thumbnail = JobType("make_thumbnail", Thumbnail)
sync_inventory = JobType("sync_inventory", InventorySync, max_retries=5)
import_csv = JobType("import_csv", CsvImport, max_retries=2)
charge_card = JobType("charge_card", Charge)


def handle_thumbnail(ctx: JobContext, job: Thumbnail) -> None:
    time.sleep(job.work_ms / 1000)  # pretend to resize an image


def handle_inventory_sync(ctx: JobContext, job: InventorySync) -> None:
    time.sleep(0.002)
    if ctx.attempt <= job.failures:
        raise ConnectionError(f"inventory service timed out for {job.sku}")


def handle_csv_import(ctx: JobContext, job: CsvImport) -> None:
    raise ValueError(f"{job.file}: line 1: expected header 'sku,qty', found 'sku;qty'")


def handle_charge(ctx: JobContext, job: Charge) -> None:
    # The charge happens at most once per job, whatever happens to this attempt; a retry
    # gets the ledger entry's id back without charging again.
    entry_id = ctx.run_once("charge", lambda: record_charge(ctx.queue, ctx.job_id, job))
    send_receipt(job.order_id, entry_id)


def send_receipt(order_id: int, ledger_entry: int) -> None:
    time.sleep(0.002)  # pretend to email the receipt for the charge


handlers: dict[JobType[Any], Handler[Any]] = {
    make_thumbnail: handle_thumbnail,
    sync_inventory: handle_inventory_sync,
    import_csv: handle_csv_import,
    charge_card: handle_charge,
}


# -- the ledger: the demo's outside world --------------------------------------------------

# No unique constraint on purpose: a charge made twice would show as two rows.
LEDGER_SETUP = """
    create schema if not exists pgqueue_demo;
    create table if not exists pgqueue_demo.ledger (
        id bigint generated always as identity primary key,
        run text not null,
        job_id bigint not null,
        order_id integer not null,
        cents integer not null,
        charged_at timestamptz not null default now()
    );
"""
LEDGER_INSERT = """
    insert into pgqueue_demo.ledger (run, job_id, order_id, cents)
    values (%(run)s, %(job_id)s, %(order_id)s, %(cents)s) returning id
"""
LEDGER_ENTRY = "select min(id) from pgqueue_demo.ledger where run = %(run)s and job_id = %(job_id)s"
LEDGER_COUNTS = """
    select count(*), count(distinct job_id) from pgqueue_demo.ledger where run = %(run)s
"""
# Which jobs a worker holds right now (pgq.job_details is the operator's view of a job).
HELD_JOBS = """
    select id, job_name from pgq.job_details
     where queue = %(queue)s and worker_id = %(worker_id)s and state = 'running'
     order by id
"""

_ledger_lock = threading.Lock()
_ledger_pool: ConnectionPool[psycopg.Connection[Any]] | None = None


def ledger_pool() -> ConnectionPool[psycopg.Connection[Any]]:
    """The worker process's connections to the ledger (the demo's database)."""
    global _ledger_pool
    with _ledger_lock:
        if _ledger_pool is None:
            _ledger_pool = ConnectionPool(
                os.environ[DSN_ENV], min_size=1, max_size=WORKER_CONCURRENCY,
                kwargs={"autocommit": True}, name="demo-ledger",
            )  # fmt: skip
            atexit.register(_ledger_pool.close)
        return _ledger_pool


def record_charge(run: str, job_id: int, charge: Charge) -> int:
    with ledger_pool().connection() as conn:
        params = {"run": run, "job_id": job_id, "order_id": charge.order_id,
                  "cents": charge.cents}  # fmt: skip
        row = conn.execute(LEDGER_INSERT, params).fetchone()
    assert row is not None
    return int(row[0])


# -- the show ------------------------------------------------------------------------------

WORKER_CONCURRENCY = 8
LEASE = timedelta(seconds=2)
STUCK_AFTER = 30.0
"""Seconds without a job finishing after which the demo gives up."""


@dataclass
class Plan:
    """How many jobs of each type; the payloads follow from the index."""

    thumbnails: int
    syncs: int
    imports: int
    charges: int

    @classmethod
    def split(cls, total: int) -> Plan:
        imports = max(1, total * 5 // 100)
        syncs = total * 25 // 100
        charges = total * 30 // 100
        return cls(total - imports - syncs - charges, syncs, imports, charges)

    @property
    def total(self) -> int:
        return self.thumbnails + self.syncs + self.imports + self.charges


def run(*, dsn: str | None, jobs: int, workers: int, crash: bool = True) -> None:
    """Run the demo; raise DemoFailed if the end state is not what the engine promises."""
    with ExitStack() as stack:
        # SIGTERM unwinds like Ctrl-C does: workers stopped, throwaway cluster deleted.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        stack.callback(signal.signal, signal.SIGTERM, previous)
        if dsn is None:
            click.echo("No --dsn and no DATABASE_URL: starting a throwaway PostgreSQL "
                       "cluster (deleted when the demo ends)...")  # fmt: skip
            pg = stack.enter_context(ThrowawayPostgres())
            dsn = pg.dsn
            click.echo(f"  PostgreSQL is up at {dsn}")
            queue_name = "demo"
        else:
            # A queue of its own, so that an earlier run's jobs do not count.
            queue_name = f"demo-{uuid.uuid4().hex[:6]}"

        result = migrate(dsn)
        applied = ", ".join(result.applied_migrations) or "none pending"
        click.echo(f"Migrated (migrations: {applied}; {result.functions_applied} function "
                   "files applied).")  # fmt: skip

        queue = stack.enter_context(Queue(dsn))
        db = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        db.execute(LEDGER_SETUP)
        queue.configure_queue(queue_name, max_retries=3, backoff_base=timedelta(milliseconds=50),
                              backoff_max=timedelta(seconds=1), lease=LEASE)  # fmt: skip
        click.echo(f"Queue {queue_name!r}: retries back off from 50ms to 1s; leases last "
                   f"{LEASE.total_seconds():g}s; charges go to pgqueue_demo.ledger.")  # fmt: skip

        plan = Plan.split(jobs)
        charge_ids = enqueue(queue, queue_name, plan)

        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgqueue-demo-")))
        fleet = stack.enter_context(Fleet.running(dsn, queue_name, logs))
        for _ in range(workers):
            fleet.start()
        click.echo(f"Started {workers} worker process{'es' if workers > 1 else ''}, "
                   f"{WORKER_CONCURRENCY} handler threads each.\n")  # fmt: skip

        progress = Progress(plan.total)
        crash_report = CrashReport(None, [])
        victim = fleet.workers[0] if crash else None

        def on_poll(done: int) -> None:
            nonlocal victim
            fleet.check()
            if victim is None or done < plan.total // 4 or not held(db, queue_name, victim):
                return
            victim.kill()
            crash_report.worker_id = victim.worker_id
            crash_report.jobs = held(db, queue_name, victim)
            replacement = fleet.start()
            progress.note(f"SIGKILLed {victim.worker_id} while it held "
                          f"{len(crash_report.jobs)} jobs; started {replacement.worker_id}. "
                          f"Its jobs come back when their {LEASE.total_seconds():g}s "
                          "leases expire.")  # fmt: skip
            victim = None

        wait_until_done(queue, queue_name, plan.total, progress, on_poll)
        for _ in range(3):
            if not settle_unknown_charges(queue, db, queue_name, progress):
                break
            wait_until_done(queue, queue_name, plan.total, progress, on_poll)
        progress.finish()
        if victim is not None:
            click.echo("(The jobs finished before a worker could be killed: try more --jobs.)")
        fleet.stop()

        report(queue, db, queue_name, plan, charge_ids, crash_report)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def enqueue(queue: Queue, queue_name: str, plan: Plan) -> list[int]:
    """Add every job, one ``add_many`` (one statement) per job type; the charges' ids."""
    started = time.monotonic()
    # Jobs of equal priority run in the order they were added: the charges go first, so
    # that the worker killed mid-run holds some.
    charge_ids = queue.add_many(charge_card, [
        Charge(order_id=1000 + i, cents=100 * (1 + i % 50)) for i in range(plan.charges)
    ], queue=queue_name)  # fmt: skip
    queue.add_many(sync_inventory, [
        InventorySync(sku=f"sku-{i}", failures=1 + i % 3) for i in range(plan.syncs)
    ], queue=queue_name)  # fmt: skip
    queue.add_many(import_csv, [
        CsvImport(file=f"upload-{i}.csv") for i in range(plan.imports)
    ], queue=queue_name)  # fmt: skip
    queue.add_many(make_thumbnail, [
        Thumbnail(image=f"img-{i}.png", work_ms=2 + i % 15) for i in range(plan.thumbnails)
    ], queue=queue_name)  # fmt: skip
    click.echo(f"Added {plan.total} jobs in {time.monotonic() - started:.2f}s, one add_many "
               "per job type:")  # fmt: skip
    click.echo(indent(table(["", "", ""], [
        (plan.charges, charge_card.name, "charges a card inside ctx.run_once (a ledger row)"),
        (plan.syncs, sync_inventory.name, "fails 1 to 3 times, then succeeds"),
        (plan.imports, import_csv.name, "always fails: ends in the dead letter"),
        (plan.thumbnails, make_thumbnail.name, "succeeds"),
    ]).split("\n", 1)[1]))  # fmt: skip
    return charge_ids


def wait_until_done(
    queue: Queue, queue_name: str, total: int, progress: Progress, on_poll: Callable[[int], None]
) -> None:
    """Poll ``pgq.queue_stats`` until every job is succeeded, dead or cancelled."""
    last_change, last_done = time.monotonic(), -1
    pause = threading.Event()
    while True:
        stats = queue_stats(queue, queue_name)
        done = stats.succeeded + stats.dead + stats.cancelled
        progress.show(stats)
        if done >= total and stats.running == stats.available == stats.scheduled == 0:
            return
        if done != last_done:
            last_change, last_done = time.monotonic(), done
        elif time.monotonic() - last_change > STUCK_AFTER:
            raise DemoFailed(f"no job finished for {STUCK_AFTER:g}s ({done}/{total} done)")
        on_poll(done)
        pause.wait(0.1)


def settle_unknown_charges(
    queue: Queue, db: psycopg.Connection[Any], queue_name: str, progress: Progress
) -> int:
    """What an operator does when a worker died inside a charge: the engine does not know
    whether the charge happened, so it never repeats it and the job ends dead. Look at
    the outside world (the ledger), tell the engine (``once_resolve``), retry the job."""
    dead = [d for d in queue.dead_letter(queue=queue_name, limit=10_000)
            if d.job_name == charge_card.name]  # fmt: skip
    for job in dead:
        row = db.execute(LEDGER_ENTRY, {"run": queue_name, "job_id": job.id}).fetchone()
        entry_id = row[0] if row is not None else None
        # MarkerNotFound: nothing was left unknown; the retry runs or replays the effect.
        with contextlib.suppress(MarkerNotFound):
            queue.once_resolve(job.id, "charge", ran=entry_id is not None, result=entry_id)
        queue.retry(job.id)
        verdict = f"it did (entry {entry_id})" if entry_id is not None else "it did not"
        progress.note(f"job {job.id}: a worker died inside its charge, so the outcome was "
                      f"unknown and the job ended dead. The ledger says {verdict}: "
                      "resolved and retried.")  # fmt: skip
    return len(dead)


@dataclass
class CrashReport:
    worker_id: str | None
    jobs: list[tuple[int, str]]


def report(
    queue: Queue,
    db: psycopg.Connection[Any],
    queue_name: str,
    plan: Plan,
    charge_ids: list[int],
    crash: CrashReport,
) -> None:
    stats = queue_stats(queue, queue_name)
    click.echo("\nFinal statistics (pgqueue stats):")
    click.echo(indent(stats_table([stats])))

    dead = queue.dead_letter(queue=queue_name, limit=3)
    click.echo(f"\nDead letter: {stats.dead} jobs (pgqueue dead); the latest:")
    click.echo(indent(dead_table(dead)))
    if stats.dead != plan.imports:
        click.echo(f"  note: {plan.imports} import_csv jobs were meant to die, "
                   f"{stats.dead} jobs did")  # fmt: skip

    if crash.worker_id is not None:
        click.echo(f"\nJobs {crash.worker_id} held when it was killed, as the engine "
                   "recorded them (pgqueue errors JOB_ID):")  # fmt: skip
        # Three of them, of as many job types as possible.
        first_of_each_type = {name: (job_id, name) for job_id, name in reversed(crash.jobs)}
        shown = list(first_of_each_type.values())[:3]
        shown += [job for job in crash.jobs if job not in shown][: 3 - len(shown)]
        for job_id, job_name in sorted(shown):
            details = queue.job(job_id)
            state = f"{details.state} at attempt {details.attempt}" if details else "pruned"
            click.echo(f"  job {job_id} ({job_name}): now {state}")
            for error in queue.job_errors(job_id):
                click.echo(f"    attempt {error.attempt} on {error.worker_id}: "
                           f"{one_line(error.error, 110)}")  # fmt: skip
        if len(crash.jobs) > len(shown):
            click.echo(f"  ... and {len(crash.jobs) - len(shown)} more")

    row = db.execute(LEDGER_COUNTS, {"run": queue_name}).fetchone()
    entries, charged_jobs = (int(row[0]), int(row[1])) if row is not None else (0, 0)
    duplicates = entries - charged_jobs
    click.echo(f"\nRun-once ledger: {entries} entries for {len(charge_ids)} charge_card jobs; "
               f"duplicates: {duplicates}.")  # fmt: skip
    if duplicates:
        raise DemoFailed(f"{duplicates} charges were made twice")
    if charged_jobs != len(charge_ids):
        raise DemoFailed(f"{len(charge_ids) - charged_jobs} charge_card jobs never charged")
    click.echo("Every charge happened exactly once. Demo done.")


def queue_stats(queue: Queue, queue_name: str) -> QueueStats:
    return next(s for s in queue.stats() if s.queue == queue_name)


def held(
    db: psycopg.Connection[Any], queue_name: str, worker: WorkerProcess
) -> list[tuple[int, str]]:
    """The jobs ``worker`` holds now (id, job name)."""
    rows = db.execute(HELD_JOBS, {"queue": queue_name, "worker_id": worker.worker_id}).fetchall()
    return [(int(job_id), str(job_name)) for job_id, job_name in rows]


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# -- worker processes ----------------------------------------------------------------------


@dataclass
class WorkerProcess:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    def kill(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Fleet:
    """The demo's worker processes: ``pgqueue worker pgqueue_py.cli.demo:handlers``."""

    def __init__(self, dsn: str, queue_name: str, logs: Path) -> None:
        self._env = {**os.environ, DSN_ENV: dsn}  # the worker and the ledger read it
        self._queue_name = queue_name
        self._logs = logs
        self.workers: list[WorkerProcess] = []

    @classmethod
    @contextmanager
    def running(cls, dsn: str, queue_name: str, logs: Path) -> Iterator[Fleet]:
        fleet = cls(dsn, queue_name, logs)
        try:
            yield fleet
        finally:
            fleet.stop(check=False)  # on the way out of an error: stop them, say nothing

    def start(self) -> WorkerProcess:
        worker_id = f"demo-worker-{len(self.workers) + 1}"
        log = self._logs / f"{worker_id}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgqueue_py", "worker", "pgqueue_py.cli.demo:handlers",
                 "--queue", self._queue_name, "--concurrency", str(WORKER_CONCURRENCY),
                 "--lease", str(LEASE.total_seconds()), "--worker-id", worker_id],
                env=self._env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker = WorkerProcess(worker_id, proc, log)
        self.workers.append(worker)
        return worker

    def check(self) -> None:
        """DemoFailed if a worker we did not kill has exited."""
        for worker in self.workers:
            if not worker.killed and worker.proc.poll() is not None:
                raise DemoFailed(f"{worker.worker_id} exited with {worker.proc.returncode}: "
                                 f"{tail(worker.log)}")  # fmt: skip

    def stop(self, *, check: bool = True) -> None:
        """SIGTERM every live worker (they finish what they run) and wait for them;
        with ``check``, DemoFailed unless each exits cleanly."""
        live = [w for w in self.workers if not w.killed and w.proc.poll() is None]
        for worker in live:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in live:
            try:
                code = worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                if check:
                    raise DemoFailed(f"{worker.worker_id} did not stop on SIGTERM") from None
                continue
            finally:
                worker.killed = True
            if check and code != 0:
                raise DemoFailed(f"{worker.worker_id} exited with {code}: {tail(worker.log)}")


def tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:]) or "(no output)"


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A live line on a terminal; otherwise a line a second, when it changed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._live = sys.stdout.isatty()
        self._line = ""
        self._printed = ""
        self._printed_at = 0.0

    def show(self, stats: QueueStats) -> None:
        done = stats.succeeded + stats.dead + stats.cancelled
        width = 30
        filled = width * min(done, self.total) // self.total
        self._line = (f"[{'#' * filled}{'.' * (width - filled)}] "
                      f"{done:>{len(str(self.total))}}/{self.total} done: "
                      f"{stats.succeeded} succeeded, {stats.dead} dead; "
                      f"{stats.running} running, {stats.scheduled} backing off")  # fmt: skip
        if self._live:
            click.echo("\r" + self._line.ljust(len(self._printed)), nl=False)
            self._printed = self._line
        elif time.monotonic() - self._printed_at >= 1.0:
            self._print_changed()

    def note(self, text: str) -> None:
        """A line about something that happened, above the live line."""
        if self._live and self._printed:
            click.echo()
        click.echo(f">> {text}")
        if self._live and self._printed:
            click.echo(self._printed, nl=False)

    def finish(self) -> None:
        if self._live:
            click.echo()
        else:
            self._print_changed()

    def _print_changed(self) -> None:
        if self._line != self._printed:
            click.echo(self._line)
            self._printed = self._line
        self._printed_at = time.monotonic()
