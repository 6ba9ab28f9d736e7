"""A program mypy --strict must reject: wrong payloads where jobs are added, missing keys
where they are handled. Each line mypy must flag ends with a comment naming the error
code in brackets and a piece of the message; tests/test_typing.py checks that exactly
those lines are flagged. The repository-wide
mypy run skips this file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from pgqueue_py import AsyncQueue, Handler, JobContext, JobType, Queue


class SendEmail(TypedDict):
    to: str
    subject: str


@dataclass(frozen=True)
class Resize:
    image_id: int
    width: int


send_email = JobType("send_email", SendEmail, max_retries=5)
resize = JobType("resize", Resize)


def produce(queue: Queue) -> None:
    queue.add(send_email, {"wrong": 1})  # error: [arg-type] "dict[str, int]"
    queue.add(resize, {"image_id": 1, "width": 2})  # error: [arg-type] expected "Resize
    queue.add_many(send_email, [{"to": "a@example.com", "subject": 3}])  # error: [typeddict-item]


async def produce_async(queue: AsyncQueue) -> None:
    await queue.add(send_email, {"wrong": 1})  # error: [arg-type] "dict[str, int]"
    await queue.add(resize, {"image_id": 1, "width": 2})  # error: [arg-type] expected "Resize
    await queue.add_many(send_email, [{"to": "a", "subject": 3}])  # error: [typeddict-item]
    job_id = await queue.add(send_email, {"to": "a@example.com", "subject": "hi"})
    print(job_id + "")  # error: [operator] "int" and "str"


def handle_send_email(ctx: JobContext, payload: SendEmail) -> None:
    print(ctx.job_id, payload["body"])  # error: [typeddict-item] has no key "body"


def handle_resize(ctx: JobContext, payload: Resize) -> None:
    print(payload.height)  # error: [attr-defined] "Resize" has no attribute "height"


email_handler: Handler[SendEmail] = handle_resize  # error: [assignment]
