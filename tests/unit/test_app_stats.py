"""Parsing an application's cache statistics body."""

from __future__ import annotations

import pytest

from exporter.collectors.app_stats import BadStatsError, parse_stats
from exporter.config import ConfigError, parse


def test_known_numeric_fields_are_kept_and_unknown_ones_ignored() -> None:
    assert parse_stats(b'{"hits": 3, "misses": 1.0, "driver": "redis", "extra": [1]}') == {
        "hits": 3.0, "misses": 1.0,
    }


@pytest.mark.parametrize("body", [b"not json", b'"text"', b"null", b"[]", b'{"hits": true}',
                                  b'{"misses": -1}', b'{"entries": "7"}', b"\xff\xfe"])
def test_anything_but_an_object_of_non_negative_numbers_is_refused(body: bytes) -> None:
    with pytest.raises(BadStatsError):
        parse_stats(body)


def test_a_statistics_url_with_a_password_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"app_stats": [{"name": "shop", "url": "http://stats:s3cret-pw@127.0.0.1:8000/cache-stats"}]})
    [message] = raised.value.problems
    assert message.startswith("app_stats[0].url: the URL contains a password")
    assert "s3cret-pw" not in message
