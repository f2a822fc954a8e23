"""Capistrano-style release folders for deploy tests and the deploy benchmark.

    ROOT/releases/N/{public/index.php, app/*.php, app/Lib/*.php, config/app.php, resources/views/*,
                     REVISION, .env}
    ROOT/shared/views       the compiled views every release uses (compiled_path)
    ROOT/current -> releases/N

`public/index.php` is a page as Laravel serves one: it loads the release's classes and config and
renders a Blade view through Laravel's own view factory, which compiles the view on a request when
`Compiler::isExpired()` says so and includes the compiled file. It answers 500 with the error when
anything fails, and otherwise exactly `expected(N)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INDEX = """<?php
require '/usr/share/php/Illuminate/View/autoload.php';
require '/usr/share/php/Illuminate/Filesystem/autoload.php';
require '/usr/share/php/Illuminate/Events/autoload.php';
set_error_handler(function (int $level, string $message, string $file, int $line): bool {
    throw new ErrorException($message, 0, $level, $file, $line);
});
try {
    require __DIR__ . '/../app/Greeter.php';
    $config = require __DIR__ . '/../config/app.php';
    $files = new Illuminate\\Filesystem\\Filesystem();
    $compiler = new Illuminate\\View\\Compilers\\BladeCompiler($files, %(compiled)r);
    $resolver = new Illuminate\\View\\Engines\\EngineResolver();
    $resolver->register('blade', fn () => new Illuminate\\View\\Engines\\CompilerEngine($compiler, $files));
    // Laravel's config/view.php passes realpath(resource_path('views')).
    $finder = new Illuminate\\View\\FileViewFinder($files, [realpath(__DIR__ . '/../resources/views')]);
    $factory = new Illuminate\\View\\Factory($resolver, $finder, new Illuminate\\Events\\Dispatcher());
    $data = ['greeting' => Greeter::hi(), 'name' => $config['name']];
    echo $factory->make($_GET['view'] ?? 'home', $data)->render();
} catch (Throwable $e) {
    http_response_code(500);
    echo 'RENDER-ERROR ' . get_class($e) . ': ' . $e->getMessage();
}
"""


def expected(n: int) -> str:
    return f"<p>hello from release {n} of shop-{n}</p><footer>v{n}</footer>"


@dataclass
class Releases:
    root: Path

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def compiled(self) -> Path:
        return self.root / "shared" / "views"

    def release(self, n: int) -> Path:
        return self.root / "releases" / str(n)

    def build(self, n: int, *, views: int = 0, scripts: int = 0, changed: int = 0, age: float = 0) -> Path:
        """Release n: the page, its class, config and views; plus `views` extra views and `scripts`
        extra classes, of which the first `changed` differ from release n-1's. With `age`, its files are
        that many seconds old, as a release served for a while is: OPcache compiles a file younger than
        file_update_protection on every request without caching it, and Laravel recompiles a view
        whose source is as new as its compiled file (whole seconds) with a plain file_put_contents
        that concurrent requests can include half-written."""
        d = self.release(n)
        for sub in ("public", "app/Lib", "config", "resources/views/partials", "storage"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "public" / "index.php").write_text(INDEX % {"compiled": str(self.compiled)})
        (d / "app" / "Greeter.php").write_text(
            "<?php class Greeter { public static function hi(): string { return "
            f"'hello from release {n}'; }} }}\n")
        (d / "config" / "app.php").write_text(f"<?php return ['name' => 'shop-{n}'];\n")
        (d / "resources" / "views" / "home.blade.php").write_text(
            "<p>{{ $greeting }} of {{ $name }}</p>@include('partials.footer')")
        (d / "resources" / "views" / "partials" / "footer.blade.php").write_text(f"<footer>v{n}</footer>")
        for i in range(views):
            (d / "resources" / "views" / "pages").mkdir(exist_ok=True)
            (d / "resources" / "views" / "pages" / f"p{i}.blade.php").write_text(
                f"<div>@if($n ?? false) {{{{ $n }}}} @endif page {i}</div>")
        for i in range(scripts):
            version = n if i < changed else 0
            (d / "app" / "Lib" / f"M{i}.php").write_text(
                f"<?php class M{i} {{ const V = {version}; }}\n")
        (d / "REVISION").write_text(f"r{n}\n")
        (d / ".env").write_text(f"APP_NAME=shop-{n}\nAPP_ENV=production\n")
        if age:
            then = time.time() - age
            for path in d.rglob("*"):
                if path.is_file():
                    os.utime(path, (then, then))
        return d

    def switch(self, n: int) -> None:
        """Point `current` at release n the way deploy tools do: a new symlink renamed over the old."""
        tmp = self.root / "current.new"
        tmp.symlink_to(f"releases/{n}")
        os.rename(tmp, self.current)

    def switch_command(self, n: int) -> str:
        new = self.root / "current.new"
        return f"sh -c 'ln -sfn releases/{n} {new} && mv -T {new} {self.current}'"


def make_releases(prefix: str = "cachewarden-deploy-") -> Iterator[Releases]:
    """A release tree every user can read (preloading runs as `nobody`), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    (root / "shared" / "views").mkdir(parents=True)
    try:
        yield Releases(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
