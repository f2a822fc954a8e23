"""The configuration file: parsed, validated (every error at once, named by its path) and resolved.

Validation is pydantic's; this module adds the messages a person can act on
(`laravel[1].root: directory /srv/shop does not exist`) and the Laravel defaults read from the app's
`.env`. Relative paths are relative to the configuration file's directory, as in Prometheus. Secrets
never live in this file: they come from `*_file` paths or environment variables.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from exporter.fs.access import UserGroup
from exporter.laravel_env import read_app_dotenv
from exporter.laravel_paths import compiled_views, framework_version
from exporter.pool_links import link_pools
from exporter.text import display
from exporter.url_options import redis_query_problem, sql_query_problem
from exporter.url_secrets import url_credential

DEFAULT_PORT = 9590
DEFAULT_LISTEN_ADDRESS = f"0.0.0.0:{DEFAULT_PORT}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason, each prefixed by its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        # A problem may quote a path from the file or the app's .env: one line each, escaped (exporter.text).
        super().__init__(f"{display(source)}: invalid configuration:\n"
                         + "\n".join(f"  {display(p)}" for p in problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """Accept 15, 15.0, "15s", "500ms", "2m"; anything else goes to pydantic's float check."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 15, 15s, 500ms, 2m)")
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _target_name(value: str) -> str:
    if not _TARGET_NAME.fullmatch(value):
        raise ValueError("use letters, digits, _ . -, starting with a letter or digit, at most 64 characters")
    return value


TargetName = Annotated[str, AfterValidator(_target_name)]


def split_listen_address(address: str) -> tuple[str, int]:
    """HOST:PORT as (host, port); an empty HOST is every IPv4 address, an IPv6 HOST goes in brackets."""
    host, sep, port = address.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"an IPv6 host goes in brackets, e.g. [::]:{port}; got {address!r}")
    return host or "0.0.0.0", int(port)


def _credential_free(advice: str, *, user_is_secret: bool = False) -> AfterValidator:
    """A check that the URL carries no credential (exporter.url_secrets decides), for every URL key."""

    def check(url: str | None) -> str | None:
        if url is not None and (found := url_credential(url, user_is_secret=user_is_secret)):
            raise ValueError(f"the URL contains {found}{advice}")
        return url

    return AfterValidator(check)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://", value, re.I):  # schemes are case-insensitive (RFC 3986 section 3.1)
        raise ValueError("expected an http:// or https:// URL")
    return value


# Every URL-typed key is one of these types (tests/unit/test_config.py walks the model to hold that).
HttpUrl = Annotated[str, AfterValidator(_http_url),
                    _credential_free(", which would show wherever the URL is shown", user_is_secret=True)]
TargetUrl = Annotated[str, _credential_free(": use password_file or password_env instead")]
StoreUrl = Annotated[str, _credential_free(": use redis_password_file or redis_password_env instead"),
                     AfterValidator(lambda v: _redis_url(v))]
LinkUrl = Annotated[str, _credential_free(", which every rendered alert would show", user_is_secret=True)]


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them so they cannot silently do nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _existing_dir(value: Path | None) -> Path | None:
    if value is not None and not value.is_dir():
        raise ValueError(f"{value} is not a directory" if value.exists()
                         else f"directory {value} does not exist")
    return value


def _base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths are resolved against: the configuration file's, else the current one."""
    base = (info.context or {}).get("base_dir")
    return Path(base).absolute() if base is not None else Path.cwd()


def _relative_to_config(value: Any, info: ValidationInfo) -> Any:
    """A relative path is relative to the configuration file's folder, never to the current directory
    (which under systemd is /)."""
    if isinstance(value, str | Path) and str(value) and not Path(value).is_absolute():
        return _base_dir(info) / value
    return value


def _command_path(value: Any, info: ValidationInfo) -> Any:
    """A program: a bare name (`php`) is looked up on PATH when run, as a shell does; a path with a
    slash is a path, relative to the configuration file's folder."""
    if isinstance(value, str) and "/" not in value:
        return value
    return _relative_to_config(value, info)


# Every path-typed key is one of these (tests/unit/test_config_paths.py walks the model to hold that).
ConfigPath = Annotated[Path, BeforeValidator(_relative_to_config)]


