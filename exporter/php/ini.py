"""Which file set each effective OPcache directive: php.ini, a conf.d file, the FPM pool, or the default.

PHP loads php.ini, then the scanned conf.d files in alphabetical order; the last file that sets a
directive wins. A pool's php_value/php_admin_value beats them all. The agent (running inside FPM, so it
sees exactly the files FPM loaded) returns the `opcache.` lines of each loaded file in load order; this
module parses those lines and names, for each directive, the file whose line produced the value.

The pool's lines are known only from the target's pool_config. Without it (or when the value came from
a web server's PHP_VALUE or FPM's -d), the effective value differs from what the last file (or PHP's
default) says; the source is then UNKNOWN_SOURCE rather than a file that did not set that value.

Lines are read as PHP's ini scanner reads them (exporter.php.ini_scanner). A line whose value is
`${NAME}` was expanded by PHP from its environment when FPM started: the value is the one ini_get
reports inside FPM, and the source is the file with the variable named, e.g.
`/usr/local/etc/php/conf.d/zz-opcache.ini (${PHP_OPCACHE_VALIDATE_TIMESTAMPS})`. Such a value cannot
be compared with the line, so a PHP_VALUE or -d override of it is not noticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.php.ini_scanner import Entry, Value, scan_line
from exporter.php.pool_config import PoolSettings

DEFAULT_SOURCE = "default"
UNKNOWN_SOURCE = "unknown (not php.ini/conf.d: pool php_value, PHP_VALUE or -d)"

# The directives exported as cachewarden_opcache_setting_info, without their `opcache.` prefix (the
# realpath cache's are PHP's own and keep their names: they decide how long a worker resolves a
# release symlink the old way).
DIRECTIVES = (
    "enable",
    "validate_timestamps",
    "revalidate_freq",
    "file_update_protection",
    "memory_consumption",
    "max_accelerated_files",
    "file_cache",
    "file_cache_only",
    "file_cache_consistency_checks",
    "preload",
    "preload_user",
    "jit",
    "jit_buffer_size",
    "enable_cli",
    "restrict_api",
    "blacklist_filename",
    "huge_code_pages",
    "realpath_cache_ttl",
    "realpath_cache_size",
)
PHP_DIRECTIVES = frozenset({"realpath_cache_ttl", "realpath_cache_size"})
# PHP 8.2's built-in values, to tell "nothing set it" from "something no ini file shows set it".
DEFAULTS = {
    "enable": "1",
    "validate_timestamps": "1",
    "revalidate_freq": "2",
    "file_update_protection": "2",
    "memory_consumption": "128",
    "max_accelerated_files": "10000",
    "file_cache": "",
    "file_cache_only": "0",
    "file_cache_consistency_checks": "1",
    "preload": "",
    "preload_user": "",
    "jit": "tracing",
    "jit_buffer_size": "0",
    "enable_cli": "0",
    "restrict_api": "",
    "blacklist_filename": "",
    "huge_code_pages": "0",
    "realpath_cache_ttl": "120",
    "realpath_cache_size": "4096K",
}
_BOOLEAN = {"enable", "validate_timestamps", "file_cache_only", "file_cache_consistency_checks", "enable_cli",
            "huge_code_pages"}
_TRUE = {"1", "on", "yes", "true"}
_JIT_OFF = {"", "0", "off", "no", "false"}


def ini_key(directive: str) -> str:
    """The ini name of a directive as DIRECTIVES spells it: `opcache.X`, or PHP's own name."""
    return directive if directive in PHP_DIRECTIVES else f"opcache.{directive}"


@dataclass(frozen=True, slots=True)
class Setting:
    directive: str  # without the `opcache.` prefix
    value: str
    source: str  # a file path, or "default"


def parse_ini_lines(lines: Iterable[str]) -> dict[str, Value]:
    """`key=value` lines into a dict (the last occurrence wins); comments and sections are skipped."""
    out: dict[str, Value] = {}
    for line in lines:
        item = scan_line(line)
        if isinstance(item, Entry) and item.offset is None:
            out[item.key] = item.value
    return out


def normalize(directive: str, value: str) -> str:
    """Booleans as "0"/"1" whichever spelling set them (ini_get reports "" for Off); a disabled JIT as
    "off" (ini_get reports "" for opcache.jit=off, 0, no or false)."""
    if directive in _BOOLEAN:
        return "1" if value.strip().lower() in _TRUE else "0"
    if directive == "jit" and value.strip().lower() in _JIT_OFF:
        return "off"
    return value.strip()


def attribute(
    effective: Mapping[str, str],
    files: Sequence[tuple[str, Sequence[str]]],
    pool: PoolSettings | None = None,
    directives: Sequence[str] = DIRECTIVES,
) -> list[Setting]:
    """Attribute each directive's effective value to its source.

    `effective` maps `opcache.X` to the value ini_get reports inside FPM; `files` is (path, lines) in
    load order. A directive the pool sets is the pool file's; else the last file that sets it, if it
    sets the effective value; else "default" if that is PHP's default; else UNKNOWN_SOURCE.
    """
    parsed = [(path, parse_ini_lines(lines)) for path, lines in files]
    overrides = pool.ini if pool is not None else {}
    out = []
    for d in directives:
        key = ini_key(d)
        source, expected = DEFAULT_SOURCE, DEFAULTS.get(d)
        for path, settings in parsed:
            if key in settings:
                line = settings[key]
                literal = line.literal
                label = line.label()
                source = f"{path} ({label})" if label else path
                # A ${NAME} (or a form not read here) has no value to compare with: trust the file.
                expected = None if literal is None else normalize(d, literal)
        value = normalize(d, effective.get(key, ""))
        if key in overrides:
            source = overrides[key].source()
        elif key in effective and expected is not None and value != expected:
            source = UNKNOWN_SOURCE
        out.append(Setting(d, value, source))
    return out
