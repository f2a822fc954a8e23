<?php
// Reads a JSON list of .env file contents (base64: a file may hold bytes that are not UTF-8) on stdin and prints, for each, what Laravel's reader
// (Debian's vlucas/phpdotenv, loaded as Dotenv::createArrayBacked does) makes of it:
// {"values": [[name, value or null], ...]} in first-set order, or {"error": message}.
declare(strict_types=1);

require '/usr/share/php/Dotenv/autoload.php';

use Dotenv\Dotenv;
use Dotenv\Exception\InvalidFileException;
use Dotenv\Parser\Parser;
use Dotenv\Repository\Adapter\ArrayAdapter;
use Dotenv\Repository\RepositoryBuilder;
use Dotenv\Util\Str;

$inputs = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$dir = sys_get_temp_dir() . '/phpdotenv-' . getmypid();
@mkdir($dir, 0700);
$results = [];
foreach ($inputs as $encoded) {
    $content = base64_decode($encoded, true);
    file_put_contents("$dir/.env", $content);
    $repository = RepositoryBuilder::createWithNoAdapters()->addAdapter(ArrayAdapter::class)->make();
    try {
        Dotenv::create($repository, $dir)->load();
        // load() returns an array whose numeric-looking names PHP renumbers: take the names from
        // the parser and each final value from the repository instead.
        $names = [];
        foreach ((new Parser())->parse(Str::utf8($content)->success()->get()) as $entry) {
            $names[$entry->getName()] = true;
        }
        $values = [];
        foreach (array_keys($names) as $name) {
            $values[] = [(string) $name, $repository->get((string) $name)];
        }
        $results[] = ['values' => $values];
    } catch (InvalidFileException $e) {
        $results[] = ['error' => $e->getMessage()];
    }
}
unlink("$dir/.env");
rmdir($dir);
echo json_encode($results, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE);
