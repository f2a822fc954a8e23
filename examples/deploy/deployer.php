<?php
// Deployer (deployer.org) recipe: Deployer builds the release and swaps `current`; cachewarden makes
// the swap safe. Before the swap it compiles every view of the new release atomically and checks its
// .env; after it, it drops exactly the changed bytecode from PHP-FPM's OPcache and waits until FPM
// serves the new release. A non-zero exit fails the deploy (exit 1 names what is not served).
//
// Requires on the host: cachewarden (pip install cachewarden) and /etc/cachewarden.yaml with a
// `laravel` target named like `cachewarden_target` below whose root is {{deploy_path}}/current, and
// a `php_fpm` target linked to it (php_fpm[].laravel, revision_file, release_symlink).
namespace Deployer;

require 'recipe/laravel.php';

set('cachewarden', 'cachewarden --config.file /etc/cachewarden.yaml');
set('cachewarden_target', 'shop');

// Laravel's own view:cache clears every compiled view first: under traffic that is the
// `filemtime(): stat failed` window. cachewarden compiles into place instead.
task('artisan:view:cache')->disable();

desc('Compile the new release\'s views atomically and check its .env');
task('cachewarden:prepare', function () {
    run('{{cachewarden}} deploy --target {{cachewarden_target}} --phases prepare --release {{release_path}}');
});

desc('Drop changed bytecode in PHP-FPM and verify the new release is served');
task('cachewarden:activate', function () {
    $previous = has('previous_release') ? ' --previous-release {{previous_release}}' : '';
    run('{{cachewarden}} deploy --target {{cachewarden_target}} --phases activate,verify'
        . $previous . ' --verify-timeout 180', ['timeout' => 300]);
});

before('deploy:symlink', 'cachewarden:prepare');
after('deploy:symlink', 'cachewarden:activate');
after('deploy:failed', 'deploy:unlock');
