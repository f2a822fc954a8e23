"""Suite-wide fixtures and hooks. Subsystem fixtures that start real servers live in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# Set by scripts/test: there, an integration test may not skip for want of its server or binary, or a
# green run could hide that the real components were never exercised.
REQUIRE_INTEGRATION = "CACHEWARDEN_REQUIRE_INTEGRATION"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and os.environ.get(REQUIRE_INTEGRATION) == "1"):
        return
    if item.get_closest_marker("integration") is None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"integration test skipped while {REQUIRE_INTEGRATION}=1 requires the real components: {reason}\n"
        "(scripts/test-all installs and starts them; unset the variable to allow the skip)"
    )
