"""The dashboard over HTTP, served by uvicorn in a thread against a real database:
authentication, CSRF, read-only mode with a pgq_viewer role, and what the pages show."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner
from helpers import greet, scalar
from web_support import Client, basic, dead_job, job_state, unknown_outcome_job, viewer_dsn

from pgqueue_py.cli import main
from pgqueue_py.client import AsyncQueue, OnceOutcome, Queue
from pgqueue_py.web import BindingRefused, WebConfig, check_binding, parse_basic_auth
from pgqueue_py.web.app import format_age, format_limits
from pgqueue_py.web.server import BackgroundServer

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=4) as q:
        yield q


def served(queue: Queue, **options: object) -> BackgroundServer:
    return BackgroundServer(queue, WebConfig(**options))  # type: ignore[arg-type]  # test options


@pytest.fixture
def open_board(queue: Queue) -> Iterator[Client]:
    """The dashboard with no credentials, on 127.0.0.1, with actions."""
    with served(queue) as server:
        yield Client(server.url)


def marker_row(dsn: str, job_id: int, effect_key: str) -> tuple[str, object] | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select status, result from pgq.once_markers where job_id = %s and effect_key = %s",
            (job_id, effect_key),
        ).fetchone()
    return None if row is None else (row[0], row[1])


# -- authentication ------------------------------------------------------------------------


def test_without_the_token_every_request_gets_401_and_changes_nothing(queue: Queue) -> None:
    job_id = dead_job(queue)
    with served(queue, token=TOKEN) as server:
        anonymous = Client(server.url)
        wrong = Client(server.url, headers={"Authorization": "Bearer not-the-token"})
        replies = [
            anonymous.get("/"),
            anonymous.get("/api/stats"),
            anonymous.get(f"/jobs/{job_id}"),
            anonymous.get("/static/dashboard.js"),
            anonymous.get("/?token=not-the-token"),
            anonymous.post(f"/jobs/{job_id}/retry", {"csrf_token": "x"}),
            anonymous.post("/queues/mail/pause", {"csrf_token": "x"}),
            wrong.get("/"),
            wrong.post(f"/jobs/{job_id}/retry", {"csrf_token": "x"}),
        ]
        authorised = Client(server.url, headers={"Authorization": f"Bearer {TOKEN}"}).get("/")

    assert [r.status for r in replies] == [401] * len(replies)
    assert all(r.headers["www-authenticate"] == "Bearer" for r in replies)
    assert "smtp said no" not in "".join(r.body for r in replies)
    assert authorised.status == 200
    assert job_state(queue, job_id) == "dead"
    assert not queue.stats()[0].paused


def test_the_token_in_the_address_is_traded_for_a_cookie(queue: Queue) -> None:
    with served(queue, token=TOKEN) as server:
        browser = Client(server.url)
        first = browser.get("/dead?queue=mail&token=" + TOKEN)
        then = browser.get("/dead?queue=mail")

    assert first.status == 303
    assert first.headers["location"] == "/dead?queue=mail"
    assert "httponly" in first.headers["set-cookie"].lower()
    assert then.status == 200


def test_without_basic_credentials_a_request_gets_401_and_changes_nothing(queue: Queue) -> None:
    job_id = dead_job(queue)
    with served(queue, basic_auth=("ops", "pa:ss")) as server:
        anonymous = Client(server.url)
        wrong = Client(server.url, headers=basic("ops", "nope"))
        refused = [anonymous.get("/"), wrong.get("/"),
                   wrong.post(f"/jobs/{job_id}/retry", {"csrf_token": "x"}),
                   Client(server.url, headers={"Authorization": "Basic !!"}).get("/")]  # fmt: skip
        right = Client(server.url, headers=basic("ops", "pa:ss")).get("/")

    assert [r.status for r in refused] == [401] * 4
    assert refused[0].headers["www-authenticate"].startswith('Basic realm="pgqueue"')
    assert right.status == 200
    assert job_state(queue, job_id) == "dead"


def test_binding_beyond_loopback_refuses_to_start_without_credentials(dsn: str) -> None:
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(BindingRefused, match="--token or --basic-auth"):
            check_binding(WebConfig(host=host))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_binding(WebConfig(host=host))
    check_binding(WebConfig(host="0.0.0.0", token=TOKEN))
    check_binding(WebConfig(host="0.0.0.0", basic_auth=("a", "b")))

    result = CliRunner().invoke(main, ["web", "--host", "0.0.0.0", "--dsn", dsn])

    assert result.exit_code == 2, result.output
    assert "refusing to bind 0.0.0.0" in result.output
    assert "--token or --basic-auth" in result.output


def test_the_web_command_serves_the_dashboard_on_localhost(queue: Queue, dsn: str) -> None:
    dead_job(queue)
    with socket.socket() as probe:  # a free port; the server binds it right after
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue_py", "web", "--port", str(port), "--dsn", dsn],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # the short pause only paces the connection attempts
            try:
                reply = Client(f"http://127.0.0.1:{port}").get("/api/stats")
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "pgqueue web did not start"
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]

    assert reply.status == 200
    assert json.loads(reply.body)["queues"][0]["dead"] == 1
    assert f"http://127.0.0.1:{port}" in output


def test_web_command_checks_its_options(dsn: str) -> None:
    bad_auth = CliRunner().invoke(main, ["web", "--basic-auth", "nopassword", "--dsn", dsn])
    empty_token = CliRunner().invoke(main, ["web", "--token", "", "--dsn", dsn])
    helped = CliRunner().invoke(main, ["web", "--help"])

    assert bad_auth.exit_code == 2 and "user:pass" in bad_auth.output
    assert empty_token.exit_code == 2 and "--token" in empty_token.output
    assert "--read-only" in helped.output and "127.0.0.1" in helped.output
    assert parse_basic_auth("ops:a:b") == ("ops", "a:b")


def test_a_host_header_other_than_localhost_is_refused_on_loopback(
    queue: Queue, open_board: Client
) -> None:
    rebound = open_board.get("/", headers={"Host": "attacker.example:8080"})
    local = open_board.get("/", headers={"Host": "localhost:8080"})

    assert rebound.status == 400
    assert local.status == 200


# -- CSRF and methods ----------------------------------------------------------------------


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    queue: Queue, open_board: Client
) -> None:
    job_id = dead_job(queue)
    token = open_board.get("/dead").csrf_token()
    stranger = Client(open_board.base_url)  # its own cookie: the token is not for it
    stranger.get("/")

    refused = [
        open_board.post(f"/jobs/{job_id}/retry", {}),
        open_board.post(f"/jobs/{job_id}/retry", {"csrf_token": "0" * 64}),
        stranger.post(f"/jobs/{job_id}/retry", {"csrf_token": token}),
        Client(open_board.base_url).post(f"/jobs/{job_id}/retry", {"csrf_token": token}),
        open_board.post(f"/jobs/{job_id}/retry", {"csrf_token": token},
                        headers={"Origin": "http://attacker.example"}),
        open_board.post("/queues/mail/pause", {}),
    ]
    assert [r.status for r in refused] == [403] * len(refused)
    assert "CSRF" in refused[0].body and "Cross-origin" in refused[4].body
    assert job_state(queue, job_id) == "dead"
    assert not queue.stats()[0].paused

    accepted = open_board.post(f"/jobs/{job_id}/retry", {"csrf_token": token, "next": "/dead"})

    assert accepted.status == 303
    assert accepted.headers["location"] == f"/dead?notice=retried&job={job_id}"
    assert job_state(queue, job_id) == "available"


def test_a_get_cannot_act(queue: Queue, open_board: Client) -> None:
    job_id = dead_job(queue)

    assert open_board.get(f"/jobs/{job_id}/retry").status == 405
    assert open_board.get("/queues/mail/pause").status == 405
    assert job_state(queue, job_id) == "dead"


def test_an_action_redirects_only_within_the_dashboard(queue: Queue, open_board: Client) -> None:
    job_id = dead_job(queue)
    token = open_board.get("/").csrf_token()

    reply = open_board.post(f"/jobs/{job_id}/retry",
                            {"csrf_token": token, "next": "//attacker.example/x"})  # fmt: skip

    assert reply.status == 303
    assert reply.headers["location"].startswith(f"/jobs/{job_id}?")


# -- read-only -----------------------------------------------------------------------------


def test_read_only_with_a_viewer_role_shows_every_page_and_refuses_actions(
    queue: Queue, dsn: str, server_dsn: str
) -> None:
    dead_id = dead_job(queue)
    unknown_id = unknown_outcome_job(queue)
    add_schedules(dsn)
    with viewer_dsn(server_dsn, dsn) as viewer, Queue(viewer, max_connections=2) as as_viewer:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_viewer.retry(dead_id)  # the role itself may not act, whatever the app does
        with served(as_viewer, read_only=True) as server:
            board = Client(server.url)
            pages = {path: board.get(path) for path in
                     ["/", "/api/stats", "/dead", f"/jobs/{dead_id}", f"/jobs/{unknown_id}",
                      "/outcomes", "/schedules"]}  # fmt: skip
            token = pages["/"].csrf_token() if 'name="csrf_token"' in pages["/"].body else "0"
            refused = [
                board.post(f"/jobs/{dead_id}/retry", {"csrf_token": token}),
                board.post(f"/jobs/{unknown_id}/cancel", {"csrf_token": token}),
                board.post(f"/jobs/{unknown_id}/resolve",
                           {"csrf_token": token, "effect_key": "charge-card", "ran": "no"}),
                board.post("/queues/mail/pause", {"csrf_token": token}),
            ]  # fmt: skip

    assert {path: r.status for path, r in pages.items()} == {path: 200 for path in pages}
    assert "smtp said no" in pages["/dead"].body
    assert "charge-card" in pages["/outcomes"].body
    assert "nightly-report" in pages["/schedules"].body
    assert "read-only" in pages["/"].body
    for path, reply in pages.items():
        assert 'method="post"' not in reply.body, f"{path} shows an action in read-only mode"
    assert [r.status for r in refused] == [403] * 4
    assert all("read-only" in r.body for r in refused)
    assert job_state(queue, dead_id) == "dead"
    assert job_state(queue, unknown_id) == "available"
    assert marker_row(dsn, unknown_id, "charge-card") == ("started", None)
    assert not any(s.paused for s in queue.stats())


# -- pages ---------------------------------------------------------------------------------


def test_the_queues_page_and_its_json_show_the_counts(queue: Queue, open_board: Client) -> None:
    dead_job(queue)
    queue.add(greet, {"name": "Ada", "times": 1}, queue="mail")
    queue.add(greet, {"name": "Ada", "times": 1}, queue="mail", delay=timedelta(hours=1))
    queue.pause("mail")
    with psycopg.connect(queue.dsn) as conn:  # the due job waited 90 s
        conn.execute("update pgq.jobs set run_at = now() - interval '90 seconds'"
                     " where state = 'available' and run_at <= now()")  # fmt: skip

    page = open_board.get("/")
    api = open_board.get("/api/stats")

    assert page.status == 200
    row = re.search(r'<tr data-queue="mail">(.*?)</tr>', page.body, re.S)
    assert row is not None
    cells = dict(re.findall(r'data-field="(\w+)">(.*?)</td>', row.group(1), re.S))
    assert cells["available"] == "1" and cells["scheduled"] == "1" and cells["running"] == "0"
    assert "paused" in cells["paused"] and "1</a>" in cells["dead"]
    assert cells["oldest_runnable_age"].startswith("1m 3")
    assert "/queues/mail/resume" in page.body
    [mail] = json.loads(api.body)["queues"]
    assert api.headers["content-type"] == "application/json"
    assert (mail["queue"], mail["available"], mail["scheduled"], mail["dead"], mail["paused"]) == (
        "mail", 1, 1, 1, True)  # fmt: skip
    assert 89 < mail["oldest_runnable_age"] < 150


def test_pause_and_resume_through_their_buttons(queue: Queue, open_board: Client) -> None:
    queue.add(greet, {"name": "Ada", "times": 1}, queue="mail")
    token = open_board.get("/").csrf_token()

    paused = open_board.post("/queues/mail/pause", {"csrf_token": token, "next": "/"})
    assert paused.status == 303 and queue.stats()[0].paused
    resumed = open_board.post("/queues/mail/resume", {"csrf_token": token, "next": "/"})
    assert resumed.status == 303 and not queue.stats()[0].paused
    unknown = open_board.post("/queues/nosuch/pause", {"csrf_token": token})
    assert unknown.status == 409 and "nosuch" in unknown.body


def test_the_job_page_shows_payload_result_every_error_and_the_markers(
    queue: Queue, dsn: str, open_board: Client
) -> None:
    job_id = queue.add(greet, {"name": "Hopper", "times": 3}, queue="mail", max_retries=2)
    for error in ("first <b>boom</b>", "second boom"):
        [c] = queue.claim("web-test", queues=["mail"])
        queue.fail(c.id, c.lease_token, error)
        with psycopg.connect(dsn) as conn:  # its backoff is over
            conn.execute("update pgq.jobs set run_at = now() where id = %s", (job_id,))
    [c] = queue.claim("web-test", queues=["mail"])
    queue.once_begin(c.id, c.lease_token, "send-mail")
    queue.once_finish(c.id, c.lease_token, "send-mail", {"message_id": "m-1"})
    with psycopg.connect(dsn) as conn:
        conn.execute("select pgq.complete(%s, %s, %s)",
                     (c.id, c.lease_token, json.dumps({"delivered": 3})))  # fmt: skip

    page = open_board.get(f"/jobs/{job_id}").body

    assert "succeeded" in page and "Hopper" in page
    assert '&#34;delivered&#34;: 3' in page or '"delivered": 3' in page
    assert "first &lt;b&gt;boom&lt;/b&gt;" in page  # errors are escaped
    assert "second boom" in page
    assert "send-mail" in page and "m-1" in page
    assert "Did this effect run?" not in page  # nothing unknown: no resolve form
    assert open_board.get("/jobs/999999").status == 404
    assert open_board.get("/jobs/abc").status == 404
    assert open_board.get("/jobs?id=12").headers["location"] == "/jobs/12"


def test_the_dead_letter_and_unknown_outcomes_pages_list_them(
    queue: Queue, open_board: Client
) -> None:
    dead_id = dead_job(queue)
    unknown_id = unknown_outcome_job(queue)

    dead = open_board.get("/dead").body
    only_other = open_board.get("/dead?queue=other").body
    outcomes = open_board.get("/outcomes").body
    job = open_board.get(f"/jobs/{unknown_id}").body

    assert f'data-job-id="{dead_id}"' in dead and "smtp said no" in dead
    assert f"/jobs/{dead_id}/retry" in dead
    assert "No dead jobs" in only_other
    assert f'data-job-id="{unknown_id}"' in outcomes and "charge-card" in outcomes
    assert "Did this effect run?" in job and f"/jobs/{unknown_id}/resolve" in job


def test_resolving_an_outcome_checks_its_form_and_changes_nothing_when_wrong(
    queue: Queue, dsn: str, open_board: Client
) -> None:
    job_id = unknown_outcome_job(queue)
    token = open_board.get(f"/jobs/{job_id}").csrf_token()
    url = f"/jobs/{job_id}/resolve"

    bad = [
        open_board.post(url, {"csrf_token": token, "effect_key": "charge-card", "ran": "maybe"}),
        open_board.post(url, {"csrf_token": token, "effect_key": "charge-card", "ran": "yes",
                              "result": "{not json"}),
        open_board.post(url, {"csrf_token": token, "ran": "yes"}),
    ]  # fmt: skip
    missing = open_board.post(url, {"csrf_token": token, "effect_key": "nosuch", "ran": "no"})

    assert [r.status for r in bad] == [400, 400, 400]
    assert "Invalid ran" in bad[0].body and "not JSON" in bad[1].body
    assert missing.status == 409 and "nosuch" in missing.body
    assert marker_row(dsn, job_id, "charge-card") == ("started", None)

    ran_not = open_board.post(url, {"csrf_token": token, "effect_key": "charge-card", "ran": "no"})

    assert ran_not.status == 303
    assert marker_row(dsn, job_id, "charge-card") is None  # the next attempt runs it


def add_schedules(dsn: str) -> int:
    """Two schedules, one of which has run once: returns its last job's id."""
    with psycopg.connect(dsn) as conn:
        conn.execute("select pgq.schedule('nightly-report', '0 3 * * *', 'report',"
                     " queue => 'reports', timezone => 'Europe/Paris')")
        conn.execute("select pgq.schedule('every-5', '*/5 * * * *', 'sweep')")
        conn.execute("update pgq.job_schedules set next_run_at = now() - interval '1 minute'"
                     " where schedule_name = 'every-5'")
        assert conn.execute("select pgq.tick()").fetchone() == (1,)
        row = conn.execute("select last_job_id from pgq.job_schedules"
                           " where schedule_name = 'every-5'").fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def test_the_schedules_page_lists_every_schedule_and_its_last_job(
    queue: Queue, dsn: str, open_board: Client
) -> None:
    assert "No schedules" in open_board.get("/schedules").body
    last_job = add_schedules(dsn)

    page = open_board.get("/schedules").body

    rows = dict(re.findall(r'<tr data-schedule="([^"]+)">(.*?)</tr>', page, re.S))
    assert sorted(rows) == ["every-5", "nightly-report"]
    assert "0 3 * * *" in rows["nightly-report"] and "Europe/Paris" in rows["nightly-report"]
    assert "reports" in rows["nightly-report"]
    assert f'href="/jobs/{last_job}"' in rows["every-5"] and "available" in rows["every-5"]
    assert [s.schedule_name for s in queue.schedules()] == ["every-5", "nightly-report"]


