"""The errors pgqueue raises: one class per project SQLSTATE (``pgq.error_codes``), and
those that arise in Python (``OutcomeUnknown``, ``ConfigurationError``,
``ConnectionUnavailable``).

``translate`` alone inspects a ``psycopg.Error``: a project SQLSTATE becomes its class,
with the database's message; anything else is returned unchanged. Callers raise the
result ``from`` the psycopg error, so it stays attached as ``__cause__``.
"""

from __future__ import annotations

from typing import ClassVar

import psycopg
from psycopg_pool import PoolTimeout


class PgqError(Exception):
    """Base class of every error pgqueue raises on its own behalf."""

    sqlstate: ClassVar[str | None] = None
    """The SQLSTATE the engine raises for this error; None for errors made in Python."""

    def __init__(self, message: str | None = None) -> None:
        doc = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        super().__init__(message if message else doc)


class InvalidArgument(PgqError):
    """An argument is missing, empty, too large or out of range; nothing was changed."""

    sqlstate = "PQ001"


class LeaseLost(PgqError):
    """The job's lease was lost: it expired, the job was cancelled, or another worker holds it."""

    sqlstate = "PQ101"


class MarkerNotBegun(PgqError):
    """The run-once marker was not begun under this lease (or it already finished)."""

    sqlstate = "PQ102"


class JobCancelled(LeaseLost):
    """The job was cancelled while this lease held it: stop working on it.

    A kind of lease lost: nothing more is recorded for the job.
    """

    sqlstate = "PQ103"


class JobNotFound(PgqError):
    """No job has this id (it may have been pruned)."""

    sqlstate = "PQ201"


class JobStateConflict(PgqError):
    """The job is not in a state this operation applies to."""

    sqlstate = "PQ202"


class QueueNotFound(PgqError):
    """The queue was never configured nor used."""

    sqlstate = "PQ203"


class MarkerNotFound(PgqError):
    """No unfinished run-once marker has this job id and effect key."""

    sqlstate = "PQ204"


class ScheduleNotFound(PgqError):
    """No schedule has this name."""

    sqlstate = "PQ210"


class OutcomeUnknown(PgqError):
    """An earlier attempt began this run-once effect and never recorded its outcome.

    Whether the effect happened is unknown; it is not repeated. An operator settles it
    with ``Queue.once_resolve`` after checking the outside world.
    """


class NoResult(PgqError):
    """The job ended without a result: it is dead (its attempts are used up) or cancelled."""

    def __init__(self, message: str | None = None, *, state: str = "dead") -> None:
        super().__init__(message)
        self.state = state
        """``dead`` or ``cancelled``."""


class ResultTimeout(PgqError, TimeoutError):
    """The job did not finish within the timeout; it may still finish later."""


class ConfigurationError(PgqError):
    """pgqueue is not configured: for example no DSN was given and DATABASE_URL is unset."""


class ConnectionUnavailable(PgqError, PoolTimeout):
    """No database connection within ``pool_timeout``; the call was not sent.

    The server is unreachable (an outage, a restart) or every pooled connection is
    busy. It is a ``psycopg.OperationalError`` (``psycopg_pool.PoolTimeout``), like
    every other lost-connection error, so code that retries those retries this too.
    """


def _subclasses(cls: type[PgqError]) -> list[type[PgqError]]:
    found: list[type[PgqError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


_BY_SQLSTATE: dict[str, type[PgqError]] = {
    sub.sqlstate: sub for sub in _subclasses(PgqError) if sub.sqlstate is not None
}


def translate(exc: psycopg.Error) -> Exception:
    """The pgqueue error for a project SQLSTATE, else ``exc`` itself.

    Use as ``raise translate(exc) from exc``; the message is the database's.
    """
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is None:
        return exc
    diag = exc.diag
    message = diag.message_primary or str(exc)
    if diag.message_hint:
        message = f"{message} (hint: {diag.message_hint})"
    return cls(message)
