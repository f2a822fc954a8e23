<?php
// Runs one heal agent script with the `php` CLI: the arguments come as JSON on stdin and the answer
// goes to stdout in the same shape the FPM agent answers with.
declare(strict_types=1);

function cachewarden_run(callable $action): void
{
    $request = json_decode((string) stream_get_contents(STDIN), true);
    $args = is_array($request['args'] ?? null) ? $request['args'] : [];
    $errors = [];
    set_error_handler(function (int $level, string $message) use (&$errors): bool {
        $errors[] = $message;
        return true;
    });
    try {
        $result = $action($args);
        $ok = true;
    } catch (Throwable $e) {
        $errors[] = get_class($e) . ': ' . $e->getMessage();
        [$ok, $result] = [false, null];
    } finally {
        restore_error_handler();
    }
    echo json_encode(['ok' => $ok, 'result' => $result, 'errors' => $errors],
        JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR | JSON_INVALID_UTF8_SUBSTITUTE);
}

require $argv[1];