def _account(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `user: 33` in YAML
    return UserGroup.parse(value) if isinstance(value, str) else value


# "user" or "user:group", names or numeric ids, resolved once at load (exporter.fs.access.UserGroup).
Account = Annotated[InstanceOf[UserGroup], BeforeValidator(_account), PlainSerializer(str, return_type=str)]
CommandPath = Annotated[Path, BeforeValidator(_command_path)]


def read_secret(file: Path | None, env: str | None) -> str | None:
    """A secret from a file (trailing newline stripped) or an environment variable, file first."""
    if file is not None:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    if env:
        return os.environ.get(env)
    return None


def _kind_of_file(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _secret_file(v: Path | None) -> Path | None:
    """A secret is read whole at start: only a regular file will do (a FIFO would block the read,
    /dev/zero never end it). Symlinks are followed, as Kubernetes' `..data` needs."""
    if v is None:
        return v
    try:
        st = os.stat(v)
    except FileNotFoundError:
        raise ValueError("file does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot reach the file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{v} is {_kind_of_file(st.st_mode)}, not a regular file")
    if not os.access(v, os.R_OK):
        raise ValueError(f"file is not readable by uid {os.geteuid()}")
    return v


class _Secret(_Model):
    password_file: ConfigPath | None = None
    password_env: str | None = None

    _readable = field_validator("password_file")(lambda cls, v: _secret_file(v))

    def password(self) -> str | None:
        return read_secret(self.password_file, self.password_env)


class CollectorOptions(_Model):
    """When a section leaves `timeout` out, `Collectors` fills in its kind's default, capped at `interval`."""

    enabled: bool = True
    interval: Duration = 15.0
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _timeout_fits(self) -> Self:
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval")
        return self


class Collectors(_Model):
    views: CollectorOptions = CollectorOptions()
    fpm: CollectorOptions = CollectorOptions(timeout=5.0)
    opcache: CollectorOptions = CollectorOptions()
    redis: CollectorOptions = CollectorOptions(timeout=5.0)
    sql: CollectorOptions = CollectorOptions()
    app_stats: CollectorOptions = CollectorOptions(timeout=5.0)
    laravel_caches: CollectorOptions = CollectorOptions()

    @field_validator("*", mode="before")
    @classmethod
    def _default_timeout_fits_the_interval(cls, value: Any, info: ValidationInfo) -> Any:
        # `views: {interval: 5s}` must not fail "timeout must not exceed interval" over a timeout the
        # user never wrote: a timeout left out is this kind's default, or the interval when shorter.
        if not isinstance(value, dict) or "timeout" in value or info.field_name is None:
            return value
        default: CollectorOptions = cls.model_fields[info.field_name].default
        try:
            interval = _parse_duration(value.get("interval", default.interval))
        except ValueError:
            return value  # the interval's own check reports it
        if not isinstance(interval, int | float) or interval <= 0:
            return value
        return {**value, "timeout": min(default.timeout, float(interval))}

    def options(self, kind: str) -> CollectorOptions:
        opts: CollectorOptions = getattr(self, kind)
        return opts


class LaravelTarget(_Model):
    name: TargetName
    root: ConfigPath
    # Where each path the file did not give came from, to name it when the directory is missing.
    derived_from: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    views_path: ConfigPath | None = None
    compiled_path: ConfigPath | None = None
    # The user (or "user:group") PHP-FPM runs the app as: dir_writable is judged for it, not for cachewarden.
    php_user: Account | None = None
    # The app's .env as read at load time; the targets are derived from it (exporter.discovery), and
    # exporter.collectors.discovery re-reads it when it changes.
    env: dict[str, str] = Field(default_factory=dict, exclude=True)
    # Why the .env could not be read (phpdotenv's error with its line): nothing can be derived from it.
    env_error: str | None = Field(default=None, exclude=True)
    framework_version: str | None = Field(default=None, exclude=True)  # from vendor/laravel/framework
    # The compiled-view directory Laravel itself would use (what compiled_path is when not set here).
    derived_compiled_path: Path | None = Field(default=None, exclude=True, repr=False)
    # Where compiled_path came from, decided once at load: True when cachewarden's configuration set it
    # to something other than what Laravel would use (the operator's word); False when derived, or set
    # to the derived value (the heal's stricter checks then apply: exporter.heal.actions.safety).
    compiled_path_configured: bool = Field(default=False, exclude=True, repr=False)

    @field_validator("root")
    @classmethod
    def _root_exists(cls, v: Path) -> Path:
        _existing_dir(v)
        return v.absolute()

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_dotenv(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or "env" in data or not isinstance(data.get("root"), str):
            return data
        base = _base_dir(info)
        root = base / data["root"]
        data = {**data, "root": str(root)}
        for key in ("views_path", "compiled_path"):
            if isinstance(data.get(key), str):
                data[key] = str(base / data[key])
        if not root.is_dir():
            return data  # the root validator reports it
        dotenv = root / ".env"
        env, env_error = read_app_dotenv(dotenv)
        if env_error is not None:
            data["env_error"] = env_error
        data["env"] = env
        version = framework_version(root)
        data["framework_version"] = None if version is None else str(version)
        derived = {}
        if data.get("views_path") is None:
            data["views_path"] = str(root / "resources" / "views")
            derived["views_path"] = "the default under root; set views_path"
        laravels = compiled_views(root, env, version, dotenv)
        data["derived_compiled_path"] = str(laravels.path)
        given = data.get("compiled_path")
        data["compiled_path_configured"] = isinstance(given, str) and (
            os.path.normpath(given) != os.path.normpath(laravels.path))
        if given is None:
            data["compiled_path"] = str(laravels.path)
            derived["compiled_path"] = laravels.origin
            if "env_error" in data:
                derived["compiled_path"] += f"; {dotenv} cannot be read, so VIEW_COMPILED_PATH is unknown"
        data["derived_from"] = derived
        return data

    @field_validator("views_path", "compiled_path")
    @classmethod
    def _dirs_exist(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        try:
            return _existing_dir(v)
        except ValueError as exc:
            origin = info.data.get("derived_from", {}).get(info.field_name)
            raise ValueError(f"{exc} ({origin})" if origin else str(exc)) from None

    @property
    def views_dir(self) -> Path:
        assert self.views_path is not None  # filled by _defaults_from_dotenv
        return self.views_path

    @property
    def compiled_dir(self) -> Path:
        assert self.compiled_path is not None
        return self.compiled_path


def _served_dirs(root: Path) -> list[Path]:
    """Directories a Laravel app's web server serves files from, resolved."""
    public = root / "public"
    served = [public.resolve(), (root / "storage" / "app" / "public").resolve()]
    with contextlib.suppress(OSError):  # no public/ (yet): nothing is served from it
        served.extend(entry.resolve() for entry in public.iterdir() if entry.is_symlink())
    return served


class PhpFpmTarget(_Model):
    name: TargetName
    address: str  # unix:/path/to.sock or host:port
    status_path: str = "/fpm-status"
    agent_dir: ConfigPath = Path("/var/lib/cachewarden")
    # FPM pool file (or php-fpm.conf): pm.max_children, and the php_value[...] lines that directive
    # attribution needs to name the pool as a setting's source
    pool_config: ConfigPath | None = None
    pool_name: str | None = None  # its [section]; default: the status page's pool, else the only one
    # FPM's prefix (its -p, else its install prefix), against which FPM resolves a relative include=;
    # default: PREFIX when pool_config is PREFIX/etc/*.conf (/usr/local in the official Docker image)
    fpm_prefix: ConfigPath | None = None
    laravel: TargetName | None = None  # the Laravel app this pool serves, to refuse an agent_dir in public/
    # Why `laravel` was set at load when the file left it out (exporter.pool_links); None: as written.
    linked_because: str | None = Field(default=None, exclude=True)
    connect_timeout: Duration = 1.0
    status_timeout: Duration = 2.0  # a saturated pool shows as this timing out while connections succeed
    agent_timeout: Duration = 5.0
    revision_file: ConfigPath | None = None  # REVISION text file, or a PHP file returning the version
    release_symlink: ConfigPath | None = None  # e.g. /var/www/app/current -> releases/N
    # What fpm.reload runs (an argument list, no shell), e.g. ["systemctl", "reload", "php8.2-fpm"]: the only
    # fix for preloaded code, which stays until FPM restarts. Without it such a heal stops at once.
    restart_command: list[str] | None = Field(default=None, min_length=1)
    restart_timeout: Duration = 60.0  # for the command, and again for the pool to answer with a new OPcache

    @field_validator("agent_dir")
    @classmethod
    def _agent_dir_not_served(cls, v: Path) -> Path:
        v = v.absolute()
        for path in dict.fromkeys((v, v.resolve())):
            for parent in (path, *path.parents):
                if parent.name != "public":
                    continue
                if (parent.parent / "artisan").exists():
                    raise ValueError(f"inside the public/ directory of the Laravel app at {parent.parent}")
                app = parent.parent.parent.parent  # parent is <app>/storage/app/public
                if parent.parent.name == "app" and parent.parent.parent.name == "storage" and (
                    app / "artisan"
                ).exists():
                    raise ValueError(f"inside storage/app/public of the Laravel app at {app}, which "
                                     "`artisan storage:link` serves as public/storage")
        return v

    def agent_dir_problem(self, laravel_roots: dict[str, Path]) -> str | None:
        """Why agent_dir must not be used given the configured Laravel roots, or None.

        The agent must never be reachable through the web server. Paths are compared resolved, so a
        symlink cannot hide the public directory; refused are public/ itself, storage/app/public
        (served as public/storage after `artisan storage:link`) and wherever a symlink directly
        inside public/ points.
        """
        if self.laravel is not None and self.laravel not in laravel_roots:
            return f"laravel: no Laravel target named {self.laravel!r}"
        agent_dir = self.agent_dir.resolve()
        for name, root in laravel_roots.items():
            for served in _served_dirs(root):
                if agent_dir == served or served in agent_dir.parents:
                    return f"agent_dir: inside {served}, served by the web server of Laravel app {name!r}"
        return None

    def timeout_problem(self, fpm_collector_timeout: float) -> str | None:
        """Why the fpm collector could not tell a saturated pool in time, or None."""
        needed = self.connect_timeout + self.status_timeout
        if fpm_collector_timeout <= needed:
            return (f"status_timeout: connect_timeout + status_timeout ({needed:g}s) must be below "
                    f"collectors.fpm.timeout ({fpm_collector_timeout:g}s), which also bounds the wait "
                    "for cachewarden's own agent run on the pool")
        return None

    @field_validator("address")
    @classmethod
    def _address_form(cls, v: str) -> str:
        if v.startswith("unix:"):
            if not v[5:].startswith("/"):
                raise ValueError("a unix socket address is unix:/absolute/path")
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected unix:/path/to.sock or host:port")
        return v


class RedisTarget(_Secret):
    name: TargetName
    url: TargetUrl = "redis://127.0.0.1:6379/0"
    laravel: TargetName | None = None  # the Laravel app this server belongs to: replaces .env discovery
    # A password read from a Laravel app's .env by exporter.discovery; private, so never in repr or dumps.
    _discovered_password: str | None = PrivateAttr(default=None)

    def password(self) -> str | None:
        return self._discovered_password or super().password()

    _usable = field_validator("url")(lambda cls, v: _redis_url(v))


def _redis_url(v: str) -> str:
    # What redis-py would otherwise reject only when the collector is built, after start-up.
    # Schemes are case-insensitive (RFC 3986 section 3.1), as redis-py's urlparse reads them.
    m = re.match(r"^(rediss?)://(?:[^@/]*@)?(\[[^\]/]*\]|[^:/?#]*)(?::([^/?#]*))?(?:/([^?#]*))?", v, re.I)
    if m is None:
        if v[:7].lower() == "unix://":
            if problem := redis_query_problem(v):
                raise ValueError(problem)
            return v
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    port, db = m.group(3), m.group(4)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    if problem := redis_query_problem(v):
        raise ValueError(problem)
    return v


# The async drivers installed with cachewarden; a URL naming another one is refused when loaded.
_SQL_DRIVERS = {"mysql": ("asyncmy",), "mariadb": ("asyncmy",), "postgresql": ("asyncpg",)}


def _sql_url(value: str) -> str:
    from sqlalchemy.engine import make_url  # imported only when a database target is configured
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        # make_url's own message may quote the URL; it holds no password (refused above) but says
        # nothing a person can act on either.
        raise ValueError("not a database URL (e.g. mysql+asyncmy://user@host:3306/db)") from None
    backend, _, driver = url.drivername.lower().partition("+")  # as exporter.sql.engine reads it
    if backend not in _SQL_DRIVERS or (driver and driver not in _SQL_DRIVERS[backend]):
        raise ValueError("expected a mysql+asyncmy://, mariadb+asyncmy:// or postgresql+asyncpg:// URL")
    if not url.host and not {"unix_socket", "host"} & set(url.query):
        raise ValueError("the URL names no host")
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"port {url.port} is not from 1 to 65535")
    if problem := sql_query_problem(backend, url.query):
        raise ValueError(problem)
    return value


class DatabaseTarget(_Secret):
    name: TargetName
    url: TargetUrl
    laravel: TargetName | None = None  # the Laravel app this database belongs to: replaces .env discovery
    top_n: int = Field(default=20, ge=1, le=500)  # statement digests exported, by total time
    slow_threshold: Duration = 0.1  # a statement whose mean time exceeds this is slow
    digest_text_length: int = Field(default=120, ge=16, le=1000)
    # Reading the digest table is the costliest query by far: done this often, other values every collection.
    digest_interval: Duration = 60.0
    statement_timeout: Duration = 5.0  # for the exporter's own queries
    lock_timeout: Duration = 1.0
    connections_warn_ratio: float = Field(default=0.8, gt=0, le=1)
    _discovered_password: str | None = PrivateAttr(default=None)

    def password(self) -> str | None:
        return self._discovered_password or super().password()

    _supported = field_validator("url")(lambda cls, v: _sql_url(v))


class AppStatsTarget(_Model):
    name: TargetName
    url: HttpUrl


def _octal_mode(value: Any) -> Any:
    """A file mode written as "0644"/"644" (YAML may also hand over 0644 already parsed as an integer)."""
    if isinstance(value, str):
        if not re.fullmatch(r"0?[0-7]{3}", value.strip()):
            raise ValueError(f"not an octal file mode: {value!r} (use e.g. \"0644\")")
        return int(value.strip(), 8)
    return value


FileMode = Annotated[int, BeforeValidator(_octal_mode), Field(ge=0, le=0o777)]
MetricName = Annotated[str, Field(pattern=r"^cachewarden_[a-z0-9_]+$")]


class HealCondition(_Model):
    """A re-measured metric (summed over its series) that says the alert's cause is gone."""

    metric: MetricName
    # Only the series with these label values count, e.g. {cache: config} of a per-cache gauge.
    labels: dict[str, str] = {}
    max: float | None = None  # clear when the sum is at most this
    min: float | None = None  # clear when the sum is at least this

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        return self


class HealPlan(_Model):
    """The ordered steps (gentlest first) for one alertname, and when its condition counts as cleared."""

    steps: list[str] = Field(min_length=1, max_length=10)
    clear_when: list[HealCondition] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _known_actions(cls, v: list[str]) -> list[str]:
        from exporter.heal.names import ACTIONS

        unknown = [s for s in v if s not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown}; known: {sorted(ACTIONS)}")
        if len({ACTIONS[s].section for s in v}) > 1:
            raise ValueError("every step of a plan must act on the same kind of target")
        return v

    @model_validator(mode="after")
    def _measured_metrics(self) -> Self:
        """Each condition's metric must be one the collector that re-measures the plan emits: a typo
        would otherwise load and never clear."""
        from exporter.collectors import emitted_metrics
        from exporter.heal.names import ACTIONS

        kind = ACTIONS[self.steps[0]].measures
        if kind is None:
            return self  # verified by the step's own result: no metric is read
        emitted = emitted_metrics(kind)
        errors = [InitErrorDetails(
            type=PydanticCustomError("value_error", "{why}", {"why": (
                f"the {kind} collector that re-measures {self.steps[0]} emits no metric {c.metric!r}"
                + (f"; did you mean {close[0]!r}?" if (close := get_close_matches(c.metric, emitted, 1, 0.9))
                   else ""))}),
            loc=("clear_when", i, "metric"), input=c.metric)
            for i, c in enumerate(self.clear_when) if c.metric not in emitted]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class WarmCommand(_Model):
    argv: list[str] = Field(min_length=1)  # run without a shell
    cwd: ConfigPath | None = None
    timeout: Duration = 60.0
    # "user" or "user:group" to run as (cachewarden must then run as root): an artisan command run as
    # root writes root-owned caches that the app's own user can no longer rewrite.
    user: Account | None = None


class WarmUrl(_Model):
    url: HttpUrl
    timeout: Duration = 10.0


class HealWarm(_Model):
    """What `cache.warm` runs for one Laravel target."""

    target: TargetName
    commands: list[WarmCommand] = []
    urls: list[WarmUrl] = []


MIN_TOKEN_LENGTH = 16  # a guessable token would make /heal an open door


class HealConfig(_Model):
    enabled: bool = True
    # This host's `instance` label: alerts about another instance are left to that host's sidecar.
    instance: Annotated[str | None, Field(min_length=1, max_length=1024)] = None
    token_file: ConfigPath | None = None
    token_env: str = "CACHEWARDEN_HEAL_TOKEN"  # noqa: S105 - a variable name, not a secret
    dry_run: bool = False  # every run only lists what it would do
    allow_cidrs: list[str] = []  # e.g. 10.0.0.0/8; empty: any address that holds the token
    max_body_bytes: Annotated[int, Field(gt=0, le=16 << 20)] = 1 << 20
    # Shared lock, dedup and cooldown state, so that a fleet of sidecars heals once.
    redis_url: StoreUrl | None = None
    redis_password_file: ConfigPath | None = None
    redis_password_env: str | None = None
    dedup_ttl: Duration = 86400.0
    lock_ttl: Duration = 600.0  # a crashed sidecar's lock expires after this
    cooldown: Duration = 120.0  # per (action, target), after a step that changed something
    # This many runs of a plan within the window that did not clear its alert stop it from acting.
    ineffective_runs: Annotated[int, Field(ge=1)] = 3
    ineffective_window: Duration = 3600.0
    recent_runs: Annotated[int, Field(ge=1, le=10000)] = 200
    php_cli: CommandPath | None = None  # compile views with this `php` binary when no FPM pool serves the app
    views_owner: Account | None = None  # "user" or "user:group"
    views_mode: FileMode = 0o644  # directories get the same bits plus x wherever r is set
    warm: list[HealWarm] = []
    plans: dict[str, HealPlan] = {}  # by alertname; merged over the shipped defaults

    @field_validator("allow_cidrs")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        bad = []
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                bad.append(cidr)
        if bad:
            raise ValueError(f"not a network in CIDR notation: {bad}")
        return v

    _secret_readable = field_validator("token_file", "redis_password_file")(lambda cls, v: _secret_file(v))

    def redis_password(self) -> str | None:
        return read_secret(self.redis_password_file, self.redis_password_env)


Severity = Literal["critical", "warning", "info"]


class AlertRule(_Model):
    """One alert's tunables: the value its expression compares against, how long the condition must
    hold before it fires (`for`), and its severity. Alerts on a 0/1 flag have no threshold: setting one
    is refused (see ALERTS_WITHOUT_THRESHOLD) rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    threshold: float = 0.0
    for_: Duration = Field(default=300.0, alias="for")
    severity: Severity = "warning"


def _rule(threshold: float, hold: str, severity: Severity) -> AlertRule:
    return AlertRule.model_validate({"threshold": threshold, "for": hold, "severity": severity})


# Every alert the shipped rules define, with its defaults. Ratios are 0..1; rates are per second.
ALERT_DEFAULTS: dict[str, AlertRule] = {
    # compiled views
    "CachewardenViewsStale": _rule(0, "5m", "warning"),
    "CachewardenViewsOrphaned": _rule(0, "15m", "warning"),
    "CachewardenViewsUncompiled": _rule(0, "30m", "warning"),
    "CachewardenViewsDirNotWritable": _rule(0, "2m", "critical"),
    "CachewardenViewsDiskLow": _rule(1 << 30, "10m", "warning"),  # free bytes
    # OPcache
    "CachewardenOpcacheDisabled": _rule(0, "10m", "warning"),
    "CachewardenOpcacheStaleScripts": _rule(0, "2m", "critical"),
    "CachewardenOpcacheMissingScripts": _rule(0, "10m", "warning"),
    "CachewardenCodeRevisionDrift": _rule(0, "5m", "critical"),
    "CachewardenOpcacheOutsideRelease": _rule(0, "5m", "critical"),  # scripts of a superseded release
    "CachewardenOpcacheFileCacheStale": _rule(0, "2m", "critical"),  # stale entries, validate_timestamps=0
    "CachewardenOpcachePreloadStale": _rule(0, "5m", "critical"),  # preloaded scripts needing a restart
    "CachewardenOpcacheMemoryFull": _rule(0.9, "10m", "warning"),  # 1 - free / total (used or wasted)
    "CachewardenOpcacheKeysFull": _rule(0.9, "10m", "warning"),  # used / max
    "CachewardenOpcacheRestarts": _rule(0, "1m", "warning"),  # restarts for lack of room in 1h
    "CachewardenOpcacheHitRatioLow": _rule(0.9, "15m", "warning"),
    # Laravel's bootstrap caches
    "CachewardenLaravelConfigStale": _rule(0, "5m", "critical"),
    "CachewardenLaravelRoutesStale": _rule(0, "5m", "critical"),
    "CachewardenLaravelPackagesStale": _rule(0, "10m", "warning"),
    # PHP-FPM
    "CachewardenFpmDown": _rule(0, "2m", "critical"),
    "CachewardenFpmMaxChildrenReached": _rule(0, "1m", "warning"),  # increase over 5m
    "CachewardenFpmListenQueue": _rule(0, "2m", "warning"),
    "CachewardenFpmStatusTimeouts": _rule(0, "1m", "warning"),  # status requests unanswered in 5m
    # Redis
    "CachewardenRedisDown": _rule(0, "2m", "critical"),
    "CachewardenRedisHitRatioLow": _rule(0.8, "15m", "warning"),
    "CachewardenRedisEvictions": _rule(0, "10m", "warning"),  # evictions per second
    "CachewardenRedisClientsNearMax": _rule(0.8, "5m", "warning"),  # connected / maxclients
    # SQL
    "CachewardenDbDown": _rule(0, "2m", "critical"),
    "CachewardenDbConnectionsHigh": _rule(0.8, "5m", "warning"),  # connections / max_connections
    "CachewardenDbAbortedConnections": _rule(0.1, "10m", "warning"),  # aborted per second
    "CachewardenDbSlowQueries": _rule(0, "10m", "warning"),  # statement shapes over slow_threshold
    # cachewarden itself
    "CachewardenDown": _rule(0, "5m", "critical"),
    "CachewardenCollectorDown": _rule(0, "5m", "warning"),
    "CachewardenTargetConfigProblem": _rule(0, "5m", "warning"),  # a target the .env implies, not built
    "CachewardenHealFailing": _rule(0, "1m", "warning"),  # failed runs in 30m
    "CachewardenHealIneffective": _rule(0, "1m", "warning"),  # plans given up as not fixing anything
}

# Alerts on a 0/1 flag (or on a target being absent): their expressions compare with no number.
ALERTS_WITHOUT_THRESHOLD = frozenset({
    "CachewardenViewsDirNotWritable", "CachewardenOpcacheDisabled", "CachewardenFpmDown",
    "CachewardenRedisDown", "CachewardenDbDown", "CachewardenDown", "CachewardenCollectorDown",
    "CachewardenTargetConfigProblem",
    "CachewardenLaravelConfigStale", "CachewardenLaravelRoutesStale", "CachewardenLaravelPackagesStale",
})

# Below this many lookups per second a hit ratio says nothing: an idle cache is not a cold one.
DEFAULT_MIN_LOOKUP_RATE = 1.0


class AlertsConfig(_Model):
    """What `cachewarden render` needs: runbook links and each alert's thresholds.

    `rules` lists only the alerts to change and only the keys to change; the rest keep their defaults.
    """

    runbook_base_url: LinkUrl = "https://github.com/cachewarden/cachewarden/blob/main/docs/runbooks"
    min_lookup_rate: float = Field(default=DEFAULT_MIN_LOOKUP_RATE, ge=0)
    # The Prometheus job(s) scraping cachewarden, a regex: CachewardenDown watches their `up`.
    job: str = Field(default="cachewarden", min_length=1)
    rules: dict[str, AlertRule] = Field(default_factory=lambda: dict(ALERT_DEFAULTS))

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - set(ALERT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown alert {unknown[0]!r} (known: {', '.join(ALERT_DEFAULTS)})")
        for name in sorted(ALERTS_WITHOUT_THRESHOLD & set(value)):
            if isinstance(value[name], dict) and "threshold" in value[name]:
                raise ValueError(f"{name}.threshold: {name} compares with no number, so a threshold would "
                                 "do nothing (remove the key)")
        merged: dict[str, Any] = {}
        for name, default in ALERT_DEFAULTS.items():
            given = value.get(name)
            if isinstance(given, dict):
                merged[name] = {**default.model_dump(by_alias=True), **given}
            else:
                merged[name] = default if given is None else given
        return merged


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
