"""The dashboard's web application: server-rendered pages over ``Queue``'s methods.

Pages read through ``Queue`` (``stats``, ``dead_letter``, ``job``, ``job_errors``,
``job_status``, ``once_outcomes``, ``schedules``) and act through it (``pause``,
``resume``, ``retry``, ``cancel``, ``once_resolve``); the app sends no SQL of its own.
Security, in the order each request meets it:

1. Host: bound to a loopback address, only a loopback ``Host`` header is served (a page
   elsewhere cannot reach the dashboard through DNS rebinding).
2. Authentication, when configured: ``Authorization: Bearer <token>`` (or the cookie
   that ``?token=<token>`` sets once), or HTTP basic credentials; else 401.
3. Actions are POSTs only, refused with 403 in read-only mode, and need a CSRF token: an
   HMAC of the browser's ``pgqueue_csrf`` cookie under a key made at start-up, in a form
   field; a cross-origin ``Origin`` header is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pgqueue_py.client.errors import PgqError
from pgqueue_py.client.queue import Queue

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSRF_COOKIE = "pgqueue_csrf"
CSRF_FIELD = "csrf_token"
TOKEN_COOKIE = "pgqueue_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

NOTICES: Mapping[str, str] = {
    "retried": "Job {job} is available again.",
    "cancelled": "Job {job} is cancelled.",
    "resolved": "The outcome of {effect} of job {job} is settled.",
    "paused": "Queue {queue} is paused.",
    "resumed": "Queue {queue} is resumed.",
}


@dataclass(frozen=True)
class WebConfig:
    """How the dashboard is served: read-only or not, and its credentials."""

    host: str = "127.0.0.1"
    read_only: bool = False
    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    refresh_seconds: float = 2.0


class BindingRefused(ValueError):
    """Binding to a non-loopback address without a token or basic credentials."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_binding(config: WebConfig) -> None:
    """Refuse to serve beyond loopback without credentials; BindingRefused says why."""
    if not is_loopback(config.host) and config.token is None and config.basic_auth is None:
        raise BindingRefused(
            f"refusing to bind {config.host}: the dashboard is reachable from other machines"
            " there; pass --token or --basic-auth user:pass (or bind 127.0.0.1)"
        )


def parse_basic_auth(value: str) -> tuple[str, str]:
    """``user:pass`` as a pair; ValueError when either part is empty."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("invalid basic auth: expected user:pass, both non-empty")
    return user, password


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _local_path(value: str | None, default: str) -> str:
    """A redirect target that stays on this site: a path, never ``//host`` or a URL."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


# -- formatting, for the templates ----------------------------------------------------------


def format_age(age: timedelta | None) -> str:
    """A short age: ``-`` for none, ``850ms``, ``42s``, ``3m 12s``, ``5h 02m``, ``2d 03h``."""
    if age is None:
        return "-"
    seconds = age.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def format_time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def format_limits(stats: object) -> str | None:
    """A queue's flow-control limits, when ``pgq.queue_stats`` has them (``concurrency``,
    ``rate_limit`` per ``rate_period``, ``key_concurrency``; NULL or 0 is no limit), as
    ``5 running · 100 per 1m 00s · 2 per key``; None when the engine has no limits."""
    names = ("concurrency", "rate_limit", "rate_period", "key_concurrency")
    if not any(hasattr(stats, n) for n in names):
        return None
    concurrency, rate, period, per_key = (getattr(stats, n, None) for n in names)
    parts = []
    if concurrency:
        parts.append(f"{concurrency} running")
    if rate:
        every = format_age(period) if isinstance(period, timedelta) else str(period)
        parts.append(f"{rate} per {every}")
    if per_key:
        parts.append(f"{per_key} per key")
    return " · ".join(parts) or "none"


def format_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _stats_json(queue: Queue) -> list[dict[str, Any]]:
    rows = []
    for s in queue.stats():
        row = {k: v.total_seconds() if isinstance(v, timedelta) else v
               for k, v in asdict(s).items()}  # fmt: skip
        row["oldest_runnable_age_text"] = format_age(s.oldest_runnable_age)
        rows.append(row)
    return rows


# -- the application ------------------------------------------------------------------------


