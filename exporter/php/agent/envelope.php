<?php
// cachewarden agent. cachewarden writes this file under a random name for one run and deletes it
// afterwards. It answers only a request whose body carries the run's token, so a copy that a web
// server could reach by URL does nothing.
declare(strict_types=1);

const CACHEWARDEN_TOKEN_SHA256 = '@TOKEN_SHA256@';

function cachewarden_respond(int $status, bool $ok, mixed $result, array $errors): void
{
    if (!headers_sent()) {
        http_response_code($status);
        header('Content-Type: application/json');
        header('Cache-Control: no-store');
    }
    echo json_encode(
        ['ok' => $ok, 'result' => $result, 'errors' => $errors],
        JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE
    );
}

function cachewarden_run(callable $action): void
{
    // Inside FPM the request body carries the token and arguments; a heal run with the `php` CLI
    // (no pool linked to the app) sends the same JSON on standard input.
    $input = PHP_SAPI === 'cli' ? stream_get_contents(STDIN) : file_get_contents('php://input');
    $request = json_decode((string) $input, true);
    $token = is_array($request) && is_string($request['token'] ?? null) ? $request['token'] : '';
    if (!hash_equals(CACHEWARDEN_TOKEN_SHA256, hash('sha256', $token))) {
        cachewarden_respond(403, false, null, ['missing or wrong token']);
        return;
    }
    // Past the client's timeout nobody reads the answer, and cachewarden's one-worker rule assumes
    // the worker is free again; set_time_limit() bounds CPU time, request_terminate_timeout the rest.
    $limit = $request['time_limit'] ?? null;
    if (is_int($limit) || is_float($limit)) {
        set_time_limit(max(1, (int) ceil($limit)));
    }
    $args = is_array($request['args'] ?? null) ? $request['args'] : [];
    $errors = [];
    // Warnings (a restricted OPcache API, an unreadable ini file) are findings, not page output.
    set_error_handler(function (int $level, string $message) use (&$errors): bool {
        if (!(error_reporting() & $level)) {
            return false;  // silenced with @ on purpose: not a finding
        }
        $errors[] = $message;
        return true;
    });
    try {
        $result = $action($args);
        cachewarden_respond(200, true, $result, $errors);
    } catch (Throwable $e) {
        $errors[] = get_class($e) . ': ' . $e->getMessage();
        cachewarden_respond(500, false, null, $errors);
    } finally {
        restore_error_handler();
    }
}

function cachewarden_is_agent(string $path): bool
{
    return dirname($path) === __DIR__ && str_starts_with(basename($path), 'cachewarden-');
}
