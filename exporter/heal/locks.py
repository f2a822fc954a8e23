"""Per-(action, target) locks and cooldowns, so one target is never healed by two runs at once or in a loop.

A run takes the lock of every action its plan may use before it starts and releases them when it ends;
the lock expires on its own after `lock_ttl` should the sidecar die mid-run. After a step that changed
something, its (action, target) cools down: an alert that keeps firing cannot hammer the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from exporter.heal.store import Store


class ActionLocks:
    def __init__(self, store: Store, lock_ttl: float, cooldown: float, instance: str | None = None) -> None:
        self._store = store
        self._lock_ttl = lock_ttl
        self._cooldown = cooldown
        # Hosts of a fleet share target names (every host has its "shop"), but not their files.
        self._scope = "" if instance is None else f"{hashlib.sha256(instance.encode()).hexdigest()[:16]}:"

    def _lock_key(self, action: str, target: str) -> str:
        return f"lock:{self._scope}{action}:{target}"

    def _cooldown_key(self, action: str, target: str) -> str:
        return f"cooldown:{self._scope}{action}:{target}"

    async def acquire(self, actions: Iterable[str], target: str, owner: str) -> bool:
        """Take every lock or none (sorted, so two runs never each hold half of the other's set)."""
        taken: list[str] = []
        for action in sorted(set(actions)):
            if not await self._store.claim(self._lock_key(action, target), owner, self._lock_ttl):
                for held in taken:
                    await self._store.release(self._lock_key(held, target), owner)
                return False
            taken.append(action)
        return True

    async def release(self, actions: Iterable[str], target: str, owner: str) -> None:
        for action in sorted(set(actions)):
            await self._store.release(self._lock_key(action, target), owner)

    async def cooling_down(self, action: str, target: str) -> bool:
        return await self._store.exists(self._cooldown_key(action, target))

    async def start_cooldown(self, action: str, target: str) -> None:
        await self._store.put(self._cooldown_key(action, target), self._cooldown)
