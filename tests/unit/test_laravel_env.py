"""The `.env` reader: the values Laravel sees (phpdotenv, then env()), and errors with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.laravel_env import DotenvError, laravel_env, parse_dotenv, read_dotenv


@pytest.mark.parametrize(("text", "name", "value"), [
    ("DB_DATABASE=shop#1\n", "DB_DATABASE", "shop"),
    ('REDIS_PASSWORD="pa\\$\\$word"\n', "REDIS_PASSWORD", "pa$$word"),
    ("APP_NAME='My Shop'\n", "APP_NAME", "My Shop"),
    ('KEY="a\nb"\n', "KEY", "a\nb"),
])
def test_values_are_phpdotenvs(text: str, name: str, value: str) -> None:
    assert parse_dotenv(text)[name] == value


def test_an_unquoted_space_is_an_error_naming_its_line_as_laravel_refuses_to_boot(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_ENV=production\n# the name\nAPP_NAME=My Shop\nDB_HOST=db\n", encoding="utf-8")
    with pytest.raises(DotenvError) as info:
        read_dotenv(dotenv)
    assert (info.value.path, info.value.line) == (dotenv, 3)
    assert info.value.message == (
        "Failed to parse dotenv file. Encountered unexpected whitespace at [My Shop].")
    assert str(info.value).startswith(f"{dotenv}, line 3: ")


def test_an_error_in_a_multi_line_value_names_the_line_it_starts_on() -> None:
    with pytest.raises(DotenvError) as info:
        parse_dotenv('A=1\nKEY="first\nsecond \\q\nthird"\n')
    assert info.value.line == 2
    assert "an unexpected escape sequence" in info.value.message


def test_laravels_env_reads_null_as_unset_empty_as_empty_and_strips_a_pair_of_quotes() -> None:
    values = parse_dotenv("A=null\nB=(NULL)\nC=empty\nD=(Empty)\nE='\"quoted\"'\nF=nullable\nG\n")
    assert laravel_env(values) == {"C": "", "D": "", "E": "quoted", "F": "nullable"}


def test_a_missing_file_is_empty_and_bytes_that_are_not_utf8_become_question_marks(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / ".env") == {}
    (tmp_path / ".env").write_bytes(b"A=caf\xe9\n")
    assert read_dotenv(tmp_path / ".env") == {"A": "caf?"}


def test_a_replacement_character_written_in_the_file_is_kept_as_phpdotenv_keeps_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("A=\ufffd\nB=x\ufffd\xe9\n".encode() + b"C=\xff\xef\xbf\xbd\n")
    assert read_dotenv(tmp_path / ".env") == {"A": "\ufffd", "B": "x\ufffd\xe9", "C": "?\ufffd"}


def test_an_error_in_a_secret_names_the_variable_but_never_shows_its_value(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('APP_NAME=Shop\nDB_PASSWORD=open sesame 42\n', encoding="utf-8")
    with pytest.raises(DotenvError) as info:
        read_dotenv(dotenv)
    assert "open sesame 42" in info.value.message  # phpdotenv's own text, for the differential test
    assert str(info.value) == (f"{dotenv}, line 2: Failed to parse dotenv file. Encountered unexpected "
                               "whitespace at [the value of DB_PASSWORD, not shown].")


def test_the_bootstrap_cache_reader_decodes_the_file_as_phpdotenv_too(tmp_path: Path) -> None:
    from exporter.fs.bootstrap_caches import dotenv_values

    (tmp_path / ".env").write_bytes("A=\ufffd\n".encode() + b"B=caf\xe9\n")
    assert dotenv_values(tmp_path / ".env") == {"A": "\ufffd", "B": "caf?"}
