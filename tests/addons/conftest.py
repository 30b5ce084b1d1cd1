"""Add-on fixtures: the default app is ``synthesized`` and the nodegroup/AMP alternative is
``synthesized_nodegroup`` (both session-scoped in tests/conftest.py, each synthesized once)."""

from __future__ import annotations

import pytest

from tests.conftest import Synthesized


@pytest.fixture(scope="session")
def alternative(synthesized_nodegroup: Synthesized) -> Synthesized:
    return synthesized_nodegroup
