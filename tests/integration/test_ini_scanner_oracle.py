"""exporter.php.ini_scanner against PHP's own ini scanner (parse_ini_string, INI_SCANNER_NORMAL, the mode
php.ini and PHP-FPM's configuration are read in): every value our reader claims to understand must be
the value PHP reads, and the forms real configurations use must be understood."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.php.ini_scanner import Entry, Value, scan_line

pytestmark = pytest.mark.integration

# The environment both PHP and our expansion see. UNSET is never set.
ENV = {"SET": "17", "EMPTY": "", "WORDS": "a b", "QUOTE": 'x"y'}

# parse_ini_string of "k = VALUE" for each VALUE; false (a syntax error) becomes null.
READ = r"""
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $v) {
    // A line of a file: FPM too appends the newline to each line it hands the scanner.
    $r = @parse_ini_string("k = " . $v . "\n", false, INI_SCANNER_NORMAL);
    $out[] = is_array($r) && array_key_exists('k', $r) ? (string) $r['k'] : null;
}
echo json_encode($out);
"""


def php_reads(values: list[str]) -> list[str | None]:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php (the CLI) is not installed")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ENV}
    out = subprocess.run([php, "-n", "-r", READ], input=json.dumps(values), capture_output=True,
                         text=True, env=env, check=True)
    result: list[str | None] = json.loads(out.stdout)
    return result


def read(value: str) -> Value:
    entry = scan_line("k = " + value)
    assert isinstance(entry, Entry)
    return entry.value


# Forms real php.ini, conf.d and FPM pool files use; each must be understood, and read as PHP reads it.
CORPUS = [
    "0", "1", "Off", "On", "off", "yes", "no", "true", "FALSE", "None", "null", "", "128", "-1",
    "256M", "60 ; every minute", "0;comment", "  spaced  ", "/var/www/app/current",
    "/run/php/php8.2-fpm.sock", "127.0.0.1:9000", "9000", ".php .phar", "%R - %u %t", "x$y", "$pool",
    '"256M"', '"a;b"', '"with \\"escaped\\" quotes"', '"back\\\\slash"', '"\\$ dollar"', '"\\n stays"',
    "'single ; quoted'", "'raw \\ \" value'",
    "${SET}", "${UNSET}", "${EMPTY}", "${WORDS}", "${QUOTE}", '"${SET}"', "pre${SET}post",
    "${SET}${SET}", "a ${SET} b", '"x ${SET} y"', "${SET} ; comment",
]


def test_every_corpus_form_is_understood_and_read_as_php_reads_it() -> None:
    expected = php_reads(CORPUS)
    for value, php in zip(CORPUS, expected, strict=True):
        assert php is not None, f"corpus form PHP rejects: {value!r}"
        assert read(value).expand(ENV) == php, f"{value!r}: PHP reads {php!r}"


ALPHABET = st.sampled_from([*"ab01 \t;\"'\\$x{}=|&~!()[]-_./:", "${SET}", "${UNSET}", "${EMPTY}", "${WORDS}",
                            "yes", "Off", "null", "on", "no", "None", "TRUE"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ALPHABET, max_size=8).map("".join), min_size=1, max_size=40))
def test_generated_values_are_read_as_php_reads_them_or_declared_not_understood(values: list[str]) -> None:
    for value, php in zip(values, php_reads(values), strict=True):
        ours = read(value)
        if not ours.understood:
            continue  # not guessed: the caller reports such a value as unknown
        assert php is not None, f"{value!r}: PHP rejects it, but it was read as {ours.expand(ENV)!r}"
        assert ours.expand(ENV) == php, f"{value!r}: PHP reads {php!r}, ours {ours.expand(ENV)!r}"
