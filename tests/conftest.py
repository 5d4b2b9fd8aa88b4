import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own validation cache and journal directory."""
    monkeypatch.setenv("NSPAWN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NSPAWN_STATE_DIR", str(tmp_path / "state"))


def skip_unless_ci(reason: str) -> None:
    """Skip for want of a tool; in CI, where the tool is installed, that is a failure instead:
    a skip there would pass tests that never ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI, where it must be)")
    pytest.skip(reason)


def nspawn(*args, input=None, env=None, timeout=60):
    """Run the CLI as a user would, in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "nspawn", *args], capture_output=True, text=True,
                          input=input, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=timeout)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a privileged test that skips is a failure: it proves nothing there."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("root") is not None:
        report.outcome = "failed"
        report.longrepr = f"privileged test skipped in CI: {report.longrepr}"
