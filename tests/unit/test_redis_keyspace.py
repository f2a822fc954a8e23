"""Reading per-database key counts from INFO."""

from __future__ import annotations

from exporter.collectors.redis_server import db_key_counts, scrub


def test_key_counts_come_from_the_keyspace_section_only() -> None:
    info = {"db0": {"keys": 5, "expires": 1}, "db12": {"keys": 2}, "dbsize": 3, "db_x": {"keys": 9},
            "connected_clients": 4}
    assert db_key_counts(info) == {"0": 5, "12": 2}


def test_scrub_masks_a_secret_wherever_it_appears() -> None:
    assert scrub("auth pw1 failed for pw1", "pw1") == "auth *** failed for ***"
    assert scrub("nothing to hide", None) == "nothing to hide"
