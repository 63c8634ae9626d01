"""A loopback SMTP server that keeps every envelope, for tests whose command reaches the email path."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Tuple

from support.env import Sink, free_port


@contextlib.contextmanager
def smtp_sink(**options: Any) -> Iterator[Tuple[int, Sink]]:
    """(port, sink) of an aiosmtpd server on 127.0.0.1, stopped on exit."""
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port, sink
    finally:
        controller.stop()
