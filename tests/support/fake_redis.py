"""A tiny RESP2 server that answers like a given Redis or Valkey release, from recorded INFO answers.

Only Redis 7.0 can be installed here (Debian 12), so the other releases a host may run are played back:
`tests/data/redis/info-*.txt` hold their INFO answers (see the README there), and the commands a release
did not know are answered with that release's own error. Every command received is recorded, so a test
can require that a client sent nothing but what it needed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "redis"
RELEASES = ("redis-5.0", "redis-6.0", "redis-6.2", "redis-7.0", "valkey-8.0")


def recorded_info(release: str) -> str:
    """The recorded INFO answer of `release` (e.g. "redis-5.0"), with the server's CRLF line ends."""
    return (DATA / f"info-{release}.txt").read_text().replace("\n", "\r\n")


def _unknown_command(name: str, args: list[str]) -> bytes:
    # The wording of Redis 5.0 to 7.x (server.c processCommand).
    shown = " ".join(f"'{a}'" for a in args[:3])
    return f"-ERR unknown command '{name}', with args beginning with: {shown}\r\n".encode()


@dataclass
class FakeRedis:
    """Serves `release` on 127.0.0.1 at a free port; `password` makes it require AUTH first."""

    release: str
    password: str | None = None
    commands: list[list[str]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def major(self) -> tuple[int, int]:
        if self.release.startswith("valkey-"):
            return (7, 2)  # Valkey 7.2/8 answer every command cachewarden could send as Redis 7.2 does
        major, minor = self.release.removeprefix("redis-").split(".")
        return (int(major), int(minor))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/3"

    async def __aenter__(self) -> FakeRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        authed = self.password is None
        try:
            while (command := await _read_command(reader)) is not None:
                self.commands.append(command)
                reply, authed = self._answer(command, authed)
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _answer(self, command: list[str], authed: bool) -> tuple[bytes, bool]:
        name, args = command[0].upper(), command[1:]
        if name == "HELLO" and self.major < (6, 0):
            return _unknown_command(command[0], args), authed
        if name == "AUTH":
            given = args[-1]
            if len(args) == 2 and self.major < (6, 0):
                return b"-ERR wrong number of arguments for 'auth' command\r\n", authed
            if given == self.password:
                return b"+OK\r\n", True
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", authed
        if not authed:
            return b"-NOAUTH Authentication required.\r\n", authed
        if name == "INFO":
            body = recorded_info(self.release).encode()
            return b"$%d\r\n%s\r\n" % (len(body), body), authed
        if name == "PING":
            return b"+PONG\r\n", authed
        if name == "HELLO":  # 6.0+: accepted, answered in RESP2 when asked for protocol 2
            return b"*2\r\n$6\r\nserver\r\n$5\r\nredis\r\n", authed
        if name == "CLIENT" and args and args[0].upper() == "SETINFO" and self.major < (7, 2):
            return (b"-ERR Unknown subcommand or wrong number of arguments for 'SETINFO'. "
                    b"Try CLIENT HELP.\r\n"), authed
        if name in ("CLIENT", "SELECT"):
            return b"+OK\r\n", authed
        return _unknown_command(command[0], args), authed


async def _read_command(reader: asyncio.StreamReader) -> list[str] | None:
    """One RESP2 request (an array of bulk strings, as every client sends), or None at end of stream."""
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.decode().split()  # an inline command (redis-cli, telnet)
    items = []
    for _ in range(int(line[1:])):
        size = int((await reader.readline())[1:])
        items.append((await reader.readexactly(size + 2))[:-2].decode())
    return items
