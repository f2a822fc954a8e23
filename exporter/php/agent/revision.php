<?php
// The code revision FPM runs. A PHP revision file is included, which goes through OPcache, so a stale
// cached copy shows the stale revision; a plain REVISION file is read (its first line).
cachewarden_run(function (array $args): array {
    $path = $args['path'] ?? null;
    if (!is_string($path) || !is_file($path)) {
        throw new RuntimeException('revision file not found');
    }
    if (str_ends_with($path, '.php')) {
        $value = (static fn (string $p): mixed => include $p)($path);
    } else {
        $lines = preg_split('/\R/', trim((string) file_get_contents($path)));
        $value = $lines[0] ?? null;
    }
    return ['value' => is_scalar($value) ? trim((string) $value) : null];
});
