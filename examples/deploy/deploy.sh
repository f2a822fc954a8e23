#!/bin/sh
# A plain release-folder deploy: build the release beside the others, let cachewarden prepare it,
# switch `current` atomically, and let cachewarden activate and verify it. Exit status is
# cachewarden's: 0 served and verified, 1 not (the unmet conditions are printed), 2 a bad argument.
#
#   deploy.sh /srv/shop/releases/20260101120000
set -eu
RELEASE=$1
APP=/srv/shop
CW="cachewarden deploy --config.file /etc/cachewarden.yaml --target shop"

PREVIOUS=$(readlink -f "$APP/current")
$CW --phases prepare --release "$RELEASE"
ln -sfn "$RELEASE" "$APP/current.new" && mv -T "$APP/current.new" "$APP/current"
if ! $CW --phases activate,verify --previous-release "$PREVIOUS"; then
    ln -sfn "$PREVIOUS" "$APP/current.new" && mv -T "$APP/current.new" "$APP/current"
    $CW --phases activate,verify --previous-release "$RELEASE" || true
    exit 1
fi
