<?php
// The named variables of this worker's environment, null for each one that is not set. FPM expands
// `${NAME}` in its configuration from the master's environment at start; a worker holds the master's
// variables only with `clear_env = no` or an `env[X] = $NAME` line, which the caller checks first.
cachewarden_run(function (array $args): array {
    $out = [];
    foreach ($args['names'] ?? [] as $name) {
        if (is_string($name) && $name !== '') {
            $value = getenv($name);
            $out[$name] = $value === false ? null : $value;
        }
    }
    return ['variables' => $out];
});
