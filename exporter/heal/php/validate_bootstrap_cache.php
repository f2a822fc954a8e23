<?php
// Checks a freshly built bootstrap cache before it replaces the one Laravel reads: it must parse and,
// for config, events, services and packages, return an array. The route cache is only parsed: running
// it needs the app's router. The bytes come in the request (base64), the very ones cachewarden then
// writes: a file could change between this check and the write. Nothing of the content is returned.
cachewarden_run(function (array $args): array {
    $code = base64_decode((string) ($args['code'] ?? ''), true);
    $returnsArray = (bool) ($args['returns_array'] ?? true);
    if ($code === false || $code === '') {
        return ['ok' => false, 'reason' => 'is empty'];
    }
    try {
        token_get_all($code, TOKEN_PARSE);
    } catch (ParseError $e) {
        return ['ok' => false, 'reason' => sprintf('does not parse (line %d)', $e->getLine())];
    }
    if ($returnsArray) {
        try {
            $value = (static fn (string $c): mixed => eval('?>' . $c))($code);
        } catch (Throwable $e) {
            return ['ok' => false, 'reason' => sprintf('does not load (%s)', get_class($e))];
        }
        if (!is_array($value)) {
            return ['ok' => false, 'reason' => 'does not return an array'];
        }
    }
    return ['ok' => true, 'reason' => null];
});
