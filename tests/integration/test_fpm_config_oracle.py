"""exporter.php.pool_config against `php-fpm8.2 -tt` on a corpus of real layouts built in tmp dirs:
Debian's own files, the official PHP Docker image's (prefix, relative include, zz-docker.conf),
`${NAME}` from FPM's environment, globs, `[global]` between pools, later files overriding earlier
ones, php_value/php_admin_value/php_flag, single-file includes. For every layout our reading of every
pool must be FPM's own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.php.pool_config import FpmConfig, PoolConfigError, PoolSettings, fpm_integer, read_config
from tests.support.fpm_dump import DumpedPool, fpm_dump
from tests.support.fpm_layouts import ZZ_DOCKER_CONF, debian_files, docker_files

pytestmark = pytest.mark.integration

DYNAMIC = "pm = dynamic\npm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 1\n"


@dataclass
class Layout:
    files: dict[str, str]  # path under the layout root -> text, with {root} replaced
    config: str  # the file FPM is started with (-y)
    prefix: str | None = None  # FPM's -p, under the root; cachewarden is given the same as fpm_prefix
    env: dict[str, str] = field(default_factory=dict)
    default_prefix: bool = False  # cachewarden finds the prefix itself (PREFIX/etc/php-fpm.conf)


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "debian": lambda: Layout(debian_files(), "etc/php/8.2/fpm/php-fpm.conf"),
    "official-image": lambda: Layout(docker_files(), "etc/php-fpm.conf", prefix=".", default_prefix=True),
    "official-image-env": lambda: Layout(
        docker_files(ZZ_DOCKER_CONF + "pm.max_children = ${PHP_FPM_PM_MAX_CHILDREN}\n"
                     "php_value[opcache.validate_timestamps] = ${PHP_OPCACHE_VALIDATE_TIMESTAMPS}\n"),
        "etc/php-fpm.conf", prefix=".", default_prefix=True,
        env={"PHP_FPM_PM_MAX_CHILDREN": "17", "PHP_OPCACHE_VALIDATE_TIMESTAMPS": "0"},
    ),
    "env-forms": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[app]\nlisten = 127.0.0.1:${PORT}\n" + DYNAMIC
                    + 'pm.max_children = "${N}"\nphp_admin_value[memory_limit] = "${MEM}M"\n'
                    "php_value[error_log] = {root}/${APP}.log\npm.status_path = /${APP}-status\n",
    }, "fpm.conf", env={"PORT": "9123", "N": "8", "MEM": "512", "APP": "shop"}),
    "globs": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\ninclude = {root}/pool.d/*.conf\n"
                    "include={root}/more/?-*.conf\n",
        "pool.d/10-a.conf": "[a]\nlisten = 127.0.0.1:9001\npm = static\npm.max_children = 2\n",
        "pool.d/20-b.conf": "[b]\nlisten = 127.0.0.1:9002\npm = ondemand\npm.max_children = 3\n",
        "pool.d/30-dir.conf/ignored.conf": "[ignored]\n",
        "pool.d/.hidden.conf": "[hidden]\nlisten = 127.0.0.1:9009\npm = static\npm.max_children = 9\n",
        "pool.d/notes.txt": "[notes]\n",
        "more/1-a.conf": "[a]\npm.max_children = 4\n",
        "more/22-a.conf": "[a]\npm.max_children = 99\n",
    }, "fpm.conf"),
    "include-matching-nothing": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\ninclude={root}/empty/*.conf\n"
                    "include={root}/absent.conf\ninclude={root}/absent/www.conf\n[www]\n"
                    "listen = 127.0.0.1:9070\npm = static\npm.max_children = 1\n",
        "empty/notes.txt": "",
    }, "fpm.conf"),
    "global-between-pools": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[www]\nlisten = 127.0.0.1:9010\npm = static\n"
                    "pm.max_children = 2\n[global]\nlog_level = notice\n[api]\nlisten = 127.0.0.1:9011\n"
                    "pm = static\npm.max_children = 3\n[WWW]\npm.max_children = 5\n"
                    "include={root}/late.conf\n",
        "late.conf": "[Api]\npm.max_children = 6\n[global]\nprocess.max = 10\n",
    }, "fpm.conf"),
    "later-files-override": lambda: Layout({
        "etc/php-fpm.conf": "[global]\nerror_log = {root}/fpm.log\ninclude=etc/pool.d/*.conf\n",
        "etc/pool.d/www.conf": "[www]\nlisten = 127.0.0.1:9020\n" + DYNAMIC + "pm.max_children = 5\n",
        "etc/pool.d/www2.conf": "[www]\npm.max_children = 10\nlisten = 127.0.0.1:9021\n",
        "etc/pool.d/zz.conf": "[www]\npm.max_children = 20 ; the tuned value\n",
    }, "etc/php-fpm.conf", prefix=".", default_prefix=True),
    "php-values": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\ninclude={root}/pool.d/*.conf\n",
        "pool.d/a.conf": "[www]\nlisten = 127.0.0.1:9030\npm = static\npm.max_children = 2\n"
                         "php_value[opcache.validate_timestamps] = 1\n"
                         "php_value[memory_limit] = 100M\n"
                         "php_admin_value[opcache.revalidate_freq] = 60\n"
                         "php_flag[display_errors] = off\n",
        "pool.d/b.conf": "[www]\nphp_value[opcache.validate_timestamps] = 0\n"
                         "php_admin_value[memory_limit] = 300M\n"
                         "php_value[opcache.revalidate_freq] = 0\n"
                         "php_admin_flag[log_errors] = yes\n"
                         "php_value[opcache.enable] = \"1\"\n"
                         "php_value[opcache.memory_consumption] = '256'\n",
    }, "fpm.conf"),
    "blank-offsets": lambda: Layout({
        # FPM's key is "opcache.jit " (the blank before `]` is kept), which sets nothing.
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[www]\nlisten = 127.0.0.1:9035\npm = static\n"
                    "pm.max_children = 1\nphp_value[ opcache.jit ] = off\n"
                    "php_admin_value[  memory_limit] = 64M\nphp_value[\"precision\" ] = 9\n",
    }, "fpm.conf"),
    "single-file-includes": lambda: Layout({
        "etc/php-fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[www]\ninclude=etc/www-listen.conf\n"
                            + DYNAMIC + "include={root}/etc/www-size.conf\n",
        "etc/www-listen.conf": "listen = 127.0.0.1:9040\n",
        "etc/www-size.conf": "pm.max_children = 7\n",
    }, "etc/php-fpm.conf", prefix="."),
    "include-switches-section": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[www]\nlisten = 127.0.0.1:9050\npm = static\n"
                    "include={root}/other.conf\npm.max_children = 4\n",
        "other.conf": "pm.max_children = 1\n[other]\nlisten = 127.0.0.1:9051\npm = static\n",
    }, "fpm.conf"),
    "pool-name-token": lambda: Layout({
        "fpm.conf": "[global]\nerror_log = {root}/fpm.log\n[shop]\nlisten = {root}/$pool.sock\npm = static\n"
                    "pm.max_children = 2\nphp_admin_value[error_log] = {root}/$pool-php.log\n"
                    "pm.status_path = /$pool-status\n",
    }, "fpm.conf"),
    "prefix-elsewhere": lambda: Layout({
        "conf/fpm.conf": "[global]\nerror_log = {root}/fpm.log\ninclude=pools/*.conf\n",
        "prefix/pools/www.conf": "[www]\nlisten = 127.0.0.1:9060\npm = static\npm.max_children = 3\n",
    }, "conf/fpm.conf", prefix="prefix"),
}


def build(root: Path, layout: Layout) -> None:
    for name, text in layout.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{root}", str(root)))


def ours(config: FpmConfig, env: dict[str, str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for pool in config:
        def value(key: str, pool: PoolSettings = pool) -> str | None:
            directive = pool.directives.get(key)
            return None if directive is None else directive.value.expand(env)

        ini = {key: (o.admin, o.value.expand(env)) for key, o in pool.ini.items()}
        out[pool.name] = {
            "pm.max_children": fpm_integer(value("pm.max_children")) or 0,
            "pm": (value("pm") or "").lower(),
            "listen": value("listen"),
            "pm.status_path": value("pm.status_path") or "undefined",
            "ini": ini,
        }
    return out


def oracle(pools: dict[str, DumpedPool]) -> dict[str, dict[str, object]]:
    return {
        name: {
            "pm.max_children": int(p.directives["pm.max_children"]),
            "pm": p.directives["pm"],
            "listen": p.directives["listen"],
            "pm.status_path": p.directives["pm.status_path"],
            "ini": p.effective_ini(),
        }
        for name, p in pools.items()
    }


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_our_reading_of_each_layout_is_fpms(tmp_path: Path, name: str) -> None:
    layout = LAYOUTS[name]()
    build(tmp_path, layout)
    prefix = None if layout.prefix is None else (tmp_path / layout.prefix).resolve()
    expected = oracle(fpm_dump(tmp_path / layout.config, prefix=prefix, env=layout.env))
    given = None if layout.default_prefix else prefix
    config = read_config(tmp_path / layout.config, given)
    assert ours(config, layout.env) == expected


def test_the_official_image_layout_has_www_with_zz_docker_overrides(tmp_path: Path) -> None:
    # The regression: read against the including file's folder this layout had no [www] pool.
    layout = LAYOUTS["official-image-env"]()
    build(tmp_path, layout)
    www = read_config(tmp_path / "etc/php-fpm.conf").pool("www")
    assert www.directives["listen"].value.literal == "9000"
    assert www.directives["listen"].file == str(tmp_path / "etc/php-fpm.d/zz-docker.conf")
    directive = www.max_children_directive
    assert directive is not None
    assert www.max_children is None  # a template until the environment is known
    assert directive.value.expand(layout.env) == "17"
    assert directive.source() == f"{tmp_path}/etc/php-fpm.d/zz-docker.conf (${{PHP_FPM_PM_MAX_CHILDREN}})"
    # docker.conf sets clear_env = no: the workers see the master's variable
    assert www.env_source("PHP_FPM_PM_MAX_CHILDREN") == "PHP_FPM_PM_MAX_CHILDREN"


@pytest.mark.parametrize("nested", [4, 5])
def test_a_chain_of_includes_is_as_long_as_fpm_allows(tmp_path: Path, nested: int) -> None:
    for i in range(nested):
        (tmp_path / f"{i}.conf").write_text(f"include={tmp_path}/{i + 1}.conf\n")
    (tmp_path / f"{nested}.conf").write_text(f"[global]\nerror_log = {tmp_path}/fpm.log\n[www]\n"
                                             "listen = 127.0.0.1:9080\npm = static\npm.max_children = 1\n")
    if nested == 4:
        assert ours(read_config(tmp_path / "0.conf"), {}) == oracle(fpm_dump(tmp_path / "0.conf"))
    else:
        with pytest.raises(AssertionError, match="failed to include more than 5 files"):
            fpm_dump(tmp_path / "0.conf")
        with pytest.raises(PoolConfigError, match="more than 5 files in a chain of includes"):
            read_config(tmp_path / "0.conf")


def test_a_glob_in_a_directory_that_cannot_be_listed_is_refused_by_both(tmp_path: Path) -> None:
    (tmp_path / "fpm.conf").write_text(f"[global]\nerror_log = {tmp_path}/fpm.log\n"
                                       f"include={tmp_path}/absent/*.conf\n[www]\nlisten = 127.0.0.1:9090\n"
                                       "pm = static\npm.max_children = 1\n")
    with pytest.raises(AssertionError, match="Unable to globalize"):
        fpm_dump(tmp_path / "fpm.conf")
    with pytest.raises(PoolConfigError, match=r"fpm.conf:3: include=.*/absent/\*.conf: cannot list"):
        read_config(tmp_path / "fpm.conf")


LINES = st.sampled_from([
    "[p1]", "[P1]", "[p2]", "[P2]", "pm.max_children = 3", "pm.max_children = 7 ; seven",
    'pm.max_children = "9"', "pm.max_children = ${N}", "php_value[memory_limit] = 100M",
    "php_value[memory_limit] = ${MEM}", "php_admin_value[memory_limit] = 300M",
    "php_admin_value[precision] = 9", "php_value[precision] = 12", "php_flag[html_errors] = off",
    "php_admin_flag[html_errors] = yes", "php_value[error_log] = /var/log/$pool.log",
    "pm.status_path = /$pool-status", "PM.Max_Children = 4", "; pm.max_children = 99", "",
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(st.lists(LINES, max_size=8), min_size=1, max_size=4))
def test_generated_pool_files_are_read_as_fpm_reads_them(
    tmp_path_factory: pytest.TempPathFactory, files: list[list[str]]
) -> None:
    # Both pools exist before the include, which sits in [p2]: every generated line lands in a pool.
    root = tmp_path_factory.mktemp("fpm")
    env = {"N": "5", "MEM": "64M"}
    main = (f"[global]\nerror_log = {root}/fpm.log\n[p1]\nlisten = 127.0.0.1:9101\npm = static\n"
            f"pm.max_children = 1\n[p2]\nlisten = 127.0.0.1:9102\npm = static\npm.max_children = 2\n"
            f"include={root}/pool.d/*.conf\n")
    (root / "pool.d").mkdir()
    (root / "fpm.conf").write_text(main)
    for i, lines in enumerate(files):
        (root / "pool.d" / f"{i:02d}.conf").write_text("\n".join(lines) + "\n")
    expected = oracle(fpm_dump(root / "fpm.conf", env=env))
    assert ours(read_config(root / "fpm.conf"), env) == expected
