"""The health report behind `cachewarden check` and the status page, as text and as JSON."""

from __future__ import annotations

import json

from exporter.collectors.base import ITEM_CAP, Check, Observation, Verdict
from exporter.report import build_report
from exporter.scheduler import Status
from tests.support.fakes import FakeCollector


def status(target: str, *, up: bool | None = True, checks: tuple[Check, ...] = (), error: str | None = None,
           kind: str = "fake") -> Status:
    collector = FakeCollector(target)
    observation = Observation(collector.new_samples(), list(checks)) if up else None
    st = Status(collector, up=up, duration=0.0125, last_success=1_700_000_000.0 if up else 0.0,
                error=error, observation=observation)
    st.collector.kind = kind  # type: ignore[misc]  # the report groups by kind; one fake stands for any
    return st


STALE = Check.from_items("stale views", ["/app/b.blade.php", "/app/a.blade.php"],
                         "no stale views", "{n} stale view(s)")
WRITABLE = Check("compiled directory writable", Verdict.OK, "writable")
NO_API = Check("opcache api", Verdict.NOTE, "opcache.restrict_api hides the status")


def test_report_is_healthy_when_everything_is_up_and_checks_pass() -> None:
    report = build_report([status("shop", checks=(WRITABLE, NO_API))])
    assert report.healthy
    assert report.problem_count == 0
    assert report.as_text().endswith("cachewarden: healthy\n")


def test_a_failing_check_makes_the_report_unhealthy_and_lists_its_items_sorted() -> None:
    report = build_report([status("shop", checks=(WRITABLE, STALE))])
    text = report.as_text()
    assert not report.healthy
    assert report.problem_count == 1
    assert ("  FAIL stale views: 2 stale view(s)\n"
            "         /app/a.blade.php\n"
            "         /app/b.blade.php\n") in text
    assert "  ok   compiled directory writable: writable\n" in text
    assert text.endswith("cachewarden: 1 problem(s) found\n")


def test_a_collector_that_is_down_is_a_problem_with_its_error() -> None:
    report = build_report([status("db", up=False, error="timed out after 5s")])
    assert not report.healthy
    assert report.problem_count == 1
    assert "fake/db: collection failing (12 ms)\n  FAIL timed out after 5s\n" in report.as_text()


def test_a_collected_target_says_so_in_the_words_of_the_status_page() -> None:
    assert build_report([status("shop")]).as_text().startswith("fake/shop: collected (12 ms)\n")


def test_a_collector_not_yet_collected_is_pending_not_a_problem() -> None:
    report = build_report([status("new", up=None), status("shop")])
    assert report.healthy
    assert (report.problem_count, report.pending_count) == (0, 1)
    assert "fake/new: not collected yet\n" in report.as_text()


def test_checks_are_counted_across_targets() -> None:
    report = build_report([status("a", checks=(WRITABLE, NO_API)), status("b", checks=(WRITABLE,))])
    assert report.check_count == 3


def test_note_is_shown_but_is_not_a_problem() -> None:
    report = build_report([status("www", checks=(NO_API,))])
    assert report.healthy
    assert "  note opcache api: opcache.restrict_api hides the status\n" in report.as_text()


def test_long_item_lists_are_capped_and_the_rest_counted() -> None:
    paths = [f"/v/{i:03}.php" for i in range(ITEM_CAP + 7)]
    many = Check.from_items("orphaned", paths, "none", "{n} orphaned")
    text = build_report([status("shop", checks=(many,))]).as_text()
    assert text.count("         /v/") == ITEM_CAP
    assert "… and 7 more\n" in text
    assert f"FAIL orphaned: {ITEM_CAP + 7} orphaned" in text


def test_targets_are_ordered_by_kind_then_target() -> None:
    report = build_report([status("b", kind="views"), status("a", kind="views"), status("z", kind="fpm")])
    assert [(t.kind, t.target) for t in report.targets] == [("fpm", "z"), ("views", "a"), ("views", "b")]


def test_json_report_lists_every_item_beyond_the_text_cap() -> None:
    paths = [f"/v/{i:03}.php" for i in range(ITEM_CAP + 7)]
    many = Check.from_items("orphaned", paths, "none", "{n} orphaned")
    (target,) = build_report([status("shop", checks=(many,))]).as_dict()["targets"]
    assert target["checks"][0]["items"] == paths
    assert target["checks"][0]["total_items"] == ITEM_CAP + 7


def test_json_report_carries_every_field() -> None:
    report = build_report([status("shop", checks=(STALE,)), status("db", up=False, error="OSError")])
    data = json.loads(json.dumps(report.as_dict()))
    assert data["healthy"] is False
    assert data["problems"] == 2
    db, shop = data["targets"]
    assert db == {"collector": "fake", "target": "db", "up": False, "error": "OSError", "healthy": False,
                  "duration_seconds": 0.0125, "last_success_timestamp": None, "checks": []}
    assert shop["last_success_timestamp"] == 1_700_000_000.0
    assert shop["checks"] == [{"name": "stale views", "verdict": "problem", "summary": "2 stale view(s)",
                               "items": ["/app/a.blade.php", "/app/b.blade.php"], "total_items": 2}]


def test_empty_report_is_healthy() -> None:
    report = build_report([])
    assert report.healthy
    assert report.as_dict() == {"healthy": True, "problems": 0, "targets": [], "warnings": [],
                                "heal_problems": [], "heal_notes": []}
    assert report.as_text() == "cachewarden: healthy\n"


def test_configuration_warnings_are_shown_but_are_no_problem() -> None:
    report = build_report([], warnings=("redis[0].password_file: /x can be read by every user",))
    assert report.healthy
    assert report.as_dict()["warnings"] == ["redis[0].password_file: /x can be read by every user"]
    assert report.as_text() == ("WARN redis[0].password_file: /x can be read by every user\n"
                                "cachewarden: healthy\n")
