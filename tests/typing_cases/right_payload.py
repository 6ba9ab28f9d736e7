"""A program mypy --strict must accept: payloads and handlers that match their job types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
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
resize = JobType("resize", Resize, queue="images", timeout=timedelta(minutes=1))


def produce(queue: Queue) -> list[int]:
    first = queue.add(send_email, {"to": "a@example.com", "subject": "hi"})
    second = queue.add(resize, Resize(image_id=1, width=640), delay=timedelta(seconds=5))
    rest = queue.add_many(send_email, [{"to": "b@example.com", "subject": "yo"}])
    return [first, second, *rest]


async def produce_async(queue: AsyncQueue) -> list[int]:
    first = await queue.add(send_email, {"to": "a@example.com", "subject": "hi"})
    second = await queue.add(resize, Resize(image_id=1, width=640), delay=timedelta(seconds=5))
    rest = await queue.add_many(send_email, [{"to": "b@example.com", "subject": "yo"}])
    return [first, second, *rest]


def handle_send_email(ctx: JobContext, payload: SendEmail) -> None:
    print(ctx.job_id, ctx.retry_count, payload["to"], payload["subject"].upper())


def handle_resize(ctx: JobContext, payload: Resize) -> str:
    return f"{ctx.job_name}: {payload.image_id} to {payload.width}px"


email_handler: Handler[SendEmail] = handle_send_email
resize_handler: Handler[Resize] = handle_resize


def decode_claimed(queue: Queue) -> list[SendEmail]:
    return [send_email.decode(job.payload) for job in queue.claim("w", queues=["default"])]


async def decode_claimed_async(queue: AsyncQueue) -> list[Resize]:
    return [resize.decode(job.payload) for job in await queue.claim("w", queues=["images"])]
