"""Typed job definitions: a job type names its payload type, a TypedDict or a dataclass,
so that ``mypy --strict`` checks the payload where a job is added and where it is handled.

    class SendEmail(TypedDict):
        to: str
        subject: str

    send_email = JobType("send_email", SendEmail, max_retries=5)
    queue.add(send_email, {"to": "a@example.com", "subject": "hi"})

"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeAlias, TypeVar, cast

P = TypeVar("P")
"""A job's payload type: a TypedDict or a dataclass whose fields are JSON values."""


@dataclass(frozen=True)
class JobType(Generic[P]):
    """A kind of job: its name, its payload type and the defaults its jobs are added with.

    ``max_retries`` None takes the queue's default; lower ``priority`` runs first;
    ``timeout`` is how long a handler may run before the worker gives up on it.
    """

    name: str
    payload_type: type[P]
    queue: str = "default"
    max_retries: int | None = None
    priority: int = 0
    timeout: timedelta | None = None
    _decodes_dataclass: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Asked once here, not for every job the worker decodes.
        object.__setattr__(self, "_decodes_dataclass", dataclasses.is_dataclass(self.payload_type))

    def encode(self, payload: P) -> dict[str, object]:
        """The payload as the JSON object stored in ``pgq.jobs.payload``."""
        if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
            return dataclasses.asdict(payload)
        return dict(cast("dict[str, object]", payload))

    def decode(self, data: dict[str, object]) -> P:
        """The payload type back from the stored JSON object."""
        if self._decodes_dataclass:
            return cast("Callable[..., P]", self.payload_type)(**data)
        return cast(P, data)


class _Deferred:
    """Never instantiated: no real payload is a ``Callable[[_Deferred], P]``."""


# How `Queue.add` and `Queue.add_many` declare their payload arguments. mypy infers a
# call's type variables from all its arguments at once, before it types a dict literal
# against a TypedDict, so `queue.add(send_email, {"to": ...})` would fail to infer P
# (python/mypy#19201). An argument whose declared type holds a generic Callable is typed
# in a second pass, once P is known from the job type alone: the literal is then checked
# key by key against the job's TypedDict. The Callable member only serves that purpose.
PayloadArg: TypeAlias = P | Callable[[_Deferred], P]
PayloadsArg: TypeAlias = Sequence[P] | Callable[[_Deferred], Sequence[P]]
