"""Shared by the dashboard tests: jobs in the states the pages show, a read-only login
role, and a small HTTP client that keeps cookies and never follows redirects."""

from __future__ import annotations

import base64
import http.client
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
from helpers import greet
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue_py.client import Queue

CSRF_INPUT = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def dead_job(queue: Queue, *, name: str = "Ada", queue_name: str = "mail") -> int:
    """A job that failed its only attempt, with the error ``smtp said no``."""
    job_id = queue.add(greet, {"name": name, "times": 1}, queue=queue_name, max_retries=0)
    [claimed] = queue.claim("web-test", queues=[queue_name])
    assert queue.fail(claimed.id, claimed.lease_token, "smtp said no") == "dead"
    return job_id


def unknown_outcome_job(queue: Queue, *, effect_key: str = "charge-card") -> int:
    """A job whose first attempt began ``effect_key`` and failed before recording it:
    the job is available again and the effect's outcome is unknown."""
    job_id = queue.add(greet, {"name": "Grace", "times": 2}, queue="billing", max_retries=3)
    [claimed] = queue.claim("web-test", queues=["billing"])
    assert queue.once_begin(claimed.id, claimed.lease_token, effect_key).status == "run"
    assert queue.fail(claimed.id, claimed.lease_token, "worker died mid-charge") == "available"
    return job_id


def job_state(queue: Queue, job_id: int) -> str:
    job = queue.job(job_id)
    assert job is not None, f"job {job_id} not found"
    return job.state


@contextmanager
def viewer_dsn(server_dsn: str, dsn: str) -> Iterator[str]:
    """A DSN for ``dsn``'s database as a fresh login role that is only a member of
    ``pgq_viewer``; the role is dropped afterwards."""
    role = f"pgq_web_viewer_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {} in role pgq_viewer").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield make_conninfo(dsn, user=role, password=password)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            dbname = conninfo_to_dict(dsn)["dbname"]
            admin.execute(
                "select pg_terminate_backend(a.pid) from pg_stat_activity a"
                " where a.usename = %s and a.datname = %s",
                (role, dbname),
            )
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: str

    def csrf_token(self) -> str:
        match = CSRF_INPUT.search(self.body)
        assert match is not None, "no CSRF token in the page"
        return match.group(1)


@dataclass
class Client:
    """HTTP against the dashboard, cookies kept, redirects returned as they are."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        url = urlsplit(self.base_url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        sent = {**self.headers, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
            for header in response.headers.get_all("set-cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    self.cookies[name] = morsel.value
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: Mapping[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, form=form, **kwargs)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
