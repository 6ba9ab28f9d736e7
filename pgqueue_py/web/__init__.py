"""``pgqueue web``: the dashboard (queues, dead letter, jobs, run-once outcomes).

Needs the ``web`` extra: ``pip install 'pgqueue[web]'``.
"""

from __future__ import annotations

from pgqueue_py.web.app import (
    BindingRefused,
    WebConfig,
    check_binding,
    create_app,
    is_loopback,
    parse_basic_auth,
)

__all__ = [
    "BindingRefused",
    "WebConfig",
    "check_binding",
    "create_app",
    "is_loopback",
    "parse_basic_auth",
]