def test_pages_load_nothing_from_another_site(queue: Queue, open_board: Client) -> None:
    job_id = dead_job(queue)
    links: list[str] = []
    for path in ["/", "/dead", f"/jobs/{job_id}", "/outcomes", "/schedules"]:
        links += re.findall(r'(?:src|href)="([^"]+)"', open_board.get(path).body)
    script = open_board.get("/static/dashboard.js")
    style = open_board.get("/static/dashboard.css")

    external = [u for u in links if re.match(r"(https?:)?//", u)
                and not u.startswith(open_board.base_url)]  # fmt: skip
    assert not external
    assert script.status == 200 and "fetch(" in script.body
    assert style.status == 200 and ":root" in style.body


def test_limits_show_when_queue_stats_has_them() -> None:
    @dataclass(frozen=True)
    class WithLimits:
        concurrency: int | None
        rate_limit: int | None
        rate_period: timedelta | None
        key_concurrency: int | None

    assert format_limits(WithLimits(5, 100, timedelta(minutes=1), 2)) == (
        "5 running · 100 per 1m 00s · 2 per key")  # fmt: skip
    assert format_limits(WithLimits(None, 0, None, None)) == "none"
    assert format_limits(object()) is None


def test_format_age_is_short() -> None:
    assert [format_age(d) for d in (None, timedelta(milliseconds=850), timedelta(seconds=42),
            timedelta(seconds=192), timedelta(hours=5, minutes=2), timedelta(days=2, hours=3))
            ] == ["-", "850ms", "42s", "3m 12s", "5h 02m", "2d 03h"]  # fmt: skip


