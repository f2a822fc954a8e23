"""Idempotency: one alert occurrence (fingerprint + startsAt) is acted on once, however often it arrives.

Alertmanager resends a firing alert every group_interval/repeat_interval, retries on 5xx and HA pairs
deliver each notification twice; all of those carry the same fingerprint and startsAt. A new occurrence
of the same alert (resolved, then firing again) has a new startsAt and is acted on again.

Only a confirmed claim (its run was admitted) makes a delivery a `duplicate`. A delivery that meets a
pending claim, another admission of the same occurrence still in progress, waits for it to be confirmed
or given back, within the admission's deadline; so a claim whose admission failed never answers
`duplicate` (see `claims`).
"""

from __future__ import annotations

import asyncio
import hashlib

from exporter.heal.claims import Claims

FIRST_WAIT, MAX_WAIT = 0.005, 0.2  # seconds between looks at another admission's pending claim


def occurrence_key(fingerprint: str, starts_at: str) -> str:
    # Hashed so that whatever the payload holds becomes a fixed-size, inert key.
    digest = hashlib.sha256(f"{fingerprint}\0{starts_at}".encode()).hexdigest()
    return f"dedup:{digest}"


class Deduplicator:
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl

    async def first_delivery(self, claims: Claims, fingerprint: str, starts_at: str) -> bool:
        """True if this delivery is to act (its claim is pending until `claims` is confirmed); False if
        another delivery's run was admitted. Waits while another admission's claim is pending: the
        caller bounds the wait (with its admission deadline)."""
        key = occurrence_key(fingerprint, starts_at)
        wait = FIRST_WAIT
        while (state := await claims.claim(key, self._ttl)) == "pending":
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_WAIT)
        return state == "claimed"
