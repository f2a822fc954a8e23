"""The whole configuration and its loading: YAML read strictly, every problem reported at once with
its path, the cross-section checks (unique names, pools linked to their apps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.config.alerts import (
    AlertsConfig,
)
from exporter.config.heal import (
    HealConfig,
)
from exporter.config.targets import (
    AppStatsTarget,
    Collectors,
    DatabaseTarget,
    LaravelTarget,
    PhpFpmTarget,
    RedisTarget,
)
from exporter.config.values import (
    DEFAULT_LISTEN_ADDRESS,
    ConfigError,
    Duration,
    _Model,
    split_listen_address,
)
from exporter.pool_links import link_pools


class WebConfig(_Model):
    """Limits of the HTTP server (see exporter/serving.py for how they are enforced)."""

    # A connection that has not sent a whole request header this long after opening, or after its
    # previous response, is closed: a slow client cannot hold a descriptor for long.
    read_header_timeout: Duration = 10.0
    read_body_timeout: Duration = 10.0  # for the /heal body, the only one that is read
    # Open connections at most; unset: RLIMIT_NOFILE less what the collectors need (counted at
    # start, exporter.descriptors). About half of them at most may be waiting for a request header.
    max_connections: Annotated[int | None, Field(ge=4)] = None


class Config(_Model):
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    web: WebConfig = WebConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    collectors: Collectors = Collectors()
    laravel: list[LaravelTarget] = []
    php_fpm: list[PhpFpmTarget] = []
    redis: list[RedisTarget] = []
    databases: list[DatabaseTarget] = []
    app_stats: list[AppStatsTarget] = []
    heal: HealConfig = HealConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("listen_address")
    @classmethod
    def _host_and_port(cls, v: str) -> str:
        split_listen_address(v)
        return v

    def secret_variables(self) -> set[str]:
        """The environment variables secrets are read from: kept out of every child process."""
        optional = [self.heal.redis_password_env, *(t.password_env for t in [*self.redis, *self.databases])]
        return {self.heal.token_env, *(name for name in optional if name)}

    def secret_files(self) -> list[tuple[str, Path]]:
        """(key, path) of every file a secret is read from, the heal token's included."""
        files = [(f"{section}[{i}].password_file", t.password_file)
                 for section in ("redis", "databases") for i, t in enumerate(getattr(self, section))]
        files += [("heal.token_file", self.heal.token_file),
                  ("heal.redis_password_file", self.heal.redis_password_file)]
        return [(key, path) for key, path in files if path is not None]

    @model_validator(mode="after")
    def _link_pools(self) -> Self:
        links = {link.pool: link for link in link_pools(
            [(t.name, t.root) for t in self.laravel],
            [(t.name, t.laravel, t.pool_config, t.pool_name) for t in self.php_fpm])}
        if links:
            pools = [t.model_copy(update={"laravel": links[t.name].app, "linked_because": links[t.name].why})
                     if t.name in links else t for t in self.php_fpm]
            object.__setattr__(self, "php_fpm", pools)  # decided once, at load: the model is frozen after
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        problems = []
        for section in ("laravel", "php_fpm", "redis", "databases", "app_stats"):
            seen: set[str] = set()
            for i, t in enumerate(getattr(self, section)):
                if t.name in seen:
                    problems.append(f"{section}[{i}].name: duplicate target name {t.name!r}")
                seen.add(t.name)
        roots = {t.name: t.root for t in self.laravel}
        for i, t in enumerate(self.php_fpm):
            if (why := t.agent_dir_problem(roots)) is not None:
                problems.append(f"php_fpm[{i}].{why}")
            if self.collectors.fpm.enabled and (why := t.timeout_problem(self.collectors.fpm.timeout)):
                problems.append(f"php_fpm[{i}].{why}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "function_")):
            continue  # pydantic's name for a validator, not a key the user wrote
        else:
            out += f".{part}" if out else part
    return out


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        loc = _format_loc(err["loc"])
        if not loc:  # a model-level check that already names its own paths
            problems.extend(msg.split("; "))
        else:
            problems.append(f"{loc}: {msg}")
    return problems


def parse(data: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate `data`; relative paths in it are relative to `base_dir` (default: the current directory)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping of keys"])
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and why PyYAML refused the text, by line and column (and character offset where it has one)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. NUL
        return (f"character offset {exc.position}: not valid YAML: {exc.reason} "
                f"(U+{exc.character if isinstance(exc.character, int) else 0:04X})")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}not valid YAML: {getattr(exc, 'problem', None) or type(exc).__name__}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's SafeLoader, except that a key given twice in one mapping is an error, not a silent
    replacement (YAML 1.2 requires keys to be unique; PyYAML keeps the last). Keys a `<<` merge brings
    in may still be overridden, as YAML's merge key intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the parent class says so with its own message
                break
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load(path: Path) -> Config:
    """Read, parse and validate the configuration file; relative paths in it are relative to its folder.

    Raises ConfigError naming the file for anything wrong with it: unreadable, not UTF-8 (with the
    byte offset of the first bad byte), not YAML (line and column), a key given twice in one mapping
    (both lines), empty, or invalid.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"byte offset {exc.start}: not UTF-8 (byte 0x{raw[exc.start]:02x}); "
                                      "save the file as UTF-8"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [_yaml_problem(exc)]) from None
    except RecursionError:
        raise ConfigError(str(path), ["not valid YAML: nested too deeply"]) from None
    if data is None:
        # A truncated or never-rendered file would otherwise start a sidecar that watches nothing.
        raise ConfigError(str(path), ["the file is empty (no keys); write {} for all defaults"])
    return parse(data, str(path), base_dir=path.absolute().parent)
