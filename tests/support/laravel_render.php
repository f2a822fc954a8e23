<?php
// Renders Blade views the way a Laravel app does on every request: Illuminate\View\Factory with a
// CompilerEngine, which recompiles a view when Compiler::isExpired() says so and includes the
// compiled file. Query: views=DIR, compiled=DIR, view=NAME[,NAME…] (rendered in that order, outputs
// concatenated), trust=1 to take every compiled file as fresh. Answers 500 with the error on failure.
require '/usr/share/php/Illuminate/View/autoload.php';
require '/usr/share/php/Illuminate/Filesystem/autoload.php';
require '/usr/share/php/Illuminate/Events/autoload.php';

use Illuminate\Events\Dispatcher;
use Illuminate\Filesystem\Filesystem;
use Illuminate\View\Compilers\BladeCompiler;
use Illuminate\View\Engines\CompilerEngine;
use Illuminate\View\Engines\EngineResolver;
use Illuminate\View\Factory;
use Illuminate\View\FileViewFinder;

set_error_handler(function (int $level, string $message, string $file, int $line): bool {
    throw new ErrorException($message, 0, $level, $file, $line);
});
// A request that found a compiled view fresh just before it was rewritten: it goes straight to the
// include, which is what races with a writer of that file.
final class TrustingBladeCompiler extends BladeCompiler
{
    public function isExpired($path)
    {
        return false;
    }
}

try {
    $files = new Filesystem();
    $class = ($_GET['trust'] ?? '') === '1' ? TrustingBladeCompiler::class : BladeCompiler::class;
    $compiler = new $class($files, (string) $_GET['compiled']);
    $resolver = new EngineResolver();
    $resolver->register('blade', fn () => new CompilerEngine($compiler, $files));
    // Laravel's config/view.php passes realpath(resource_path('views')).
    $finder = new FileViewFinder($files, [realpath((string) $_GET['views'])]);
    $factory = new Factory($resolver, $finder, new Dispatcher());
    $out = '';
    foreach (explode(',', (string) $_GET['view']) as $view) {
        $out .= $factory->make($view, ['n' => 3])->render();
    }
    echo $out;
} catch (Throwable $e) {
    http_response_code(500);
    echo 'RENDER-ERROR ' . get_class($e) . ': ' . $e->getMessage();
}
