"""exporter.fs.bootstrap_caches.cache_path against Laravel's own Application::normalizeCachePath (Debian's
8.83): for every APP_*_CACHE value (as the variable repository holds it) and every cache, the same path."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.fs.bootstrap_caches import CACHE_VARIABLES, CACHES, cache_path

pytestmark = pytest.mark.integration

BASE = "/srv/shop"
APPLICATION = Path("/usr/share/php/Illuminate/Foundation/Application.php")
# For each value (null: unset), the five paths Laravel resolves, the value held by the repository
# Env::get reads, exactly as Dotenv would have stored it.
RESOLVE = r"""
require '/usr/share/php/Illuminate/autoload.php';
use Dotenv\Repository\Adapter\ArrayAdapter;
use Dotenv\Repository\RepositoryBuilder;
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $value) {
    $repository = RepositoryBuilder::createWithNoAdapters()->addAdapter(ArrayAdapter::class)->make();
    if ($value !== null) {
        foreach (['APP_CONFIG_CACHE', 'APP_ROUTES_CACHE', 'APP_EVENTS_CACHE', 'APP_SERVICES_CACHE',
                  'APP_PACKAGES_CACHE'] as $name) {
            $repository->set($name, $value);
        }
    }
    Closure::bind(static function () use ($repository): void {
        static::$repository = $repository;
    }, null, Illuminate\Support\Env::class)();
    $app = new Illuminate\Foundation\Application('/srv/shop');
    $out[] = [
        'config' => $app->getCachedConfigPath(), 'routes' => $app->getCachedRoutesPath(),
        'events' => $app->getCachedEventsPath(), 'services' => $app->getCachedServicesPath(),
        'packages' => $app->getCachedPackagesPath(),
    ];
}
echo json_encode($out);
"""


def laravel_resolves(values: list[str | None]) -> list[dict[str, str]]:
    php = shutil.which("php")
    if php is None or not APPLICATION.is_file():
        pytest.skip("php8.2-cli and php-laravel-framework are needed")
    out = subprocess.run([php, "-r", RESOLVE], input=json.dumps(values), capture_output=True, text=True,
                         check=True)
    result: list[dict[str, str]] = json.loads(out.stdout)
    return result


def ours(value: str | None) -> dict[str, Path]:
    env = {} if value is None else {variable: value for variable, _ in CACHE_VARIABLES.values()}
    return {cache: cache_path(Path(BASE), env, cache) for cache in CACHES}


def check(values: list[str | None]) -> None:
    for value, theirs in zip(values, laravel_resolves(values), strict=True):
        assert ours(value) == {c: Path(p) for c, p in theirs.items()}, repr(value)


# Forms seen in real .env files and deploy scripts, and Env::get's special words.
CORPUS: list[str | None] = [
    None, "", "0", "1", "/tmp/config.php", "/var/cache/shop/routes.php", "storage/cache/config.php",
    "bootstrap/cache/config.php", "./cache.php", "../outside.php", "\\windows\\config.php",
    "null", "NULL", "(null)", "Null", "true", "TRUE", "(true)", "false", "(false)", "empty", "(empty)",
    "'quoted.php'", '"double.php"', "'/abs/quoted.php'", "\"mixed.php'", "'a\nb'", "'", "''", '""',
    "with space.php", "0.php", "00", "-", "~/.cache/config.php",
]


def test_corpus_resolves_as_laravel_resolves_it() -> None:
    check(CORPUS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="ab/\\.0'\"() nulemptyrsf\n", max_size=12), min_size=1, max_size=30))
def test_generated_values_resolve_as_laravel_resolves_them(values: list[str]) -> None:
    check(list(values))
