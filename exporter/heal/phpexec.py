"""Running the heal's PHP scripts: inside the app's PHP-FPM pool over FastCGI, or with the `php` CLI.

FPM is preferred: it is the PHP that serves the app (same extensions, same OPcache, same user). OPcache
scripts only make sense there, since the CLI has its own separate OPcache. View compiles may fall back
to the CLI (`heal.php_cli`) on hosts where no pool is linked to the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from exporter.config import Config, PhpFpmTarget
from exporter.fs.access import UserGroup
from exporter.heal.child_process import AccountError, spawn_options
from exporter.heal.fpm import HealFpm
from exporter.php.agent import AgentError, compose_source
from exporter.php.fastcgi import FastCGIError
from exporter.php.pools import FpmPools

SCRIPTS_DIR = Path(__file__).parent / "php"


class PhpError(Exception):
    """A PHP script could not be run or reported failure."""


def script_text(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text(encoding="utf-8")


class PhpExecutor:
    def __init__(self, config: Config, pools: FpmPools | None = None) -> None:
        self._config = config
        self.fpm = HealFpm(pools or FpmPools(config.php_fpm))

    def pool_for_app(self, laravel: str) -> PhpFpmTarget | None:
        """The pool that serves a Laravel target (`php_fpm[].laravel`), if one is configured."""
        return next((p for p in self._config.php_fpm if p.laravel == laravel), None)

    async def in_fpm(self, pool: PhpFpmTarget, script: str, args: dict[str, Any], time_limit: float) -> Any:
        try:
            return await self.fpm.run_script(pool, script_text(script), args, time_limit)
        except (AgentError, FastCGIError, OSError) as exc:
            raise PhpError(f"{script} in FPM pool {pool.name}: {exc}") from None

    async def agent_action(
        self, pool: PhpFpmTarget, action: str, args: dict[str, Any], time_limit: float
    ) -> Any:
        """One of exporter.php's agent actions (invalidate, reset, …) inside `pool`."""
        try:
            reply = await self.fpm.agent(pool, time_limit).run(action, args)
        except (AgentError, FastCGIError, OSError) as exc:
            raise PhpError(f"{action} in FPM pool {pool.name}: {exc}") from None
        return reply.result

    async def in_cli(self, script: str, args: dict[str, Any], time_limit: float,
                     account: UserGroup | None = None) -> Any:
        """Run `script` with `heal.php_cli`, as `account` when given."""
        php = self._config.heal.php_cli
        if php is None:
            raise PhpError("heal.php_cli is not configured")
        try:
            options = spawn_options(self._config, account)
        except AccountError as exc:
            raise PhpError(f"{script}: {exc}") from None
        # The same envelope as inside FPM (token check, JSON answer), written to a private file for
        # this one run: nothing but this process (and the account it runs as) ever reads it.
        token = secrets.token_urlsafe(32)
        with tempfile.TemporaryDirectory(prefix="cachewarden-heal-") as tmp:
            path = Path(tmp) / "run.php"
            path.write_text(compose_source(script_text(script), token), encoding="utf-8")
            if "user" in options:
                for p in (tmp, path):
                    os.chown(p, options["user"], options["group"])
            proc = await asyncio.create_subprocess_exec(
                str(php), "-d", "display_errors=stderr", "-d", "log_errors=0", str(path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, **options,
            )
            request = json.dumps({"token": token, "args": args, "time_limit": time_limit}).encode()
            try:
                async with asyncio.timeout(time_limit):
                    out, err = await proc.communicate(request)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise PhpError(f"{script} did not finish within {time_limit:g}s") from None
        return decode_answer(script, out, err.decode(errors="replace"))


def decode_answer(script: str, out: bytes, stderr: str = "") -> Any:
    """The `result` of an agent answer `{"ok", "result", "errors"}`, or PhpError."""
    try:
        answer = json.loads(out)
    except ValueError:
        detail = stderr.strip().splitlines()[-1:] or ["no JSON answer"]
        raise PhpError(f"{script}: {detail[0][:300]}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        errors = answer.get("errors") if isinstance(answer, dict) else None
        raise PhpError(f"{script} failed: {'; '.join(map(str, errors or ['unknown error']))[:500]}")
    return answer.get("result")
