<?php
// OPcache status for metrics and drift: statistics, the effective directives (opcache.* and the
// realpath cache's), the lines of every ini file FPM loaded that set them (in load order), the pool's
// name, OPcache's blacklist, the preloaded scripts, and per cached script: path, hits,
// last_used_timestamp, timestamp or null, file mtime and ctime (null if the file is gone) and
// memory_consumption, as one list per field. Agent scripts themselves are left out; they are normally
// never cached at all, being younger than opcache.file_update_protection. So are OPcache's
// pseudo-entries (`$PRELOAD$`, which holds the preloaded classes): they are not files. And so are
// entries opcache_invalidate() left behind (see below): a heal's invalidation is verified at once.
// The release symlink is resolved by the sidecar, not here: each worker's realpath cache may still
// hold an old resolution, and the answer must not depend on which worker ran this.
cachewarden_run(function (array $args): array {
    $files = [];
    $loaded = php_ini_loaded_file();
    if ($loaded !== false) {
        $files[] = $loaded;
    }
    $scanned = php_ini_scanned_files();
    if ($scanned !== false) {
        foreach (explode(',', $scanned) as $f) {
            if (trim($f) !== '') {
                $files[] = trim($f);
            }
        }
    }
    $ini_files = [];
    foreach ($files as $f) {
        $lines = file($f, FILE_IGNORE_NEW_LINES);
        $ini_files[] = [$f, $lines === false ? null : array_values(array_filter(
            $lines,
            fn (string $l): bool => str_contains($l, 'opcache.') || str_contains($l, 'realpath_cache')
        ))];
    }
    $loaded_ext = function_exists('opcache_get_status');
    $restrict = (string) ini_get('opcache.restrict_api');
    $out = [
        'now' => microtime(true),
        'loaded' => $loaded_ext,
        'restricted' => $restrict !== '' && !str_starts_with(__FILE__, $restrict),
        'directives' => array_filter(
            ini_get_all(null, false),
            fn (string $k): bool => str_starts_with($k, 'opcache.') || str_starts_with($k, 'realpath_cache'),
            ARRAY_FILTER_USE_KEY
        ),
        'ini_files' => $ini_files,
        'status' => null,
        'preload' => null,
        'pool' => null,
        'workers' => [],
        // null: not known (opcache.restrict_api hides opcache_get_configuration()), never "empty".
        'blacklist' => null,
    ];
    // 'pool' and 'workers' are filled in by cachewarden from the pool's status page: fpm_get_status()
    // segfaults its worker while a sibling worker is still starting (php-src GH-18595, GH-19974).
    if (!$loaded_ext) {
        return $out;
    }
    $configuration = opcache_get_configuration();
    if (is_array($configuration) && is_array($configuration['blacklist'] ?? null)) {
        $out['blacklist'] = array_values($configuration['blacklist']);
    }
    $status = opcache_get_status(true);
    if (!is_array($status)) {
        $out['status'] = false;
        return $out;
    }
    clearstatcache();
    // Column-wise: a few flat lists parse much faster than one small list per script.
    $scripts = ['path' => [], 'hits' => [], 'last_used' => [], 'timestamp' => [], 'mtime' => [],
                'ctime' => [], 'memory' => []];
    $pseudo = 0;
    $invalidated = 0;
    // opcache_invalidate() only marks an entry corrupted: it stays in this list, with its old hits, until a
    // request compiles the file again or OPcache restarts, although it is never served again
    // (accelerator_get_scripts skips nothing but indirect entries). It zeroes the entry's timestamp,
    // reported with validate_timestamps=1; with 0, opcache_is_script_cached() tells such entries apart
    // (a hash lookup then; with 1 it would revalidate the script, a side effect a measurement must not
    // have). Either way the entry is left out, and counted.
    $validate = (bool) ini_get('opcache.validate_timestamps');
    foreach ($status['scripts'] ?? [] as $path => $s) {
        if (!str_starts_with((string) $path, '/')) {
            $pseudo++;
            continue;
        }
        if (cachewarden_is_agent($path)) {
            continue;
        }
        if ($validate ? ($s['timestamp'] ?? null) === 0 : !opcache_is_script_cached((string) $path)) {
            $invalidated++;
            continue;
        }
        // file_exists first: a deleted source is a finding (missing), not a PHP warning per script.
        // The later calls are answered from PHP's stat cache.
        $mtime = file_exists($path) ? @filemtime($path) : false;
        $scripts['path'][] = $path;
        $scripts['hits'][] = $s['hits'];
        $scripts['last_used'][] = $s['last_used_timestamp'];
        $scripts['timestamp'][] = $s['timestamp'] ?? null;
        $scripts['mtime'][] = $mtime === false ? null : $mtime;
        $scripts['ctime'][] = $mtime === false ? null : @filectime($path);
        $scripts['memory'][] = $s['memory_consumption'];
    }
    unset($status['scripts']);
    $status['scripts'] = $scripts;
    $status['pseudo_entries'] = $pseudo;  // counted by OPcache among its scripts, not scripts
    $status['invalidated_entries'] = $invalidated;
    $preload = $status['preload_statistics'] ?? null;
    unset($status['preload_statistics']);
    if (is_array($preload)) {
        $files = ['path' => [], 'mtime' => [], 'ctime' => []];
        foreach ($preload['scripts'] ?? [] as $path) {
            $mtime = is_string($path) && file_exists($path) ? @filemtime($path) : false;
            $files['path'][] = $path;
            $files['mtime'][] = $mtime === false ? null : $mtime;
            $files['ctime'][] = $mtime === false ? null : @filectime($path);
        }
        $out['preload'] = [
            'memory' => $preload['memory_consumption'] ?? null,
            'classes' => count($preload['classes'] ?? []),
            'functions' => count($preload['functions'] ?? []),
            'scripts' => $files,
        ];
    }
    $out['status'] = $status;
    return $out;
});
