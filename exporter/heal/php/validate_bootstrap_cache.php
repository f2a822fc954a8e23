<?php
// Checks a freshly built bootstrap cache before it replaces the one Laravel reads: it must parse and,
// for config, events, services and packages, return an array. The route cache is only parsed: running
// it needs the app's router. Nothing of the file's content is returned.
cachewarden_run(function (array $args): array {
    $path = (string) ($args['path'] ?? '');
    $returnsArray = (bool) ($args['returns_array'] ?? true);
    if (!is_file($path)) {
        return ['ok' => false, 'reason' => 'was not written'];
    }
    $code = (string) file_get_contents($path);
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
