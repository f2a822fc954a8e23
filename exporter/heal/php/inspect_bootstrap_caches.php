<?php
// Looks at a Laravel app's bootstrap caches without booting the app and without changing anything:
// - parse: whether each cache file parses (token_get_all with TOKEN_PARSE compiles nothing and runs
//   nothing); a half-written file does not;
// - config: which `.env` keys differ between the cached config and a fresh load of config/*.php with
//   the `.env` on disk. NAMES only, never a value: they hold secrets. How: the cached file (read from
//   disk with file_get_contents, so OPcache's copy does not stand in for it) is compared with the
//   config files loaded the way LoadConfiguration loads them, under the variables LoadEnvironmentVariables
//   would load; each differing config key is blamed on the `.env` keys whose value reaches it, found
//   by loading the config files once more with every `.env` variable set to a marker of its own name;
// - served: inside PHP-FPM, whether OPcache serves another version of each cache file than the disk's.
// The variables are read into a private repository: neither this process's environment nor $_ENV or
// $_SERVER are written to.
cachewarden_run(function (array $args): array {
    foreach ($args['autoload'] ?? [] as $file) {
        require_once (string) $file;
    }
    $root = (string) ($args['root'] ?? '');
    if ($root === '' || !is_dir($root)) {
        throw new RuntimeException('root is not a directory');
    }
    $paths = is_array($args['paths'] ?? null) ? $args['paths'] : [];
    $out = ['parse' => [], 'config' => null, 'served' => null];
    foreach ($paths as $cache => $path) {
        $out['parse'][$cache] = cachewarden_parse_error((string) $path);
    }
    if (($args['config'] ?? false) && is_string($paths['config'] ?? null) && is_file($paths['config'])
            && $out['parse']['config'] === null) {
        $out['config'] = cachewarden_config_diff($root, $paths['config']);
    }
    if (($args['served'] ?? false) && PHP_SAPI !== 'cli') {
        $out['served'] = cachewarden_served(array_filter($paths, 'is_string'), $out['parse']);
    }
    return $out;
});

// null when the file is absent or parses, else the reason (no code is run).
function cachewarden_parse_error(string $path): ?string
{
    if (!is_file($path)) {
        return null;
    }
    $code = @file_get_contents($path);
    if ($code === false) {
        return 'unreadable';
    }
    if (trim($code) === '') {
        return 'empty';
    }
    try {
        token_get_all($code, TOKEN_PARSE);
    } catch (ParseError $e) {
        return sprintf('does not parse (line %d)', $e->getLine());
    }
    return null;
}

// A private variable repository: real environment first (Laravel's Dotenv is immutable: a variable set
// by FPM's env[] or the shell wins over the file), then what the .env file adds.
function cachewarden_repository(bool $withEnvironment): \Dotenv\Repository\RepositoryInterface
{
    $builder = \Dotenv\Repository\RepositoryBuilder::createWithNoAdapters();
    if ($withEnvironment) {
        $builder = $builder->addReader(\Dotenv\Repository\Adapter\ServerConstAdapter::class)
            ->addReader(\Dotenv\Repository\Adapter\EnvConstAdapter::class);
    }
    return $builder->addAdapter(\Dotenv\Repository\Adapter\ArrayAdapter::class)->immutable()->make();
}

function cachewarden_use_repository(?\Dotenv\Repository\RepositoryInterface $repository): void
{
    \Closure::bind(static function () use ($repository): void {
        static::$repository = $repository;
    }, null, \Illuminate\Support\Env::class)();
}

// The config files LoadConfiguration reads: config/**/*.php, keyed by folder.name, in its order.
function cachewarden_config_files(string $configDir): array
{
    $files = [];
    $base = realpath($configDir);
    if ($base === false) {
        return [];
    }
    $iterator = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($base, FilesystemIterator::SKIP_DOTS));
    foreach ($iterator as $file) {
        if (!$file->isFile() || $file->getExtension() !== 'php') {
            continue;
        }
        $directory = trim(str_replace($base, '', $file->getPath()), DIRECTORY_SEPARATOR);
        $nesting = $directory === '' ? '' : str_replace(DIRECTORY_SEPARATOR, '.', $directory) . '.';
        $files[$nesting . basename($file->getRealPath(), '.php')] = $file->getRealPath();
    }
    ksort($files, SORT_NATURAL);
    return $files;
}

function cachewarden_load_config(array $files): array
{
    $config = [];
    foreach ($files as $key => $path) {
        try {
            $value = (static fn (string $p): mixed => require $p)($path);
        } catch (Throwable $e) {
            // Not the message: it may quote a value from the configuration.
            throw new RuntimeException(sprintf('config/%s.php fails to load (%s at %s:%d)',
                str_replace('.', '/', $key), get_class($e), basename($e->getFile()), $e->getLine()));
        }
        \Illuminate\Support\Arr::set($config, $key, $value);
    }
    if (function_exists('opcache_invalidate') && PHP_SAPI !== 'cli') {
        // Inside FPM: leave no bytecode of ours behind that a later look, with validate_timestamps=0,
        // would take for the file on disk.
        foreach ($files as $path) {
            @opcache_invalidate($path, true);
        }
    }
    return $config;
}

