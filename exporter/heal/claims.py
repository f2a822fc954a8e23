"""The claims one admission makes (an alert occurrence, the locks of its actions), tracked from the
moment each write is sent, so that a write whose outcome is unknown is never left holding a key.

An admission claims keys as pending (see `store`), checks what it must, then confirms them all at once.
If the store fails before the confirmation, every key whose claim may have landed is released in the
background, and until then the next request for the same key takes the claim over (`StoreBacklog`).
A confirmation whose outcome is unknown is treated as done: the run goes ahead, and the confirmation is
retried until it lands or the pending claims expire.
"""

from __future__ import annotations

from exporter.heal.backlog import StoreBacklog, Write
from exporter.heal.store import STORE_ERRORS, ClaimState, Store

ADMIT_WITHIN = 5.0  # seconds; an admission (claims, checks, confirmation) that takes longer gives up
STALE_AFTER = 10.0  # a pending claim this old belongs to an admission that gave up or died
PENDING_TTL = 20.0  # and it expires on its own after this
# A claim sent to a store that hung may land whenever the store resumes (or a network delivers it):
# the release of a claim given up is retried this long, and until then the claim is taken over at once.
GIVEN_UP_FOR = 900.0


class Claims:
    def __init__(self, store: Store, backlog: StoreBacklog, token: str) -> None:
        self._store = store
        self._backlog = backlog
        self.token = token
        self._ttls: dict[str, float] = {}  # keys claimed, with the TTL each gets once confirmed
        self._unsure: list[str] = []  # keys whose claim write failed: it may have landed

    async def claim(self, key: str, ttl: float) -> ClaimState:
        """Claim `key` as pending; `ttl` is how long it is held once confirmed."""
        self._unsure.append(key)
        state = await self._store.claim(key, self.token, PENDING_TTL, stale_after=STALE_AFTER,
                                        abandoned=self._backlog.abandoned(key))
        self._unsure.remove(key)
        if state == "claimed":
            self._ttls[key] = ttl
        return state

    async def confirm(self) -> bool:
        """Confirm every claim; False if one no longer holds this token (nothing is confirmed then)."""
        if not self._ttls:
            return True
        try:
            return await self._store.confirm(self.token, self._ttls)
        except STORE_ERRORS:
            self._backlog.failures["admit"] += 1
            for key, ttl in self._ttls.items():
                self._backlog.add(key, "admit", self._confirm_one(key, ttl), PENDING_TTL)
            return True

    def _confirm_one(self, key: str, ttl: float) -> Write:
        async def write() -> None:
            await self._store.confirm(self.token, {key: ttl})
        return write

    async def release(self) -> None:
        """Give back every claim (an admission that refused); a failed release is retried later."""
        for key in [*self._ttls, *self._unsure]:
            await self._backlog.attempt(key, "release", self._release_one(key), GIVEN_UP_FOR, self.token)
        self._ttls.clear()
        self._unsure.clear()

    def _release_one(self, key: str) -> Write:
        async def write() -> None:
            await self._store.release(key, self.token)
        return write

    def abandon(self) -> None:
        """The admission failed: release in the background every claim that is or may be held."""
        for key in [*self._ttls, *self._unsure]:
            self._backlog.release(key, self.token, GIVEN_UP_FOR)
        self._ttls.clear()
        self._unsure.clear()
