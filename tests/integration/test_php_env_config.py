"""`${NAME}` in ini and pool files against real PHP and PHP-FPM: the values FPM itself uses are the
oracle (its status page, ini_get inside a worker), and for ini files read in scan-dir order, the php
CLI's ini_get."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.collectors import build_collectors
from exporter.collectors.base import Check, Observation, Verdict
from exporter.collectors.fpm import FPM_MAX_CHILDREN, FPM_TOTAL_PROCESSES, FpmCollector
from exporter.collectors.opcache import OPCACHE_SETTING_INFO, OPCACHE_VALIDATE_TIMESTAMPS, OpcacheCollector
from exporter.config import parse
from exporter.php.ini import DEFAULT_SOURCE, UNKNOWN_SOURCE, attribute
from exporter.php.pool_config import read_pool
from tests.support import phpfpm
from tests.support.fpm_layouts import ZZ_DOCKER_CONF, docker_files
from tests.support.phpfpm import Fpm, FpmFactory
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.integration
php_fpm = phpfpm.php_fpm

MAXC = "PHP_FPM_PM_MAX_CHILDREN"


def collectors(fpm: Fpm) -> tuple[FpmCollector, OpcacheCollector]:
    config = parse({"php_fpm": [{"name": "www", "address": fpm.address, "agent_dir": str(fpm.agent_dir),
                                 "pool_config": str(fpm.pool_config)}]})
    fpm_c, opcache_c = build_collectors(config, {})
    assert isinstance(fpm_c, FpmCollector)
    assert isinstance(opcache_c, OpcacheCollector)
    return fpm_c, opcache_c


async def all_workers_up(collector: FpmCollector, workers: int) -> Observation:
    """A collection once a static pool has forked all its workers (FPM answers before it has)."""

    async def up() -> Observation | None:
        obs = await collector.collect()
        return obs if obs.samples.value(FPM_TOTAL_PROCESSES) == workers else None

    return await async_wait_for(up, message=f"{workers} workers running")


def line_of(path: Path, start: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))


def check(obs: Observation, name: str) -> Check:
    return next(c for c in obs.checks if c.name == name)


@pytest.mark.parametrize("pool", [
    {"clear_env": "no"},  # as the official image's docker.conf has it
    {f"env[{MAXC}]": f"${MAXC}"},  # FPM copies the master's variable into each worker
])
async def test_max_children_from_the_environment_is_the_number_fpm_runs(
    php_fpm: FpmFactory, pool: dict[str, str]
) -> None:
    fpm = php_fpm(pool={"pm": "static", "pm.max_children": f"${{{MAXC}}}", **pool}, env={MAXC: "3"})
    collector, _ = collectors(fpm)
    # A static pool runs exactly pm.max_children workers: FPM's own answer to what it expanded.
    obs = await all_workers_up(collector, 3)
    assert obs.samples.value(FPM_MAX_CHILDREN) == 3
    c = check(obs, "fpm.max_children")
    assert c.verdict is Verdict.OK
    line = line_of(fpm.pool_config, "pm.max_children")
    assert c.summary == f"pm.max_children = 3, from ${{{MAXC}}} in {fpm.pool_config}:{line}"


async def test_max_children_fpm_hides_from_its_workers_is_unknown_not_zero(php_fpm: FpmFactory) -> None:
    fpm = php_fpm(pool={"pm": "static", "pm.max_children": f"${{{MAXC}}}"}, env={MAXC: "2"})
    obs = await all_workers_up(collectors(fpm)[0], 2)
    assert obs.samples.value(FPM_MAX_CHILDREN) is None  # absent, never 0
    c = check(obs, "fpm.max_children")
    assert c.verdict is Verdict.NOTE
    line = line_of(fpm.pool_config, "pm.max_children")
    assert f"pm.max_children = ${{{MAXC}}} ({fpm.pool_config}:{line})" in c.summary
    assert f"env[{MAXC}] = ${MAXC}" in c.summary
    assert "clear_env = no" in c.summary


def test_fpm_master_environment_is_not_readable_from_proc(php_fpm: FpmFactory) -> None:
    # Why the workers are asked: FPM overwrites its master's environ area with its process title.
    fpm = php_fpm(pool={"pm.max_children": f"${{{MAXC}}}"}, env={MAXC: "2"})
    assert fpm.process is not None
    environ = Path(f"/proc/{fpm.process.pid}/environ").read_bytes()
    assert MAXC.encode() not in environ
    assert environ.strip(b"\0") == b""


async def test_ini_and_pool_values_from_the_environment_name_their_file_and_variable(
    php_fpm: FpmFactory,
) -> None:
    zz = "opcache.validate_timestamps=${PHP_OPCACHE_VALIDATE_TIMESTAMPS}\n"
    fpm = php_fpm(conf_d={"zz-opcache.ini": zz},
                  pool={"php_admin_value[opcache.revalidate_freq]": "${FREQ}"},
                  env={"PHP_OPCACHE_VALIDATE_TIMESTAMPS": "0", "FREQ": "45"})
    obs = await collectors(fpm)[1].collect()
    settings_ = {labels[1]: (labels[2], labels[3]) for spec, labels, _ in obs.samples.values
                 if spec is OPCACHE_SETTING_INFO}
    assert settings_["validate_timestamps"] == (
        "0", f"{fpm.conf_d / 'zz-opcache.ini'} (${{PHP_OPCACHE_VALIDATE_TIMESTAMPS}})")
    assert settings_["revalidate_freq"] == ("45", f"{fpm.pool_config} (${{FREQ}})")
    assert obs.samples.value(OPCACHE_VALIDATE_TIMESTAMPS) == 0


INI_PROBE = ("<?php $k = json_decode($_GET['keys'], true); "
             "echo json_encode(array_combine($k, array_map('ini_get', $k)));")


async def test_pool_ini_overrides_are_the_values_a_worker_runs_with(php_fpm: FpmFactory) -> None:
    # Duplicates across included files, php_value against php_admin_value, flags, ${NAME}: what
    # ini_get says inside a worker is what our reading of the pool must give.
    fpm = php_fpm(start=False, env={"LIMIT": "96M", "ERRLOG": "/tmp/x.log"})
    extra = fpm.root / "pool.d"
    extra.mkdir()
    (extra / "a.conf").write_text(
        "php_value[memory_limit] = ${LIMIT}\nphp_value[max_execution_time] = 11\n"
        "php_admin_value[precision] = 10\nphp_flag[html_errors] = off\nphp_value[error_log] = ${ERRLOG}\n"
        "env[DUP] = first\n")
    (extra / "b.conf").write_text(
        "php_value[memory_limit] = 300M\nphp_admin_value[max_execution_time] = 22\n"
        "php_value[precision] = 12\nphp_admin_value[precision] = 9\nphp_admin_flag[html_errors] = On\n"
        "env[DUP] = second\n")
    with fpm.pool_config.open("a") as f:
        f.write(f"include={extra}/*.conf\n")  # inside [app]: the included lines add to it
    fpm.start()
    pool = read_pool(fpm.pool_config, "app")
    env = {"LIMIT": "96M", "ERRLOG": "/tmp/x.log"}
    ours = {key: o.value.expand(env) for key, o in pool.ini.items()}
    fpm.script("ini.php", INI_PROBE)
    resp = await fpm.get("ini.php", "keys=" + json.dumps(sorted(ours)))
    assert json.loads(resp.body) == ours
    assert ours["memory_limit"] == "96M"  # the first php_value of the pool wins
    fpm.script("env.php", "<?php echo getenv('DUP');")
    assert (await fpm.get("env.php")).body.decode() == pool.env["DUP"].literal == "first"


# --- ini files in scan-dir order, against the php CLI ---------------------------------------------

PROBE = ("echo json_encode(['scanned' => php_ini_scanned_files(), 'values' => ["
         "'opcache.validate_timestamps' => ini_get('opcache.validate_timestamps'), "
         "'opcache.revalidate_freq' => ini_get('opcache.revalidate_freq')]]);")
ENV = {"VT": "0", "FREQ": "30", "EMPTY": ""}


def php_effective(root: Path, files: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php (the CLI) is not installed")
    scan = root / "conf.d"
    if scan.exists():
        shutil.rmtree(scan)
    scan.mkdir(parents=True)
    for name, text in files.items():
        (scan / name).write_text(text)
    ini = root / "php.ini"
    ini.write_text("zend_extension=opcache.so\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHP_INI_SCAN_DIR": str(scan), **ENV}
    out = subprocess.run([php, "-c", str(ini), "-r", PROBE], env=env, capture_output=True, text=True,
                         check=True)
    answer: dict[str, Any] = json.loads(out.stdout)
    scanned = [p.strip() for p in (answer["scanned"] or "").split(",") if p.strip()]
    loaded = [(path, Path(path).read_text().splitlines()) for path in scanned]
    return {k: "" if v is False else str(v) for k, v in answer["values"].items()}, loaded


VALUE_FORMS = ["0", "1", "Off", "on", "yes", "false", '"0"', "'1'", "${VT}", '"${VT}"', "${EMPTY}", "5 ; c"]
FREQ_FORMS = ["0", "60", '"90"', "${FREQ}", "'15'", "120 ; two minutes"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["10-a.ini", "20-b.ini", "99-z.ini", "zz-opcache.ini", "A.ini"]),
                          st.sampled_from(VALUE_FORMS), st.sampled_from(FREQ_FORMS), st.booleans()),
                max_size=5))
def test_the_source_of_each_directive_is_the_file_php_took_it_from(
    tmp_path_factory: pytest.TempPathFactory, files: list[tuple[str, str, str, bool]]
) -> None:
    root = tmp_path_factory.mktemp("ini")
    texts: dict[str, str] = {}
    for name, vt, freq, both in files:
        freq_line = f"opcache.revalidate_freq={freq}\n" if both else ""
        texts[name] = f"opcache.validate_timestamps={vt}\n" + freq_line
    effective, loaded = php_effective(root, texts)
    directives = ("validate_timestamps", "revalidate_freq")
    by = {s.directive: s for s in attribute(effective, loaded, None, directives)}
    for directive in ("validate_timestamps", "revalidate_freq"):
        key = f"opcache.{directive}"
        setters = [(path, line) for path, lines in loaded for line in lines if line.startswith(key + "=")]
        source = by[directive].source
        assert source != UNKNOWN_SOURCE, (texts, effective)
        if setters:
            path, line = setters[-1]
            assert source.split(" (")[0] == path
            assert source.endswith(")") == ("${" in line)  # the variable is named
        else:
            assert source == DEFAULT_SOURCE


async def test_the_official_image_layout_end_to_end(php_fpm: FpmFactory) -> None:
    # FPM started as in php:8.x-fpm: -p PREFIX, PREFIX/etc/php-fpm.conf with include=etc/php-fpm.d/*.conf,
    # zz-docker.conf overriding www.conf's listen and setting pm.max_children from the environment.
    # cachewarden is pointed at php-fpm.conf only; this layout once gave "no [www] pool section".
    fpm = php_fpm(start=False, env={MAXC: "3"})
    prefix = fpm.root / "usr/local"
    zz = ZZ_DOCKER_CONF.replace("listen = 9000", f"listen = {fpm.root / 'fpm.sock'}")
    zz += f"pm = static\npm.max_children = ${{{MAXC}}}\npm.status_path = {phpfpm.STATUS_PATH}\n"
    for name, text in docker_files(zz).items():
        path = prefix / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # The workers stay root (-R) so they can read the agent_dir under the root-only tmp dir.
        lines = [line for line in text.splitlines() if not line.startswith(("user =", "group ="))]
        path.write_text("\n".join(lines).replace("{root}", str(prefix)) + "\n")
    fpm.pool_config, fpm.prefix, fpm.pool = prefix / "etc/php-fpm.conf", prefix, "www"
    fpm.start()
    fpm_c, opcache_c = collectors(fpm)
    obs = await all_workers_up(fpm_c, 3)
    assert obs.details["pool"] == "www"
    assert obs.samples.value(FPM_MAX_CHILDREN) == 3
    zz_path = prefix / "etc/php-fpm.d/zz-docker.conf"
    line = line_of(zz_path, "pm.max_children")
    expected = f"pm.max_children = 3, from ${{{MAXC}}} in {zz_path}:{line}"
    assert check(obs, "fpm.max_children").summary == expected
    opcache_obs = await opcache_c.collect()
    assert not [c for c in opcache_obs.checks if c.name == "opcache.pool_config"]
