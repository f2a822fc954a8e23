"""No credential in any URL of the configuration: every way a URL carries one, on every URL-typed key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter.config import Config, ConfigError, parse
from exporter.url_secrets import url_credential
from tests.support.config_fields import validator_names, walk_fields

SECRET = "hunter2-Zq"


@pytest.mark.parametrize(("url", "found"), [
    (f"redis://:{SECRET}@127.0.0.1:6379/0", "a password in the user part (user:password@)"),
    (f"rediss://default:{SECRET}@cache:6380", "a password in the user part (user:password@)"),
    (f"mysql+asyncmy://app:{SECRET}@db/shop", "a password in the user part (user:password@)"),
    (f"mysql+asyncmy://app:p%40ss{SECRET}@db/shop", "a password in the user part (user:password@)"),
    (f"redis://127.0.0.1:6379/0?password={SECRET}", "the query parameter 'password'"),
    (f"redis://127.0.0.1:6379/0?db=1&PassWord={SECRET}", "the query parameter 'PassWord'"),
    (f"unix:///run/redis.sock?db=0&password={SECRET}", "the query parameter 'password'"),
    (f"postgresql+asyncpg://app@db/app?passwd={SECRET}", "the query parameter 'passwd'"),
    (f"postgresql+asyncpg://app@db/app?sslpassword={SECRET}", "the query parameter 'sslpassword'"),
    (f"mysql+asyncmy://app@db/shop?pass={SECRET}", "the query parameter 'pass'"),
    (f"mysql+asyncmy://app@db/shop?PWD={SECRET}", "the query parameter 'PWD'"),
    (f"http://stats/x?auth={SECRET}", "the query parameter 'auth'"),
    (f"http://stats/x?Secret={SECRET}", "the query parameter 'Secret'"),
    (f"http://stats/x?token={SECRET}", "the query parameter 'token'"),
    (f"http://stats/x?api-key={SECRET}", "the query parameter 'api-key'"),
    (f"http://stats/x?x_auth_token={SECRET}", "the query parameter 'x_auth_token'"),
    (f"http://stats/x?db_password={SECRET}", "the query parameter 'db_password'"),
    (f"http://stats/x?pass%77ord={SECRET}", "the query parameter 'password'"),  # percent-encoded name
    (f"http://stats/x#access_token={SECRET}", "the query parameter 'access_token'"),
])
def test_every_way_a_url_carries_a_credential_is_found(url: str, found: str) -> None:
    assert url_credential(url) == found


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://app@127.0.0.1:6379/0", "redis://app:@127.0.0.1/0",
    "unix:///run/redis.sock?db=2", "mysql+asyncmy://exporter@db:3306/shop?unix_socket=/run/mysqld.sock",
    "mysql+asyncmy://exporter@db/shop?auth_plugin=mysql_native_password",
    "postgresql+asyncpg://app@db/app?sslmode=require&passfile=/etc/pgpass&sslkey=/etc/key.pem",
    "http://127.0.0.1:8000/cache-stats?format=json", "https://example.org/runbooks",
])
def test_a_url_without_a_credential_passes(url: str) -> None:
    assert url_credential(url) is None


def test_a_user_part_alone_is_a_credential_where_http_sends_it() -> None:
    assert url_credential(f"https://{SECRET}@stats/x", user_is_secret=True) == (
        "a user part (user@), which HTTP clients send as credentials")
    assert url_credential("redis://app@cache/0", user_is_secret=False) is None


# How to put a URL at each URL-typed key in a configuration that is otherwise valid.
URL_KEYS: dict[str, Callable[[str], dict[str, Any]]] = {
    "redis[].url": lambda u: {"redis": [{"name": "t", "url": u}]},
    "databases[].url": lambda u: {"databases": [{"name": "t", "url": u}]},
    "app_stats[].url": lambda u: {"app_stats": [{"name": "t", "url": u}]},
    "heal.redis_url": lambda u: {"heal": {"redis_url": u}},
    "heal.warm[].urls[].url": lambda u: {"heal": {"warm": [{"target": "t", "urls": [{"url": u}]}]}},
    "alerts.runbook_base_url": lambda u: {"alerts": {"runbook_base_url": u}},
}
GOOD = {"redis[].url": "redis://h:6379/0", "databases[].url": "mysql+asyncmy://u@h:3306/d",
        "heal.redis_url": "redis://h:6379/0"}


def test_every_url_typed_key_of_the_model_is_checked() -> None:
    """A URL key added to the model later must carry the check and get a row in URL_KEYS."""
    url_fields = {path: field for path, field in walk_fields(Config) if path.endswith("url")}
    assert set(url_fields) == set(URL_KEYS)
    for path, field in url_fields.items():
        assert "_credential_free.<locals>.check" in validator_names(field), path


@pytest.mark.parametrize("key", sorted(URL_KEYS))
@pytest.mark.parametrize("credential", [f"u:{SECRET}@", f"?password={SECRET}", f"?TOKEN={SECRET}"])
def test_each_url_key_refuses_a_credential_without_echoing_it(key: str, credential: str) -> None:
    good = GOOD.get(key, "http://h:80/x")
    scheme, _, rest = good.partition("://")
    url = f"{scheme}://{credential}{rest}" if credential.endswith("@") else good + credential
    with pytest.raises(ConfigError) as info:
        parse(URL_KEYS[key](url))
    assert any(p.startswith(key.replace("[]", "[0]") + ": the URL contains ") for p in info.value.problems), \
        info.value.problems
    assert SECRET not in str(info.value)
    parse(URL_KEYS[key](good))  # the same key without the credential is accepted
