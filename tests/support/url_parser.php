<?php
// Reads a JSON list of connection URLs on stdin and prints, for each, what Laravel's own
// Illuminate\Support\ConfigurationUrlParser (Debian's php-laravel-framework) makes of
// ['url' => URL]: {"options": {...}} with PHP's native types, or {"error": message}.
declare(strict_types=1);

require '/usr/share/php/Illuminate/Support/autoload.php';

use Illuminate\Support\ConfigurationUrlParser;

$urls = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$results = [];
foreach ($urls as $url) {
    try {
        $results[] = ['options' => (object) (new ConfigurationUrlParser())->parseConfiguration(['url' => $url])];
    } catch (InvalidArgumentException $e) {
        $results[] = ['error' => $e->getMessage()];
    }
}
echo json_encode($results, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
    | JSON_PRESERVE_ZERO_FRACTION);
