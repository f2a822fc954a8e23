"""Reading a Laravel app's `.env` file exactly as the app reads it: vlucas/phpdotenv 5, then `env()`.

Hand-written because no Python library reads phpdotenv's dialect: python-dotenv keeps `\\$` in
double quotes as written, reads `shop#1` as `shop#1` and accepts `APP_NAME=My Shop`, all three of
which phpdotenv reads otherwise (`$`, `shop`, an error that stops Laravel from booting). This is a
line-for-line port of phpdotenv 5.4's `Parser\\Lines`, `Parser\\EntryParser`, `Parser\\Lexer` and
`Loader\\Resolver` (the 5.6 sources that Laravel 11 and 12 install read the same), and
tests/unit/test_laravel_env_phpdotenv.py holds it to Debian's phpdotenv on a corpus and on
generated files. The grammar, briefly:
- a line is `[export ]NAME=VALUE`; NAME is `[A-Za-z0-9_.]+`, optionally quoted; a line without `=`
  is a bare NAME, which unsets it;
- unquoted values end at whitespace (anything but a comment after it is an error) and at `#`;
- single quotes are literal; double quotes take `\\"`, `\\\\`, `\\$`, `\\f`, `\\n`, `\\r`, `\\t`,
  `\\v` (any other escape is an error) and may span lines;
- `${NAME}` (unquoted or in double quotes, never in single quotes) is replaced by a variable set on
  an earlier line of the same file, else left as written. The sidecar's own environment is
  deliberately not consulted: it is not the app's, and must never silently redirect what the file says.
Then Laravel's `env()`: `null`/`(null)` mean unset, `empty`/`(empty)` the empty string (any case), and
a value still wrapped in a pair of quotes loses them.
"""

from __future__ import annotations

import codecs
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

