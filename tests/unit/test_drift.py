"""The drift state machine: exact with timestamps, inferred (stale/suspect) without."""

from __future__ import annotations

from exporter.collectors.drift import CachedScript, DriftTracker

EPOCH = 1000.0


def script(path: str, mtime: float | None, hits: int = 0, timestamp: float | None = None) -> CachedScript:
    return CachedScript(path, hits, 0.0, timestamp, mtime)


def test_exact_mode_compares_cached_timestamp_with_mtime() -> None:
    report = DriftTracker().update(
        [script("/a.php", 1500, timestamp=1500), script("/b.php", 1600, timestamp=1200)],
        now=1700, cache_epoch=EPOCH, validate_timestamps=True,
    )
    assert report.exact
    assert report.stale == ["/b.php"]
    assert report.suspect == []
    assert report.drift_seconds == 100  # now - mtime of the stale script


def test_script_changed_after_first_sighting_is_stale_until_recached() -> None:
    t = DriftTracker()
    first = t.update([script("/a.php", 900)], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    assert first.stale == []
    r = t.update([script("/a.php", 1150, hits=3)], now=1200, cache_epoch=EPOCH, validate_timestamps=False)
    assert r.stale == ["/a.php"]
    assert not r.exact
    assert r.drift_seconds == 50
    # Still not re-cached (hits keep growing): still stale.
    r = t.update([script("/a.php", 1150, hits=9)], now=1300, cache_epoch=EPOCH, validate_timestamps=False)
    assert r.stale == ["/a.php"]
    assert r.drift_seconds == 150


def test_a_drop_in_hits_means_recached() -> None:
    t = DriftTracker()
    t.update([script("/a.php", 900, hits=5)], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    assert t.update([script("/a.php", 1150, hits=8)], now=1200, cache_epoch=EPOCH,
                    validate_timestamps=False).stale == ["/a.php"]
    r = t.update([script("/a.php", 1150, hits=0)], now=1300, cache_epoch=EPOCH, validate_timestamps=False)
    # Re-cached between 1200 and 1300, after the change at 1150: fresh.
    assert r.stale == []
    assert r.suspect == []


def test_restart_forgets_and_recaches_everything() -> None:
    t = DriftTracker()
    t.update([script("/a.php", 900)], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    assert t.update([script("/a.php", 1150)], now=1200, cache_epoch=EPOCH,
                    validate_timestamps=False).stale == ["/a.php"]
    r = t.update([script("/a.php", 1150)], now=1300, cache_epoch=1250, validate_timestamps=False)
    assert r.stale == []
    assert r.suspect == []


def test_disappearance_from_the_list_forgets_the_first_sighting() -> None:
    t = DriftTracker()
    t.update([script("/a.php", 900)], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    t.update([], now=1200, cache_epoch=EPOCH, validate_timestamps=False)
    assert len(t) == 0
    r = t.update([script("/a.php", 1150)], now=1300, cache_epoch=EPOCH, validate_timestamps=False)
    # Reappeared after 1200, changed at 1150: compiled after the change.
    assert r.stale == []
    assert r.suspect == []


def test_change_after_start_with_unknown_first_sighting_is_suspect() -> None:
    r = DriftTracker().update([script("/a.php", 1050), script("/b.php", 950)], now=1100, cache_epoch=EPOCH,
                              validate_timestamps=False)
    assert r.suspect == ["/a.php"]
    assert r.stale == []
    assert r.drift_seconds == 0


def test_new_script_changed_between_collections_is_suspect_not_stale() -> None:
    t = DriftTracker()
    t.update([], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    r = t.update([script("/a.php", 1150), script("/b.php", 1050)], now=1200, cache_epoch=EPOCH,
                 validate_timestamps=False)
    assert r.suspect == ["/a.php"]
    assert r.stale == []


def test_gone_file_is_missing_not_stale() -> None:
    r = DriftTracker().update([script("/a.php", None)], now=1100, cache_epoch=EPOCH,
                              validate_timestamps=False)
    assert r.missing == ["/a.php"]
    assert r.stale == []


def test_scripts_of_a_superseded_release_are_outside_release() -> None:
    r = DriftTracker().update(
        [script("/srv/releases/1/a.php", 900), script("/srv/releases/2/a.php", 900),
         script("/srv/x.php", 900)],
        now=1100, cache_epoch=EPOCH, validate_timestamps=False, release_dir="/srv/releases/2",
    )
    assert r.outside_release == ["/srv/releases/1/a.php"]


def test_forget_treats_the_next_sighting_as_a_fresh_compile() -> None:
    t = DriftTracker()
    t.update([script("/a.php", 900)], now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    t.forget(["/a.php"])
    r = t.update([script("/a.php", 1150)], now=1200, cache_epoch=EPOCH, validate_timestamps=False)
    assert r.stale == []


def test_a_change_in_memory_means_recached_even_when_hits_grew() -> None:
    # Invalidated elsewhere and requested more often since than before: hits alone would hide it.
    t = DriftTracker()
    t.update([CachedScript("/a.php", 5, 0.0, None, 900, 900, 4096)], now=1100, cache_epoch=EPOCH,
             validate_timestamps=False)
    r = t.update([CachedScript("/a.php", 9, 0.0, None, 1150, 1150, 5120)], now=1200, cache_epoch=EPOCH,
                 validate_timestamps=False)
    # Re-cached between 1100 and 1200, after or around the change at 1150: not known stale.
    assert r.stale == []
    assert r.suspect == ["/a.php"]
    r = t.update([CachedScript("/a.php", 12, 0.0, None, 1150, 1150, 5120)], now=1300, cache_epoch=EPOCH,
                 validate_timestamps=False)
    assert r.stale == []


def test_a_ctime_newer_than_the_cache_with_an_old_mtime_is_suspect() -> None:
    # rsync -a / tar x / cp -p keep the release's old mtime; the ctime says the inode changed.
    t = DriftTracker()
    r = t.update([CachedScript("/a.php", 1, 0.0, None, 500, 1050, 0),
                  CachedScript("/b.php", 1, 0.0, None, 500, 900, 0)],
                 now=1100, cache_epoch=EPOCH, validate_timestamps=False)
    assert r.suspect == ["/a.php"]
    assert r.stale == []
