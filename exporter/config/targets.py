"""What cachewarden measures: the collectors' options and the laravel, php_fpm, redis, databases and
app_stats targets, each validated (and what can be derived from a Laravel app decided) at load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Self

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.config.values import (
    Account,
    ConfigPath,
    Duration,
    HttpUrl,
    TargetName,
    TargetUrl,
    _base_dir,
    _existing_dir,
    _Model,
    _parse_duration,
    _redis_url,
    _Secret,
)
from exporter.laravel_env import read_app_dotenv
from exporter.laravel_paths import compiled_views, framework_version
from exporter.url_options import sql_query_problem


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
