<?php
// Compile Blade views the way Laravel does, but atomically: the compiled text (Laravel's own
// compileString() plus its own /**PATH … ENDPATH**/ footer) is written to a temporary file in the
// compiled directory and rename()d over the file Laravel reads, so a concurrent request sees either
// the old complete file or the new complete file, never a missing or half-written one.
// BladeCompiler::compile() cannot be used: it writes the final name with a plain file_put_contents.
cachewarden_run(function (array $args): array {
    foreach ($args['autoload'] ?? [] as $file) {
        require_once (string) $file;
    }
    $viewsDir = realpath((string) ($args['views_dir'] ?? ''));
    $compiledDir = realpath((string) ($args['compiled_dir'] ?? ''));
    if ($viewsDir === false || $compiledDir === false) {
        throw new RuntimeException('views_dir or compiled_dir does not exist');
    }
    $dryRun = (bool) ($args['dry_run'] ?? false);

    if (!class_exists('CachewardenAtomicBlade', false)) {
        // appendFilePath() is protected: a subclass is the way to reuse Laravel's exact footer logic.
        final class CachewardenAtomicBlade extends \Illuminate\View\Compilers\BladeCompiler
        {
            public function compiledContents(string $path, ?\Illuminate\View\Compilers\BladeCompiler $app): string
            {
                $this->setPath($path);
                $text = $this->files->get($path);
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
    // Only meaningful inside the FPM pool: the CLI's OPcache is not the one that serves the app.
    $invalidate = function_exists('opcache_invalidate') && PHP_SAPI !== 'cli'
        && (bool) ini_get('opcache.enable');
    $compiler = new CachewardenAtomicBlade(new \Illuminate\Filesystem\Filesystem(), $compiledDir);

    $compiled = [];
    $refused = [];
    $failed = [];
    foreach ($args['views'] ?? [] as $path) {
        $path = (string) $path;
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
        $target = $compiler->getCompiledPath($path);
        if (dirname($target) !== $compiledDir) {
            $refused[] = [$path, 'compiled path outside the compiled directory'];
            continue;
        }
        if ($dryRun) {
            $compiled[] = [$path, $target];
            continue;
        }
        $tmp = $target . '.cwtmp-' . bin2hex(random_bytes(8));
        try {
            $contents = $compiler->compiledContents($path, $appCompiler);
            $fh = fopen($tmp, 'xb');
            if ($fh === false) {
                throw new RuntimeException('cannot create a temporary file in the compiled directory');
            }
            $written = fwrite($fh, $contents);
            fflush($fh);
            fclose($fh);
            if ($written !== strlen($contents)) {
                throw new RuntimeException('short write (disk full?)');
            }
            clearstatcache(true, $real);
            $previous = @stat(is_file($target) ? $target : $compiledDir);
            if ($previous !== false) {
                // Keep the owner and group Laravel's files have, so the app can still rewrite them.
                @chown($tmp, $previous['uid']);
                @chgrp($tmp, $previous['gid']);
                if (is_file($target)) {
                    @chmod($tmp, $previous['mode'] & 0777);
                }
            }
            // Laravel recompiles while filemtime(source) >= filemtime(compiled), with one-second
            // resolution: a source saved in this very second would make every request recompile
            // non-atomically. A compiled mtime one second after the source's closes that window.
            $sourceMtime = (int) filemtime($real);
            if ($sourceMtime >= time() && $sourceMtime < time() + 60) {
                touch($tmp, $sourceMtime + 1);
            }
            if (!rename($tmp, $target)) {
                throw new RuntimeException('rename failed');
            }
            if ($invalidate) {
                // With opcache.validate_timestamps=0 the pool would keep serving the old bytecode
                // of this path forever; the rename alone changes nothing for it.
                opcache_invalidate($target, true);
            }
            $compiled[] = [$path, $target];
        } catch (Throwable $e) {
            @unlink($tmp);
            $failed[] = [$path, get_class($e) . ': ' . $e->getMessage()];
        }
    }
    return ['compiled' => $compiled, 'refused' => $refused, 'failed' => $failed];
});
