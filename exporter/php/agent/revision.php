<?php
// The code revision FPM runs. The revision file is included either way, because an include goes
// through OPcache (which caches any included file, whatever its name) and so shows the version FPM
// serves: a PHP file returns the version, a plain REVISION file is output, captured, first line kept.
// Reading it with file_get_contents would bypass OPcache and always show the disk's version.
cachewarden_run(function (array $args): array {
    $path = $args['path'] ?? null;
    if (!is_string($path) || !is_file($path)) {
        throw new RuntimeException('revision file not found');
    }
    if (str_ends_with($path, '.php')) {
        $value = (static fn (string $p): mixed => include $p)($path);
    } else {
        ob_start();
        (static function (string $p): void {
            include $p;
        })($path);
        $line = strtok(trim((string) ob_get_clean()), "\r\n");
        $value = $line === false ? null : $line;
    }
    return ['value' => is_scalar($value) ? trim((string) $value) : null];
});