# -- the Queue reads the dashboard uses ----------------------------------------------------


def test_job_status_and_once_outcomes_read_what_the_engine_keeps(queue: Queue, dsn: str) -> None:
    dead_id = dead_job(queue)
    unknown_id = unknown_outcome_job(queue)

    status = queue.job_status(dead_id)
    [outcome] = queue.once_outcomes(job_id=unknown_id)

    assert (status.state, status.attempt, status.last_error) == ("dead", 1, "smtp said no")
    assert (outcome.effect_key, outcome.outcome, outcome.job_state) == (
        "charge-card", "unknown", "available")  # fmt: skip
    assert [o.job_id for o in queue.once_outcomes(outcome="unknown")] == [unknown_id]
    assert queue.once_outcomes(outcome="done") == []
    assert int(scalar(dsn, "select count(*) from pgq.once_markers")) == 1


def test_async_queue_reads_the_same_once_outcomes(queue: Queue, dsn: str) -> None:
    unknown_id = unknown_outcome_job(queue)

    async def read() -> list[OnceOutcome]:
        async with AsyncQueue(dsn) as aq:
            return await aq.once_outcomes(job_id=unknown_id, outcome="unknown")

    assert asyncio.run(read()) == queue.once_outcomes(job_id=unknown_id)


def test_job_status_of_an_unknown_job_raises(queue: Queue) -> None:
    from pgqueue_py.client.errors import JobNotFound

    with pytest.raises(JobNotFound):
        queue.job_status(424242)
