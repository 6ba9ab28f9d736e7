"""Prometheus metrics against a real database, read the way Prometheus reads them: an HTTP
scrape of ``/metrics`` parsed by ``prometheus_client``'s own parser. A worker's series
count what its jobs did; the queue gauges equal ``pgq.queue_stats`` and are read once per
second however often they are scraped; a database that is down leaves the worker's series
scrapeable; ``pgqueue worker --metrics-port`` and ``pgqueue metrics`` serve them."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from worker_apps.apps import work
from worker_apps.procs import TESTS_DIR, wait_for

from pgqueue_py import JobType
from pgqueue_py.client import Queue, QueueStats
from pgqueue_py.metrics import QUEUE_STATES, QueueStatsCollector, WorkerMetrics, serve
from pgqueue_py.worker import JobContext, Worker


class Item(TypedDict):
    n: int


item = JobType("item", Item)
flaky = JobType("flaky", Item)
doomed = JobType("doomed", Item)
slow = JobType("slow", Item, timeout=timedelta(seconds=0.3))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of one scrape, by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=12) as q:
        yield q


class ManualClock:
    """A monotonic clock that moves only when told: the cache's notion of time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def worker_thread(worker: Worker) -> Iterator[None]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-metrics-worker")
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]


def states(queue: Queue, job_ids: list[int]) -> list[str]:
    found = [queue.job(i) for i in job_ids]
    return [d.state if d is not None else "missing" for d in found]


# -- the worker's series ---------------------------------------------------------------------


def test_worker_series_count_each_outcome_and_time_each_attempt(dsn: str, queue: Queue) -> None:
    queue.configure_queue("default", max_retries=1, backoff_base=timedelta(milliseconds=10),
                          backoff_max=timedelta(milliseconds=20))  # fmt: skip
    release = threading.Event()
    hold = threading.Event()
    holding = threading.Event()

    def handle_item(ctx: JobContext, payload: Item) -> None:
        if payload["n"] == 0:  # the one that stays running until the test lets it go
            holding.set()
            hold.wait(30)

    def handle_flaky(ctx: JobContext, payload: Item) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    def handle_doomed(ctx: JobContext, payload: Item) -> None:
        raise RuntimeError("always fails")

    def handle_slow(ctx: JobContext, payload: Item) -> None:
        release.wait(30)

    ok = [queue.add(item, {"n": n}) for n in (1, 2)]
    # Due 90 s before the worker starts: its pickup delay is at least that, by the
    # database's clock, whatever the worker's clock says.
    late = queue.add(item, {"n": 3})
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set run_at = now() - interval '90 seconds' where id = %s",
                     (late,))  # fmt: skip
    flaky_id = queue.add(flaky, {"n": 4})
    doomed_id = queue.add(doomed, {"n": 5}, max_retries=0)
    slow_id = queue.add(slow, {"n": 6}, max_retries=0)

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    handlers: dict[JobType[Any], Any] = {
        item: handle_item, flaky: handle_flaky, doomed: handle_doomed, slow: handle_slow,
    }  # fmt: skip
    worker = Worker(queue, handlers, concurrency=4, poll_interval=timedelta(milliseconds=100),
                    observer=metrics)  # fmt: skip
    metrics.track_running(worker)
    all_ids = [*ok, late, flaky_id, doomed_id, slow_id]
    try:
        with serve(registry, port=0) as server:
            with worker_thread(worker):
                wait_for(lambda: states(queue, all_ids) == ["succeeded"] * 4 + ["dead"] * 2,
                         30, "the jobs to finish",
                         detail=lambda: str(states(queue, all_ids)))  # fmt: skip
                release.set()
                # A job held by its handler shows in the running gauge.
                held = queue.add(item, {"n": 0})
                assert holding.wait(30)
                assert value(scrape(server.url), "pgqueue_worker_running_jobs") == 1
                hold.set()
                wait_for(lambda: states(queue, [held]) == ["succeeded"], 30, "the held job")
            # Stopped: every outcome the engine recorded has reached the observer.
            samples = scrape(server.url)
    finally:
        release.set()
        hold.set()

    def finished(job_name: str, outcome: str) -> float | None:
        return value(samples, "pgqueue_jobs_finished_total", queue="default",
                     job_name=job_name, outcome=outcome)  # fmt: skip

    assert finished("item", "succeeded") == 4
    assert finished("flaky", "failed") == 1
    assert finished("flaky", "succeeded") == 1
    assert finished("doomed", "dead") == 1
    assert finished("slow", "timed_out") == 1
    counted = {
        (dict(labels)["job_name"], dict(labels)["outcome"])
        for name, labels in samples
        if name == "pgqueue_jobs_finished_total"
    }
    assert counted == {("item", "succeeded"), ("flaky", "failed"), ("flaky", "succeeded"),
                       ("doomed", "dead"), ("slow", "timed_out")}  # fmt: skip

    def duration_count(job_name: str) -> float | None:
        return value(samples, "pgqueue_job_duration_seconds_count", queue="default",
                     job_name=job_name)  # fmt: skip

    assert duration_count("item") == 4
    assert duration_count("flaky") == 2
    assert duration_count("doomed") == 1
    assert duration_count("slow") == 1
    # The slow handler is timed until the worker gave up on it: about its 0.3 s timeout.
    slow_seconds = value(samples, "pgqueue_job_duration_seconds_sum", queue="default",
                         job_name="slow")  # fmt: skip
    assert slow_seconds is not None and 0.25 <= slow_seconds < 10

    # Eight attempts started (flaky ran twice); only the backdated one waited longer than a minute.
    assert value(samples, "pgqueue_job_pickup_delay_seconds_count", queue="default") == 8
    assert value(samples, "pgqueue_job_pickup_delay_seconds_bucket", queue="default",
                 le="60.0") == 7  # fmt: skip
    assert value(samples, "pgqueue_job_pickup_delay_seconds_bucket", queue="default",
                 le="+Inf") == 8  # fmt: skip
    delay_sum = value(samples, "pgqueue_job_pickup_delay_seconds_sum", queue="default")
    assert delay_sum is not None and delay_sum >= 90
    assert value(samples, "pgqueue_worker_running_jobs") == 0


