"""`cache.warm`: the configured warm commands (argument lists, no shell) and warm URLs of one app.

Command output is not recorded: warm commands print whatever the app prints, secrets included.
Only the exit status or HTTP status of each is reported. Each command runs without cachewarden's
secrets in its environment, as the account its `user` names (`exporter.heal.child_process`).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from exporter.collectors.base import Observation
from exporter.config import Config, HealWarm, WarmCommand, WarmUrl
from exporter.heal.actions.base import Action, ActionOutcome
from exporter.heal.child_process import AccountError, spawn_options


class Warm(Action):
    name = "cache.warm"

    def _warm(self, target: str) -> HealWarm:
        for w in self.ctx.config.heal.warm:
            if w.target == target:
                return w
        return HealWarm(target=target)

    async def run(self, target: str, observation: Observation | None, dry_run: bool) -> ActionOutcome:
        laravel = self.laravel(target)
        warm = self._warm(target)
        outcome = ActionOutcome()
        for cmd in warm.commands:
            cwd = cmd.cwd or laravel.root
            if dry_run:
                as_user = f" as {cmd.user}" if cmd.user else ""
                outcome.done.append(f"would run {cmd.argv} in {cwd}{as_user}")
            else:
                await run_command(self.ctx.config, cmd, str(cwd), outcome)
        if warm.urls:
            if dry_run:
                outcome.done.extend(f"would GET {u.url}" for u in warm.urls)
            else:
                async with aiohttp.ClientSession() as session:
                    for url in warm.urls:
                        await _get(session, url, outcome)
        if not warm.commands and not warm.urls:
            outcome.refused.append(f"nothing to warm: heal.warm has no entry for {target!r}")
        return outcome


async def run_command(config: Config, cmd: WarmCommand, cwd: str, outcome: ActionOutcome) -> None:
    """Run `cmd` (no shell, no output kept, killed after its timeout) and record how it ended."""
    try:
        options = spawn_options(config, cmd.user)
    except AccountError as exc:
        outcome.errors.append(f"{cmd.argv}: {exc}")
        return
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd.argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, **options,
        )
    except OSError as exc:
        outcome.errors.append(f"{cmd.argv}: cannot start ({exc.strerror})")
        return
    try:
        async with asyncio.timeout(cmd.timeout):
            code = await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        outcome.errors.append(f"{cmd.argv}: killed after {cmd.timeout:g}s")
        return
    if code == 0:
        outcome.done.append(f"ran {cmd.argv}: exit 0")
    else:
        outcome.errors.append(f"{cmd.argv}: exit {code}")


async def _get(session: aiohttp.ClientSession, url: WarmUrl, outcome: ActionOutcome) -> None:
    try:
        async with session.get(url.url, timeout=aiohttp.ClientTimeout(total=url.timeout),
                               allow_redirects=False) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.errors.append(f"GET {url.url}: {type(exc).__name__}")
        return
    if status < 400:
        outcome.done.append(f"GET {url.url}: HTTP {status}")
    else:
        outcome.errors.append(f"GET {url.url}: HTTP {status}")
