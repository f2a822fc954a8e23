<?php
// Schedule an OPcache restart: it happens once no request holds the cache.
cachewarden_run(function (array $args): array {
    return ['reset' => function_exists('opcache_reset') && opcache_reset()];
});
