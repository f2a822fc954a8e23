"""The configuration's value types: durations, target names, paths relative to the file, URLs
without credentials, accounts, file modes, secrets; and the error that names a bad value's path.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)

from exporter.fs.access import UserGroup
from exporter.text import display
from exporter.url_options import redis_query_problem
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


def _octal_mode(value: Any) -> Any:
    """A file mode written as "0644"/"644" (YAML may also hand over 0644 already parsed as an integer)."""
    if isinstance(value, str):
        if not re.fullmatch(r"0?[0-7]{3}", value.strip()):
            raise ValueError(f"not an octal file mode: {value!r} (use e.g. \"0644\")")
        return int(value.strip(), 8)
    return value


FileMode = Annotated[int, BeforeValidator(_octal_mode), Field(ge=0, le=0o777)]
MetricName = Annotated[str, Field(pattern=r"^cachewarden_[a-z0-9_]+$")]
