"""Per-(action, target) locks and cooldowns, so one target is never healed by two runs at once or in a loop.

A run claims the lock of every action its plan may use while it is admitted and releases them when it
ends; a confirmed lock expires on its own after `lock_ttl` should the sidecar die mid-run. After a step
that changed something, its (action, target) cools down: an alert that keeps firing cannot hammer the
target. A release or cooldown the store cannot take now is retried in the background (`StoreBacklog`),
and until the release lands the finished run's lock is taken over by the next run of this process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from exporter.heal.backlog import StoreBacklog
from exporter.heal.claims import Claims
from exporter.heal.store import Store


class ActionLocks:
    def __init__(self, store: Store, backlog: StoreBacklog, lock_ttl: float, cooldown: float,
                 instance: str | None = None) -> None:
        self._store = store
        self._backlog = backlog
        self._lock_ttl = lock_ttl
        self._cooldown = cooldown
        # Hosts of a fleet share target names (every host has its "shop"), but not their files.
        self._scope = "" if instance is None else f"{hashlib.sha256(instance.encode()).hexdigest()[:16]}:"

    def _lock_key(self, action: str, target: str) -> str:
        return f"lock:{self._scope}{action}:{target}"

    def _cooldown_key(self, action: str, target: str) -> str:
        return f"cooldown:{self._scope}{action}:{target}"

    async def acquire(self, claims: Claims, actions: Iterable[str], target: str) -> bool:
        """Claim every lock or none (sorted, so two runs never each hold half of the other's set).

        False when another run holds one; the caller then gives back what `claims` took.
        """
        for action in sorted(set(actions)):
            if await claims.claim(self._lock_key(action, target), self._lock_ttl) != "claimed":
                return False
        return True

    async def release(self, actions: Iterable[str], target: str, owner: str) -> None:
        """Release `owner`'s locks; never raises: what the store cannot take now is retried."""
        for action in sorted(set(actions)):
            key = self._lock_key(action, target)

            async def write(key: str = key) -> None:
                await self._store.release(key, owner)

            await self._backlog.attempt(key, "release", write, self._lock_ttl, owner)

    async def cooling_down(self, action: str, target: str) -> bool:
        return await self._store.exists(self._cooldown_key(action, target))

    async def start_cooldown(self, action: str, target: str) -> None:
        """Start the cooldown; never raises: retried later, it still ends when it would have."""
        key = self._cooldown_key(action, target)
        ends = time.monotonic() + self._cooldown

        async def write() -> None:
            if (left := ends - time.monotonic()) > 0:
                await self._store.put(key, left)

        await self._backlog.attempt(key, "cooldown", write, self._cooldown)