def test_worker_metrics_track_one_worker(queue: Queue) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    worker = Worker(queue, {item: lambda ctx, p: None}, observer=metrics)
    metrics.track_running(worker)

    with pytest.raises(RuntimeError, match="one worker"):
        metrics.track_running(worker)


def test_two_workers_in_one_process_keep_separate_series() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    one = WorkerMetrics(first)
    WorkerMetrics(second)  # the process-wide default registry would refuse a second one
    one.finished.labels("default", "item", "succeeded").inc()

    labels = {"queue": "default", "job_name": "item", "outcome": "succeeded"}
    assert first.get_sample_value("pgqueue_jobs_finished_total", labels) == 1
    assert second.get_sample_value("pgqueue_jobs_finished_total", labels) is None


# -- the queue gauges ------------------------------------------------------------------------


def jobs_in_every_state(dsn: str, queue: Queue) -> None:
    """default: 2 available (the older due 120 s ago), 1 scheduled, 1 running,
    1 succeeded, 1 dead, 1 cancelled; mail: paused, 1 available."""
    running_id = queue.add(item, {"n": 1})
    [running] = queue.claim("test-worker", batch=1)
    assert running.id == running_id
    done_id = queue.add(item, {"n": 2})
    [done] = queue.claim("test-worker", batch=1)
    queue.complete(done_id, done.lease_token)
    dead_id = queue.add(item, {"n": 3}, max_retries=0)
    [dying] = queue.claim("test-worker", batch=1)
    assert queue.fail(dead_id, dying.lease_token, "boom") == "dead"
    queue.cancel(queue.add(item, {"n": 4}))
    queue.add(item, {"n": 5}, delay=timedelta(hours=1))
    old = queue.add(item, {"n": 6})
    queue.add(item, {"n": 7})
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set run_at = now() - interval '120 seconds' where id = %s",
                     (old,))  # fmt: skip
    queue.add(item, {"n": 8}, queue="mail")
    queue.pause("mail")


