"""Idempotency: one alert occurrence (fingerprint + startsAt) is acted on once, however often it arrives.

Alertmanager resends a firing alert every group_interval/repeat_interval, retries on 5xx and HA pairs
deliver each notification twice; all of those carry the same fingerprint and startsAt. A new occurrence
of the same alert (resolved, then firing again) has a new startsAt and is acted on again.
"""

from __future__ import annotations

import hashlib

from exporter.heal.store import Store


def occurrence_key(fingerprint: str, starts_at: str) -> str:
    # Hashed so that whatever the payload holds becomes a fixed-size, inert key.
    digest = hashlib.sha256(f"{fingerprint}\0{starts_at}".encode()).hexdigest()
    return f"dedup:{digest}"


class Deduplicator:
    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl

    async def first_delivery(self, fingerprint: str, starts_at: str, run_id: str) -> bool:
        """True exactly once per occurrence across every sidecar sharing the store."""
        return await self._store.claim(occurrence_key(fingerprint, starts_at), run_id, self._ttl)

    async def forget(self, fingerprint: str, starts_at: str, run_id: str) -> None:
        """Undo a claim whose run never started (e.g. the target was locked), so a resend can act."""
        await self._store.release(occurrence_key(fingerprint, starts_at), run_id)
