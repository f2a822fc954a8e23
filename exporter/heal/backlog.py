"""Heal store writes that failed or whose outcome is unknown, retried until they land or matter no more.

A run's cleanup (releasing its locks, starting its cooldowns, counting its result for ineffective
plans) must not depend on the store answering at that moment: a store that blinks would otherwise keep
a finished run's lock for `lock_ttl` and turn a successful run into a failed one. Each such write is
idempotent and queued here under its key (a newer write to the same key replaces an older one); one
background task retries the queue with a growing delay while it is not empty, and drops a write once its
deadline passes, when the key it would fix has expired on its own.

The queue also answers "which of my claims on this key did I give up on": a claim write whose outcome is
unknown is queued as a release, and its token is handed to the store's `claim` as abandoned, so that the
next request for the same key takes it over at once instead of meeting a claim nobody will confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from exporter.heal.store import STORE_ERRORS, Store

log = logging.getLogger(__name__)

FIRST_DELAY, MAX_DELAY = 0.2, 5.0  # seconds between attempts while the store does not answer
MAX_WRITES = 10_000  # a store down for hours must not grow the queue without bound

Write = Callable[[], Awaitable[None]]  # one idempotent store write, retried as it is


@dataclass(slots=True)
class _Queued:
    operation: str  # one of audit.STORE_OPERATIONS
    write: Write
    until: float  # monotonic; after this the write no longer matters
    tokens: tuple[str, ...] = ()  # a release: the claims' tokens, which later claims may take over


class StoreBacklog:
    def __init__(self, store: Store, failures: Counter[str] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._now = monotonic
        self._writes: dict[str, _Queued] = {}
        self._task: asyncio.Task[None] | None = None
        # Store errors by operation, retries included (cachewarden_heal_store_failures_total).
        self.failures: Counter[str] = Counter() if failures is None else failures

    def __len__(self) -> int:
        return len(self._writes)

    def abandoned(self, key: str) -> list[str]:
        """Tokens of this process's claims on `key` that it gave up and has not released yet."""
        entry = self._writes.get(key)
        return list(entry.tokens) if entry is not None else []

    def release(self, key: str, token: str, within: float) -> None:
        """Queue the release of `token`'s claim on `key`, which matters for `within` seconds."""
        async def write() -> None:
            await self._store.release(key, token)

        self.add(key, "release", write, within, token)

    def add(self, key: str, operation: str, write: Write, within: float,
            token: str | None = None) -> None:
        """Queue `write` (idempotent) for `key`, replacing what was queued for it, to retry later.

        Two releases of one key (two requests for one alert gave up their claims) are both kept: either
        claim may be the one the store holds when it comes back.
        """
        until = self._now() + within
        tokens: tuple[str, ...] = () if token is None else (token,)
        if (previous := self._writes.pop(key, None)) is not None and previous.tokens and tokens:
            first, then = previous.write, write

            async def both() -> None:
                await first()
                await then()

            write, until, tokens = both, max(until, previous.until), (*previous.tokens, *tokens)
        if len(self._writes) >= MAX_WRITES:
            oldest = next(iter(self._writes))
            del self._writes[oldest]
            log.warning("heal store backlog full (%d writes): dropped the oldest", MAX_WRITES)
        self._writes[key] = _Queued(operation, write, until, tokens)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry_forever(), name="heal-store-backlog")

    async def attempt(self, key: str, operation: str, write: Write,
                      within: float, token: str | None = None) -> bool:
        """Write now; if the store fails, count it, log it and queue the write. True if it landed.

        While writes are queued the store is known to be failing: this one joins the queue at once
        (in order, and without waiting on the store's timeout again).
        """
        if self._writes:
            self.add(key, operation, write, within, token)
            return False
        try:
            await write()
        except STORE_ERRORS as exc:
            self.failures[operation] += 1
            log.warning("heal store unavailable (%s: %s); retrying in the background",
                        operation, type(exc).__name__)
            self.add(key, operation, write, within, token)
            return False
        if (queued := self._writes.get(key)) is not None and queued.write is not write:
            del self._writes[key]  # an older write to the same key, superseded by this one
        return True

    async def flush(self) -> bool:
        """Try every queued write once, oldest first; stop at the first failure. True when empty."""
        for key, entry in list(self._writes.items()):
            if self._writes.get(key) is not entry:
                continue  # replaced while an earlier write was awaited
            if entry.until <= self._now():
                del self._writes[key]
                continue
            try:
                await entry.write()
            except STORE_ERRORS:
                self.failures[entry.operation] += 1
                return False
            except Exception:  # a bug in one write must not stop the others or loop forever
                log.exception("heal store write %s for %s failed; dropped", entry.operation, key)
            if self._writes.get(key) is entry:
                del self._writes[key]
        return not self._writes

    async def _retry_forever(self) -> None:
        delay = FIRST_DELAY
        while self._writes:
            await asyncio.sleep(delay)
            if await self.flush():
                log.info("heal store answers again: the queued writes landed")
            else:
                delay = min(delay * 2, MAX_DELAY)

    async def close(self, drain: float) -> None:
        """Give the queued writes `drain` seconds to land, then stop retrying."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                # Polling: a store that comes back sends no event to wait on.
                while not await self.flush():  # noqa: ASYNC110
                    await asyncio.sleep(FIRST_DELAY)
        if self._writes:
            log.warning("%d heal store writes did not land before shutdown (locks expire after "
                        "heal.lock_ttl)", len(self._writes))