# PHP's trim()/ltrim() set, and what ctype_space() and PCRE's \s (no UTF mode) call whitespace.
_PHP_TRIM = " \t\n\r\0\x0b"
_CTYPE_SPACE = frozenset(" \t\n\r\x0b\x0c")
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_NAME = re.compile(r"[a-zA-Z0-9_.]+")
# phpdotenv's Lexer: newlines, other whitespace, \, ', ", #, $, and runs of anything else.
_TOKEN = re.compile(
    "[\r\n]{1,1000}|[ \t\x0b\x0c]{1,1000}|\\\\|'|\"|#|\\$|[^ \t\n\r\x0b\x0c\\\\'\"#$]{1,1000}"
)
_REFERENCE = re.compile(r"\$\{([a-zA-Z0-9_.]+)\}")
_ESCAPES = {"f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_UNSET = frozenset({"null", "(null)"})
_EMPTY = frozenset({"empty", "(empty)"})
_SECRET_NAME = re.compile(r"PASS|SECRET|KEY|TOKEN|CREDENTIAL|AUTH", re.IGNORECASE)
_QUOTED = re.compile(r"(['\"])(.*)\1")  # `.` stops at a newline, as in env()'s preg_match

# mb_convert_encoding's substitute for each invalid UTF-8 sequence: one `?` per maximal invalid
# subpart, which is how Python's decoder cuts them too (measured on truncated, overlong and
# surrogate sequences). A real U+FFFD in the file is text and stays.
def _mbstring_substitute(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return "?", exc.end


codecs.register_error("cachewarden.mbstring", _mbstring_substitute)

INITIAL, UNQUOTED, SINGLE, DOUBLE, ESCAPE, WHITESPACE, COMMENT = range(7)


class DotenvError(ValueError):
    """The file is not one phpdotenv can read, so Laravel cannot boot with it.

    `message` is phpdotenv's own (`Failed to parse dotenv file. Encountered … at […].`), which quotes
    the offending value; `line` is the 1-based line where the offending entry starts, `name` its variable.
    str() is what people see: the value is left out when the name says it is a secret.
    """

    def __init__(self, message: str, line: int, path: Path | None = None, name: str | None = None) -> None:
        self.message, self.line, self.path, self.name = message, line, path, name
        where = f"{path}, line {line}" if path is not None else f"line {line}"
        shown = message
        if name is not None and _SECRET_NAME.search(name):
            shown = re.sub(r"\[.*\]\.\Z", f"[the value of {name}, not shown].", message, flags=re.DOTALL)
        super().__init__(f"{where}: {shown}")


@dataclass(frozen=True, slots=True)
class _Value:
    chars: str
    references: tuple[int, ...]  # offsets of each `$` that may start a ${NAME}


def parse_dotenv(text: str) -> dict[str, str | None]:
    """Each name the file sets, in first-set order, with its final value (None: unset by a bare NAME).

    Raises DotenvError, naming the entry's line, where phpdotenv throws InvalidFileException.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    values: dict[str, str | None] = {}
    for line_no, raw in _entries(_LINE_BREAK.split(text)):
        name, value = _parse_entry(raw, line_no)
        values[name] = None if value is None else _resolve(value, values)
    return values


def _entries(lines: list[str]) -> list[tuple[int, str]]:
    """phpdotenv's Lines::process: join multi-line double-quoted values, drop blanks and comments."""
    out: list[tuple[int, str]] = []
    buffer: list[str] = []
    multiline, first = False, 0
    for line_no, line in enumerate(lines, start=1):
        at = line_no
        started = '="' in line and not _looks_like_stop(line, started=True)
        if started:
            multiline = True
        if multiline:
            if not buffer:
                first = line_no
            buffer.append(line)
            if _looks_like_stop(line, started=started):
                multiline, line, buffer, at = False, "\n".join(buffer), [], first
        stripped = line.strip(_PHP_TRIM)
        if not multiline and stripped and not stripped.startswith("#"):
            out.append((at, line))
    return out  # a value still open at the end of the file is dropped, as phpdotenv drops it


def _looks_like_stop(line: str, *, started: bool) -> bool:
    if line == '"':
        return True
    line = line.replace("\\\\", "")
    quotes = sum(1 for a, b in itertools.pairwise(line) if b == '"' and a != "\\")
    return quotes > 1 if started else quotes >= 1


def _error(cause: str, subject: str, line_no: int) -> DotenvError:
    # PHP's strtok($subject, "\n") skips leading newlines and yields "" when nothing else is left.
    shown = next((part for part in subject.split("\n") if part), "")
    return DotenvError(f"Failed to parse dotenv file. Encountered {cause} at [{shown}].", line_no)


def _parse_entry(raw: str, line_no: int) -> tuple[str, _Value | None]:
    name, sep, rest = raw.partition("=")
    if sep:  # phpdotenv trims the name only when the line has an `=`
        name = name.strip(_PHP_TRIM)
    if name == "":
        raise _error("an unexpected equals", raw, line_no)
    if len(name) > 8 and name.startswith("export") and name[6] in _CTYPE_SPACE:
        name = name[6:].lstrip(" \t\n\r\0\x0b")
    if len(name) >= 3 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1]
    if not _NAME.fullmatch(name):
        raise _error("an invalid name", name, line_no)
    if not sep:
        return name, None
    try:
        return name, _parse_value(rest.strip(_PHP_TRIM), line_no)
    except DotenvError as exc:
        raise DotenvError(exc.message, exc.line, name=name) from None


def _parse_value(value: str, line_no: int) -> _Value:
    chars: list[str] = []
    length = 0
    references: list[int] = []
    state = INITIAL
    for piece in _TOKEN.findall(value):
        out, reference, state = _step(state, piece, value, line_no)
        if reference:
            references.append(length)
        chars.append(out)
        length += len(out)
    if state in (SINGLE, DOUBLE, ESCAPE):
        raise _error("a missing closing quote", value, line_no)
    return _Value("".join(chars), tuple(references))


def _step(state: int, piece: str, value: str, line_no: int) -> tuple[str, bool, int]:
    """One transition of phpdotenv's EntryParser::processToken: (output, is a `$`, next state)."""
    space = all(c in _CTYPE_SPACE for c in piece)
    if state == INITIAL:
        if piece == "'":
            return "", False, SINGLE
        if piece == '"':
            return "", False, DOUBLE
        if piece == "#":
            return "", False, COMMENT
        return piece, piece == "$", UNQUOTED
    if state == UNQUOTED:
        if piece == "#":
            return "", False, COMMENT
        if space:
            return "", False, WHITESPACE
        return piece, piece == "$", UNQUOTED
    if state == SINGLE:
        return ("", False, WHITESPACE) if piece == "'" else (piece, False, SINGLE)
    if state == DOUBLE:
        if piece == '"':
            return "", False, WHITESPACE
        if piece == "\\":
            return "", False, ESCAPE
        return piece, piece == "$", DOUBLE
    if state == ESCAPE:
        if piece in ('"', "\\", "$"):
            return piece, False, DOUBLE
        if piece[0] in _ESCAPES:
            return _ESCAPES[piece[0]] + piece[1:], False, DOUBLE
        raise _error("an unexpected escape sequence", value, line_no)
    if state == WHITESPACE:
        if piece == "#":
            return "", False, COMMENT
        if not space:
            raise _error("unexpected whitespace", value, line_no)
        return "", False, WHITESPACE
    return "", False, COMMENT


def _resolve(value: _Value, earlier: dict[str, str | None]) -> str:
    """phpdotenv's Resolver: each recorded `$`, last first, that starts ${NAME} with NAME set earlier."""
    s = value.chars
    for at in sorted(value.references, reverse=True):
        m = _REFERENCE.match(s, at)
        if m is not None and (found := earlier.get(m.group(1))) is not None:
            s = s[:at] + found + s[m.end():]
    return s


def laravel_env(values: dict[str, str | None]) -> dict[str, str]:
    """What Laravel's env() returns for each variable, as strings; unset ones are left out."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None or value.lower() in _UNSET:
            continue
        if value.lower() in _EMPTY:
            value = ""
        elif m := _QUOTED.fullmatch(value):
            value = m.group(2)
        out[name] = value
    return out


def decode_dotenv(data: bytes) -> str:
    """The file's bytes as phpdotenv's Str::utf8 sees them: UTF-8, each invalid sequence a `?`."""
    return data.decode("utf-8", errors="cachewarden.mbstring")


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a Laravel app at `path.parent` sees from its `.env`; {} when there is none.

    Raises DotenvError (with `path` set) when phpdotenv could not read the file, OSError when it
    exists but cannot be read. Bytes that are not UTF-8 become `?`, as mb_convert_encoding makes them.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return laravel_env(parse_dotenv(decode_dotenv(data)))
    except DotenvError as exc:
        raise DotenvError(exc.message, exc.line, path, exc.name) from None


def read_app_dotenv(path: Path) -> tuple[dict[str, str], str | None]:
    """(the values, None), or ({}, why the app's `.env` cannot be read) as people are shown it."""
    try:
        return read_dotenv(path), None
    except DotenvError as exc:
        return {}, f"{exc}; Laravel cannot boot with it"
    except OSError as exc:
        return {}, f"{path}: cannot read it: {exc.strerror}"