// path => leaf value; an empty array is a leaf.
function cachewarden_flatten(array $values, string $prefix = ''): array
{
    $out = [];
    foreach ($values as $key => $value) {
        if (is_array($value) && $value !== []) {
            $out += cachewarden_flatten($value, $prefix . $key . '.');
        } else {
            $out[$prefix . $key] = $value;
        }
    }
    return $out;
}

function cachewarden_config_diff(string $root, string $cachedPath): array
{
    $code = file_get_contents($cachedPath);
    try {
        $cached = eval('?>' . $code);
    } catch (Throwable $e) {
        return ['error' => sprintf('the cached config does not load (%s)', get_class($e))];
    }
    if (!is_array($cached)) {
        return ['error' => 'the cached config does not return an array'];
    }
    $app = new \Illuminate\Foundation\Application($root);
    // LoadEnvironmentVariables: `.env.{APP_ENV}` instead of `.env` when APP_ENV is set in the real
    // environment and that file exists.
    $envFile = '.env';
    $environment = cachewarden_repository(true)->get('APP_ENV');
    if (is_string($environment) && $environment !== '' && is_file($root . '/.env.' . $environment)) {
        $envFile = '.env.' . $environment;
    }
    $names = [];
    if (is_file($root . '/' . $envFile)) {
        $names = array_keys(\Dotenv\Dotenv::parse((string) file_get_contents($root . '/' . $envFile)));
    }
    $files = cachewarden_config_files($root . '/config');
    try {
        $repository = cachewarden_repository(true);
        \Dotenv\Dotenv::create($repository, $root, $envFile)->safeLoad();
        cachewarden_use_repository($repository);
        $fresh = cachewarden_flatten(cachewarden_load_config($files));
        // Every .env variable set to a marker naming it: a config value holding a marker comes from it.
        $markers = cachewarden_repository(false);
        foreach ($names as $name) {
            $markers->set($name, "\x1e" . $name . "\x1e");
        }
        cachewarden_use_repository($markers);
        $marked = cachewarden_flatten(cachewarden_load_config($files));
    } finally {
        cachewarden_use_repository(null);
        $app->flush();
    }
    $old = cachewarden_flatten($cached);
    $envKeys = [];
    $configKeys = [];
    foreach (array_unique(array_merge(array_keys($old), array_keys($fresh))) as $path) {
        $path = (string) $path;
        if (array_key_exists($path, $old) && array_key_exists($path, $fresh) && $old[$path] === $fresh[$path]) {
            continue;
        }
        $from = [];
        $mark = $marked[$path] ?? null;
        if (is_string($mark) && preg_match_all("/\x1e([^\x1e]+)\x1e/", $mark, $m)) {
            $from = array_values(array_intersect($m[1], $names));
        }
        if ($from === []) {
            $configKeys[] = $path;
        }
        foreach ($from as $name) {
            $envKeys[$name] = true;
        }
    }
    $envKeys = array_keys($envKeys);
    sort($envKeys);
    sort($configKeys);
    return ['env_file' => $envFile, 'env_keys' => $envKeys, 'config_keys' => $configKeys];
}

// Whether OPcache serves each cache file in another version than the file on disk: exact, whatever
// opcache.validate_timestamps says. The served version is what an include returns (an include goes
// through OPcache, which is the point), the disk's is the file's text evaluated without OPcache; both
// are data Laravel wrote (var_export), and the route cache's one call, app('router')->
// setCompiledRoutes(…), goes to a recorder instead of a router. Only files OPcache holds are included:
// one it does not hold is compiled from disk on its next include anyway.
function cachewarden_served(array $paths, array $unparsable): array
{
    $out = ['enabled' => false, 'caches' => []];
    if (!function_exists('opcache_is_script_cached') || !(bool) ini_get('opcache.enable')) {
        return $out;
    }
    $out['enabled'] = true;
    $recorder = new class {
        public mixed $routes = null;

        public function setCompiledRoutes(mixed $routes): void
        {
            $this->routes = $routes;
        }
    };
    $container = new \Illuminate\Container\Container();
    $container->instance('router', $recorder);
    \Illuminate\Container\Container::setInstance($container);
    $read = static function (callable $load) use ($recorder): mixed {
        $recorder->routes = null;
        $value = $load();
        return $recorder->routes ?? $value;
    };
    try {
        foreach ($paths as $cache => $path) {
            $real = realpath($path);
            if ($real === false || ($unparsable[$cache] ?? null) !== null) {
                continue;
            }
            if (!opcache_is_script_cached($real)) {
                $out['caches'][$cache] = ['cached' => false, 'differs' => false];
                continue;
            }
            try {
                $served = $read(static fn (): mixed => include $real);
                $disk = $read(static fn (): mixed => eval('?>' . file_get_contents($real)));
            } catch (Throwable $e) {
                continue;  // not data as Laravel writes it: nothing to compare
            }
            $out['caches'][$cache] = ['cached' => true, 'differs' => $served !== $disk];
        }
    } finally {
        \Illuminate\Container\Container::setInstance(null);
    }
    return $out;
}
