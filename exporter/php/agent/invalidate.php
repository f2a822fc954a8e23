<?php
// Drop the given paths from OPcache so the next request compiles them from disk.
cachewarden_run(function (array $args): array {
    $force = (bool) ($args['force'] ?? true);
    $done = [];
    $failed = [];
    foreach ($args['paths'] ?? [] as $path) {
        if (is_string($path) && function_exists('opcache_invalidate') && opcache_invalidate($path, $force)) {
            $done[] = $path;
        } else {
            $failed[] = $path;
        }
    }
    return ['invalidated' => $done, 'failed' => $failed];
});
