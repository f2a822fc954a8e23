<?php
// Renders a view with Laravel's own view factory, Blade compiler and an inline class component (one
// whose render() returns a template string), from Debian's php-laravel-framework. Rendering it makes
// Laravel write the component's raw template as COMPILED_DIR/<sha1>.blade.php
// (Component::createBladeViewFromString) and compile that template next to the other compiled views.
//
// usage: php blade_render.php VIEWS_DIR COMPILED_DIR VIEW_NAME
// The view may use <x-alert type="...">text</x-alert>. Prints the rendered HTML.
declare(strict_types=1);

require '/usr/share/php/Illuminate/View/autoload.php';
require '/usr/share/php/Illuminate/Filesystem/autoload.php';
require '/usr/share/php/Illuminate/Config/autoload.php';
require '/usr/share/php/Illuminate/Events/autoload.php';

use Illuminate\Config\Repository;
use Illuminate\Container\Container;
use Illuminate\Events\Dispatcher;
use Illuminate\Filesystem\Filesystem;
use Illuminate\View\Compilers\BladeCompiler;
use Illuminate\View\Engines\CompilerEngine;
use Illuminate\View\Engines\EngineResolver;
use Illuminate\View\Factory;
use Illuminate\View\FileViewFinder;

if ($argc !== 4) {
    fwrite(STDERR, "usage: php blade_render.php VIEWS_DIR COMPILED_DIR VIEW_NAME\n");
    exit(2);
}
[, $viewsDir, $compiledDir, $view] = $argv;

// Blade compiles a tag as a class component only when the class name has a namespace.
eval('namespace App\View\Components;
class Alert extends \Illuminate\View\Component {
    public function __construct(public string $type = "info") {}
    public function render() { return \'<div class="alert alert-{{ $type }}">{{ $slot }}</div>\'; }
}');

$container = new Container();
Container::setInstance($container);
$files = new Filesystem();
$compiler = new BladeCompiler($files, $compiledDir);
$compiler->component('App\View\Components\Alert', 'alert');
$engines = new EngineResolver();
$engines->register('blade', fn () => new CompilerEngine($compiler, $files));
$factory = new Factory($engines, new FileViewFinder($files, [realpath($viewsDir)]), new Dispatcher($container));
$factory->setContainer($container);
$container->instance('config', new Repository(['view' => ['compiled' => $compiledDir]]));
$container->instance('view', $factory);
$container->instance(\Illuminate\Contracts\View\Factory::class, $factory);
echo $factory->make($view)->render(), "\n";
