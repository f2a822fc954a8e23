"""A script opcache_invalidate() dropped is no longer counted, though OPcache keeps listing it.

OPcache marks an invalidated entry and leaves it in opcache_get_status() with its old hits until a
request compiles the file again or OPcache restarts. Counted, it kept a deploy or a heal that had
already dropped it from ever being verified (measured on PHP 8.2 with validate_timestamps=0)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.opcache import OPCACHE_SCRIPTS_STALE, OpcacheCollector
from exporter.config import parse
from exporter.php.agent import Agent
from exporter.php.endpoint import FpmEndpoint
from tests.support import phpfpm
from tests.support.phpfpm import FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm


async def test_an_invalidated_script_nobody_requests_again_is_no_longer_stale(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    fpm = php_fpm(opcache={"opcache.validate_timestamps": 0})
    old = time.time() - 3600
    lib = fpm.script("lib.php", "<?php return 1;", mtime=old)
    fpm.script("page.php", "<?php echo include __DIR__ . '/lib.php';", mtime=old)
    assert (await fpm.get("page.php")).body == b"1"
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir)}]})
    collector = build_collectors(config, {"fpm": False})[0]
    assert isinstance(collector, OpcacheCollector)
    await collector.collect()
    lib.write_text("<?php return 2;")
    later = time.time() + 5  # after the first look, in whole seconds as PHP reads mtimes
    os.utime(lib, (later, later))
    stale = await collector.collect()
    assert stale.samples.value(OPCACHE_SCRIPTS_STALE) == 1
    agent = Agent(FpmEndpoint(fpm.address), fpm.agent_dir, timeout=5)

    reply = await agent.run("invalidate", {"paths": [str(lib)]})
    assert reply.result["invalidated"] == [str(lib)]

    after = await collector.collect()
    assert after.samples.value(OPCACHE_SCRIPTS_STALE) == 0
    status = (await agent.run("status", {})).result["status"]
    assert status["invalidated_entries"] == 1  # still in OPcache's list, just not counted
    assert str(lib) not in status["scripts"]["path"]
    assert (await fpm.get("page.php")).body == b"2"
