"""One line of PHP's ini syntax, read as Zend's ini scanner (INI_SCANNER_NORMAL) reads it.

php.ini, conf.d files and PHP-FPM's own configuration all go through the same scanner; FPM feeds it
one line at a time. What that scanner does to a value matters to what cachewarden reports:
`opcache.validate_timestamps = Off` is "", `= yes` is "1", `"a\\"b"` is `a"b`, `; …` ends an unquoted
value, and `${NAME}` is replaced at start by PHP's configuration value or environment variable NAME.
A value is kept as a template (its literal parts and `${NAME}` references), so that a reader can say
a value came from `${NAME}` and expand it later from the environment the PHP process had.

Hand-written because no Python library reads PHP's ini dialect (configparser differs in quoting,
booleans, comments and `${}`). Only the forms real configurations use are read: a bare value, a
double-quoted or single-quoted one, `${NAME}` inside a bare or double-quoted value, boolean and null
keywords. Anything else (the bitwise expressions, mixed quoted and bare parts, constants) is returned
as not understood rather than guessed; tests/integration/test_ini_scanner_oracle.py compares every
value read here with PHP's own parse_ini_string().
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = {"true", "on", "yes"}
_FALSE = {"false", "off", "no", "none", "null"}
# `${NAME}`. Other names are left not understood: `${A:-default}` means a default only from PHP 8.3.
_VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
# Characters that make a bare value an expression or a syntax error in the scanner.
_OPERATORS = set("|&^~!()=[]{}\"'")
# A bare word PHP would look up as a constant (E_ALL, PHP_INT_MAX, …): not understood here.
_CONSTANT = re.compile(r"[A-Z_][A-Z0-9_]*")
_ODD_DOLLAR = re.compile(r"\$(?![A-Za-z_{])")


@dataclass(frozen=True, slots=True)
class Var:
    """A `${NAME}` reference inside a value."""

    name: str


@dataclass(frozen=True, slots=True)
class Value:
    """A value as written: literal text and `${NAME}` parts, or not understood (`understood` False)."""

    parts: tuple[str | Var, ...]
    raw: str
    understood: bool = True

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Var))

    @property
    def literal(self) -> str | None:
        """The value when it needs no expansion, else None."""
        if not self.understood or self.variables:
            return None
        return "".join(p for p in self.parts if isinstance(p, str))

    def expand(self, env: Mapping[str, str]) -> str | None:
        """The value with each `${NAME}` replaced from `env` ("" when unset, as PHP does); None if
        not understood."""
        if not self.understood:
            return None
        return "".join(p if isinstance(p, str) else env.get(p.name, "") for p in self.parts)

    def label(self) -> str:
        """`${A}` (or `${A}, ${B}`): names the variables, never their values."""
        return ", ".join(f"${{{name}}}" for name in dict.fromkeys(self.variables))

    @classmethod
    def of(cls, text: str) -> Value:
        return cls((text,), text)


@dataclass(frozen=True, slots=True)
class Section:
    name: str


@dataclass(frozen=True, slots=True)
class Entry:
    """`key = value`, or `key[offset] = value` (FPM's php_value[…], env[…])."""

    key: str
    offset: str | None
    value: Value


def _bare(text: str) -> tuple[str | Var, ...] | None:
    """A bare value with `${NAME}` references; None if the scanner would read it otherwise."""
    # A `$` that starts neither `${` nor a name (`$pool`): the scanner reads the rest in its own way.
    if _ODD_DOLLAR.search(text):
        return None
    parts: list[str | Var] = []
    pos = 0
    for m in _VAR.finditer(text):
        parts.append(text[pos:m.start()])
        parts.append(Var(m.group(1)))
        pos = m.end()
    parts.append(text[pos:])
    literal = "".join(p for p in parts if isinstance(p, str))
    if "${" in literal or any(c in _OPERATORS for c in literal):
        return None
    parts = [p for p in parts if p != ""]
    # A boolean or null keyword between blanks or next to `${}` is a token of its own, and a token
    # beside others is a syntax error ("Off 0", "${A}yes"); inside a word ("/x/none", "on.x") it is text.
    tokens = [t for p in parts if isinstance(p, str) for t in p.split()]
    if any(t.lower() in _TRUE | _FALSE for t in tokens) and not (len(parts) == 1 and len(tokens) == 1):
        return None
    return tuple(parts)


def _double_quoted(body: str) -> tuple[str | Var, ...] | None:
    """The inside of "…": `\\"`, `\\\\` and `\\$` are escapes, other backslashes stay, `${}` expands."""
    parts: list[str | Var] = []
    buf: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in '"\\$':
            buf.append(body[i + 1])
            i += 2
            continue
        if c == '"':
            return None  # an unescaped quote inside: two strings, not read here
        if body.startswith("${", i):
            m = _VAR.match(body, i)
            if m is None:
                return None
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(Var(m.group(1)))
            i = m.end()
            continue
        buf.append(c)
        i += 1
    if buf:
        parts.append("".join(buf))
    return tuple(parts)


def scan_value(text: str) -> Value:
    """The value part of a line (after `=`), comments included."""
    stripped = text.strip(" \t\r\n")
    raw = stripped
    if stripped.startswith('"'):
        end = _closing_quote(stripped)
        if end is not None and _only_comment(stripped[end + 1:]):
            raw = stripped[:end + 1]
            parts = _double_quoted(stripped[1:end])
            if parts is not None:
                return Value(parts, raw)
        return Value((), raw, understood=False)
    if stripped.startswith("'"):
        end = stripped.find("'", 1)
        if end > 0 and _only_comment(stripped[end + 1:]):
            return Value((stripped[1:end],), stripped[:end + 1])
        return Value((), raw, understood=False)
    bare = stripped.split(";", 1)[0].rstrip(" \t")
    parts = _bare(bare)
    if parts is None:
        return Value((), bare, understood=False)
    if len(parts) == 1 and isinstance(parts[0], str):
        word = parts[0]
        if word.lower() in _TRUE:
            return Value(("1",), bare)
        if word.lower() in _FALSE:
            return Value((), bare)
        if _CONSTANT.fullmatch(word):
            return Value((), bare, understood=False)
    return Value(parts, bare)


def _closing_quote(text: str) -> int | None:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return None


def _only_comment(rest: str) -> bool:
    rest = rest.strip(" \t\r\n")
    return rest == "" or rest.startswith(";")


def scan_line(line: str) -> Section | Entry | None:
    """A section header, an entry, or None for a blank line, a comment or a line without `=`."""
    text = line.strip(" \t\r\n")
    if not text or text.startswith(";"):
        return None
    if text.startswith("["):
        end = text.find("]")
        return Section(text[1:end].strip()) if end > 0 else None
    key, eq, value = text.partition("=")
    if not eq:
        return None
    key, offset = key.strip(), None
    if key.endswith("]") and "[" in key:
        key, _, rest = key.partition("[")
        key, offset = key.strip(), _offset(rest[:-1])
    return Entry(key, offset, scan_value(value))


_OFFSET_PART = re.compile(r'"([^"]*)"|\'([^\']*)\'|([^"\']+)')


def _offset(text: str) -> str:
    """`php_value[ opcache.jit ]` is `opcache.jit ` to the scanner: blanks after `[` are eaten, blanks
    before `]` are part of a bare offset (so FPM sets a directive that does not exist), and dropped
    after a quoted one; quoted and bare parts join (`"a"b` is `ab`). PHP's parse_ini_string() agrees."""
    parts = _OFFSET_PART.findall(text.lstrip(" \t"))
    if len(parts) > 1 and parts[-1][2] and not parts[-1][2].strip(" \t"):
        parts.pop()  # the blanks after a closing quote
    return "".join(a or b or c for a, b, c in parts)
