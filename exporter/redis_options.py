"""Options that make a redis-py client send nothing on connect but AUTH, for any redis-py from 5.0 on.

redis-py 5.0 added CLIENT SETINFO on connect (lib_name/lib_version: errors ignored, but a round trip
and an ACL log entry for a user not allowed CLIENT), redis-py 7 folded those into `driver_info` and
deprecated them, and redis-py 8 made RESP3 the default, opening every connection with HELLO, which
Redis before 6.0 does not know. Whichever version is installed, these options switch all of that off,
so a least-privilege ACL user and Redis 5.0 both work.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def minimal_connection() -> dict[str, Any]:
    """Keyword arguments for `redis.asyncio.Redis(...)`/`from_url(...)`: RESP2, no client name, no
    CLIENT SETINFO."""
    from redis.asyncio.connection import AbstractConnection

    accepted = inspect.signature(AbstractConnection.__init__).parameters
    options: dict[str, Any] = {"protocol": 2, "client_name": None}
    if "driver_info" in accepted:
        options["driver_info"] = None
    else:
        options.update(lib_name=None, lib_version=None)
    return options