def test_queue_gauges_equal_queue_stats(dsn: str, queue: Queue) -> None:
    jobs_in_every_state(dsn, queue)
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(queue))

    with serve(registry, port=0) as server:
        samples = scrape(server.url)
    stats = {row.queue: row for row in queue.stats()}

    assert value(samples, "pgqueue_queue_stats_up") == 1
    for row in stats.values():
        for state in QUEUE_STATES:
            assert value(samples, "pgqueue_queue_jobs", queue=row.queue, state=state) == getattr(
                row, state
            ), (row.queue, state)
        assert value(samples, "pgqueue_queue_paused", queue=row.queue) == int(row.paused)
    gauged = {dict(labels)["queue"] for name, labels in samples if name == "pgqueue_queue_jobs"}
    assert gauged == set(stats) == {"default", "mail"}
    assert [stats["default"].available, stats["default"].scheduled, stats["default"].running,
            stats["default"].succeeded, stats["default"].dead, stats["default"].cancelled] == [
        2, 1, 1, 1, 1, 1]  # fmt: skip
    age = value(samples, "pgqueue_queue_oldest_runnable_age_seconds", queue="default")
    assert age is not None and 120 <= age < 180
    mail_age = stats["mail"].oldest_runnable_age
    assert mail_age is not None
    mail_gauge = value(samples, "pgqueue_queue_oldest_runnable_age_seconds", queue="mail")
    assert mail_gauge is not None and abs(mail_gauge - mail_age.total_seconds()) < 30


def test_a_queue_with_nothing_due_has_an_oldest_runnable_age_of_zero(queue: Queue) -> None:
    queue.add(item, {"n": 1}, delay=timedelta(hours=1))
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(queue))

    assert registry.get_sample_value(
        "pgqueue_queue_oldest_runnable_age_seconds", {"queue": "default"}
    ) == 0  # fmt: skip
    assert registry.get_sample_value(
        "pgqueue_queue_jobs", {"queue": "default", "state": "scheduled"}
    ) == 1  # fmt: skip


def test_ten_scrapes_within_a_second_read_queue_stats_once(queue: Queue) -> None:
    clock = ManualClock()
    collector = QueueStatsCollector(queue, clock=clock)
    registry = CollectorRegistry()
    registry.register(collector)
    queue.add(item, {"n": 1})

    with serve(registry, port=0) as server:
        first_read_at = clock.now
        for step in range(10):
            samples = scrape(server.url)
            assert value(samples, "pgqueue_queue_jobs", queue="default", state="available") == 1
            assert collector.reads == 1, f"scrape {step + 1} read again"
            clock.now += 0.099  # ten scrapes spread over 0.99 s
        # Cached: a job added now is not seen until the second is over.
        queue.add(item, {"n": 2})
        assert value(scrape(server.url), "pgqueue_queue_jobs", queue="default",
                     state="available") == 1  # fmt: skip
        clock.now = first_read_at + 1.0
        samples = scrape(server.url)

    assert collector.reads == 2
    assert value(samples, "pgqueue_queue_jobs", queue="default", state="available") == 2


