<?php
// Compile Blade views the way Laravel does and hand the compiled text back; write nothing.
// cachewarden writes each file itself, to a temporary name and renamed over the one Laravel reads,
// through a descriptor of the compiled directory pinned when it started (exporter/fs/pinned.py).
// A path handed to PHP would be resolved again here, after cachewarden checked it, and the app's
// user can swap a component of it for a symlink in between: so PHP never writes anywhere.
// BladeCompiler::compile() cannot be used: it writes the final name itself.
//
// args: op "compile" (default): autoload, bootstrap?, views_dir, compiled_dir (only to name the
//       files), views, dry_run -> {compiled: [{source, name, contents (base64), source_mtime}],
//       refused: [[source, why]], failed: [[source, why]]}
//       op "invalidate": paths -> {opcache: bool, invalidated: [...], failed: [...]}
cachewarden_run(function (array $args): array {
    if (($args['op'] ?? 'compile') === 'invalidate') {
        return cachewarden_invalidate_compiled($args['paths'] ?? []);
    }
    foreach ($args['autoload'] ?? [] as $file) {
        require_once (string) $file;
    }
    clearstatcache(true);
    $viewsDir = realpath((string) ($args['views_dir'] ?? ''));
    $compiledDir = (string) ($args['compiled_dir'] ?? '');
    if ($viewsDir === false || $compiledDir === '') {
        throw new RuntimeException('views_dir does not exist or compiled_dir is empty');
    }
    $dryRun = (bool) ($args['dry_run'] ?? false);

    if (!class_exists('CachewardenBlade', false)) {
        // appendFilePath() is protected: a subclass is the way to reuse Laravel's exact footer logic.
        final class CachewardenBlade extends \Illuminate\View\Compilers\BladeCompiler
        {
            public function compiledContents(string $path, string $text,
                                             ?\Illuminate\View\Compilers\BladeCompiler $app): string
            {
                $this->setPath($path);
                if ($app === null) {
                    return $this->appendFilePath($this->compileString($text));
                }
                $app->setPath($path);
                return $this->appendFilePath($app->compileString($text));
            }
        }
    }
    // An app with its own vendor/ registers directives (Blade::directive, @livewire) on its container's
    // compiler: only that one turns them into PHP, a bare compiler would leave them as literal text.
    $appCompiler = null;
    if (isset($args['bootstrap'])) {
        try {
            $app = require (string) $args['bootstrap'];
            $app->make(\Illuminate\Contracts\Console\Kernel::class)->bootstrap();
            $appCompiler = $app->make('blade.compiler');
        } catch (Throwable $e) {
            // Not the message: a failing boot may name credentials from the app's configuration.
            throw new RuntimeException(sprintf(
                'cannot boot the app (%s at %s:%d), so its own Blade directives are unknown; '
                . 'refusing to compile its views without them',
                get_class($e), basename($e->getFile()), $e->getLine()
            ));
        }
    }
    $compiler = new CachewardenBlade(new \Illuminate\Filesystem\Filesystem(), $compiledDir);
    // The app's compiler names files as the app will look for them (Laravel 9+ may hash a path
    // relative to the app's base path).
    $namer = $appCompiler ?? $compiler;

    $compiled = [];
    $refused = [];
    $failed = [];
    foreach ($args['views'] ?? [] as $path) {
        $path = (string) $path;
        // An FPM worker caches what paths resolved to (realpath_cache_ttl, 120 s by default): a
        // release symlink flipped since, or a folder swapped back, must be resolved afresh.
        clearstatcache(true);
        // The path is kept as Laravel saw it (the compiled name hashes it); containment is checked
        // on the resolved path, so neither `..` nor a symlink can reach outside the views directory.
        $real = realpath($path);
        if ($real === false || !is_file($real)) {
            $refused[] = [$path, 'source does not exist'];
            continue;
        }
        if (!str_starts_with($real, $viewsDir . DIRECTORY_SEPARATOR) || !str_ends_with($real, '.blade.php')) {
            $refused[] = [$path, 'not a Blade view inside the views directory'];
            continue;
        }
        $name = basename($namer->getCompiledPath($path));
        if ($dryRun) {
            $compiled[] = ['source' => $path, 'name' => $name];
            continue;
        }
        // Any notice or warning while reading or compiling this view (an unreadable source, a
        // directive that fails) fails this view alone: its old compiled file stays, never replaced
        // by a partial one. A deprecation (older Laravel on a newer PHP) says nothing about the result.
        set_error_handler(function (int $level, string $message, string $file = '', int $line = 0): bool {
            if (!(error_reporting() & $level)) {
                return false;
            }
            if ($level & (E_DEPRECATED | E_USER_DEPRECATED)) {
                return true;
            }
            throw new ErrorException($message, 0, $level, $file, $line);
        });
        try {
            [$text, $mtime] = cachewarden_read_source($path, $real, $viewsDir);
            $compiled[] = [
                'source' => $path,
                'name' => $name,
                'contents' => base64_encode($compiler->compiledContents($path, $text, $appCompiler)),
                'source_mtime' => $mtime,
            ];
        } catch (Throwable $e) {
            $failed[] = [$path, get_class($e) . ': ' . $e->getMessage()];
        } finally {
            restore_error_handler();
        }
    }
    return ['compiled' => $compiled, 'refused' => $refused, 'failed' => $failed];
});

// The text and mtime of the source `$path`, which resolved to `$real` inside `$viewsDir`. The path
// is resolved again after the file is open, and the open file must be the one it leads to: a
// component swapped for a symlink between the check above and the open (to make a PHP running as
// root read a file outside the views) is caught, since the open file is then another inode.
function cachewarden_read_source(string $path, string $real, string $viewsDir): array
{
    $fh = fopen($real, 'rb');
    if ($fh === false) {
        throw new RuntimeException('cannot open the source');
    }
    try {
        $opened = fstat($fh);
        clearstatcache(true);
        $again = realpath($path);
        $now = $again === false ? false : stat($again);
        if ($opened === false || $now === false || ($opened['mode'] & 0170000) !== 0100000
            || !str_starts_with($again, $viewsDir . DIRECTORY_SEPARATOR)
            || [$now['dev'], $now['ino']] !== [$opened['dev'], $opened['ino']]) {
            throw new RuntimeException('the source was replaced while it was opened');
        }
        $text = stream_get_contents($fh);
        if ($text === false) {
            throw new RuntimeException('cannot read the source');
        }
        return [$text, $opened['mtime']];
    } finally {
        fclose($fh);
    }
}

// With opcache.validate_timestamps=0 the pool would keep serving the old bytecode of a rewritten
// compiled view forever: the rename alone changes nothing for it. Only meaningful inside the pool.
function cachewarden_invalidate_compiled(array $paths): array
{
    $enabled = function_exists('opcache_invalidate') && PHP_SAPI !== 'cli' && (bool) ini_get('opcache.enable');
    $done = [];
    $failed = [];
    foreach ($paths as $path) {
        if (!$enabled) {
            break;
        }
        if (is_string($path) && opcache_invalidate($path, true)) {
            $done[] = $path;
        } else {
            $failed[] = $path;
        }
    }
    return ['opcache' => $enabled, 'invalidated' => $done, 'failed' => $failed];
}
