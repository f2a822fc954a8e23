"""PHP's ini syntax as exporter.php.ini_scanner reads it; the expected values are PHP's own (the same
forms run through parse_ini_string in tests/integration/test_ini_scanner_oracle.py)."""

from __future__ import annotations

import pytest

from exporter.php.ini_scanner import Entry, Section, Value, scan_line


def value(text: str) -> Value:
    entry = scan_line("k = " + text)
    assert isinstance(entry, Entry)
    return entry.value


@pytest.mark.parametrize(("text", "read"), [
    ("Off", ""), ("yes", "1"), ("None", ""), ("60 ; a minute", "60"), ('"a;b"', "a;b"),
    ('"say \\"hi\\""', 'say "hi"'), ("'raw \\ \"'", 'raw \\ "'), ("My Shop", "My Shop"),
    ("/run/php/$pool.sock", "/run/php/$pool.sock"), ("/x/none/y", "/x/none/y"),
])
def test_literal_values(text: str, read: str) -> None:
    assert value(text).literal == read


def test_environment_references_stay_templates() -> None:
    v = value('"${PHP_OPCACHE_VALIDATE_TIMESTAMPS}"')
    assert v.literal is None
    assert v.variables == ("PHP_OPCACHE_VALIDATE_TIMESTAMPS",)
    assert v.expand({"PHP_OPCACHE_VALIDATE_TIMESTAMPS": "0"}) == "0"
    assert v.expand({}) == ""  # PHP expands an unset variable to nothing
    assert v.label() == "${PHP_OPCACHE_VALIDATE_TIMESTAMPS}"
    assert value("127.0.0.1:${PORT}").expand({"PORT": "9000"}) == "127.0.0.1:9000"


@pytest.mark.parametrize("text", ["E_ALL & ~E_DEPRECATED", "E_ALL", "${A:-5}", "Off 0", "${A}yes",
                                  '"a" b', "x$", "$${A}"])
def test_forms_not_read_are_declared_so(text: str) -> None:
    v = value(text)
    assert not v.understood
    assert v.literal is None
    assert v.expand({"A": "1"}) is None


def test_lines() -> None:
    assert scan_line("  ; comment") is None
    assert scan_line("[www]") == Section("www")
    assert scan_line("no equals sign") is None
    entry = scan_line("php_admin_value[opcache.enable] = 0")
    assert isinstance(entry, Entry)
    assert (entry.key, entry.offset, entry.value.literal) == ("php_admin_value", "opcache.enable", "0")


@pytest.mark.parametrize(("line", "offset"), [
    # The blank before `]` stays: FPM sets "opcache.jit ", which is no directive, so the line does
    # nothing and must not be reported as the pool's setting.
    ("php_value[ opcache.jit ] = off", "opcache.jit "),
    ("php_admin_value[\topcache.enable\t] = 0", "opcache.enable\t"),
    ("php_value [k] = 4", "k"),
    ('php_value["q" ] = 5', "q"),
    ("php_value[ 's ' ] = 6", "s "),
    ('php_value["a"b] = 9', "ab"),
    ("env[ FOO ] = 8", "FOO "),
])
def test_an_offset_is_read_as_the_scanner_reads_it(line: str, offset: str) -> None:
    entry = scan_line(line)
    assert isinstance(entry, Entry)
    assert entry.offset == offset