def test_concurrent_scrapes_share_one_read(queue: Queue) -> None:
    collector = QueueStatsCollector(queue, cache_for=timedelta(minutes=5))
    registry = CollectorRegistry()
    registry.register(collector)

    with serve(registry, port=0) as server:
        results: list[Samples] = []
        threads = [threading.Thread(target=lambda: results.append(scrape(server.url)))
                   for _ in range(8)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert len(results) == 8
    assert collector.reads == 1


def test_a_cache_under_a_second_is_refused(queue: Queue) -> None:
    with pytest.raises(ValueError, match="at least one second"):
        QueueStatsCollector(queue, cache_for=timedelta(milliseconds=500))


def test_a_database_that_is_down_leaves_the_worker_series_scrapeable(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = psycopg.conninfo.make_conninfo(dsn, dbname="pgq_no_such_database")
    clock = ManualClock()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.finished.labels("default", "item", "succeeded").inc()
    with Queue(missing, min_connections=0, max_connections=1,
               pool_timeout=timedelta(seconds=1)) as down:  # fmt: skip
        collector = QueueStatsCollector(down, clock=clock)
        registry.register(collector)
        with caplog.at_level(logging.WARNING, logger="pgqueue_py.metrics"), serve(
            registry, port=0
        ) as server:
            first = scrape(server.url)
            second = scrape(server.url)  # the failure is cached too

    assert value(first, "pgqueue_queue_stats_up") == 0
    assert value(first, "pgqueue_jobs_finished_total", queue="default", job_name="item",
                 outcome="succeeded") == 1  # fmt: skip
    assert "pgqueue_queue_jobs" not in names(first)
    assert second == first
    assert collector.reads == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "pgqueue_py.metrics"]
    assert logged == ["metrics: reading pgq.queue_stats failed"]


def test_a_failed_read_shows_down_until_the_next_read_succeeds(dsn: str) -> None:
    clock = ManualClock()
    impatient = psycopg.conninfo.make_conninfo(dsn, options="-c statement_timeout=300")
    with Queue(impatient, min_connections=1, max_connections=1) as own, psycopg.connect(
        dsn
    ) as locker:
        collector = QueueStatsCollector(own, clock=clock)
        registry = CollectorRegistry()
        registry.register(collector)
        # The view's table locked: the read waits past its statement timeout and fails.
        locker.execute("lock table pgq.jobs in access exclusive mode")
        down = registry.get_sample_value("pgqueue_queue_stats_up")
        locker.rollback()
        clock.now += 1
        up = registry.get_sample_value("pgqueue_queue_stats_up")

    assert (down, up) == (0, 1)
    assert collector.reads == 2


# -- the commands ----------------------------------------------------------------------------


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pgqueue_py", *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def served_url(log: Path) -> str:
    """The URL the process logged it serves (it was asked for port 0)."""
    pattern = re.compile(r"serving metrics at (http://\S+)")
    wait_for(lambda: pattern.search(log.read_text()) is not None, 30, "the metrics URL",
             detail=log.read_text)  # fmt: skip
    found = pattern.search(log.read_text())
    assert found is not None
    return found.group(1)


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(args, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_metrics_command_exports_the_queue_gauges_until_sigterm(
    dsn: str, queue: Queue, tmp_path: Path
) -> None:
    jobs_in_every_state(dsn, queue)
    log = tmp_path / "exporter.log"

    with process(["metrics", "--port", "0", "--dsn", dsn], log) as proc:
        url = served_url(log)
        samples = scrape(url)
        stats: list[QueueStats] = queue.stats()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)

    assert code == 0, log.read_text()
    assert url.startswith("http://127.0.0.1:")
    assert value(samples, "pgqueue_queue_stats_up") == 1
    for row in stats:
        for state in QUEUE_STATES:
            assert value(samples, "pgqueue_queue_jobs", queue=row.queue, state=state) == getattr(
                row, state
            ), (row.queue, state)
    assert not any(name.startswith("pgqueue_jobs_finished") for name in names(samples))


def test_the_metrics_command_on_a_taken_port_is_a_one_line_configuration_error(
    dsn: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pgqueue_py", "metrics", "--port", str(port), "--dsn", dsn],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pgqueue: error: cannot serve metrics on 127.0.0.1:{port}: ")


def test_a_metrics_port_out_of_range_is_a_usage_error(dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue_py", "metrics", "--port", "70000", "--dsn", dsn],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 2
    assert "70000" in result.stderr and "--port" in result.stderr


def test_the_worker_command_serves_its_series_and_the_queue_gauges(
    dsn: str, queue: Queue, tmp_path: Path
) -> None:
    job_ids = [queue.add(work, {"dir": str(tmp_path), "work_ms": 0})
               for _ in range(3)]  # fmt: skip
    log = tmp_path / "worker.log"

    with process(["worker", "worker_apps.apps:handlers", "--dsn", dsn, "--no-listen",
                  "--metrics-port", "0"], log) as proc:  # fmt: skip
        url = served_url(log)

        def finished() -> float | None:
            return value(scrape(url), "pgqueue_jobs_finished_total", queue="default",
                         job_name="work", outcome="succeeded")  # fmt: skip

        wait_for(lambda: finished() == 3, 30, "three succeeded jobs in the metrics",
                 detail=log.read_text)  # fmt: skip
        samples = scrape(url)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)

    assert code == 0, log.read_text()
    assert states(queue, job_ids) == ["succeeded"] * 3
    assert value(samples, "pgqueue_job_duration_seconds_count", queue="default",
                 job_name="work") == 3  # fmt: skip
    assert value(samples, "pgqueue_job_pickup_delay_seconds_count", queue="default") == 3
    assert value(samples, "pgqueue_worker_running_jobs") == 0
    assert value(samples, "pgqueue_queue_stats_up") == 1
    # The gauges may be up to a second old: at least they saw the jobs.
    seen = sum(value(samples, "pgqueue_queue_jobs", queue="default", state=state) or 0
               for state in ("available", "running", "succeeded"))  # fmt: skip
    assert seen == 3


def test_without_prometheus_client_the_commands_say_what_to_install(dsn: str) -> None:
    # The CLI imports prometheus_client only when metrics are asked for.
    hide = "import sys; sys.modules['prometheus_client'] = None; from pgqueue_py.cli import main"
    result = subprocess.run(
        [sys.executable, "-c", f"{hide}; main()", "metrics", "--port", "0", "--dsn", dsn],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pgqueue: error: metrics need prometheus_client")
    assert last.endswith("pip install 'pgqueue[metrics]'")
