"""Configuration: every problem reported at once by path, durations, Laravel .env defaults, secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, ConfigError, load, parse
from exporter.laravel_env import read_dotenv


def laravel_app(root: Path, dotenv: str | None = None) -> Path:
    """A directory shaped like a Laravel app: resources/views and storage/framework/views."""
    (root / "resources" / "views").mkdir(parents=True)
    (root / "storage" / "framework" / "views").mkdir(parents=True)
    if dotenv is not None:
        (root / ".env").write_text(dotenv, encoding="utf-8")
    return root


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, "test.yaml")
    return info.value.problems


@pytest.mark.parametrize("address", ["127.0.0.1:9590", ":9590", "[::]:9590", "[::1]:1", "host.example:65535"])
def test_listen_address_accepts_host_and_port(address: str) -> None:
    assert parse({"listen_address": address}).listen_address == address


@pytest.mark.parametrize(("address", "why"), [
    ("nowhere", "expected HOST:PORT with a port from 1 to 65535, got 'nowhere'"),
    ("0.0.0.0:70000", "expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:70000'"),
    ("0.0.0.0:0", "expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:0'"),
    ("0.0.0.0:http", "expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:http'"),
    ("::1:9590", "an IPv6 host goes in brackets, e.g. [::]:9590; got '::1:9590'"),
])
def test_malformed_listen_address_is_refused(address: str, why: str) -> None:
    assert problems({"listen_address": address}) == [f"listen_address: {why}"]


def test_empty_configuration_is_valid_with_defaults() -> None:
    config = parse(None)
    assert config.listen_address == "0.0.0.0:9590"
    assert config.laravel == []
    assert config.databases == []
    assert config.collectors.views.interval == 15.0
    assert config.collectors.fpm.timeout == 5.0
    assert config.heal.token_env == "CACHEWARDEN_HEAL_TOKEN"


def test_every_problem_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    good = laravel_app(tmp_path / "good")
    found = problems({
        "laravel": [{"name": "ok", "root": str(good)}, {"name": "gone", "root": str(tmp_path / "missing")}],
        "php_fpm": [{"name": "www", "address": "nowhere"}],
        "collectors": {"views": {"interval": "soon"}},
        "redis": [{"name": "bad name!"}],
    })
    assert f"laravel[1].root: directory {tmp_path / 'missing'} does not exist" in found
    assert "php_fpm[0].address: expected unix:/path/to.sock or host:port" in found
    assert any(p.startswith("collectors.views.interval: not a duration: 'soon'") for p in found)
    assert ("redis[0].name: use letters, digits, _ . -, starting with a letter or digit, "
            "at most 64 characters") in found
    assert len(found) == 4, found


def test_error_message_lists_the_source_and_each_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"laravel": [{"name": "a", "root": str(tmp_path / "x")}]}, "conf.yaml")
    assert str(info.value) == (
        f"conf.yaml: invalid configuration:\n  laravel[0].root: directory {tmp_path / 'x'} does not exist")


def test_root_that_is_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    assert problems({"laravel": [{"name": "a", "root": str(tmp_path / "file")}]}) == [
        f"laravel[0].root: {tmp_path / 'file'} is not a directory"
    ]


def test_unknown_keys_are_errors_not_silently_ignored(tmp_path: Path) -> None:
    app = laravel_app(tmp_path / "app")
    found = problems({
        "colectors": {},
        "laravel": [{"name": "a", "root": str(app), "rooot": "/x"}],
        "collectors": {"views": {"enable": False}},
    })
    assert set(found) == {
        "collectors.views.enable: unknown key",
        "colectors: unknown key",
        "laravel[0].rooot: unknown key",
    }


@pytest.mark.parametrize(("text", "seconds"), [
    (15, 15.0), (2.5, 2.5), ("15", 15.0), ("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0),
    (" 3 s ", 3.0),
])
def test_durations_accept_numbers_and_units(text: object, seconds: float) -> None:
    config = parse({"collectors": {"sql": {"interval": text, "timeout": text}}})
    assert config.collectors.sql.interval == seconds


@pytest.mark.parametrize("text", ["soon", "15 minutes", "-1s", "1d"])
def test_malformed_durations_are_refused(text: str) -> None:
    assert problems({"collectors": {"sql": {"interval": text}}}) == [
        f"collectors.sql.interval: not a duration: {text!r} (use e.g. 15, 15s, 500ms, 2m)"
    ]


def test_zero_and_negative_durations_are_refused() -> None:
    found = problems({"collectors": {"sql": {"interval": 0}, "redis": {"timeout": -1}}})
    assert {p.split(":")[0] for p in found} == {"collectors.redis.timeout", "collectors.sql.interval"}
    assert len(found) == 2, found


def test_a_short_interval_alone_shortens_the_default_timeout_to_it() -> None:
    collectors = parse({"collectors": {"views": {"interval": "5s"}, "sql": {"interval": "2m"}}}).collectors
    assert (collectors.views.interval, collectors.views.timeout) == (5.0, 5.0)
    assert (collectors.sql.interval, collectors.sql.timeout) == (120.0, 10.0)


def test_a_section_that_sets_only_the_interval_keeps_its_kinds_default_timeout() -> None:
    collectors = parse({"collectors": {"fpm": {"interval": "30s"}, "redis": {"enabled": False}}}).collectors
    assert collectors.fpm.timeout == 5.0
    assert collectors.redis.timeout == 5.0


def test_timeout_longer_than_interval_is_refused() -> None:
    assert problems({"collectors": {"views": {"interval": "5s", "timeout": "10s"}}}) == [
        "collectors.views: timeout must not exceed interval"
    ]


def test_laravel_paths_default_to_the_standard_layout(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "shop")
    target = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]
    assert target.root == root
    assert target.views_dir == root / "resources" / "views"
    assert target.compiled_dir == root / "storage" / "framework" / "views"
    assert target.env == {}


def test_relative_view_compiled_path_in_dotenv_is_relative_to_the_root(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "shop", "VIEW_COMPILED_PATH=cache/views\n")
    (root / "cache" / "views").mkdir(parents=True)
    target = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == root / "cache" / "views"


def test_absolute_view_compiled_path_in_dotenv_is_used_as_is(tmp_path: Path) -> None:
    elsewhere = tmp_path / "compiled"
    elsewhere.mkdir()
    root = laravel_app(tmp_path / "shop", f'VIEW_COMPILED_PATH="{elsewhere}"\n')
    target = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == elsewhere


def test_explicit_compiled_path_wins_over_dotenv(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    root = laravel_app(tmp_path / "shop", "VIEW_COMPILED_PATH=/nonexistent\n")
    config = parse({"laravel": [{"name": "shop", "root": str(root), "compiled_path": str(explicit)}]})
    target = config.laravel[0]
    assert target.compiled_dir == explicit


def test_compiled_path_from_dotenv_that_does_not_exist_is_reported_with_its_origin(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "shop", "VIEW_COMPILED_PATH=/nonexistent/views\n")
    assert problems({"laravel": [{"name": "shop", "root": str(root)}]}) == [
        f"laravel[0].compiled_path: directory /nonexistent/views does not exist "
        f"(VIEW_COMPILED_PATH in {root / '.env'})"
    ]


def test_default_layout_paths_that_do_not_exist_are_named_with_how_to_set_them(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    assert problems({"laravel": [{"name": "shop", "root": str(root)}]}) == [
        f"laravel[0].views_path: directory {root / 'resources' / 'views'} does not exist "
        "(the default under root; set views_path)",
        f"laravel[0].compiled_path: directory {root / 'storage' / 'framework' / 'views'} does not exist "
        f"(the default under root; set compiled_path or VIEW_COMPILED_PATH in {root / '.env'})",
    ]


def test_relative_paths_are_relative_to_the_configuration_files_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    root = laravel_app(etc / "apps" / "shop")
    (etc / "views-elsewhere").mkdir()
    config_file = etc / "cachewarden.yaml"
    config_file.write_text("laravel:\n  - name: shop\n    root: apps/shop\n"
                           "    views_path: views-elsewhere\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the configuration file's directory

    target = load(config_file).laravel[0]

    assert target.root == root
    assert target.views_dir == etc / "views-elsewhere"
    assert target.compiled_dir == root / "storage" / "framework" / "views"


def test_a_relative_root_that_does_not_exist_is_named_as_resolved(tmp_path: Path) -> None:
    config_file = tmp_path / "cachewarden.yaml"
    config_file.write_text("laravel:\n  - name: shop\n    root: apps/shop\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(config_file)
    assert info.value.problems == [f"laravel[0].root: directory {tmp_path / 'apps' / 'shop'} does not exist"]


def test_dotenv_parsing_handles_comments_quotes_export_and_references(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment line\n"
        "APP_NAME=shop # trailing comment\n"
        "DB_HOST='127.0.0.1'\n"
        'DB_DATABASE="shop db"\n'
        "export REDIS_HOST=cache.internal\n"
        "CACHE_PREFIX=${APP_NAME}_cache\n"
        "HASH_IN_QUOTES=\"a#b\"\n"
        "EMPTY=\n"
        "BARE_KEY\n",
        encoding="utf-8",
    )
    assert read_dotenv(dotenv) == {
        "APP_NAME": "shop",
        "DB_HOST": "127.0.0.1",
        "DB_DATABASE": "shop db",
        "REDIS_HOST": "cache.internal",
        "CACHE_PREFIX": "shop_cache",
        "HASH_IN_QUOTES": "a#b",
        "EMPTY": "",
    }


def test_dotenv_references_do_not_read_the_sidecars_environment(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_ONLY", "leaked")
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_NAME=shop\nPREFIX=${SIDECAR_ONLY}_x\nQUOTED=\"${SIDECAR_ONLY}\"\n",
                      encoding="utf-8")
    # As in Laravel, a reference to nothing the file defined stays as written.
    assert read_dotenv(dotenv) == {"APP_NAME": "shop", "PREFIX": "${SIDECAR_ONLY}_x",
                                   "QUOTED": "${SIDECAR_ONLY}"}


def test_dotenv_references_resolve_only_from_earlier_lines(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("BEFORE=${LATER}\nLATER=late\nAFTER=${LATER}\n", encoding="utf-8")
    assert read_dotenv(dotenv) == {"BEFORE": "${LATER}", "LATER": "late", "AFTER": "late"}


def test_single_quoted_dotenv_values_are_literal_like_laravels(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_NAME=shop\nSINGLE='${APP_NAME}-x'\nDOUBLE=\"${APP_NAME}-x\"\nBARE=${APP_NAME}-x\n",
                      encoding="utf-8")
    assert read_dotenv(dotenv) == {"APP_NAME": "shop", "SINGLE": "${APP_NAME}-x", "DOUBLE": "shop-x",
                                   "BARE": "shop-x"}


def test_dotenv_null_means_unset_and_empty_means_empty_as_in_laravels_env(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("A=null\nB=(null)\nC=NULL\nD=\"null\"\nE=empty\nF=(empty)\nG=nullable\n",
                      encoding="utf-8")
    assert read_dotenv(dotenv) == {"E": "", "F": "", "G": "nullable"}


@pytest.mark.parametrize("value", ["null", "(null)", "", "empty"])
def test_view_compiled_path_that_laravel_reads_as_unset_falls_back_to_the_default(tmp_path: Path,
                                                                                 value: str) -> None:
    root = laravel_app(tmp_path / "shop", f"VIEW_COMPILED_PATH={value}\n")
    target = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == root / "storage" / "framework" / "views"


def test_missing_dotenv_is_empty(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / ".env") == {}


def test_laravel_target_keeps_the_apps_dotenv(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "shop", "DB_CONNECTION=mysql\nREDIS_HOST=127.0.0.1\n")
    target = parse({"laravel": [{"name": "shop", "root": str(root)}]}).laravel[0]
    assert target.env == {"DB_CONNECTION": "mysql", "REDIS_HOST": "127.0.0.1"}
    assert "env" not in target.model_dump(), "the app's .env may hold secrets: never dumped"


def test_password_is_read_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    target = parse({"redis": [{"name": "cache", "password_file": str(secret)}]}).redis[0]
    assert target.password() == "s3cret"


def test_password_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DB_PASSWORD", "from-env")
    target = parse({"databases": [{"name": "main", "url": "postgresql+asyncpg://app@127.0.0.1/app",
                                   "password_env": "TEST_DB_PASSWORD"}]}).databases[0]
    assert target.password() == "from-env"


def test_password_file_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file", encoding="utf-8")
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "from-env")
    target = parse({"redis": [{"name": "c", "password_file": str(secret),
                               "password_env": "TEST_REDIS_PASSWORD"}]}).redis[0]
    assert target.password() == "from-file"


def test_unreadable_password_file_is_reported(tmp_path: Path) -> None:
    assert problems({"redis": [{"name": "c", "password_file": str(tmp_path / "none")}]}) == [
        "redis[0].password_file: file does not exist"
    ]


@pytest.mark.parametrize("key", ["token_file", "redis_password_file"])
def test_a_secret_file_that_is_no_regular_file_says_what_it_is(tmp_path: Path, key: str) -> None:
    # A secret is read whole at start: a FIFO would block it, /dev/zero never end it.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO (named pipe)"), (tmp_path, "a directory"),
                       (Path("/dev/zero"), "a character device")):
        assert problems({"heal": {key: str(path)}}) == [
            f"heal.{key}: {path} is {kind}, not a regular file"]
    assert problems({"redis": [{"name": "c", "password_file": str(fifo)}]}) == [
        f"redis[0].password_file: {fifo} is a FIFO (named pipe), not a regular file"]
    database = {"name": "d", "url": "postgresql://pg@h/x", "password_file": "/dev/zero"}
    assert problems({"databases": [database]}) == [
        "databases[0].password_file: /dev/zero is a character device, not a regular file"]


@pytest.mark.parametrize("url", ["HTTP://127.0.0.1:8000/stats", "Https://example.com/x"])
def test_an_http_scheme_in_any_case_is_accepted(url: str) -> None:
    # RFC 3986: schemes are case-insensitive, as every HTTP client reads them.
    assert parse({"app_stats": [{"name": "a", "url": url}]}).app_stats[0].url == url


def test_redis_and_database_schemes_in_any_case_are_accepted() -> None:
    config = parse({"redis": [{"name": "r", "url": "REDIS://127.0.0.1:6379/2"}],
                    "databases": [{"name": "d", "url": "PostgreSQL+AsyncPG://pg@127.0.0.1/x"}],
                    "heal": {"redis_url": "Rediss://127.0.0.1:6380/0"}})
    assert config.redis[0].url == "REDIS://127.0.0.1:6379/2"


def test_heal_token_comes_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.heal.token import read_heal_state

    monkeypatch.delenv("CACHEWARDEN_HEAL_TOKEN", raising=False)
    assert read_heal_state(parse({}).heal).token is None
    monkeypatch.setenv("CACHEWARDEN_HEAL_TOKEN", "env-token-0123456789")
    assert read_heal_state(parse({}).heal).token == "env-token-0123456789"
    token = tmp_path / "token"
    token.write_text("file-token-0123456789\n", encoding="utf-8")
    token.chmod(0o600)
    assert read_heal_state(parse({"heal": {"token_file": str(token)}}).heal).token == "file-token-0123456789"


@pytest.mark.parametrize(("section", "url"), [
    ("redis", "redis://:hunter2@127.0.0.1:6379/0"),
    ("redis", "rediss://default:hunter2@cache:6380"),
    ("databases", "mysql+asyncmy://app:hunter2@127.0.0.1:3306/shop"),
    ("databases", "postgresql+asyncpg://app:hunter2@db/app"),
])
def test_url_with_a_password_is_refused_without_echoing_it(section: str, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({section: [{"name": "t", "url": url}]})
    assert info.value.problems == [
        f"{section}[0].url: the URL contains a password in the user part (user:password@): "
        "use password_file or password_env instead"
    ]
    assert "hunter2" not in str(info.value)


def test_url_with_a_user_but_no_password_is_accepted() -> None:
    config = parse({"databases": [{"name": "main", "url": "mysql+asyncmy://exporter@127.0.0.1:3306/shop"}]})
    assert config.databases[0].url.endswith("/shop")


def test_unsupported_database_url_is_refused() -> None:
    assert problems({"databases": [{"name": "x", "url": "sqlite:///tmp/x.db"}]}) == [
        "databases[0].url: expected a mysql+asyncmy://, mariadb+asyncmy:// or postgresql+asyncpg:// URL"
    ]


def test_duplicate_target_names_within_a_section_are_refused() -> None:
    assert problems({"redis": [{"name": "cache"}, {"name": "cache"}]}) == [
        "redis[1].name: duplicate target name 'cache'"
    ]


def test_same_name_in_different_sections_is_allowed() -> None:
    config = parse({"redis": [{"name": "main"}],
                    "databases": [{"name": "main", "url": "postgresql://pg@127.0.0.1/x"}]})
    assert isinstance(config, Config)


def test_load_reports_yaml_errors_with_their_position(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("laravel:\n  - name: a\n   root: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.source == str(path)
    assert info.value.problems[0].startswith("line 3, column ")
    assert "not valid YAML" in info.value.problems[0]


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.yaml")
    assert info.value.problems == ["cannot read the file: No such file or directory"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == ["the top level must be a mapping of keys"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_refused_but_braces_mean_all_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.source == str(path)
    assert info.value.problems == ["the file is empty (no keys); write {} for all defaults"]
    path.write_text("{}\n", encoding="utf-8")
    assert load(path).laravel == []


@pytest.mark.parametrize(("raw", "problem"), [
    (b"heal:\n  instance: caf\xe9\n", "byte offset 21: not UTF-8 (byte 0xe9); save the file as UTF-8"),
    (b"\xff\xfeh\x00e\x00", "byte offset 0: not UTF-8 (byte 0xff); save the file as UTF-8"),
    (b"heal: {instance: a\x00b}\n",
     "character offset 18: not valid YAML: special characters are not allowed (U+0000)"),
    (b"heal: [\n", "line 2, column 1: not valid YAML: expected the node content, but found '<stream end>'"),
    (b"[" * 20000, "not valid YAML: nested too deeply"),
])
def test_a_file_that_is_not_utf8_or_not_yaml_is_a_clear_error(tmp_path: Path, raw: bytes,
                                                              problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.source == str(path)
    assert info.value.problems == [problem]


@pytest.mark.parametrize(("text", "problem"), [
    # A second `laravel:` block would replace the first: the first app would silently go unwatched.
    ("laravel:\n  - {name: a, root: /}\nlog_level: info\nlaravel:\n  - {name: b, root: /}\n",
     "line 4, column 1: not valid YAML: duplicate key 'laravel' (first given on line 1)"),
    ("log_level: info\nlog_level: debug\n",
     "line 2, column 1: not valid YAML: duplicate key 'log_level' (first given on line 1)"),
    ("web:\n  read_header_timeout: 1s\n  read_header_timeout: 2s\n",
     "line 3, column 3: not valid YAML: duplicate key 'read_header_timeout' (first given on line 2)"),
    ("redis: [{name: a, url: 'redis://x', name: b}]\n",
     "line 1, column 37: not valid YAML: duplicate key 'name' (first given on line 1)"),
])
def test_a_key_given_twice_in_one_mapping_is_an_error_with_its_lines(tmp_path: Path, text: str,
                                                                     problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == [problem]


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    # YAML's `<<` merge exists to be overridden: that is no duplicate.
    path = tmp_path / "c.yaml"
    path.write_text("collectors:\n  redis: &base {interval: 5s, timeout: 2s}\n"
                    "  views: {<<: *base, timeout: 1s}\n", encoding="utf-8")
    config = load(path)
    assert (config.collectors.views.interval, config.collectors.views.timeout) == (5.0, 1.0)


def test_file_modes_are_read_as_octal_and_bad_ones_are_refused() -> None:
    assert parse({"heal": {"views_mode": "0640"}}).heal.views_mode == 0o640
    with pytest.raises(ConfigError, match=r"heal.views_mode: .*not an octal file mode"):
        parse({"heal": {"views_mode": "rw-r--r--"}})


def test_redis_urls_with_a_bad_port_or_database_are_refused_at_load() -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"redis": [{"name": "a", "url": "redis://h:abc/0"},
                                {"name": "b", "url": "redis://h:6379/x"}]})
    assert exc.value.problems == [
        "redis[0].url: port 'abc' is not a number from 1 to 65535",
        "redis[1].url: database 'x' is not a number",
    ]


def _with_framework(root: Path, version: str) -> None:
    from exporter.laravel_paths import APPLICATION_PHP

    (root / APPLICATION_PHP).parent.mkdir(parents=True)
    (root / APPLICATION_PHP).write_text(f"<?php\nclass Application\n{{\n    const VERSION = '{version}';\n")


@pytest.mark.parametrize("version", [None, "10.20.0", "12.1.0"])
def test_laravel_storage_path_moves_the_compiled_views_and_the_empty_default_is_not_watched(
    tmp_path: Path, version: str | None,
) -> None:
    root = laravel_app(tmp_path / "app", "LARAVEL_STORAGE_PATH=/srv/app/runtime\n".replace(
        "/srv/app", str(tmp_path / "app")))
    if version is not None:
        _with_framework(root, version)
    runtime_views = root / "runtime" / "framework" / "views"
    runtime_views.mkdir(parents=True)
    target = parse({"laravel": [{"name": "app", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == runtime_views
    assert target.derived_compiled_path == runtime_views
    assert target.derived_from["compiled_path"] == f"LARAVEL_STORAGE_PATH in {root / '.env'}"


def test_laravel_storage_path_is_not_refused_because_storage_framework_views_is_missing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "app"
    (root / "resources" / "views").mkdir(parents=True)
    (root / "runtime" / "framework" / "views").mkdir(parents=True)
    (root / ".env").write_text("LARAVEL_STORAGE_PATH=runtime\n", encoding="utf-8")
    target = parse({"laravel": [{"name": "app", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == root / "runtime" / "framework" / "views"


def test_laravel_before_10_20_ignores_laravel_storage_path_and_says_so(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "app", "LARAVEL_STORAGE_PATH=runtime\n")
    _with_framework(root, "10.19.0")
    target = parse({"laravel": [{"name": "app", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == root / "storage" / "framework" / "views"
    assert "Laravel 10.19.0 ignores LARAVEL_STORAGE_PATH" in target.derived_from["compiled_path"]


def test_view_compiled_path_wins_over_laravel_storage_path(tmp_path: Path) -> None:
    root = laravel_app(tmp_path / "app", "LARAVEL_STORAGE_PATH=runtime\nVIEW_COMPILED_PATH=cache/views\n")
    (root / "cache" / "views").mkdir(parents=True)
    target = parse({"laravel": [{"name": "app", "root": str(root)}]}).laravel[0]
    assert target.compiled_dir == root / "cache" / "views"


def test_an_unreadable_env_is_kept_as_the_targets_problem_and_the_exporter_still_loads(
    tmp_path: Path,
) -> None:
    root = laravel_app(tmp_path / "app", "DB_HOST=db\nAPP_NAME=My Shop\n")
    target = parse({"laravel": [{"name": "app", "root": str(root)}]}).laravel[0]
    assert target.env == {}
    assert target.env_error == (f"{root / '.env'}, line 2: Failed to parse dotenv file. Encountered "
                                "unexpected whitespace at [My Shop].; Laravel cannot boot with it")
    assert "cannot be read, so VIEW_COMPILED_PATH is unknown" in target.derived_from["compiled_path"]
