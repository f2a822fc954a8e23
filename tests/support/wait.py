"""Polling with a deadline: the suite's only way to wait for something to become true (never a sleep)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Call `predicate` until it returns something truthy; return it, or fail after `timeout` seconds.

    Exceptions raised by the predicate count as "not yet" and the last one is reported on failure.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"{message} not met within {timeout:g}s{detail}")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], Awaitable[T]], timeout: float = 10.0,
                         interval: float = 0.05, message: str = "condition") -> T:
    """The asyncio twin of `wait_for`: `predicate` is a coroutine function."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = await predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"{message} not met within {timeout:g}s{detail}")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
