"""Print what the image test built (reference, size, timings) in pytest's closing summary."""

from __future__ import annotations

import imagekit
import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if imagekit.REPORTS:
        terminalreporter.section("model server image")
        for line in imagekit.REPORTS:
            terminalreporter.write_line(line)
