"""Filesystem walks. The compiled-view tree is walked and read only here, so that every read the
exporter makes of a Laravel app's files can be reviewed in one place."""
