<?php
// Connects the way a Laravel app does: Debian's laravel/framework (8.83) RedisManager with the phpredis
// client, given one connection's config array as JSON (argv[1], as config/database.php would build it
// from the .env), and prints {"ping": ...} or {"error": "Class: message"}.
declare(strict_types=1);

require '/usr/share/php/Illuminate/Redis/autoload.php';

use Illuminate\Redis\RedisManager;

$config = json_decode($argv[1], true, 512, JSON_THROW_ON_ERROR);
$manager = new RedisManager(null, 'phpredis', ['default' => $config]);
try {
    echo json_encode(['ping' => (string) $manager->connection('default')->ping()]), "\n";
} catch (Throwable $e) {
    echo json_encode(['error' => get_class($e) . ': ' . $e->getMessage()]), "\n";
}
