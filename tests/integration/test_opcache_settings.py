"""The file cache, preload, JIT, API and realpath cache directives on a real php-fpm8.2: each reported with
the file that set it, and PHP's own built-in values recognised as defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.collectors import build_collectors
from exporter.collectors.base import Observation
from exporter.collectors.opcache import OPCACHE_SETTING_INFO, OpcacheCollector
from exporter.config import parse
from exporter.php.ini import DEFAULT_SOURCE, DEFAULTS
from tests.support import phpfpm
from tests.support.phpfpm import Fpm, FpmFactory

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

NEW = ("file_cache", "file_cache_only", "file_cache_consistency_checks", "preload", "preload_user", "jit",
       "jit_buffer_size", "enable_cli", "restrict_api", "blacklist_filename", "huge_code_pages",
       "realpath_cache_ttl", "realpath_cache_size")


def settings(obs: Observation) -> dict[str, tuple[str, str]]:
    return {labels[1]: (labels[2], labels[3]) for spec, labels, _ in obs.samples.values
            if spec is OPCACHE_SETTING_INFO}


async def collect(fpm: Fpm) -> Observation:
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                                 "pool_config": str(fpm.pool_config)}]})
    collector = build_collectors(config, {"fpm": False})[0]
    assert isinstance(collector, OpcacheCollector)
    return await collector.collect()


async def test_untouched_directives_show_phps_own_values_as_defaults(php_fpm: FpmFactory) -> None:
    # Only what every test pool sets (enable, memory_consumption, jit=off) is set here.
    fpm = php_fpm()
    found = settings(await collect(fpm))
    for directive in NEW:
        if directive == "jit":
            continue
        assert found[directive] == (DEFAULTS[directive], DEFAULT_SOURCE), directive
    assert found["jit"] == ("off", str(fpm.conf_d / "10-opcache.ini"))


async def test_each_directive_is_attributed_to_the_file_that_set_it(
        php_fpm: FpmFactory, tmp_path: Path) -> None:
    cache = tmp_path / "file-cache"
    cache.mkdir()
    fpm = php_fpm(conf_d={"50-app.ini": f"opcache.file_cache={cache}\nrealpath_cache_ttl=600\n"
                                         "opcache.file_cache_consistency_checks=0\n",
                          "90-late.ini": "realpath_cache_size=16M\nopcache.restrict_api=/var/lib\n"})
    obs = await collect(fpm)
    found = settings(obs)
    app, late = str(fpm.conf_d / "50-app.ini"), str(fpm.conf_d / "90-late.ini")
    assert found["file_cache"] == (str(cache), app)
    assert found["realpath_cache_ttl"] == ("600", app)
    assert found["file_cache_consistency_checks"] == ("0", app)
    assert found["realpath_cache_size"] == ("16M", late)
    assert found["restrict_api"] == ("/var/lib", late)
    lines = next(c for c in obs.checks if c.name == "opcache.settings").items
    assert f"realpath_cache_ttl=600 set by {app}" in lines
    assert f"opcache.file_cache={cache} set by {app}" in lines


async def test_a_pool_line_with_a_blank_inside_its_brackets_sets_nothing_and_is_not_the_source(
        php_fpm: FpmFactory) -> None:
    # FPM reads `php_value[ opcache.jit ]` as the directive "opcache.jit " (the blank before `]` is
    # kept), which does not exist: the worker keeps conf.d's jit=off, and that file is its source.
    fpm = php_fpm(pool={"php_value[ opcache.jit ]": "tracing", "php_value[ opcache.jit_buffer_size]": "8M"})
    found = settings(await collect(fpm))
    assert found["jit"] == ("off", str(fpm.conf_d / "10-opcache.ini"))
    assert found["jit_buffer_size"] == ("8M", str(fpm.pool_config))
