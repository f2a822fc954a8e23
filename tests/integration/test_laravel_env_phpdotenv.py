"""The `.env` reader against Laravel's own: Debian's phpdotenv reads the same files, and every value and
every error must be the same (a corpus of real forms kept in tests/data, plus generated files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.phpdotenv import mismatches, phpdotenv, requires_phpdotenv

pytestmark = [pytest.mark.integration, requires_phpdotenv]

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "dotenv_corpus.json").read_text(encoding="utf-8"))
# A case is text (`env`, written as UTF-8) or raw bytes (`env_hex`: a file that is not valid UTF-8).
FILES = [bytes.fromhex(case["env_hex"]) if "env_hex" in case else case["env"] for case in CORPUS]


def test_every_form_in_the_corpus_reads_as_phpdotenv_reads_it() -> None:
    assert mismatches(FILES) == []


def test_the_corpus_exercises_both_values_and_errors() -> None:
    answers = phpdotenv(FILES)
    assert sum("error" in a for a in answers) >= 8
    assert sum("values" in a for a in answers) >= 30


# Pieces a value is made of: every token class of phpdotenv's lexer, escapes valid and not, references
# to names set earlier or never, the `="` that opens a multi-line value, and newlines inside quotes.
_VALUE_PIECES = st.sampled_from([
    '"', "'", "\\", "#", "$", "${A}", "${B_1}", "${NOPE}", "${", "}", " ", "  ", "\t", "\f", "x", "shop",
    "é", "日本", "\\n", "\\t", "\\v", "\\$", "\\\\", '\\"', "\\q", "null", "(empty)", '="', "=", "\n", "\r\n",
    "/run/redis.sock", "p@ss:w/rd",
]) | st.text(max_size=3)
_NAMES = st.sampled_from(["A", "B_1", "DB_HOST", "a.b", "1", "É", "a-b", "", "export", "NOPE"])


@st.composite
def _line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["entry", "entry", "entry", "comment", "blank", "bare"]))
    if kind == "comment":
        indent = draw(st.sampled_from(["", "  ", "\t"]))
        return indent + "#" + "".join(draw(st.lists(_VALUE_PIECES, max_size=4)))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t", " \t "]))
    name = draw(_NAMES)
    name = draw(st.sampled_from(["{}", '"{}"', "'{}'", "export {}", "export\t{}", " {} "])).format(name)
    if kind == "bare":
        return name
    sep = draw(st.sampled_from(["=", " = ", "=", "= ", " ="]))
    return name + sep + "".join(draw(st.lists(_VALUE_PIECES, max_size=8)))


_FILES = st.builds(
    lambda lines, eol, last: eol.join(lines) + last,
    st.lists(_line(), min_size=1, max_size=8),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from(["", "\n"]),
)


# One php run per example reads a batch of 60 generated files, so 600 files cost ten php start-ups.
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_FILES, min_size=60, max_size=60))
def test_generated_files_read_as_phpdotenv_reads_them(texts: list[str]) -> None:
    assert mismatches(texts) == []
