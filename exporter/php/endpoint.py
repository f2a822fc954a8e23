"""One PHP-FPM target as cachewarden uses it: its address, its timeouts and its one-worker rule.

Every request cachewarden sends to a pool (status page, agent runs) goes through the target's
`FpmEndpoint`, which holds them to one at a time: the exporter must never be the reason a busy pool
runs out of workers. A caller that cannot wait long for its turn (the status page, whose timeout is
itself a saturation signal) passes `wait_timeout` and gets an `EndpointBusy` instead of waiting behind an
agent run without limit. The endpoint also records the most requests it ever had in flight, which the
benchmark and tests read to prove that rule holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from exporter.php import fastcgi


class EndpointBusy(fastcgi.FastCGITimeout):
    """cachewarden's own other request to this pool did not finish in time; this one was never sent."""


class FpmEndpoint:
    def __init__(self, address: str, *, connect_timeout: float = 1.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._lock = asyncio.Lock()
        self._in_flight = 0
        self.max_in_flight = 0

    async def request(
        self,
        params: Mapping[str, str],
        stdin: bytes = b"",
        *,
        read_timeout: float,
        wait_timeout: float | None = None,
    ) -> fastcgi.Response:
        try:
            async with asyncio.timeout(wait_timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise EndpointBusy(
                f"{self.address}: cachewarden's previous request to this pool still runs after "
                f"{wait_timeout:g}s"
            ) from None
        try:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return await fastcgi.request(
                    self.address, params, stdin,
                    connect_timeout=self.connect_timeout, read_timeout=read_timeout,
                )
            finally:
                self._in_flight -= 1
        finally:
            self._lock.release()

