"""DB_URL/DATABASE_URL/REDIS_URL read as Laravel reads them: its own ConfigurationUrlParser (Debian's
php-laravel-framework, run by php) and cachewarden's port give the same options on a corpus of forms."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from exporter.laravel_url import UrlError, parse

SCRIPT = Path(__file__).parents[1] / "support" / "url_parser.php"
AUTOLOAD = Path("/usr/share/php/Illuminate/Support/autoload.php")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("php") is None or not AUTOLOAD.is_file(),
                       reason="php CLI and php-laravel-framework are needed"),
]

CORPUS = [
    "redis://:monpass@127.0.0.1:6391",  # an empty user: set, and it overrides REDIS_USERNAME
    "redis://mon:monpass@127.0.0.1:6391/3",
    "rediss://cache.internal:6380",
    "tcp://127.0.0.1:6379?database=2",
    "tls://127.0.0.1:6379?database=2&password=x",
    "redis://h?database=2&password=null",  # a null password from the query unsets it
    "redis://u:123@h/0",  # a numeric password is an int
    "redis://user:true@h/1.5",
    "redis://u:null@h",  # a null password in the authority is dropped
    "redis://[::1]:6379/2",  # the brackets stay in the host
    "redis://[::1]/2",
    "redis://[2001:db8::1]:7000",
    "MySQL://User:P%40ss@DB.Example.COM:3307/Shop?charset=utf8&database=9",  # case kept everywhere
    "mysql://root@localhost/test",
    "mysql2://rds:pw@db:3306/app",
    "postgres://u:p%2Fw@pg:5432/app?sslmode=require",
    "postgresql://u@%2Frun%2Fpostgresql/app",
    "pgsql://u@h/app?sslmode=disable&search_path=public",
    "mariadb://u:p@h:3307/db",
    "redis://a@b@c:1",  # the last @ ends the user part
    "redis://h:0",
    "redis://h/%2Fx",
    "redis://h?a.b=1&c+d=2",
    "redis://h/0#fragment",
    "redis://h:",
    "redis://us%3Aer:p%3Aw@h",
    "redis://:@h",
    "redis://h?database=",
    "redis://h/",
    "redis://h/00",
    "redis://h:06379",
    "redis://h:99999",  # refused by PHP
    "redis://h:12ab",
    "redis://h:-1",
    "redis://ü:ä@bücher.example/ß",
    "redis://h?q=%ZZ",
    "redis://h/%ZZ",
]

# Forms Laravel reads by accident of parse_url that cachewarden refuses, so they surface as a problem
# naming the URL instead of a guess: PHP reads the port `12ab` as 12.
REFUSED = {"redis://h:12ab"}


def laravel(urls: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(["php", "-d", "display_errors=stderr", str(SCRIPT)], input=json.dumps(urls),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers


def ours(url: str) -> dict[str, Any]:
    try:
        return {"options": parse(url)}
    except UrlError as exc:
        return {"error": str(exc)}


def test_every_url_in_the_corpus_gives_laravels_options_or_is_refused_where_laravel_refuses_it() -> None:
    wrong = []
    for url, theirs in zip(CORPUS, laravel(CORPUS), strict=True):
        mine = ours(url)
        if "error" in mine and ("error" in theirs or url in REFUSED):
            continue
        if mine != theirs:
            wrong.append(f"{url!r}:\n  Laravel:     {theirs}\n  cachewarden: {mine}")
    assert wrong == []


def test_the_refused_forms_are_refused() -> None:
    assert all("error" in ours(url) for url in REFUSED)


def test_an_empty_user_is_set_as_laravel_sets_it() -> None:
    assert parse("redis://:monpass@127.0.0.1:6391")["username"] == ""
    assert "username" not in parse("redis://127.0.0.1:6391")