class Dashboard:
    """The pages and actions, over one ``Queue``."""

    def __init__(self, queue: Queue, config: WebConfig) -> None:
        self.queue = queue
        self.config = config
        self._csrf_key = secrets.token_bytes(32)
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        env.filters["age"] = format_age
        env.filters["time"] = format_time
        env.filters["pretty_json"] = format_json
        env.filters["limits"] = format_limits

    # -- security ---------------------------------------------------------------------------

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()

    def _authenticated(self, request: Request) -> bool:
        config = self.config
        if config.token is None and config.basic_auth is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if config.token is not None:
            if scheme.lower() == "bearer" and _same(credentials.strip(), config.token):
                return True
            cookie = request.cookies.get(TOKEN_COOKIE)
            if cookie is not None and _same(cookie, config.token):
                return True
        if config.basic_auth is not None and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            want_user, want_password = config.basic_auth
            # Both compared, always: the time taken says nothing about which was wrong.
            return _same(user, want_user) & _same(password, want_password)
        return False

    def _challenge(self) -> Response:
        scheme = 'Basic realm="pgqueue", charset="UTF-8"' if self.config.basic_auth else "Bearer"
        return PlainTextResponse(
            "401 unauthorized: this dashboard needs its token"
            " (Authorization: Bearer ..., or open it once with ?token=...)"
            " or its basic credentials\n",
            status_code=401,
            headers={"WWW-Authenticate": scheme},
        )

    async def guard(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Host check, authentication and the CSRF cookie, for every request."""
        if is_loopback(self.config.host):
            hostname = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
            if not is_loopback(hostname):
                return PlainTextResponse(
                    "400 bad request: this dashboard serves only localhost\n", status_code=400
                )
        token = request.query_params.get("token")
        if (
            self.config.token is not None
            and token is not None
            and request.method == "GET"
            and _same(token, self.config.token)
        ):
            # Trade the token in the address for a cookie, and drop it from the address.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/"
            )
            return response
        if not self._authenticated(request):
            return self._challenge()
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        fresh = len(cookie) < 32
        if fresh:
            cookie = secrets.token_urlsafe(32)
        request.state.csrf_cookie = cookie
        response = await call_next(request)
        if fresh:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict", path="/")
        return response

    async def _action_form(self, request: Request) -> FormData | Response:
        """The form of an action, or the refusal: read-only, cross-origin, bad CSRF."""
        if self.config.read_only:
            return self.error(request, 403, "This dashboard is read-only: actions are disabled.")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
            return self.error(request, 403, "Cross-origin request refused.")
        form = await request.form()
        sent = form.get(CSRF_FIELD)
        cookie = request.cookies.get(CSRF_COOKIE)
        if not isinstance(sent, str) or cookie is None or not _same(sent, self.csrf_token(cookie)):
            return self.error(
                request, 403, "Missing or invalid CSRF token: reload the page and try again."
            )
        return form

    # -- rendering --------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        cookie: str = getattr(request.state, "csrf_cookie", "")
        notice = NOTICES.get(request.query_params.get("notice", ""))
        base = {
            "read_only": self.config.read_only,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf_token(cookie) if cookie else "",
            "refresh_ms": int(self.config.refresh_seconds * 1000),
            "notice": notice.format(
                job=request.query_params.get("job", ""),
                queue=request.query_params.get("queue", ""),
                effect=request.query_params.get("effect", ""),
            ) if notice else None,
            "path": request.url.path,
        }  # fmt: skip
        return self.templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status_code
        )

    def error(self, request: Request, status_code: int, message: str) -> Response:
        return self.render(
            request, "error.html", {"status_code": status_code, "message": message}, status_code
        )

    def _done(self, form: FormData, default: str, **notice: str) -> Response:
        target = _local_path(str(form.get("next") or ""), default)
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{sep}{urlencode(notice)}", status_code=303)

    # -- pages ------------------------------------------------------------------------------

    def queues_page(self, request: Request) -> Response:
        return self.render(request, "queues.html", {"stats": self.queue.stats()})

    def stats_api(self, request: Request) -> Response:
        return JSONResponse({"queues": _stats_json(self.queue)})

    def dead_page(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        rows = self.queue.dead_letter(queue=queue, limit=200)
        return self.render(request, "dead.html", {"dead": rows, "queue": queue})

    def job_page(self, request: Request) -> Response:
        job_id = _int_param(request.path_params["job_id"])
        job = self.queue.job(job_id) if job_id is not None else None
        if job_id is None or job is None:
            return self.error(request, 404, f"No job {request.path_params['job_id']}.")
        context = {
            "job": job,
            "status": self.queue.job_status(job_id),
            "errors": self.queue.job_errors(job_id),
            "markers": self.queue.once_outcomes(job_id=job_id, limit=1000),
        }
        return self.render(request, "job.html", context)

    def find_job(self, request: Request) -> Response:
        job_id = _int_param(request.query_params.get("id", ""))
        if job_id is None:
            return self.error(request, 400, "Give a job id: a whole number.")
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    def schedules_page(self, request: Request) -> Response:
        return self.render(request, "schedules.html", {"schedules": self.queue.schedules()})

    def outcomes_page(self, request: Request) -> Response:
        rows = self.queue.once_outcomes(outcome="unknown", limit=200)
        return self.render(request, "outcomes.html", {"outcomes": rows})

    # -- actions ----------------------------------------------------------------------------

    async def job_action(self, request: Request) -> Response:
        form = await self._action_form(request)
        if isinstance(form, Response):
            return form
        job_id = _int_param(request.path_params["job_id"])
        action = request.path_params["action"]
        if job_id is None:
            return self.error(request, 404, f"No job {request.path_params['job_id']}.")
        try:
            if action == "retry":
                await run_in_threadpool(self.queue.retry, job_id)
                return self._done(form, f"/jobs/{job_id}", notice="retried", job=str(job_id))
            if action == "cancel":
                await run_in_threadpool(self.queue.cancel, job_id)
                return self._done(form, f"/jobs/{job_id}", notice="cancelled", job=str(job_id))
            if action == "resolve":
                return await self._resolve(request, form, job_id)
        except PgqError as exc:
            return self.error(request, 409, str(exc))
        return self.error(request, 404, f"No action {action}.")

    async def _resolve(self, request: Request, form: FormData, job_id: int) -> Response:
        effect_key = form.get("effect_key")
        ran = form.get("ran")
        text = form.get("result")
        if not isinstance(effect_key, str) or not effect_key:
            return self.error(request, 400, "Missing effect_key: which run-once marker.")
        if ran not in ("yes", "no"):
            return self.error(request, 400, "Invalid ran: choose yes (it ran) or no.")
        result: Any = None
        if ran == "yes" and isinstance(text, str) and text.strip():
            try:
                result = json.loads(text)
            except json.JSONDecodeError as exc:
                return self.error(request, 400, f"Invalid result: not JSON ({exc.msg}).")
        await run_in_threadpool(
            lambda: self.queue.once_resolve(job_id, effect_key, ran=ran == "yes", result=result)
        )
        return self._done(
            form, f"/jobs/{job_id}", notice="resolved", job=str(job_id), effect=effect_key
        )

    async def queue_action(self, request: Request) -> Response:
        form = await self._action_form(request)
        if isinstance(form, Response):
            return form
        name = request.path_params["queue"]
        action = request.path_params["action"]
        try:
            if action == "pause":
                await run_in_threadpool(self.queue.pause, name)
                return self._done(form, "/", notice="paused", queue=name)
            if action == "resume":
                await run_in_threadpool(self.queue.resume, name)
                return self._done(form, "/", notice="resumed", queue=name)
        except PgqError as exc:
            return self.error(request, 409, str(exc))
        return self.error(request, 404, f"No action {action}.")


def _int_param(value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 < number < 2**63 else None


def create_app(queue: Queue, config: WebConfig | None = None) -> Starlette:
    """The dashboard as an ASGI application over ``queue``."""
    config = config or WebConfig()
    board = Dashboard(queue, config)
    routes = [
        Route("/", board.queues_page, name="queues"),
        Route("/api/stats", board.stats_api, name="stats_api"),
        Route("/dead", board.dead_page, name="dead"),
        Route("/jobs", board.find_job, name="find_job"),
        Route("/jobs/{job_id}", board.job_page, name="job"),
        Route("/outcomes", board.outcomes_page, name="outcomes"),
        Route("/schedules", board.schedules_page, name="schedules"),
        Route("/jobs/{job_id}/{action}", board.job_action, methods=["POST"]),
        Route("/queues/{queue}/{action}", board.queue_action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=board.guard)]
    )
    app.state.dashboard = board
    return app
