<?php
// Compiles Blade views with Laravel's own compiler, from Debian's php-laravel-framework, so that the
// compiled files (names, contents, footers) are exactly what a Laravel 8 app writes.
//
// usage: php blade_compile.php COMPILED_DIR VIEW...
// Each VIEW is resolved to its realpath first, as Laravel's default config/view.php resolves the views
// path. Prints one line per view: the compiled file's path.
declare(strict_types=1);

require '/usr/share/php/Illuminate/View/autoload.php';
require '/usr/share/php/Illuminate/Filesystem/autoload.php';

use Illuminate\Filesystem\Filesystem;
use Illuminate\View\Compilers\BladeCompiler;

if ($argc < 2) {
    fwrite(STDERR, "usage: php blade_compile.php COMPILED_DIR VIEW...\n");
    exit(2);
}
$compiler = new BladeCompiler(new Filesystem(), $argv[1]);
foreach (array_slice($argv, 2) as $view) {
    $path = realpath($view);
    if ($path === false) {
        fwrite(STDERR, "no such view: {$view}\n");
        exit(1);
    }
    $compiler->compile($path);
    echo $compiler->getCompiledPath($path), "\n";
}
